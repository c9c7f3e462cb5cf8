"""The picker: a small head over a model's hidden states that scores each token "the person
would pin this", its files, and word-aligned suggestions.

Files (written by `heedful learn --out DIR`):
- DIR/picker.safetensors: the head's weights (and the features' mean and scale);
- DIR/picker.json: {"format", "model", "model_fingerprint", "tokenizer_fingerprint",
  "adapter_fingerprint", "layers", "window", "stride", "head", "threshold", "training"}.

A picker is refused (one line) for a model or tokenizer other than the one it was made for:
the model's fingerprint hashes its architecture and a sample of its embedding (rounded to
bfloat16, so a float32 and a bfloat16 load agree), the tokenizer's its vocabulary and special
tokens; a picker learned over a LoRA adapter needs that adapter, and one learned without
refuses it (hidden states differ).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from heedful.errors import HeedfulError
from heedful.learn.features import decoder_layers, hidden_states
from heedful.models.loading import model_fingerprint, tokenizer_fingerprint  # noqa: F401 (re-exported)

FORMAT = 1


class Head(nn.Module):
    """Scores token i from the hidden states of tokens i .. i + lookahead (a token is judged
    once the next few have streamed in: "Ivan" starts a fact only if "was born" follows).
    Features are standardized and reduced to their `rank` principal directions (fixed when
    training starts, so training runs on the reduced states); positions past the end of
    the stream are zeros. Kind "linear": one linear layer over them; "mlp": each position
    projected to `hidden`, then two layers."""

    def __init__(self, d_in: int, kind: str = "mlp", hidden: int = 64, lookahead: int = 0, rank: int = 128):
        super().__init__()
        self.kind, self.d_in, self.hidden, self.lookahead = kind, d_in, hidden, lookahead
        self.rank = rank = min(rank, d_in)
        k = lookahead + 1
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(d_in))
        self.register_buffer("basis", torch.eye(d_in)[:, :rank].contiguous())
        if kind == "linear":
            self.net = nn.Linear(rank * k, 1)
        elif kind == "mlp":
            self.proj = nn.Linear(rank, hidden)
            self.net = nn.Sequential(nn.SiLU(), nn.Linear(hidden * k, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        else:
            raise HeedfulError(f"--head {kind!r}: expected linear or mlp")

    def fit_basis(self, x: torch.Tensor) -> None:
        """Mean, scale and principal directions from training states x [n, d_in]."""
        self.mean.copy_(x.mean(0))
        self.scale.copy_(x.std(0).clamp_min(1e-4))
        z = (x - self.mean) / self.scale
        _, vecs = torch.linalg.eigh(z.T @ z / max(1, len(z) - 1))
        self.basis.copy_(vecs[:, -self.rank:].flip(1))

    def reduce(self, h: torch.Tensor) -> torch.Tensor:
        return ((h - self.mean) / self.scale) @ self.basis

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """Reduced states -> what each position contributes (the projection of "mlp")."""
        return z if self.kind == "linear" else self.proj(z)

    def pad(self) -> torch.Tensor:
        """The embedding of a position past the end of the stream (a zero state)."""
        return torch.zeros(self.rank) if self.kind == "linear" else self.proj.bias

    def score_embedded(self, e: torch.Tensor) -> torch.Tensor:
        """e [N, lookahead + 1, width] -> logits [N]."""
        return self.net(e.flatten(1)).squeeze(-1)

    def forward_reduced(self, z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """z [N, lookahead + 1, rank] (reduced states), valid [N, lookahead + 1] -> logits [N]."""
        e = torch.where(valid[..., None], self.embed(z), self.pad())
        return self.score_embedded(e)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x [N, lookahead + 1, d_in] (hidden states), valid [N, lookahead + 1] -> logits [N]."""
        return self.forward_reduced(self.reduce(x), valid)


def ahead(h: torch.Tensor, lookahead: int, ends: torch.Tensor | None = None, rows: torch.Tensor | None = None):
    """(x [N, lookahead + 1, d], valid [N, lookahead + 1]) for the `rows` of h [n, d] (all
    by default): each row with the states of the rows after it, up to `ends` (per row, the
    first row past its stream; default n)."""
    n = h.shape[0]
    rows = torch.arange(n) if rows is None else rows
    end = torch.full((len(rows),), n) if ends is None else ends[rows]
    pos = rows[:, None] + torch.arange(lookahead + 1)[None]
    valid = pos < end[:, None]
    return h[pos.clamp(max=n - 1)], valid


