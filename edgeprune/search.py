"""``edgeprune build --search``: a closed loop from the device budget to the least (or most) pruning that passes.

Round 1 is an ordinary build at the pruning target derived from the budget (:mod:`edgeprune.bench.planning`).
After it, the budget stage's verdict decides:

* a latency / memory / size line fails -> the next round keeps fewer MACs: the cost model's split of the
  chosen artifact's latency into fixed per-op overhead and a part that scales with MACs says how many
  (``next = achieved x (budget x AIM / value - fixed) / (1 - fixed)``); when the fixed part alone exceeds the
  budget the verdict is **out of reach** (exit 5);
* the accuracy line fails -> while the cost lines leave room (the round landed under the budget), the next
  round prunes less, up to ``LOOSEN_AIM`` of the tightest cost line (:func:`looser_keep`); without room,
  objective ``least-pruning`` ends **out of reach** (the accuracy floor breaks before the budget is met; the
  guard's pruning-limit estimate s* is named when it ran); objective ``fastest`` keeps the last passing round;
* everything passes -> ``least-pruning`` stops (one round when the first one meets the budget); ``fastest``
  prunes further (``FASTEST_STEP`` of the achieved MACs, or halfway to a round that broke the accuracy
  budget) until accuracy breaks, the bracket is under ``BRACKET`` or ``KEEP_MIN`` is reached.

Each round reruns prune .. package in the same run folder (train and the pruning-limit estimate are reused:
their fingerprints do not change). At most ``search.rounds`` rounds; when the answer is not the last round,
it is rebuilt once more so the run folder holds the chosen artifacts. ``search.json`` records every round
(target, achieved MACs, predicted and host-measured latency, accuracy, verdict); the report shows them.
"""

from __future__ import annotations

import copy
import time

from .bench.planning import AIM, KEEP_MIN, objective_of
from .runfolder import read_json, write_json

SEARCH_FILE = "search.json"
#: objective fastest: the next round keeps this fraction of the MACs the last passing round kept
FASTEST_STEP = 0.6
#: objective fastest: stop bisecting once a passing and a failing round are this close (fraction of MACs)
BRACKET = 0.05
#: accuracy failed with room left under the cost lines: the next round aims at this fraction of them
LOOSEN_AIM = 0.97
#: ... and is tried only when it keeps at least this much more of the MACs
MIN_STEP = 0.03
COST_LINES = ("latency_p50_ms", "latency_p90_ms", "peak_memory_mb", "model_size_mb", "flops_keep")
ACCURACY_LINES = ("max_accuracy_drop", "int8_accuracy_drop")


def round_record(b, i: int, keep: float, seconds: float) -> dict:
    """What one round built and how it did (from the run folder's records)."""
    run, tname = b.run.path, b.target.name
    train, compact = read_json(run / "train.json"), read_json(run / "compact.json")
    fin = read_json(run / "finetune.json")
    verdict = read_json(run / "budget" / f"{tname}.json")
    bench = read_json(run / "bench" / f"{tname}.json")
    art = verdict.get("artifact")
    entry = bench["artifacts"].get(art or "", {})
    pred, host = entry.get("predicted") or {}, entry.get("host") or {}
    lines = verdict.get("lines", [])
    failed = [ln["name"] for ln in lines if ln["passed"] is False]
    return {
        "round": i, "target_keep": keep, "achieved_keep": compact["macs"] / train["cost"]["macs"],
        "macs": compact["macs"], "artifact": art,
        "predicted_ms": pred.get("latency_ms"), "predicted_overhead_ms": pred.get("overhead_ms"),
        "host_ms": host.get("p50_ms"), "host_where": host.get("machine"),
        "metric": fin.get("test_metric"), "dense_metric": train.get("test_metric"),
        "metric_name": train.get("metric_name"),
        "passed": bool(verdict.get("passed")), "failed": failed,
        "lines": [{k: ln.get(k) for k in ("name", "value", "budget", "source", "passed")} for ln in lines],
        "seconds": round(seconds, 1),
    }


def _line(rec: dict, name: str) -> dict | None:
    return next((ln for ln in rec["lines"] if ln["name"] == name), None)


