"""Is INT8 actually faster? A short interleaved latency check run at export time.

For each runtime with both an fp32 and an INT8 artifact, :func:`int8_speed` times the two
files in this process, batch 1, with the target's thread count (capped at this machine's
cores), alternating between them round by round so that a load change on a shared machine
hits both alike. The median of the per-round ratios INT8/fp32 decides which artifact the
build prefers for that runtime (:func:`runtime_choice`); :func:`artifact_order` applies the
decision to a target's artifact order (fp32 moves ahead of INT8 where INT8 was not faster).

The check measures the build machine's CPU, not the device's: the decision is recorded with
the CPU it was measured on, and TensorRT-bound ONNX INT8 (Jetson) is never timed here.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

#: Rounds of the interleaved check and the wall-clock budget per artifact and round.
ROUNDS = 7
ROUND_BUDGET_S = 0.1
MIN_RUNS, MAX_RUNS = 5, 200

PAIRS = {"onnxruntime": ("onnx", "onnx-int8"), "tflite": ("tflite", "tflite-int8")}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _runner(path: Path, threads: int):
    """A zero-argument callable that runs the artifact once on a fixed random input."""
    import numpy as np

    from .runtimes import OrtRunner, TfliteRunner

    rng = np.random.default_rng(0)
    if str(path).endswith(".onnx"):
        r = OrtRunner(path, threads=threads)
        x = rng.standard_normal([1, *r.input_shape[1:]]).astype(np.float32)
        feed = {r.input_name: x}
        return lambda: r.session.run(None, feed)
    r = TfliteRunner(path, threads=threads)
    it, idx = r.interpreter, r.inp["index"]
    x = rng.standard_normal(r.input_shape).astype(np.float32)
    if r.input_dtype != np.float32:
        x = rng.integers(-128, 128, r.input_shape).astype(r.input_dtype)
    it.set_tensor(idx, x)
    return it.invoke


def _median_us(fn, runs: int) -> float:
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def int8_speed(fp32_path: Path, int8_path: Path, threads: int = 1, rounds: int = ROUNDS) -> dict:
    """Interleaved batch-1 timing of the two artifacts; ``int8_over_fp32`` is the median per-round ratio."""
    threads = max(1, min(int(threads), os.cpu_count() or 1))
    fns = {"fp32": _runner(fp32_path, threads), "int8": _runner(int8_path, threads)}
    for fn in fns.values():  # warm up: first runs allocate and pack weights
        for _ in range(3):
            fn()
    one = max(_median_us(fns["fp32"], 3), _median_us(fns["int8"], 3)) * 1e-6
    runs = int(min(MAX_RUNS, max(MIN_RUNS, ROUND_BUDGET_S / max(one, 1e-6))))
    per = {"fp32": [], "int8": []}
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for i in range(rounds):
        order = ("fp32", "int8") if i % 2 == 0 else ("int8", "fp32")
        for k in order:
            per[k].append(_median_us(fns[k], runs))
    ratios = [b / a for a, b in zip(per["fp32"], per["int8"])]
    return {
        "fp32_p50_us": round(statistics.median(per["fp32"]), 1),
        "int8_p50_us": round(statistics.median(per["int8"]), 1),
        "int8_over_fp32": round(statistics.median(ratios), 3),
        "ratio_min_max": [round(min(ratios), 3), round(max(ratios), 3)],
        "threads": threads,
        "rounds": rounds,
        "runs_per_round": runs,
        "cpu": _cpu_name(),
        "loadavg_1min": None if load0 is None else round(load0, 2),
        "how": "measured at export time in the exporting process: batch 1, interleaved rounds, median of the "
        "per-round p50 ratios (a shared machine's load hits both artifacts alike)",
    }


def runtime_choice(runtime: str, speed: dict | None, fp32_ok: bool, int8_ok: bool, note: str = "") -> dict:
    """Which of the runtime's two artifacts the build prefers, and why (one dict for export.json)."""
    fp32, int8 = PAIRS[runtime]
    if not int8_ok:
        return {"prefer": fp32 if fp32_ok else None, "reason": f"{int8} did not export", "speed": None}
    if not fp32_ok:
        return {"prefer": int8, "reason": f"{fp32} did not export", "speed": None}
    if speed is None:
        return {"prefer": int8, "reason": note or "not timed: INT8 kept first", "speed": None}
    r = speed["int8_over_fp32"]
    where = f"on {speed['cpu']} ({speed['threads']} thread(s), batch 1)"
    if r < 1.0:
        return {"prefer": int8, "reason": f"{int8} runs at {r:.2f}x the {fp32} latency {where}", "speed": speed}
    return {"prefer": fp32, "speed": speed,
            "reason": f"{int8} is NOT faster than {fp32} {where}: {r:.2f}x its latency; {fp32} is preferred"}  # fmt: skip


def artifact_order(order: list[str], choice: dict | None) -> list[str]:
    """``order`` (a target's artifacts, best first) with each runtime's fp32 artifact moved just ahead
    of its INT8 one where the export's ``runtime_choice`` preferred fp32; otherwise unchanged."""
    out = list(order)
    for runtime, c in (choice or {}).items():
        fp32, int8 = PAIRS.get(runtime, (None, None))
        if c and c.get("prefer") == fp32 and fp32 in out and int8 in out and out.index(int8) < out.index(fp32):
            out.remove(fp32)
            out.insert(out.index(int8), fp32)
    return out


def runtime_choices(results: dict, paths: dict, int8_runtime: str, threads: int, check: bool, progress) -> dict:
    """Per runtime with both artifacts in ``results``: time INT8 against fp32 (``paths``: format -> file)
    and return ``{runtime: runtime_choice(...)}``; the timing also lands in the INT8 entry's details."""
    choice = {}
    for runtime, (fp32, int8) in PAIRS.items():
        if fp32 not in results or int8 not in results:
            continue
        ok = [bool(results[f].get("ok")) for f in (fp32, int8)]
        speed, note = None, ""
        if runtime == "onnxruntime" and int8_runtime != "onnxruntime":
            note = f"not timed: {int8} is quantized for {int8_runtime}, which this machine does not run"
        elif not check:
            note = "not timed (speed check off): INT8 kept first"
        elif all(ok):
            progress(f"{int8}: timing against {fp32} (batch 1, interleaved)")
            try:
                speed = int8_speed(paths[fp32], paths[int8], threads)
            except Exception as exc:  # noqa: BLE001 - a timing failure never fails the export
                note = f"not timed ({(str(exc).splitlines() or [type(exc).__name__])[0]}): INT8 kept first"
        choice[runtime] = c = runtime_choice(runtime, speed, *ok, note=note)
        if speed is not None:
            results[int8]["details"]["speed_vs_fp32"] = speed
        if c["prefer"] == fp32 and ok[1]:
            progress(f"WARNING: {c['reason']}")
    return choice
