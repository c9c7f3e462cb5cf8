"""Choosing the next token: transformers' own logits processors and warpers (repetition
penalty, temperature, top-k, top-p, min-p, in the order `generate` applies them), then the
argmax (temperature 0) or a draw from the session's seeded generator, so a replay draws the
same tokens."""

from __future__ import annotations

import torch
from transformers.generation.logits_process import (LogitsProcessorList, MinPLogitsWarper,
                                                    RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)


class Sampler:
    def __init__(self, config, seed: int):
        self.greedy = config.temperature <= 0
        steps = []
        if config.repetition_penalty != 1.0:
            steps.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
        if not self.greedy:
            if config.temperature != 1.0:
                steps.append(TemperatureLogitsWarper(config.temperature))
            if config.top_k:
                steps.append(TopKLogitsWarper(config.top_k))
            if config.top_p < 1.0:
                steps.append(TopPLogitsWarper(config.top_p))
            if config.min_p:
                steps.append(MinPLogitsWarper(config.min_p))
        self.steps = LogitsProcessorList(steps)
        self.needs_history = config.repetition_penalty != 1.0
        self.rng = torch.Generator(device="cpu").manual_seed(seed)
        # the penalty reads only which ids occur: kept as a set grown with the stream (a rewind rebuilds it)
        self._seen: dict[int, None] = {}
        self._seen_len = 0
        self._seen_ids: torch.Tensor | None = None

    def retuned(self, config) -> "Sampler":
        """The same generator's state with other settings (`Session.set`)."""
        new = Sampler(config, 0)
        new.rng = self.rng
        return new

    def __call__(self, logits: torch.Tensor, history: list[int]) -> int:
        """logits [V] fp32 on the CPU; `history`: the stream's ids (the repetition penalty's)."""
        if self.steps:
            logits = self.steps(self._ids(history), logits[None])[0]
        if self.greedy:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.rng))

    def forget(self) -> None:
        """The stream was cut back (rewind): the ids seen are counted again."""
        self._seen, self._seen_len, self._seen_ids = {}, 0, None

    def _ids(self, history: list[int]) -> torch.Tensor:
        if not self.needs_history:
            return torch.zeros(1, 0, dtype=torch.long)
        if len(history) < self._seen_len:
            self.forget()
        if len(history) > self._seen_len or self._seen_ids is None:
            for t in history[self._seen_len:]:
                self._seen[t] = None
            self._seen_len = len(history)
            self._seen_ids = torch.tensor([list(self._seen)], dtype=torch.long)
        return self._seen_ids