def tighter_keep(rec: dict) -> tuple[float | None, str]:
    """The next round's target when a cost line failed, or (None, why it is out of reach)."""
    achieved, nxt, why = rec["achieved_keep"], [], ""
    total, fixed = rec.get("predicted_ms"), rec.get("predicted_overhead_ms") or 0.0
    frac = fixed / total if total else 0.0
    for name in (n for n in rec["failed"] if n in COST_LINES):
        ln = _line(rec, name)
        if ln is None or not ln.get("value") or not ln.get("budget"):
            continue
        want = ln["budget"] * AIM / ln["value"]
        if name.startswith("latency"):
            if frac >= want:
                return None, (f"the runtime's fixed per-operator overhead ({fixed:.3g} ms predicted for {rec['artifact']}) "
                              f"already takes {frac:.0%} of the {ln['value']:.3g} ms, more than the budget "
                              f"{ln['budget']:.3g} ms leaves: pruning channels cannot meet {name}")
            nxt.append(achieved * (want - frac) / (1 - frac))
        elif name == "flops_keep":
            nxt.append(ln["budget"])
        else:
            nxt.append(achieved * want)
    if not nxt:
        return None, "no cost line to tighten"
    k = min(min(nxt), achieved * 0.9)  # always some progress
    if k < KEEP_MIN:
        return None, (f"meeting {', '.join(rec['failed'])} would need keeping {k:.1%} of the MACs, below the "
                      f"{KEEP_MIN:.0%} floor")
    return round(k, 4), why


def looser_keep(rec: dict) -> float | None:
    """When accuracy failed but every cost line passed with room to spare: the most MACs the cost lines still
    allow (their value scaled to ``LOOSEN_AIM`` of the budget, with the same fixed/scalable latency split);
    None when that is not at least ``MIN_STEP`` more than the round kept."""
    achieved = rec["achieved_keep"]
    total, fixed = rec.get("predicted_ms"), rec.get("predicted_overhead_ms") or 0.0
    frac = fixed / total if total else 0.0
    ks = [1.0]
    for ln in rec["lines"]:
        if ln["name"] not in COST_LINES or not ln.get("value") or not ln.get("budget"):
            continue
        if ln["name"] == "flops_keep":
            ks.append(ln["budget"])
            continue
        want = ln["budget"] * LOOSEN_AIM / ln["value"]
        ks.append(achieved * (want - frac) / (1 - frac) if ln["name"].startswith("latency") else achieved * want)
    k = min(ks)
    if k < achieved + MIN_STEP:
        return None
    # the method lands at `achieved` when asked `target_keep` (width rounding): ask in the same proportion
    return round(min(1.0, k * rec["target_keep"] / achieved), 4) if achieved else None


def _acc_failed(r: dict) -> bool:
    return any(n in ACCURACY_LINES for n in r["failed"])


def bracketed(recs: list, k: float) -> bool:
    """Would a target of ``k`` prune at least as hard as a round whose accuracy already failed?"""
    return any(_acc_failed(r) and r["target_keep"] >= k - 0.005 for r in recs[:-1])


def bracket_reason(b, recs: list, rec: dict) -> str:
    lo = max((r for r in recs if _acc_failed(r)), key=lambda r: r["achieved_keep"])
    s = _s_star(b)
    lim = f"; the predicted one-shot pruning limit is s* = {s:.2f}" if s is not None else ""
    return (f"no pruning level this method reaches meets both: at {lo['achieved_keep']:.0%} of the MACs "
            f"(round {lo['round']}) the accuracy budget breaks, at {rec['achieved_keep']:.0%} (round {rec['round']}) "
            f"{', '.join(rec['failed'])} fails{lim}; fine-tune longer, use a finer width multiple or another method, "
            "a smaller dense model, a faster target or a looser budget")


def _s_star(b) -> float | None:
    p = b.run.path / "limit.json"
    return read_json(p).get("s_star") if p.is_file() else None


