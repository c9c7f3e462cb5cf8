"""The learned picker of `heedful bench tasks`, trained as `heedful learn` trains one, on
recorded sessions of *other* task types and other seeds than those it is tested on.

Training sessions: for every task of the suite (whatever the run measures), episodes of
training seeds (TRAIN_SEED and up, never a test seed) at TRAIN_CONTEXT tokens, streamed with
the scripted person's pins (rows enough for everything) and recorded into a temporary store,
exactly what `heedful chat` or `heedful replay --db` would have logged. Then, for each task
type under test, `heedful.learn.fit.learn` (the code behind `heedful learn`, its defaults)
trains a picker on the sessions of every *other* task type: leave one task type out, both
haystacks of a NIAH variant left out together (niah_single-noise and niah_single-prose are
one type). One picker per type per run, kept in memory; the store is the run's temporary
folder, removed at the end.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

TRAIN_SEED = 10_000  # training episodes' seeds start here; test seeds are below it
TRAIN_CONTEXT = 512


def task_type(task: str) -> str:
    return task.split("-")[0]


def record(lm, episodes: list[dict], db: Path, progress=None) -> dict[str, list[int]]:
    """Streams each episode with the person's pins into a new store; {task: [session ids]}."""
    from heedful.bench.tasks.policies import max_positions, stream_texts
    from heedful.errors import BudgetError
    from heedful.selector.config import SessionConfig
    from heedful.selector.session import Session
    from heedful.store import Store

    tok = lm.tokenizer
    out: dict[str, list[int]] = {}
    with Store.open(db) as store:
        for ep in episodes:
            pieces, question = stream_texts(ep, tok)
            total = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t, _ in pieces) + 64
            total = min(total, max_positions(lm.model) or total)
            rec = store.new_session(title=f"{ep['task']} seed {ep['seed']}", atomic=True)
            cfg = SessionConfig(model=lm.name, budget=total, window=max(16, total // 2), sinks=0, prefill_chunk=512,
                                temperature=0)
            s = Session(lm.model, tok, gated=lm.gated, recorder=rec, config=cfg)
            for text, pins in pieces:
                try:
                    s.prompt(text, pin=pins)
                except BudgetError:
                    s.prompt(text)
            s.prompt(question)
            rec.close()
            sid = rec.commit(store)
            out.setdefault(ep["task"], []).append(sid)
            if progress:
                progress(1)
    return out


class Pickers:
    """One picker per task under test, trained on the other tasks' recorded sessions."""

    def __init__(self, lm, seeds: int = 1, context: int = TRAIN_CONTEXT, progress=None):
        from heedful.bench.tasks.tasks import TASKS

        self.lm, self.tasks = lm, TASKS
        self.dir = Path(tempfile.mkdtemp(prefix="heedful-bench-tasks-"))
        self.db = self.dir / "train.db"
        self.context = context
        self.seeds = seeds
        self.progress = progress
        self.sessions: dict[str, list[int]] | None = None
        self.cache: dict[str, object] = {}
        self.summaries: dict[str, dict] = {}

    def _record(self) -> None:
        from heedful.bench.tasks.tasks import Counter, episode

        count = Counter(self.lm.tokenizer)
        eps = [episode(t, TRAIN_SEED + k, self.context, self.lm.tokenizer, count)
               for t in self.tasks for k in range(self.seeds)]
        bar = self.progress("recording", len(eps)) if self.progress else None
        self.sessions = record(self.lm, eps, self.db, bar)

    def for_task(self, task: str):
        """The picker that never saw `task`'s type (None when no other type has sessions)."""
        kind = task_type(task)
        if kind in self.cache:
            return self.cache[kind]
        if self.sessions is None:
            self._record()
        others = sorted(t for t in self.sessions if task_type(t) != kind)
        ids = [i for t in others for i in self.sessions[t]]
        picker = None
        if len(ids) >= 2:
            from heedful.learn.fit import learn
            from heedful.store import Store

            with Store.open(self.db, readonly=True) as store:
                picker, summary = learn(store, self.lm, session_ids=ids, epochs=30, seed=0,
                                        progress=self.progress)
            self.summaries[kind] = {"trained_on": others, "sessions": len(ids),
                                    "held_out_f1": summary["held_out"].get("f1"),
                                    "seconds": summary["seconds"]["total"]}
        self.cache[kind] = picker
        return picker

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)
