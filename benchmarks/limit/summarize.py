"""results.jsonl -> results.md (one row per case) and spectra.png (one density per setup)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def summarize(results: Path, out: Path) -> None:
    recs, seen = [], set()
    for rec in (json.loads(x) for x in results.read_text().splitlines() if x.strip()):
        if rec["key"] not in seen:  # two workers may both finish a case: keep the first
            seen.add(rec["key"])
            recs.append(rec)
    lines = ["# Predicted vs actual one-shot pruning limit", "",
             "- Command: `nice -n 10 python benchmarks/limit/bench_limit.py` (resumable; cases appended to results.jsonl),"
             " then `python benchmarks/limit/bench_limit.py --summarize`",
             f"- Machine: {recs[0]['machine'] if recs else '?'}; 7 other workers shared it (1-min load average 14-25"
             " during the run), so seconds are wall times under heavy load, not the method's cost on an idle CPU",
             f"- Dates: {min(r['date'] for r in recs)} .. {max(r['date'] for r in recs)}; revisions: "
             f"{', '.join(sorted({r['revision'] for r in recs}))}" if recs else "",
             "- s*: SLQ settings per setup in the table's `SLQ` column (steps x vectors x Hessian samples);"
             " `guard`: the build guard's settings (32 x 2 x 256; the"
             " first cases, before 22:15 UTC, ran the guard's earlier 48 x 2 x 512, shown next to its time);"
             " `zero-mass`: with the zero-curvature correction."
             " actual: largest pruned fraction (0.001 grid) before the test accuracy first falls > 1 point below dense;"
             " All measured, 1 run per case.",
             "",
             "| setup | L1 | seed | train / test | dense acc % | eps | s* | s* zero-mass | s* guard | actual "
             "| s* - actual | SLQ | estimate s | guard s |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in recs:
        st = r["settings"]
        gs = r.get("guard_settings") or ("48x2x512" if r["date"] < "2026-12-06 22:15" else "32x2x256")
        lines.append(
            f"| {r['setup']} | {r['l1']:g} | {r['seed']} | {r['train_samples']} / {r['test_samples']} | "
            f"{r['dense_test_acc']:.2f} | {r['epsilon']:.2g} | {r['s_star']:.3f} | {r['s_star_zero_mass']:.3f} | "
            f"{r['s_star_guard']:.3f} | {r['actual']:.3f} | "
            f"**{r['diff']:+.3f}** | {st['steps']}x{st['vectors']}x{st['samples']} | {r['seconds_estimate']:.1f} | "
            f"{r['seconds_guard_estimate']:.1f} ({gs}) |")
    if recs:
        d = np.array([r["diff"] for r in recs])
        dz = np.array([r["s_star_zero_mass"] - r["actual"] for r in recs])
        dg = np.array([r["s_star_guard"] - r["actual"] for r in recs])
        lines += ["", f"Cases: {len(recs)}. |s* - actual| <= 0.03 in **{int((abs(d) <= 0.03).sum())}/{len(recs)}**, "
                      f"<= 0.05 in {int((abs(d) <= 0.05).sum())}, <= 0.10 in {int((abs(d) <= 0.10).sum())}; "
                      f"mean |diff| {abs(d).mean():.3f}, mean diff {d.mean():+.3f}. "
                      f"Zero-mass variant: mean |diff| {abs(dz).mean():.3f}. Guard settings: mean |diff| {abs(dg).mean():.3f}."]
        by = {}
        for r in recs:
            by.setdefault(r["setup"], []).append(r)
        for name, rs in by.items():
            dd = np.array([r["diff"] for r in rs])
            lines.append(f"- {name}: {len(rs)} cases, within 0.03: {int((abs(dd) <= 0.03).sum())}, mean |diff| "
                         f"{abs(dd).mean():.3f}, estimate {np.median([r['seconds_estimate'] for r in rs]):.0f} s median (wall, loaded)")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plot(recs, out / "spectra.png")


def _plot(recs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setups = sorted({r["setup"] for r in recs})
    if not setups:
        return
    fig, axes = plt.subplots(1, len(setups), figsize=(4.2 * len(setups), 3.3), squeeze=False)
    for ax, name in zip(axes[0], setups):
        for r in [r for r in recs if r["setup"] == name and r["seed"] == 0]:
            th, tau = np.array(r["density"]["nodes"]), np.array(r["density"]["weights"])
            order = np.argsort(th)
            ax.plot(th[order], np.cumsum(tau[order]), drawstyle="steps-post", label=f"L1 {r['l1']:g}")
        ax.set_xscale("symlog", linthresh=1e-4)
        ax.set_xlabel("Hessian eigenvalue")
        ax.set_ylabel("cumulative SLQ mass")
        ax.set_title(f"{name} (seed 0)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize_structured(path: Path, out: Path) -> None:
    """structured.jsonl -> structured.md: s* next to the structured (channel) levels before / after fine-tuning."""
    if not path.is_file():
        return
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    lines = ["# s* vs structured pruning with fine-tuning (digits CNN, the quickstart model)", "",
             "- Command: `nice -n 10 python benchmarks/limit/structured.py`; method `l1` (uniform channel magnitude), "
             "compacted, then the build's fine-tuning (6 epochs, half the lr); test set 359 images; measured, 1 run per seed",
             f"- Dates: {', '.join(r['date'] for r in recs)}; shared 2-core machine (load average ~25)", ""]
    for r in recs:
        dense = r["dense_test_acc"]
        lines += [f"## seed {r['seed']}: dense {dense:.2f} %, s* = {r['s_star_full']:.3f} (96 x 4, all training "
                  f"samples), {r['s_star_guard']:.3f} (guard: 32 x 2 x 256); actual one-shot unstructured limit "
                  f"{r['actual_unstructured']:.3f}", "",
                  "| MACs removed | params removed | acc before fine-tune | drop | acc after fine-tune | drop |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for x in r["levels"]:
            lines.append(f"| {x['macs_removed']:.3f} | {x['params_removed']:.3f} | {x['acc_before_finetune']:.2f} | "
                         f"{dense - x['acc_before_finetune']:+.2f} | {x['acc_after_finetune']:.2f} | "
                         f"{dense - x['acc_after_finetune']:+.2f} |")
        ok_ft = [x["macs_removed"] for x in r["levels"] if dense - x["acc_after_finetune"] <= 1.0]
        ok_1s = [x["macs_removed"] for x in r["levels"] if dense - x["acc_before_finetune"] <= 1.0]
        lines += ["", f"Largest level within 1 point: without fine-tuning "
                      f"{f'{max(ok_1s):.3f}' if ok_1s else 'none (< 0.3)'}, with fine-tuning "
                      f"{f'{max(ok_ft):.3f}' if ok_ft else 'none'}.", ""]
    (out / "structured.md").write_text("\n".join(lines) + "\n")
