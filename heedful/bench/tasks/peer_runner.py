"""The peers' runner: executed by the python of the peers' own environment (kvpress and the
transformers it needs; see peers.py), never imported by heedful. It imports nothing of
heedful.

    python peer_runner.py MODEL_DIR < requests.jsonl > answers.jsonl

A request: {"id", "press", "rows", "max_new"} and either "context", "question",
"answer_prefix" (text: through kvpress's pipeline, `pipe(context, question=..., answer_prefix=...,
press=...)`, which wraps the context in the chat template and compresses it at prefill) or
"context_ids", "question_ids" (a conversation already rendered by the chat template: the
pipeline's own `_forward`, the same prefill-then-greedy path, on those ids). The press keeps
`rows` of the context's rows: compression_ratio = 1 - rows / context length. An answer:
{"id", "answer", "seconds", "tokens", "context_tokens"}; a request that fails:
{"id", "error"}. The first line written is {"ready": true, "kvpress": VERSION,
"transformers": VERSION} once the model is loaded.
"""

import json
import sys
import time


def make_press(name, ratio):
    import kvpress

    if name == "none" or ratio <= 0:
        return None
    if name == "snapkv":
        return kvpress.SnapKVPress(compression_ratio=ratio)
    if name == "streamingllm":
        return kvpress.StreamingLLMPress(compression_ratio=ratio, n_sink=4)
    if name == "tova":
        return kvpress.TOVAPress(compression_ratio=ratio)
    if name == "knorm":
        return kvpress.KnormPress(compression_ratio=ratio)
    if name == "expected_attention":
        return kvpress.ExpectedAttentionPress(compression_ratio=ratio)
    if name == "pyramidkv":
        return kvpress.PyramidKVPress(compression_ratio=ratio)
    raise ValueError(f"unknown press {name}")


def main():
    import importlib.metadata

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    import kvpress  # noqa: F401  (registers the pipeline)

    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    folder = sys.argv[1]
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    pipe = pipeline("kv-press-text-generation", model=model, tokenizer=tok, device="cpu")
    out = sys.stdout
    out.write(json.dumps({"ready": True, "kvpress": importlib.metadata.version("kvpress"),
                          "transformers": importlib.metadata.version("transformers")}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            t0 = time.perf_counter()
            with torch.inference_mode():
                if "context_ids" in req:
                    n_ctx = len(req["context_ids"])
                    press = make_press(req["press"], 1 - req["rows"] / n_ctx)
                    tensors = {"context_ids": torch.tensor([req["context_ids"]]),
                               "questions_ids": [torch.tensor([req["question_ids"]])]}
                    answer = pipe._forward(tensors, max_new_tokens=req["max_new"], press=press)[0]
                else:
                    pre = pipe.preprocess(req["context"], [req["question"]], req["answer_prefix"], 10**9)
                    n_ctx = pre["context_ids"].shape[1]
                    press = make_press(req["press"], 1 - req["rows"] / n_ctx)
                    answer = pipe(req["context"], question=req["question"], answer_prefix=req["answer_prefix"],
                                  press=press, max_new_tokens=req["max_new"])["answer"]
            res = {"id": req["id"], "answer": answer, "seconds": time.perf_counter() - t0,
                   "tokens": req["max_new"], "context_tokens": n_ctx}
        except Exception as e:  # one request's failure is its answer; the others go on
            res = {"id": req["id"], "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
        out.write(json.dumps(res) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