def accuracy_floor_reason(b, rec: dict) -> str:
    line = _line(rec, "max_accuracy_drop") or {}
    drop = line.get("value") if line.get("value") is not None else (rec["dense_metric"] or 0) - (rec["metric"] or 0)
    s = _s_star(b)
    lim = (f"; the predicted one-shot pruning limit of this dense model is s* = {s:.2f} (keep >= {1 - s:.0%})"
           if s is not None else "")
    return (f"the accuracy floor breaks first: at {rec['achieved_keep']:.0%} of the MACs the {rec['metric_name']} "
            f"drops {drop:.2f} points ({', '.join(rec['failed'])} failed) and pruning less does not meet the cost lines "
            f"(no room left, or a looser round already failed){lim}; fine-tune longer, use a smaller dense model, a "
            "faster target or a looser budget")


def decide(obj: str, recs: list, b, cost_keep: float) -> tuple[str, float | None, str]:
    """(action, next target, sentence): action is 'next', 'done', 'out-of-reach'."""
    rec = recs[-1]
    acc_fail = any(n in ACCURACY_LINES for n in rec["failed"])
    cost_fail = any(n in COST_LINES for n in rec["failed"])
    best = [r for r in recs if r["passed"]]
    if obj == "least-pruning":
        if rec["passed"]:
            return "done", None, f"round {rec['round']} meets the budget (least pruning found: {rec['achieved_keep']:.0%} of MACs)"
        if acc_fail and not cost_fail:
            k = looser_keep(rec)
            tried = [r for r in recs[:-1] if r["achieved_keep"] > rec["achieved_keep"] and not r["passed"]]
            if k is not None and not tried:
                return "next", k, (f"{', '.join(rec['failed'])} failed with room left under the cost lines: next "
                                   f"round prunes less, keeping {k:.0%} of MACs")
        if acc_fail:
            return "out-of-reach", None, accuracy_floor_reason(b, rec)
        k, why = tighter_keep(rec)
        if k and bracketed(recs, k):
            return "out-of-reach", None, bracket_reason(b, recs, rec)
        return ("next", k, f"{', '.join(rec['failed'])} failed: next round keeps {k:.0%} of MACs") if k else \
            ("out-of-reach", None, why)
    # fastest
    if rec["passed"]:
        below = [r["achieved_keep"] for r in recs if not r["passed"] and r["achieved_keep"] < rec["achieved_keep"]
                 and any(n in ACCURACY_LINES for n in r["failed"])]
        if below:  # bracketed between a passing and an accuracy-failing round: bisect
            lo = max(below)
            if rec["achieved_keep"] - lo < BRACKET:
                return "done", None, (f"round {rec['round']} passes at {rec['achieved_keep']:.0%} of MACs and "
                                      f"{lo:.0%} broke the accuracy budget: the fastest passing round is {rec['round']}")
            k = round((rec["achieved_keep"] + lo) / 2, 4)
            return "next", k, (f"round {rec['round']} passes; {lo:.0%} broke the accuracy budget: next round "
                               f"keeps {k:.0%} of MACs (bisection)")
        k = round(rec["achieved_keep"] * FASTEST_STEP, 4)
        if k < KEEP_MIN:
            return "done", None, f"round {rec['round']} passes at {rec['achieved_keep']:.0%} of MACs; the {KEEP_MIN:.0%} floor stops the search"
        return "next", k, f"round {rec['round']} passes: next round prunes further, keeping {k:.0%} of MACs"
    if acc_fail and best:
        return "done", None, (f"round {rec['round']} breaks the accuracy budget: the fastest passing round is "
                              f"{best[-1]['round']} ({best[-1]['achieved_keep']:.0%} of MACs)")
    if acc_fail:
        if rec["target_keep"] >= cost_keep - 1e-6:
            k = None if cost_fail else looser_keep(rec)
            if k is None or any(r["achieved_keep"] >= k - 1e-6 for r in recs[:-1]):
                return "out-of-reach", None, accuracy_floor_reason(b, rec)
            return "next", k, f"accuracy failed with room left under the cost lines: next round keeps {k:.0%} of MACs"
        k = round((rec["target_keep"] + cost_keep) / 2, 4)
        return "next", k, f"accuracy failed before any round passed: next round prunes less, keeping {k:.0%} of MACs"
    if cost_fail:
        k, why = tighter_keep(rec)
        return ("next", k, f"{', '.join(rec['failed'])} failed: next round keeps {k:.0%} of MACs") if k else \
            ("out-of-reach", None, why)
    return "done", None, f"round {rec['round']}: lines without evidence ({', '.join(rec['failed'])})"


