"""Tables, the summary and the plot of `heedful bench tasks`."""

from __future__ import annotations

import os
from collections import defaultdict


def frac_label(f: tuple[int, int]) -> str:
    return f"{f[0]}/{f[1]}"


def ctx_label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def accuracy(results: list[dict]) -> dict:
    """{task: {policy: {"CTX FRAC": mean score}}}; full attention and the pipeline without a
    press (rows None) fill every fraction of their context."""
    fracs = sorted({(r["context"], r["fraction"]) for r in results if r.get("fraction")},
                   key=lambda cf: (cf[0], cf[1][0] / cf[1][1]))
    sums: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        cols = [f"{ctx_label(c)} {frac_label(f)}" for c, f in fracs if c == r["context"]] \
            if r.get("fraction") is None else [f"{ctx_label(r['context'])} {frac_label(r['fraction'])}"]
        for col in cols:
            sums[r["task"]][r["policy"]][col].append(r["score"])
    return {t: {p: {c: sum(v) / len(v) for c, v in cols.items()} for p, cols in ps.items()} for t, ps in sums.items()}


def columns(results: list[dict]) -> list[str]:
    fracs = sorted({(r["context"], r["fraction"]) for r in results if r.get("fraction")},
                   key=lambda cf: (cf[0], cf[1][0] / cf[1][1]))
    return [f"{ctx_label(c)} {frac_label(f)}" for c, f in fracs]


def tables(results: list[dict], policies: list[str]) -> list[str]:
    acc = accuracy(results)
    cols = columns(results)
    lines = []
    counts = defaultdict(set)
    for r in results:
        counts[r["task"]].add((r["context"], r["seed"]))
    for task in sorted(acc, key=lambda t: list(acc).index(t)):
        lines.append(f"\n{task}: accuracy by policy, context and KV rows (fraction of the context), "
                     f"{len(counts[task])} episodes")
        width = max(22, *(len(p) + 2 for p in acc[task]))
        lines.append(f"{'policy':<{width}}" + "".join(f"{c:>10}" for c in cols))
        order = [p for p in policies if p in acc[task]] + sorted(p for p in acc[task] if p not in policies)
        for p in order:
            lines.append(f"{p:<{width}}" + "".join(
                f"{acc[task][p][c]:>10.2f}" if c in acc[task][p] else f"{'-':>10}" for c in cols))
    return lines


def mean_by_budget(results: list[dict]) -> dict:
    """{policy: {"CTX FRAC": mean over tasks of the task means}}."""
    acc = accuracy(results)
    out: dict = defaultdict(lambda: defaultdict(list))
    for ps in acc.values():
        for p, cols in ps.items():
            for c, v in cols.items():
                out[p][c].append(v)
    return {p: {c: round(sum(v) / len(v), 4) for c, v in cols.items()} for p, cols in out.items()}


def plot(results: list[dict], path: str, title: str) -> None:
    """Accuracy against budget (mean over tasks), one line per policy, peers dashed, one
    panel per context; written under a temporary name and moved into place."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = mean_by_budget(results)
    contexts = sorted({r["context"] for r in results})
    fig, axes = plt.subplots(1, len(contexts), figsize=(5.5 * len(contexts), 4.4), squeeze=False)
    for ax, ctx in zip(axes[0], contexts):
        fr = sorted({r["fraction"] for r in results if r.get("fraction") and r["context"] == ctx},
                    key=lambda f: f[0] / f[1])
        xs = [f[0] / f[1] for f in fr]
        shown = [p for p, cols in acc.items() if all(f"{ctx_label(ctx)} {frac_label(f)}" in cols for f in fr)]
        for k, p in enumerate(shown):
            ys = [acc[p][f"{ctx_label(ctx)} {frac_label(f)}"] for f in fr]
            peer = p.startswith("kvpress")
            if p in ("full", "kvpress:none"):  # no budget: a level line
                ax.axhline(ys[0], color="black" if p == "full" else "grey", linestyle=":" if peer else "-.",
                           linewidth=1.2, label=p)
                continue
            jitter = 2 ** (0.06 * (k - len(shown) / 2))  # points that coincide stay visible
            ax.plot([x * jitter for x in xs], ys, marker="s" if peer else "o", label=p,
                    linestyle="--" if peer else "-", linewidth=1.1 if peer else 1.8)
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
        ax.minorticks_off()
        ax.set_xticks(xs, [frac_label(f) for f in fr])
        ax.set_title(f"context {ctx_label(ctx)} tokens")
        ax.set_xlabel("KV rows per layer (fraction of the context)")
        ax.set_ylabel("accuracy (mean over tasks)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
