"""One rank of a parallel run for tests/cli/test_parallel.py: runs the heedful CLI as
`python -m heedful` does, with two test-only hooks set by the environment.

- HEEDFUL_TEST_FAIL="RANK:STEP:HOW": rank RANK fails at its STEP-th forward, by being killed
  (HOW = kill, SIGKILL: no word, no cleanup) or by raising a HeedfulError (HOW = error).
- HEEDFUL_TEST_REPORT=PATH: each rank writes PATH.RANK (JSON) when its run finishes: the key/value
  heads its cache holds per attention layer, the cache's bytes, the stream's ids.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def _inject(rank: str, step: int, how: str) -> None:
    from heedful.errors import HeedfulError
    from heedful.selector import residency

    if os.environ.get("RANK") != rank:
        return
    original, count = residency.Residency.run, [0]

    def run(self, *args, **kwargs):
        count[0] += 1
        if count[0] == step:
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise HeedfulError(f"injected failure at forward {step}")
        return original(self, *args, **kwargs)

    residency.Residency.run = run


def _report(path: str) -> None:
    from heedful.app import distributed

    original = distributed.Recording.finish

    def finish(self, session):
        layers = session.cache.attention_layers
        with open(f"{path}.{os.environ.get('RANK', '0')}", "w") as f:
            json.dump({"kv_heads": [layer.keys.shape[1] for layer in layers],
                       "allocated_bytes": session.cache.allocated_bytes(), "ids": list(session.token_ids)}, f)
        return original(self, session)

    distributed.Recording.finish = finish


if __name__ == "__main__":
    if spec := os.environ.get("HEEDFUL_TEST_FAIL"):
        r, s, h = spec.split(":")
        _inject(r, int(s), h)
    if report := os.environ.get("HEEDFUL_TEST_REPORT"):
        _report(report)
    from heedful.cli import main

    main(sys.argv[1:])
