"""Turn the show-run's search.json (+ run_info.txt) into results.md: one row per search round.

Usage: python benchmarks/budget/summarize.py [SUFFIX [RUN_DIR]]
  SUFFIX: which show-run's files (search-3.json / run_info-3.txt for "-3"; "" for search.json)
  RUN_DIR: the run folder, for the final artifacts' bench record
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _f(x, spec=".3g"):
    return "n/a" if x is None else format(x, spec)


def main(suffix: str = "", run_dir: str | None = None) -> None:
    s = json.loads((HERE / f"search{suffix}.json").read_text())
    ri = HERE / f"run_info{suffix}.txt"
    info = ri.read_text() if ri.is_file() else ""
    d = s.get("derivation") or {}
    out = ["# build --search on Fashion-MNIST (rpi4, p50 budget tightened to 0.8 ms)", "",
           "```", info.strip(), "```", "",
           f"Derived before training (cost model): keep {_f(d.get('flops_keep'), '.0%')} of MACs for "
           f"{d.get('artifact')}, predicted {_f((d.get('predicted') or {}).get('latency_ms'))} ms; dense predicted "
           f"{_f((d.get('dense') or {}).get('latency_ms'))} ms (fixed overhead {_f((d.get('dense') or {}).get('overhead_ms'))} ms).",
           "", f"Objective: {s['objective']}; at most {s['max_rounds']} rounds.", "",
           "| round | target MACs | achieved MACs | artifact | predicted p50 on rpi4 (ms) | host p50 (ms, measured) | "
           "accuracy | verdict | decision |", "|---:|---:|---:|---|---:|---:|---:|---|---|"]
    for r in s["rounds"]:
        out.append(f"| {r['round']} | {r['target_keep']:.0%} | {r['achieved_keep']:.1%} | {r['artifact']} | "
                   f"{_f(r['predicted_ms'])} | {_f(r['host_ms'])} | {_f(r['metric'], '.2f')} (dense "
                   f"{_f(r['dense_metric'], '.2f')}) | {'pass' if r['passed'] else 'FAIL ' + ', '.join(r['failed'])} | "
                   f"{r.get('decision', '')} |")
    v = s.get("verdict") or {}
    out += ["", f"Verdict: **{v.get('status')}** — {v.get('sentence')} (chosen round {v.get('chosen_round')}, "
            f"{v.get('rounds_run')} round(s), {v.get('seconds')} s on a shared machine)."]
    if run_dir:
        bench = json.loads((Path(run_dir) / "bench" / "rpi4.json").read_text())
        out += ["", "Final artifacts (host: measured on the build machine, 1 thread, batch 1; rpi4: predicted by the "
                "cost model, unvalidated on a real board):", "",
                "| artifact | host p50 ms (measured) | rpi4 p50 ms (predicted) |", "|---|---:|---:|"]
        for fmt, e in bench["artifacts"].items():
            out.append(f"| {fmt} | {_f((e.get('host') or {}).get('p50_ms'))} | "
                       f"{_f((e.get('predicted') or {}).get('latency_ms'))} |")
    dst = HERE / f"results{suffix}.md"
    dst.write_text("\n".join(out) + "\n")
    print(dst.read_text())


if __name__ == "__main__":
    main(*sys.argv[1:3])
