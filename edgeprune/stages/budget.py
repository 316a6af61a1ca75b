"""Stage 7: check the target's budget lines against the artifact the build chose for the target: the
profile's artifact order, with the export's measured ``runtime_choice`` applied (where INT8 was not faster
than fp32 on a runtime, fp32 goes first: the same order the device bundle uses)."""

from __future__ import annotations

import dataclasses

from ..runfolder import read_json, write_json

name = "budget"
BUDGET_DIR = "budget"


def target_file(b) -> str:
    return f"{BUDGET_DIR}/{b.target.name}.json"


def depends(b):
    from .bench import target_fingerprint

    return [target_fingerprint(b.target), b.cfg["budget"], b.cfg["export"]["int8_tolerance"]]


def describe(b):
    return f"target {b.target.name}"


def effective_budget(b):
    over = {k: v for k, v in b.cfg["budget"].items() if v is not None}
    return dataclasses.replace(b.target.budget, **over)


def choose_artifact(target, artifacts: dict, runtime_choice: dict | None = None) -> str | None:
    """The target's most preferred artifact that exported, in the order the export's ``runtime_choice``
    leaves (fp32 ahead of an INT8 that was slower); an INT8 artifact over its accuracy tolerance is still
    chosen (the budget then fails on ``int8_accuracy_drop``), never silently swapped for fp32."""
    from ..export.speedcheck import artifact_order

    for fmt in artifact_order(list(target.artifacts), runtime_choice):
        art = artifacts.get(fmt)
        if art and art.get("ok"):
            return fmt
    ok = [f for f, a in artifacts.items() if a.get("ok")]
    return ok[0] if ok else None


def dense_metric(train: dict, art: dict) -> tuple[float | None, str | None]:
    """(dense metric, why not) for the accuracy line: only when the artifact's metric is the dense model's."""
    a, d = art.get("metric_name"), train.get("metric_name")
    if d is not None and a != d:
        return None, (f"the artifact's metric ({a}) is not the dense model's ({d}): the drop cannot be "
                      "computed; rebuild so both use one metric")
    return train["test_metric"], None


def evidence(b, fmt: str, exp: dict, bench: dict) -> dict:
    """All latency/memory evidence for the artifact; check_budget ranks device > predicted > host."""
    from ..bench.budget import evidence_from

    art = exp["artifacts"][fmt]
    entry = bench["artifacts"].get(fmt, {})
    measured = [entry[k] for k in ("device", "host") if k in entry]
    train = read_json(b.run / "train.json")
    dense, why = dense_metric(train, art)
    ev = evidence_from(
        measured=measured, prediction=entry.get("predicted"), size_mb=art["size_bytes"] / 2**20,
        metric=art["metric"], dense_metric=dense, metric_name=art["metric_name"],
        macs=read_json(b.run / "compact.json")["macs"], dense_macs=train["cost"]["macs"], artifact=fmt,
    )
    if why:
        ev["metric_mismatch"] = why
    if fmt.endswith("int8"):
        ev["int8"] = {"metric_drop": art.get("metric_drop"), "tolerance": b.cfg["export"]["int8_tolerance"],
                      "within_tolerance": art.get("within_tolerance"),
                      "calib_samples": b.cfg["export"]["calib_samples"]}
    return ev


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _mark(passed) -> str:
    return {True: "[green]pass[/]", False: "[red]FAIL[/]"}.get(passed, "[yellow]n/a[/]")


def run(b) -> list[str]:
    from ..bench.budget import check_budget

    exp = read_json(b.run / "export.json")
    bench = read_json(b.run / f"bench/{b.target.name}.json")
    fmt = choose_artifact(b.target, exp["artifacts"], exp.get("runtime_choice"))
    target = dataclasses.replace(b.target, budget=effective_budget(b))
    if fmt is None:
        verdict = {"passed": False, "artifact": None, "lines": [], "reason": "no artifact exported successfully"}
    else:
        ev = evidence(b, fmt, exp, bench)
        verdict = check_budget(target, ev)
        verdict["artifact"] = fmt
        verdict["evidence"] = ev
        why = (exp.get("runtime_choice") or {}).get("tflite" if fmt.startswith("tflite") else "onnxruntime")
        if why and fmt != b.target.artifacts[0]:
            verdict["artifact_reason"] = why.get("reason")
    verdict["target"] = b.target.name
    write_json(b.run / target_file(b), verdict)
    b.outcome[name] = verdict
    for line in verdict.get("lines", []):
        src = f" ({line['source']}{' on ' + line['where'] if line.get('where') else ''})" if line.get("source") else ""
        b.ui.log(f"  {_mark(line['passed'])} {line['name']}: {_num(line.get('value'))} vs budget "
                 f"{_num(line.get('budget'))}{src}" + (f" — {line['advice']}" if not line["passed"] and line.get("advice") else ""))
    b.ui.log(f"  budget on {b.target.name}: {'PASSED' if verdict['passed'] else 'FAILED'} (artifact {fmt})")
    return [target_file(b)]
