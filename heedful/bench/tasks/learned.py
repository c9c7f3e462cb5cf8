"""The learned picker of `heedful bench tasks`, trained as `heedful learn` trains one, on
recorded sessions of *other* task types and other seeds than those it is tested on.

Training sessions: for every task of the run, episodes of training seeds (TRAIN_SEED and
up, never a test seed) at the smallest context of the run, streamed with the scripted
person's pins (the policy "pins" with rows enough for everything) and recorded into a
temporary store, exactly what `heedful chat` or `heedful replay --db` would have logged.
Then, for each task under test, `heedful.learn.fit.learn` (the code behind `heedful learn`)
trains a picker on the sessions of every *other* task (leave one task out: the NIAH
variants over the other haystack are other tasks too), once per task per run (cached in
the run's temporary folder), and the policy "learned" auto-pins with it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

TRAIN_SEED = 10_000  # training episodes' seeds start here; test seeds are below it


def record(lm, episodes: list[dict], db: Path, progress=None) -> dict[str, list[int]]:
    """Streams each episode with the person's pins into a new store; {task: [session ids]}."""
    from heedful.bench.tasks.policies import stream_texts
    from heedful.errors import BudgetError
    from heedful.selector.session import Session
    from heedful.store import Store

    tok = lm.tokenizer
    out: dict[str, list[int]] = {}
    with Store.open(db) as store:
        for ep in episodes:
            pieces, question = stream_texts(ep, tok)
            total = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t, _ in pieces) + 256
            rec = store.new_session(title=f"{ep['task']} seed {ep['seed']}", atomic=True)
            s = Session(lm.model, tok, gated=lm.gated, recorder=rec, model=lm.name, budget=total,
                        window=max(16, total // 2), sinks=0, prefill_chunk=512, temperature=0)
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

    def __init__(self, lm, tasks: list[str], contexts: list[int], seeds: int = 2, progress=None):
        self.lm, self.tasks = lm, tasks
        self.dir = Path(tempfile.mkdtemp(prefix="heedful-bench-tasks-"))
        self.db = self.dir / "train.db"
        self.context = min(contexts)
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
        """The picker that never saw `task` (None when no other task has sessions)."""
        if task in self.cache:
            return self.cache[task]
        if self.sessions is None:
            self._record()
        ids = [i for t, s in self.sessions.items() if t != task for i in s]
        picker = None
        if len(ids) >= 2:
            from heedful.learn.fit import learn
            from heedful.store import Store

            with Store.open(self.db, readonly=True) as store:
                picker, summary = learn(store, self.lm, session_ids=ids, epochs=30, seed=0)
            self.summaries[task] = {"trained_on": sorted(t for t in self.sessions if t != task),
                                    "sessions": len(ids), "held_out_f1": summary["held_out"].get("f1")}
        self.cache[task] = picker
        return picker

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)
