"""The peers of `heedful bench tasks`: NVIDIA's kvpress presses, run on the same episodes, the
same model and the same number of retained rows, through kvpress's own pipeline.

kvpress 0.5.5 needs transformers < 5.3, heedful runs on a newer one, so the presses run in an
environment of their own: a virtual environment in the user cache
(`<user cache>/heedful/peers/kvpress-0.5.5`, or $HEEDFUL_CACHE/peers/...), made once by
`heedful bench tasks --peers kvpress` with the base python's venv module and pip: torch
first (the release heedful runs on, so pip takes the CPU wheel this machine has rather than
a CUDA build), then `kvpress==0.5.5 "transformers<5.3"`. It is made under a temporary name
and renamed into place, so a failed set-up leaves nothing. By hand, the same:

    python -m venv ENV && ENV/bin/python -m pip install torch==<heedful's torch> \
        && ENV/bin/python -m pip install kvpress==0.5.5 "transformers<5.3"

The runner (peer_runner.py, executed by that environment's python) reads requests as JSON
lines on stdin and writes answers as JSON lines on stdout; the model is the safetensors
folder heedful loads (for `smollm2`, the folder it converted from the GGUF), so the peers'
environment needs no GGUF reader. Presses (kvpress's names): SnapKV (Li et al., 2024),
StreamingLLM (Xiao et al., 2023), TOVA (Oren et al., 2024), Knorm (Devoto et al., 2024),
ExpectedAttention (kvpress's own). Each keeps `rows` of the context's rows per layer
(compression_ratio = 1 - rows / context tokens); the question is not compressed (the
pipeline appends it after the press), which is the same for heedful: the question streams
in last and is in the window when the answer starts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from heedful.errors import HeedfulError

KVPRESS = "0.5.5"
PRESSES = ["snapkv", "streamingllm", "tova", "knorm", "expected_attention"]
RUNNER = Path(__file__).with_name("peer_runner.py")


class PeerError(HeedfulError):
    """The peers' environment cannot be made or run."""


def env_dir() -> Path:
    base = os.environ.get("HEEDFUL_CACHE")
    if base:
        root = Path(base).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("heedful"))
    return root / "peers" / f"kvpress-{KVPRESS}"


def env_python(folder: Path | None = None) -> Path:
    return (folder or env_dir()) / "bin" / "python"


def base_python() -> str:
    """A python that has the venv module and is not heedful's venv (its own pip index rules apply)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_env(log=None) -> Path:
    """The peers' python, the environment made first if it is not there (atomically)."""
    folder = env_dir()
    if env_python(folder).exists() and (folder / "ready").is_file():
        return env_python(folder)
    import torch

    torch_version = torch.__version__.split("+")[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".kvpress-", dir=folder.parent))
    steps = [[base_python(), "-m", "venv", str(tmp)],
             [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", f"torch=={torch_version}"],
             [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", f"kvpress=={KVPRESS}", "transformers<5.3"]]
    try:
        for cmd in steps:
            if log:
                log(" ".join(cmd[2:] if "pip" in cmd else cmd))
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                lines = [x for x in (r.stderr or r.stdout).splitlines() if x.strip() and "WARNING" not in x]
                raise PeerError(f"--peers kvpress: cannot make its environment ({' '.join(cmd[2:5])}): "
                                f"{(lines[-1] if lines else 'exit ' + str(r.returncode))[:200]}")
        (tmp / "ready").write_text(f"kvpress=={KVPRESS}\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError as e:
        raise PeerError(f"--peers kvpress: cannot make its environment in {folder.parent}: {e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return env_python(folder)


def requests(episodes: list[dict], tokenizer, presses: list[str], rows_of) -> list[dict]:
    """One request per episode, press and row count (rows_of(ep) -> [rows, ...]; the press
    "none" runs the pipeline without a press, once per episode)."""
    from heedful.bench.tasks.policies import chat_texts, template_parts

    out = []
    for k, ep in enumerate(episodes):
        if ep["kind"] == "chat":
            pieces, question = chat_texts(ep, tokenizer)
            ctx = tokenizer("".join(t for t, _ in pieces), add_special_tokens=False)["input_ids"]
            q = tokenizer(question, add_special_tokens=False)["input_ids"]
            body = {"context_ids": ctx, "question_ids": q}
        else:
            template_parts(tokenizer)  # the pipeline wraps the context in the same template
            body = {"context": "".join(p["text"] for p in ep["pieces"]), "question": ep["question"],
                    "answer_prefix": ep["answer_prefix"]}
        for press in ["none"] + presses:
            for rows in ([0] if press == "none" else rows_of(ep)):
                out.append({"id": f"{k}:{press}:{rows}", "episode": k, "press": press, "rows": rows,
                            "max_new": ep["max_new"], **body})
    return out


def run_requests(python: Path | str, model_dir: str, reqs: list[dict], progress=None, runner=None,
                 started=None) -> dict:
    """Runs the requests through the runner in the peers' environment; returns {id: answer}
    ({"answer", "seconds", "tokens"} or {"error"}), and the runner's versions under "_ready".
    A runner that dies or answers garbage is a PeerError (nothing of its output is used).
    started("proc", process): told the runner's process once it runs (to stop it)."""
    cmd = [str(python), str(runner or RUNNER), model_dir]
    with tempfile.TemporaryFile("w+") as fin, tempfile.TemporaryFile("w+") as ferr:
        for r in reqs:
            fin.write(json.dumps({k: v for k, v in r.items() if k != "episode"}) + "\n")
        fin.seek(0)
        try:
            proc = subprocess.Popen(cmd, stdin=fin, stdout=subprocess.PIPE, stderr=ferr, text=True,
                                    env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        except OSError as e:
            raise PeerError(f"--peers kvpress: cannot run {python}: {e}") from None
        if started:
            started("proc", proc)
        answers: dict = {}
        try:
            for line in proc.stdout:
                try:
                    a = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a library's stray print
                if not isinstance(a, dict):
                    continue
                if a.get("ready"):
                    answers["_ready"] = a
                elif "id" in a:
                    answers[a["id"]] = a
                    if progress:
                        progress(1)
        finally:
            rc = proc.wait()
            ferr.seek(0)
            err = ferr.read()
    if rc != 0 or "_ready" not in answers:
        lines = [x for x in err.splitlines() if x.strip()]
        raise PeerError(f"--peers kvpress: the runner failed (exit {rc}): {(lines[-1] if lines else '')[:200]}")
    missing = [r["id"] for r in reqs if r["id"] not in answers]
    if missing:
        raise PeerError(f"--peers kvpress: the runner gave no answer for {len(missing)} requests ({missing[0]}, ...)")
    return answers


def model_folder(lm, model: str | None) -> str:
    """The safetensors folder of the loaded model, for the peers' runner."""
    from heedful.models.named import NAMED, named_folder

    name = model or "smollm2"
    if name in NAMED:
        return str(named_folder(name))
    path = getattr(lm, "path", None) or getattr(lm.model, "name_or_path", None) or name
    if not Path(str(path)).is_dir():
        raise PeerError(f"--peers kvpress: the model {name} has no local folder for the peers' runner")
    return str(path)
