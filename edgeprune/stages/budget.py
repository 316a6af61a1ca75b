"""Stage 7: check the target's budget lines against the best artifact for the target."""

from __future__ import annotations

import dataclasses

from ..runfolder import read_json, write_json

name = "budget"
BUDGET_DIR = "budget"


def target_file(b) -> str:
    return f"{BUDGET_DIR}/{b.target.name}.json"


def depends(b):
    return [b.target.name, b.cfg["budget"]]


def describe(b):
    return f"target {b.target.name}"


def effective_budget(b):
    over = {k: v for k, v in b.cfg["budget"].items() if v is not None}
    return dataclasses.replace(b.target.budget, **over)


def choose_artifact(target, artifacts: dict) -> str | None:
    """The target's most preferred artifact that exported and passed parity."""
    for fmt in target.artifacts:
        art = artifacts.get(fmt)
        if art and art.get("ok") and art.get("within_tolerance", True):
            return fmt
    ok = [f for f, a in artifacts.items() if a.get("ok")]
    return ok[0] if ok else None


def evidence(b, fmt: str, exp: dict, bench: dict) -> dict:
    """All latency/memory evidence for the artifact; check_budget ranks device > predicted > host."""
    from ..bench.budget import evidence_from

    art = exp["artifacts"][fmt]
    entry = bench["artifacts"].get(fmt, {})
    measured = [entry[k] for k in ("device", "host") if k in entry]
    train = read_json(b.run / "train.json")
    return evidence_from(
        measured=measured, prediction=entry.get("predicted"), size_mb=art["size_bytes"] / 2**20,
        metric=art["metric"], dense_metric=train["test_metric"], metric_name=art["metric_name"],
        macs=read_json(b.run / "compact.json")["macs"], dense_macs=train["cost"]["macs"], artifact=fmt,
    )


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def run(b) -> list[str]:
    from ..bench.budget import check_budget

    exp = read_json(b.run / "export.json")
    bench = read_json(b.run / f"bench/{b.target.name}.json")
    fmt = choose_artifact(b.target, exp["artifacts"])
    target = dataclasses.replace(b.target, budget=effective_budget(b))
    if fmt is None:
        verdict = {"passed": False, "artifact": None, "lines": [], "reason": "no artifact exported successfully"}
    else:
        ev = evidence(b, fmt, exp, bench)
        verdict = check_budget(target, ev)
        verdict["artifact"] = fmt
        verdict["evidence"] = ev
    verdict["target"] = b.target.name
    write_json(b.run / target_file(b), verdict)
    b.outcome[name] = verdict
    for line in verdict.get("lines", []):
        mark = "[green]pass[/]" if line["passed"] else "[red]FAIL[/]"
        b.ui.log(f"  {mark} {line['name']}: {_num(line.get('value'))} vs budget {_num(line.get('budget'))}"
                 + (f" ({line['source']})" if line.get("source") else "")
                 + (f" — {line['advice']}" if not line["passed"] and line.get("advice") else ""))
    b.ui.log(f"  budget on {b.target.name}: {'PASSED' if verdict['passed'] else 'FAILED'} (artifact {fmt})")
    return [target_file(b)]