# ---------------------------------------------------------------------- fingerprints
def adapter_fingerprint(model) -> str | None:
    """The fingerprint of the LoRA adapter merged into the model (load_model's adapter=,
    or heedful learn --lora), or None for a plain model."""
    return getattr(model, "heedful_adapter", None)


# ---------------------------------------------------------------------- words and spans
def word_starts(texts: list[str], prev: str = "") -> list[bool]:
    """Whether each token starts a word: its text starts with whitespace, or the text before
    it ends with whitespace (or there is none). Punctuation stays with the word before it."""
    out = []
    for t in texts:
        out.append(not prev or prev[-1:].isspace() or t[:1].isspace())
        prev = t if t else prev
    return out


def words(texts: list[str], prev: str = "") -> list[tuple[int, int]]:
    """[start, end) token ranges of the words of `texts` (relative indices)."""
    starts = word_starts(texts, prev)
    out = []
    for i, s in enumerate(starts):
        if s or not out:
            out.append([i, i + 1])
        else:
            out[-1][1] = i + 1
    return [tuple(w) for w in out]


@dataclass(frozen=True)
class Suggestion:
    start: int
    end: int
    score: float  # the highest token score of the span


def pick_spans(probs, texts: list[str], threshold: float, offset: int = 0, prev: str = "") -> list[Suggestion]:
    """Words whose highest token score reaches the threshold, adjacent ones merged."""
    out: list[Suggestion] = []
    for a, b in words(texts, prev):
        score = float(max(probs[a:b]))
        if score < threshold or not "".join(texts[a:b]).strip():
            continue
        if out and out[-1].end == a + offset:
            out[-1] = Suggestion(out[-1].start, b + offset, max(out[-1].score, score))
        else:
            out.append(Suggestion(a + offset, b + offset, score))
    return out


