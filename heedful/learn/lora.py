"""`heedful learn --lora`: a LoRA adapter (peft) on the attention's query and key
projections, trained so that the model's own attention goes where the person pins.

On the recorded sessions (the picker's training split; the held-out sessions measure), for
every token after a pinned one that is not pinned itself, the attention mass it gives to
the pinned tokens before it is read per layer and head (eager attention); the loss is the
KL divergence of the adapted model's next-token distributions from the model's own (so it
keeps saying what it said: fine-tuning on the sessions' text instead cost recall) plus
`weight` times -log of that mass for the head of each layer that gives the most (one head per layer learns to look at the pins, the others
keep their work). NSA-style top-k selection scores blocks with queries and keys, H2O keeps
what is attended most: both can then find the pinned text without being told.

The adapter is saved as peft writes it (adapter_config.json, adapter_model.safetensors) and
loaded with --adapter DIR (heedful.models.loading.apply_adapter merges it); the model the
picker is then trained on is the merged one.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from heedful.errors import HeedfulError
from heedful.learn.fit import read_sessions, split


def _masses(attentions, pinned: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """[layers, heads, Q]: the attention mass each query gives to the pinned tokens."""
    a = torch.stack([x[0] for x in attentions]).float()  # [layers, heads, T, T]
    return (a[:, :, queries.to(a.device), :] * pinned.to(a.device)[None, None, None, :]).sum(-1)


def _queries(labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    pinned = torch.tensor(labels, dtype=torch.float32)
    first = labels.index(1) if 1 in labels else len(labels)
    q = torch.tensor([t for t in range(first + 1, len(labels)) if not labels[t]], dtype=torch.long)
    return pinned, q


def _targets(r, ids: torch.Tensor) -> torch.Tensor:
    """Next-token targets: the text the person gave (prompts), not what the model generated
    (its own answers, right or wrong, would teach it nothing but itself)."""
    t = ids.clone()
    for i, src in enumerate(r.sources or ()):
        if src != "prompt" and i < t.shape[1]:
            t[0, i] = -100
    return t


def _measure(model, sessions) -> dict:
    ce, mass, n = 0.0, 0.0, 0
    with torch.no_grad():
        for r in sessions:
            pinned, q = _queries(r.labels)
            if not len(q):
                continue
            ids = torch.tensor([r.ids], device=next(model.parameters()).device)
            out = model(input_ids=ids, labels=_targets(r, ids), output_attentions=True, use_cache=False)
            ce += float(out.loss)
            mass += float(_masses(out.attentions, pinned, q).amax(1).mean())
            n += 1
    return {"lm_loss": round(ce / max(1, n), 4), "pinned_mass": round(mass / max(1, n), 4)}


def train_lora(store, lm, *, session_ids=None, steps: int = 200, seed: int = 0, rank: int = 8, weight: float = 0.1,
               lr: float = 2e-3, progress=None):
    """Trains the adapter; returns (lm with the adapter merged into its model, info, saved
    folder holding the adapter's files: the caller copies them and removes the folder)."""
    try:
        from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    except ImportError:
        raise HeedfulError("--lora needs the peft package (pip install peft)") from None
    from safetensors.torch import load_file

    from heedful.models.loading import adapter_fingerprint

    sessions, read = read_sessions(store, session_ids)
    sessions = [r for r in sessions if sum(r.labels)]
    if len(sessions) < 2:
        raise HeedfulError(f"{store.path}: --lora needs at least 2 sessions with pins ({len(sessions)} of {read})")
    cfg = lm.model.config
    max_pos = getattr(cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg,
                      "max_position_embeddings", 2048)
    for r in sessions:  # one window per session, from its start
        r.ids, r.labels = r.ids[:max_pos], r.labels[:max_pos]
    train, val, test = split(sessions, seed)
    train = train + ([] if val is train else val)
    model = lm.model
    impl = model.config._attn_implementation
    model.config._attn_implementation = "eager"  # attention weights to learn from
    torch.manual_seed(seed)
    try:
        before = _measure(model, test)
        with warnings.catch_warnings():  # peft calls transformers' deprecated names (FutureWarning)
            warnings.simplefilter("ignore", FutureWarning)
            pm = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                                  target_modules=["q_proj", "k_proj"]))
        opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        rng = random.Random(seed)
        device = next(pm.parameters()).device
        bar = progress("LoRA", steps) if progress else None
        pm.train()
        for _ in range(steps):
            r = rng.choice(train)
            pinned, q = _queries(r.labels)
            ids = torch.tensor([r.ids], device=device)
            with torch.no_grad(), pm.disable_adapter():  # what the model said before: kept (KL)
                ref = torch.log_softmax(pm(input_ids=ids, use_cache=False).logits.float(), -1)
            out = pm(input_ids=ids, output_attentions=True, use_cache=False)
            logp = torch.log_softmax(out.logits.float(), -1)
            loss = (ref.exp() * (ref - logp)).sum(-1).mean()
            if len(q):
                mass = _masses(out.attentions, pinned, q).amax(1)  # the most attentive head per layer
                loss = loss - weight * torch.log(mass + 1e-6).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if bar:
                bar(1)
        pm.eval()
        after = _measure(pm, test)
        folder = Path(tempfile.mkdtemp(prefix="heedful-lora-"))
        try:
            pm.save_pretrained(str(folder))
            state = load_file(str(folder / "adapter_model.safetensors"))
            if set(state) != set(get_peft_model_state_dict(pm)):
                raise RuntimeError("peft saved other tensors than the adapter's")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        merged = pm.merge_and_unload()
    finally:
        model.config._attn_implementation = impl
    merged.config._attn_implementation = impl
    merged.heedful_adapter = adapter_fingerprint(state)
    merged.eval()
    lm.model = merged
    info = {"steps": steps, "rank": rank, "weight": weight, "targets": ["q_proj", "k_proj"],
            "train_sessions": len(train), "held_out_sessions": len(test),
            "pinned_mass_before": before["pinned_mass"], "pinned_mass_after": after["pinned_mass"],
            "lm_loss_before": before["lm_loss"], "lm_loss_after": after["lm_loss"],
            "fingerprint": merged.heedful_adapter}
    return lm, info, folder