def build_search(cfg: dict, run_dir=None, *, ui, force: bool = False, via_api: bool = False):
    """Rounds of :func:`edgeprune.pipeline.build` until the budget verdict settles; returns (exit code, build).
    ``via_api``: called from ``edgeprune.build(search=True)`` (messages name its arguments)."""
    from .pipeline import EXIT_BUDGET_FAILED, EXIT_OK, EXIT_OUT_OF_REACH, build

    cfg = copy.deepcopy(cfg)
    max_rounds = cfg["search"]["rounds"]
    t0 = time.perf_counter()
    code, b = build(cfg, run_dir, ui=ui, force=force, via_api=via_api)  # round 1: the derived (or given) target
    obj, target = objective_of(b), b.pruning_target
    cost_keep = min(target.keeps.values(), default=1.0) if target.keeps else target.flops_keep
    state = {"objective": obj, "max_rounds": max_rounds, "target": b.target.name,
             "derivation": target.to_dict(), "rounds": [], "verdict": None}
    recs = state["rounds"]
    keep = b.flops_keep
    recs.append(round_record(b, 1, keep, time.perf_counter() - t0))
    while True:
        action, nxt, sentence = decide(obj, recs, b, cost_keep)
        recs[-1]["decision"] = sentence
        ui.log(f"[bold]search round {recs[-1]['round']}/{max_rounds}[/]: {_round_line(recs[-1])}; {sentence}")
        write_json(b.run / SEARCH_FILE, state)
        if action != "next" or len(recs) >= max_rounds:
            break
        if nxt is not None and any(abs(r["target_keep"] - nxt) < 1e-3 for r in recs):
            action, sentence = "done", f"target {nxt:.0%} was already built: the search has converged"
            break
        cfg["method"]["flops_keep"] = nxt
        t1 = time.perf_counter()
        code, b = build(cfg, b.run.path, ui=ui, via_api=via_api)
        recs.append(round_record(b, len(recs) + 1, nxt, time.perf_counter() - t1))
    passing = [r for r in recs if r["passed"]]
    if action == "out-of-reach":
        status, final_code = "out-of-reach", EXIT_OUT_OF_REACH
    elif passing:
        status, final_code = "passed", EXIT_OK
    else:
        status, final_code = "not-met", EXIT_BUDGET_FAILED
        if action == "next":
            sentence = f"the budget was not met within {max_rounds} round(s): {sentence}"
    chosen = (passing[-1] if obj == "fastest" else passing[0]) if passing else recs[-1]
    if chosen is not recs[-1]:  # leave the chosen round's artifacts in the run folder
        ui.log(f"search: rebuilding round {chosen['round']} ({chosen['target_keep']:.0%} of MACs), the chosen one")
        cfg["method"]["flops_keep"] = chosen["target_keep"]
        code, b = build(cfg, b.run.path, ui=ui, via_api=via_api)
    state["verdict"] = {"status": status, "sentence": sentence, "chosen_round": chosen["round"],
                        "rounds_run": len(recs), "seconds": round(time.perf_counter() - t0, 1),
                        "s_star": _s_star(b)}
    write_json(b.run / SEARCH_FILE, state)
    build(cfg, b.run.path, ui=ui, only=["report", "package"], via_api=via_api)  # the report shows every round
    ui.log(f"[bold]search {status}[/]: {sentence} (chosen: round {chosen['round']}, {len(recs)} round(s) run)")
    return (final_code if final_code != EXIT_OK else code), b


def _round_line(r: dict) -> str:
    def f(x, spec=".3g"):
        return "n/a" if x is None else format(x, spec)

    return (f"target {r['target_keep']:.0%} -> {r['achieved_keep']:.0%} of MACs, {r['artifact']}: predicted "
            f"{f(r['predicted_ms'])} ms, host {f(r['host_ms'])} ms, {r['metric_name']} {f(r['metric'], '.2f')} "
            f"(dense {f(r['dense_metric'], '.2f')}), {'PASS' if r['passed'] else 'FAIL ' + ','.join(r['failed'])}")