# ---------------------------------------------------------------------- the picker
class Picker:
    def __init__(self, head: Head, meta: dict):
        self.head, self.meta = head.eval(), meta

    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @property
    def lookahead(self) -> int:
        return int(self.meta["head"].get("lookahead", 0))

    @torch.no_grad()
    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states [n, d] -> embeddings [n, width]: standardization, the principal
        directions and the projection folded into one affine map (streaming scores)."""
        if getattr(self, "_fold", None) is None:
            hd = self.head
            w = hd.basis / hd.scale[:, None]  # [d, rank]
            b = -(hd.mean / hd.scale) @ hd.basis  # [rank]
            if hd.kind == "mlp":
                w, b = w @ hd.proj.weight.T, b @ hd.proj.weight.T + hd.proj.bias
            self._fold = (w.contiguous(), b.contiguous())
        w, b = self._fold
        return torch.addmm(b, h.float(), w)

    @torch.no_grad()
    def score_embedded(self, e: torch.Tensor, valid: int | None = None) -> torch.Tensor:
        """Scores from consecutive embeddings e [m, width]: one per row whose `lookahead`
        followers are in e (`valid`: how many rows to score, the rest of each window padded)."""
        la = self.lookahead
        n = e.shape[0] - la if valid is None else valid
        if n <= 0:
            return torch.zeros(0)
        if e.shape[0] < n + la:
            e = torch.cat([e, self.head.pad().expand(n + la - e.shape[0], -1)])
        windows = e.unfold(0, la + 1, 1)[:n].transpose(1, 2)  # [n, la + 1, width]
        return torch.sigmoid(self.head.score_embedded(windows))

    @torch.no_grad()
    def score_states(self, h: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of the rows of h [n, d] (the states of consecutive tokens), those past the
        end of h counted as the end of the stream."""
        z, valid = ahead(self.head.reduce(h.float()), self.lookahead, rows=rows)
        return torch.sigmoid(self.head.forward_reduced(z, valid))

    def states(self, model, ids: list[int]) -> torch.Tensor:
        """Hidden states [len(ids), d] from plain forwards (windows of the picker's length)."""
        return hidden_states(model, ids, self.layers, self.meta["window"], self.meta["stride"])

    def score_ids(self, model, ids: list[int]) -> torch.Tensor:
        """Token scores of a whole stream of ids (its end is the stream's end)."""
        if not ids:
            return torch.zeros(0)
        return self.score_states(self.states(model, ids))

    # ---------------------------------------------------------------- files
    def save(self, out: Path) -> None:
        from safetensors.torch import save_file

        out = Path(out)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()},
                  str(out / "picker.safetensors"))
        (out / "picker.json").write_text(json.dumps(self.meta, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path, lm=None) -> "Picker":
        """Reads DIR/picker.json and DIR/picker.safetensors; with `lm` (a LoadedModel, or any
        object with .model and .tokenizer), refuses a picker made for another model."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(path)
        where = f"--picker {path}"
        if not d.is_dir():
            raise HeedfulError(f"{where}: no such folder")
        try:
            meta = json.loads((d / "picker.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HeedfulError(f"{where}: no picker.json (not a folder written by heedful learn)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HeedfulError(f"{where}: picker.json cannot be read: {e}") from None
        need = ("format", "model_fingerprint", "tokenizer_fingerprint", "layers", "window", "stride", "head",
                "threshold")
        if not isinstance(meta, dict) or any(k not in meta for k in need):
            raise HeedfulError(f"{where}: picker.json lacks {', '.join(k for k in need if k not in meta)}")
        if meta["format"] != FORMAT:
            raise HeedfulError(f"{where}: picker format {meta['format']!r}; this heedful reads {FORMAT}")
        t = meta["threshold"]
        if type(t) not in (int, float) or not 0 <= t <= 1:  # NaN fails both comparisons
            raise HeedfulError(f"{where}: picker.json: threshold {t!r} is not a number from 0 to 1")
        try:
            state = load_file(str(d / "picker.safetensors"))
            hd = meta["head"]
            head = Head(int(hd["d_in"]), hd["kind"], int(hd.get("hidden", 64)), int(hd.get("lookahead", 0)),
                        int(hd.get("rank", hd["d_in"])))
            head.load_state_dict(state)
        except FileNotFoundError:
            raise HeedfulError(f"{where}: no picker.safetensors") from None
        except (SafetensorError, RuntimeError, KeyError, TypeError, ValueError, OSError) as e:
            # load_state_dict says what is wrong on the lines after its first ("Error(s) in ...:")
            why = " ".join(str(e).split())
            raise HeedfulError(f"{where}: picker.safetensors cannot be read: {why[:300]}") from None
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise HeedfulError(f"{where}: picker.safetensors: {bad[0]} holds NaN or infinite values")
        picker = cls(head, meta)
        if lm is not None:
            picker.check(lm.model, lm.tokenizer, where)
        return picker

    def check(self, model, tokenizer, where: str = "picker") -> None:
        m = self.meta
        name = m.get("model", "?")
        if model_fingerprint(model) != m["model_fingerprint"]:
            raise HeedfulError(f"{where}: made for another model ({name}, fingerprint {m['model_fingerprint']}), "
                               f"not this one ({model_fingerprint(model)})")
        if tokenizer_fingerprint(tokenizer) != m["tokenizer_fingerprint"]:
            raise HeedfulError(f"{where}: made for another tokenizer (fingerprint {m['tokenizer_fingerprint']}, "
                               f"this one {tokenizer_fingerprint(tokenizer)})")
        want, have = m.get("adapter_fingerprint"), adapter_fingerprint(model)
        if want != have:
            said = f"with the LoRA adapter {want} (pass --adapter)" if want else "without an adapter"
            raise HeedfulError(f"{where}: made for {name} {said}; "
                               f"this model has {'adapter ' + have if have else 'no adapter'}")
        if max(self.layers) >= len(decoder_layers(model)):
            raise HeedfulError(f"{where}: reads layer {max(self.layers)}, the model has {len(decoder_layers(model))}")


def suggest(picker: Picker, session, start: int = 0, end: int | None = None) -> list[Suggestion]:
    """Spans of session tokens [start, end) the picker would pin (word-aligned, score >=
    threshold), leaving out tokens already pinned: the API a UI shows as suggestions. Runs
    plain forwards of the session's model over its token ids (no engine state changes)."""
    ids, texts = list(session.token_ids), list(session.token_texts)
    end = len(ids) if end is None else min(end, len(ids))
    ctx = max(0, start - picker.meta["stride"])
    probs = picker.score_ids(session.model, ids[ctx:end])[start - ctx:]
    pinned = set()
    for a, b in session.pins():
        pinned.update(range(a, b))
    out = []
    for s in pick_spans(probs.tolist(), texts[start:end], picker.threshold, start, texts[start - 1] if start else ""):
        run = None  # the span's runs of tokens not pinned yet
        for t in range(s.start, s.end + 1):
            if t < s.end and t not in pinned:
                run = run or [t, t]
                run[1] = t + 1
            elif run:
                out.append(Suggestion(run[0], run[1], s.score))
                run = None
    return out
