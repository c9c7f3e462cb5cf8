"""Conversations: the tokenizer's chat template applied turn by turn, so that every turn,
its markup included, is part of the session's one stream (pins, the window and eviction
work across turns as on any text).

A turn's text is what the template adds to the conversation so far: the template renders
the messages with the new one, and the part past what the stream already holds is appended.
The messages are read back from the stream (`messages`), so a resumed or replayed session
renders the same. The stream's tokens carry their role as their source: "system", "user"
(the content the person gave), "generated" (the assistant's), "markup" (what the template
adds around them: role headers, ends of turn, a default system prompt).

When the stream is not a prefix of the new rendering (generation cut short, a stop id other
than the template's end of turn, a template that rewrites earlier turns), the last turn is
closed as the template closes it and the new turn follows as the template renders it.
"""

from __future__ import annotations

from dataclasses import dataclass

from heedful.errors import HeedfulError

ROLES = ("system", "user", "assistant")
CONTENT_SOURCES = {"system": "system", "user": "user", "assistant": "generated"}
MARKUP = "markup"
_MARK = "\x00heedful\x00"


@dataclass(frozen=True)
class Turn:
    role: str
    start: int  # token range of the content (markup excluded)
    end: int


def has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


class ChatTemplate:
    def __init__(self, tokenizer):
        if not has_template(tokenizer):
            raise HeedfulError("this model's tokenizer has no chat template: talk to it as plain text (no --chat, "
                               "no --system, no say)")
        self.tokenizer = tokenizer
        self.end_of_turn = self._end_of_turn()

    def render(self, messages: list[dict], generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=generation_prompt)
        except Exception as e:  # jinja's TemplateError, or a template's own raise_exception
            raise HeedfulError(f"the chat template refuses this conversation: {str(e).splitlines()[0][:200]}") from None

    def _end_of_turn(self) -> str:
        """What the template puts after an assistant's content ("<|im_end|>\\n" for ChatML)."""
        try:
            text = self.render([{"role": "user", "content": "x"}, {"role": "assistant", "content": _MARK}], False)
        except HeedfulError:
            return ""
        return text[text.rfind(_MARK) + len(_MARK):] if _MARK in text else ""

    def end_of_turn_ids(self) -> list[int]:
        """The token that ends an assistant turn, when the template's end is a special token."""
        if not self.end_of_turn:
            return []
        ids = self.tokenizer(self.end_of_turn, add_special_tokens=False)["input_ids"]
        special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        added = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        return [ids[0]] if ids and (ids[0] in special or ids[0] in added) else []

    def turn(self, messages: list[dict], held: str, role: str, content: str, stop_texts=()) -> tuple[str, int, int]:
        """The text to append for a new turn after `messages`, whose rendering the stream
        holds as `held`; and where the new content lies in it (characters [a, b))."""
        if role not in ROLES:
            raise HeedfulError(f"say: role {role!r} must be one of {', '.join(ROLES)}")
        new = {"role": role, "content": content}
        after = self.render(messages + [new], generation_prompt=role == "user")
        for done in _without_stops(held, stop_texts):
            if after.startswith(done):
                text = after[len(done):]
                break
        else:
            before = self.render(messages, generation_prompt=False) if messages else ""
            if not after.startswith(before):
                before = self.render(messages[-1:], generation_prompt=False) if messages else ""
                after = self.render(messages[-1:] + [new], generation_prompt=role == "user")
            close = ""
            if messages and messages[-1]["role"] == "assistant":
                close = _missing_end(held, self.end_of_turn, stop_texts)
            text = close + after[len(before):]
        at = text.rfind(content.strip()) if content.strip() else -1
        if at < 0:
            raise HeedfulError(f"say: the chat template does not show the {role} text as given")
        return text, at, at + len(content.strip())


def _without_stops(held: str, stop_texts) -> list[str]:
    """The stream's text, and the same without a trailing stop token's text (a generation that
    stopped at an end other than the template's)."""
    out = [held]
    for s in stop_texts:
        if s and held.endswith(s):
            out.append(held[: -len(s)])
    return out


def _missing_end(held: str, end: str, stop_texts) -> str:
    """What of the template's end of turn the stream lacks after an assistant's content."""
    for k in range(len(end), 0, -1):
        if held.endswith(end[:k]):
            return end[k:]
    return end


def messages(texts: list[str], sources: list[str], stop_texts=()) -> list[dict]:
    """The conversation a stream holds: consecutive tokens of one content source make one
    message (the assistant's without its trailing stop token); markup and other sources are
    not content."""
    out: list[dict] = []
    role = None
    parts: list[str] = []
    for text, src in zip(texts, sources):
        r = next((k for k, v in CONTENT_SOURCES.items() if v == src), None)
        if r != role:
            if role is not None:
                out.append({"role": role, "content": "".join(parts)})
            role, parts = r, []
        if r is not None:
            parts.append(text)
    if role is not None:
        out.append({"role": role, "content": "".join(parts)})
    for m in out:
        if m["role"] == "assistant":
            for s in stop_texts:
                if s and m["content"].endswith(s):
                    m["content"] = m["content"][: -len(s)]
    return out


def turns(sources: list[str]) -> list[Turn]:
    """The content spans of a stream's turns, in order."""
    out, start, role = [], 0, None
    for i, src in enumerate([*sources, None]):
        r = next((k for k, v in CONTENT_SOURCES.items() if v == src), None)
        if r != role:
            if role is not None:
                out.append(Turn(role, start, i))
            role, start = r, i
    return out
