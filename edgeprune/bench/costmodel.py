"""Roofline cost model: predict a model's latency and peak memory on a target from its ONNX graph.

Model ("roofline-v2"), per operator after the fusions every CPU runtime does (activation into Conv/Gemm,
constant Add/Mul/BatchNorm into Conv, QuantizeLinear/DequantizeLinear into the int8 op, views are free,
constant sub-graphs are folded)::

    t_op    = max(work / compute_rate(op), bytes / (mem_bandwidth * eff_mem(op))) + per_op_overhead
    latency = sum(t_op) + per_run_overhead

``work`` is the op's FLOPs with its output channels rounded up to the profile's ``width_multiple`` (SIMD
kernels compute whole vectors); ``bytes`` = weights + activation inputs + outputs (1 byte per int8 element).

ON THIS HOST (target ``host`` = :func:`host_profile`): ``compute_rate = spec peak x eff_compute``, where the
spec peak is derived from /proc/cpuinfo (ISA width x FMA units x nominal clock, formula in the fact's source)
and ``eff_compute``, ``eff_mem``, the overheads (and the memory model below) are fitted per runtime and
precision (onnxruntime-fp32, onnxruntime-int8, tflite-fp32, tflite-int8) on the built-in models measured on
this host (:mod:`edgeprune.bench.hostcal`; ``edgeprune calibrate --host`` caches a calibration for a new CPU;
benchmarks/costmodel/results.md has the leave-one-model-out error). Graph analysis: :mod:`.graphcost`;
fitting the factors: :mod:`.costfit`.

ON THIS HOST the latency comes from the kernel-level predictor instead when the calibration holds its factors
(``kernel_factors``; :mod:`.kernels` over the kernels :mod:`.fusion` reads from the runtime itself): each
prediction then carries the predictor's error band measured on held-out architectures
(benchmarks/costmodel/predictor.md); the roofline stays the fallback and the model for targets.

ON A TARGET the host's efficiencies are NOT transferred (x86 AVX-512 kernels reach a much larger share of
their peak than ARM NEON ones): ``compute_rate`` is the profile's SUSTAINED throughput
(``sustained_fp32_gflops`` / ``sustained_int8_gops`` at the profile's threads, ``sustained_1t_fp32_gflops``
on one thread), taken from a published benchmark of the device (basis "derived", source in the profile),
from another board's published efficiency (basis "unverified"), or measured by ``edgeprune calibrate`` on
the device (basis "measured"). Ops under ``THREAD_MIN_FLOPS`` run at the one-thread rate (thread-pool
dispatch costs more than it saves on them). Memory: the DRAM bandwidth of the profile, with the host's
fitted ``eff_mem`` kept only for ops whose bytes fit in the target's L2 cache (else capped at 1). Per-op and
per-run overheads = the host's x (host per-lane speed / target per-lane speed), per-lane speed = one-thread
sustained GFLOP/s / fp32 SIMD lanes (overheads are scalar work), or the device's measured per-op overhead.
Every target prediction carries ``uncertainty`` ("unvalidated on the device; ±2x" ...): nothing here was
checked against a real board.

Memory: ``peak_memory_mb`` is the ONE predicted model-memory figure, used by the budget and the report: the
quantity the runner measures as ``model_footprint_mb`` (peak RSS minus the runtime's import footprint) =
session base + k_w x weights + k_a x activation liveness peak, fitted on the host (``peak_memory_how`` says
so); ``tensor_mb`` (weights + activation liveness peak, a lower bound) is reported beside it. The runtime's
own import footprint is measured separately (``runtime_footprint_mb`` of the runner). All sizes are MiB.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, InputError
# graph analysis lives in .graphcost, factor fitting in .costfit; the graph names stay importable from here
from .graphcost import (  # noqa: F401
    COMPUTE_OPS, CONV_OPS, FUSABLE_ACT, FUSABLE_AFFINE, MATMUL_OPS, MIB, MOVE_OPS, QDQ_OPS, REDUCE_OPS,
    TRANSCENDENTAL, VIEW_OPS, GraphCost, OpCost, analyze,
)  # fmt: skip

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")
MODEL_NAME = "roofline-v2"


# ----------------------------------------------------------------------------------- calibration data


def load_calibration(calibration=None) -> dict:
    """The calibration dict: ``None`` -> this host's cached calibration (``edgeprune calibrate --host``) if one
    exists for this CPU, else the packaged calibration.json; a path -> that file; a dict -> itself."""
    if isinstance(calibration, dict):
        return calibration
    if calibration is None:
        from .hostspec import cached_calibration_path

        cached = cached_calibration_path()
        p = cached if cached.is_file() else CALIBRATION_PATH
        if not p.is_file():
            return {"version": 2, "factors": {}}
    else:
        p = Path(calibration)
        if not p.is_file():
            raise InputError(f"calibration file {p} not found; run `edgeprune calibrate --host` or pass None")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: malformed calibration JSON ({e}); regenerate it with `edgeprune calibrate --host`") from None
    if not isinstance(data.get("factors"), dict):
        raise ConfigError(f"{p}: key 'factors' missing; regenerate it with `edgeprune calibrate --host`")
    data.setdefault("_path", "packaged calibration.json" if p == CALIBRATION_PATH else
                    ("user cache" if calibration is None else str(p)))
    return data


def calibration_info(cal: dict) -> dict:
    """Where the calibration comes from and whether it was measured on this kind of CPU."""
    from .hostspec import fingerprint

    here = fingerprint()
    fp = cal.get("fingerprint")
    return {"host_cpu": (cal.get("host") or {}).get("cpu"), "fingerprint": fp, "this_host": here,
            "matches_this_host": fp == here, "where": cal.get("_path", "given"),
            "host_error_median_abs_pct": {k: v.get("lomo_median_abs_pct_err") for k, v in cal.get("factors", {}).items()
                                          if v.get("lomo_median_abs_pct_err") is not None},
            "kernel_error_band_pct": {k: {"median": (v.get("heldout") or {}).get("median_abs_pct"),
                                          "p90": (v.get("heldout") or {}).get("p90_abs_pct")}
                                      for k, v in host_kernel_factors(cal)[0].items()}}


def host_kernel_factors(cal: dict) -> tuple[dict, bool, Optional[str]]:
    """The kernel predictor's factors for this host: those measured on this kind of CPU where the calibration
    carries a set for it (``kernel_factors_hosts``, keyed by :func:`~.hostspec.fingerprint`; kernel speeds differ
    between CPU generations), else the calibration's own ``kernel_factors``. Returns (factors per runtime key,
    whether they were measured on this kind of CPU, the CPU they were measured on)."""
    from .hostspec import fingerprint

    here = fingerprint()
    own = (cal.get("kernel_factors_hosts") or {}).get(here)
    if own and own.get("factors"):
        return own["factors"], True, own.get("cpu")
    return cal.get("kernel_factors") or {}, cal.get("fingerprint") == here, (cal.get("host") or {}).get("cpu")


#: used when no calibration exists at all (labelled "UNCALIBRATED" in every prediction)
DEFAULT_FACTORS = {"eff_compute": 0.3, "eff_mem": 1.0, "eff_mem_large": 1.0, "per_op_overhead_us": 2.0,
                   "per_run_overhead_us": 5.0, "mem_base_mb": None}


def runtime_key(runtime: str) -> str:
    """'onnxruntime' or 'tflite' for any of the runtime / format spellings."""
    r = runtime.lower()
    if r in ("onnx", "onnxruntime", "ort"):
        return "onnxruntime"
    if r in ("tflite", "litert", "ai_edge_litert", "tflite_runtime", "tensorflow.lite"):
        return "tflite"
    raise ConfigError(f"runtime {runtime!r} is not modelled; use 'onnxruntime' or 'tflite'")


def factors_for(calibration: dict, runtime: str, dtype: str) -> tuple[dict, str]:
    """Calibration factors for ``runtime-dtype``, falling back to the runtime's fp32 then onnxruntime's;
    returns (factors, key used)."""
    fac = calibration.get("factors", {})
    rt = runtime_key(runtime)
    for key in (f"{rt}-{dtype}", f"{rt}-fp32", f"onnxruntime-{dtype}", "onnxruntime-fp32"):
        if key in fac:
            return fac[key], key
    return DEFAULT_FACTORS, "uncalibrated-defaults"


def graph_for_artifact(artifacts: dict, fmt: str) -> Optional[str]:
    """The ONNX graph the cost model reads for artifact ``fmt`` ({format: path} of the artifacts that exported).

    TFLite artifacts are costed from the same model's ONNX graph: the QDQ graph for tflite-int8 when it
    exported (else the fp32 graph, costed as int8)."""
    cands = ("onnx-int8", "onnx") if fmt.endswith("int8") else ("onnx",)
    for c in cands:
        if artifacts.get(c):
            return artifacts[c]
    return None


def fuses_add(runtime: str, dtype: str) -> bool:
    """onnxruntime fuses a residual Add (+Relu) into the float Conv before it; its QDQ graphs and TFLite do not."""
    return runtime_key(runtime) == "onnxruntime" and dtype == "fp32"


def runtime_of(fmt: str) -> str:
    """The runtime that runs artifact format ``fmt``."""
    return "tflite" if fmt.startswith("tflite") else "onnxruntime"


# ----------------------------------------------------------------------------------- the host


@lru_cache(maxsize=1)
def host_bandwidth_gbs() -> float:
    """Streaming bandwidth of this host, measured: numpy copy of 64 MiB, (read + write bytes) / best of 10."""
    import time

    import numpy as np

    a = np.ones(16 * 2**20, np.float32)
    b = np.zeros_like(a)  # touched, so page faults are not timed
    best = math.inf
    for _ in range(10):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return round(2 * a.nbytes / best / 1e9, 1)


@lru_cache(maxsize=1)
def host_profile():
    """The ``host`` profile with THIS machine's facts: CPU and cores from /proc/cpuinfo, spec peaks derived
    from its ISA flags and nominal clock (formula in each fact's source), streaming bandwidth measured."""
    import dataclasses

    from ..targets import Fact, load_target
    from .hostspec import host_spec

    base = load_target("host")
    s = host_spec()
    dev = dict(base.device)
    dev["cpu"] = Fact(f"{s['cpu']} ({s['isa']})", None, "/proc/cpuinfo: model name and flags", "measured")
    dev["cores"] = Fact(int(s["cores"] or 1), "count", "os.cpu_count()", "measured")
    dev["clock_ghz"] = Fact(s["clock_ghz"], "GHz", "cpu MHz in /proc/cpuinfo", "measured",
                            "a VM reports the nominal (TSC) clock, not the boost clock")
    dev["peak_fp32_gflops"] = Fact(s["peak_fp32_gflops"], "GFLOP/s", s["formula"], "derived")
    dev["peak_int8_gops"] = Fact(s["peak_int8_gops"], "GOP/s", s["formula"], "derived")
    dev["mem_bandwidth_gbs"] = Fact(host_bandwidth_gbs(), "GB/s", "numpy copy of 64 MiB, best of 10", "measured")
    dev["int8_dot_product"] = Fact(bool(s["int8_dot"]), None, "/proc/cpuinfo flags", "measured")
    dev["simd_fp32_lanes"] = Fact(int(s["lanes"]), "count", f"/proc/cpuinfo flags ({s['isa']})", "measured")
    if s.get("l2_kb"):
        dev["l2_cache_kb"] = Fact(float(s["l2_kb"]), "KiB", "/sys/devices/system/cpu/cpu0/cache (L2)", "measured")
    return dataclasses.replace(base, device=dev, title=f"This host ({s['cpu']})", source_path="<this host>",
                               width_multiple=int(s["lanes"]))


def _is_host(t) -> bool:
    return t.name == "host"


def _target(target):
    from ..targets import Target, load_target

    if isinstance(target, Target):
        return target
    return host_profile() if str(target) == "host" else load_target(target)


# ----------------------------------------------------------------------------------- rates


#: ops with fewer FLOPs run on one thread (thread-pool dispatch costs more than it saves): an assumption
THREAD_MIN_FLOPS = 0.5e6
#: extra speed per extra host thread for large ops (host predictions with threads > 1 only): an assumption
HOST_THREAD_EFFICIENCY = 0.7
#: cache assumed when a profile has no l2_cache_kb (KiB)
DEFAULT_CACHE_KB = 512
#: fraction of the spec peak assumed when a profile has no sustained-throughput fact
DEFAULT_SUSTAINED_FRACTION = 0.3
UNCERTAINTY = {"measured": "calibrated with micro-benchmarks on the device, not validated on full models: ±50%",
               "derived": "from a published benchmark of this device, not validated here: ±2x",
               "unverified": "no benchmark of this device: efficiency borrowed from another board, ±3x",
               "spec": "spec-sheet figure, not validated: ±3x", "assumed": "assumed efficiency: ±3x"}


@dataclass
class Rates:
    """What the roofline needs for one (target, runtime, dtype, threads): throughputs, bandwidth, overheads."""

    compute_gops: float        # large ops (>= THREAD_MIN_FLOPS), all threads
    compute_1t_gops: float     # small ops, one thread
    bw_gbs: float
    eff_mem_cached: float      # bandwidth multiplier for an op whose bytes fit in the cache
    eff_mem_dram: float        # ... and for one whose bytes do not
    cache_bytes: float
    per_op_us: float
    per_run_us: float
    basis: str                 # of the compute figure: measured | derived | unverified | assumed
    how: str                   # one sentence: where the figures come from
    uncertainty: str

    def op_us(self, o: OpCost) -> tuple[float, float]:
        """(compute, memory) time of one op in microseconds (GFLOP/s = 1e3 flop/us)."""
        rate = self.compute_gops if o.work >= THREAD_MIN_FLOPS else self.compute_1t_gops
        eff = self.eff_mem_cached if o.bytes <= self.cache_bytes else self.eff_mem_dram
        return o.work / (rate * 1e3), o.bytes / (self.bw_gbs * 1e3 * eff)


def _peak_key(dtype: str) -> str:
    return "peak_int8_gops" if dtype == "int8" else "peak_fp32_gflops"


def host_rates(t, f: dict, dtype: str, threads: int, err: Optional[float]) -> Rates:
    """Rates on the host: spec peak x fitted efficiency, fitted overheads; threads > 1 speed up large ops
    by HOST_THREAD_EFFICIENCY per extra core (an assumption; the calibration is measured on one thread)."""
    one = t.peak_compute(dtype) * float(f["eff_compute"])
    n = min(threads, int(t.fact("cores", threads)))
    bw = float(f.get("host_bandwidth_gbs") or t.fact("mem_bandwidth_gbs"))
    unc = (f"host: median abs error {err:.0f}% over the built-in models (leave-one-model-out, "
           "benchmarks/costmodel/results.md)" if err is not None else "host: error not measured")
    return Rates(compute_gops=one * (1 + HOST_THREAD_EFFICIENCY * (n - 1)), compute_1t_gops=one, bw_gbs=bw,
                 eff_mem_cached=float(f["eff_mem"]), eff_mem_dram=float(f.get("eff_mem_large", f["eff_mem"])),
                 cache_bytes=float(f.get("host_cache_kb") or t.fact("l2_cache_kb", DEFAULT_CACHE_KB)) * 1024,
                 per_op_us=float(f["per_op_overhead_us"]), per_run_us=float(f["per_run_overhead_us"]),
                 basis="measured", how="host spec peak x efficiency fitted on this host's measurements",
                 uncertainty=unc)


def sustained(t, dtype: str) -> tuple[float, float, str, str]:
    """(GFLOP/s at the profile's threads, GFLOP/s on one thread, basis, source) of a target for ``dtype``.

    From the profile's ``sustained_fp32_gflops`` / ``sustained_1t_fp32_gflops`` / ``sustained_int8_gops``
    facts (a published or measured benchmark of the device); without them DEFAULT_SUSTAINED_FRACTION of the
    spec peak. One-thread INT8 = sustained INT8 x the fp32 one-thread/all-threads ratio."""
    fp = t.device.get("sustained_fp32_gflops")
    one = t.device.get("sustained_1t_fp32_gflops")
    if fp is None:
        peak = t.peak_compute(dtype)
        frac = DEFAULT_SUSTAINED_FRACTION
        return (peak * frac, peak * frac / t.threads, "assumed",
                f"{frac:.0%} of the spec peak (no sustained-throughput fact in the profile)")
    ratio = (one.value / fp.value) if one is not None else 1.0 / t.threads
    if dtype == "int8":
        i8 = t.device.get("sustained_int8_gops")
        if i8 is not None:
            return i8.value, i8.value * ratio, i8.basis, i8.source
        return (fp.value * 2.0, fp.value * 2.0 * ratio, "assumed",
                "2x the sustained fp32 figure (no sustained_int8_gops fact)")
    return fp.value, fp.value * ratio, fp.basis, fp.source


def target_rates(t, f: dict, f_ref: dict, dtype: str, threads: int, host, f_ort: Optional[dict] = None) -> Rates:
    """Rates on a target (see the module docstring): sustained throughput from the profile, bandwidth capped
    at the DRAM figure for working sets larger than the target's cache, overheads scaled from the host.
    ``f``: the runtime-dtype factors, ``f_ref``: the same runtime's fp32 ones, ``f_ort``: onnxruntime-fp32's
    (the runtime a device's measured per-op overhead comes from; default ``f_ref``)."""
    big, small, basis, src = sustained(t, dtype)
    n = min(threads, int(t.fact("cores", threads)))
    if n != t.threads:  # between one thread and the profile's threads: linear in the thread count, capped
        frac = (min(n, t.threads) - 1) / max(t.threads - 1, 1)
        big = small + (big - small) * frac
    measured_op = t.device.get("per_op_overhead_us")
    # per-op overhead is scalar work: it scales with per-lane speed (1-thread fp32 GFLOP/s / SIMD lanes)
    host_lane = float(f_ref["eff_compute"]) * host.peak_compute("fp32") / float(host.fact("simd_fp32_lanes", 16))
    _, t_1t_fp32, _, _ = sustained(t, "fp32")
    tgt_lane = t_1t_fp32 / float(t.fact("simd_fp32_lanes", 4))
    scale = host_lane / tgt_lane
    if measured_op is not None:  # measured on the device (onnxruntime fp32): keep this runtime's relative cost
        op_scale = float(measured_op.value) / float((f_ort or f_ref)["per_op_overhead_us"])
        per_op, how_op = float(f["per_op_overhead_us"]) * op_scale, "per-op overhead measured on the device"
    else:
        per_op, how_op = float(f["per_op_overhead_us"]) * scale, f"per-op overhead = host's x {scale:.2f} (per-lane speed ratio)"
    return Rates(compute_gops=big, compute_1t_gops=small, bw_gbs=float(t.fact("mem_bandwidth_gbs")),
                 eff_mem_cached=max(float(f["eff_mem"]), 1.0), eff_mem_dram=1.0,
                 cache_bytes=float(t.fact("l2_cache_kb", DEFAULT_CACHE_KB)) * 1024,
                 per_op_us=per_op, per_run_us=float(f["per_run_overhead_us"]) * scale, basis=basis,
                 how=f"sustained {big:.3g} GOP/s ({n} threads) / {small:.3g} (1 thread): {src}; {how_op}",
                 uncertainty="unvalidated on the device; " + UNCERTAINTY.get(basis, UNCERTAINTY["assumed"]))


# ----------------------------------------------------------------------------------- prediction


def footprint_mb(f: dict, gc: GraphCost) -> tuple[Optional[float], str]:
    """Predicted model memory (MiB), the quantity the runner measures as ``model_footprint_mb`` (peak RSS minus
    the runtime's import footprint): session base + k_w x weights + k_a x activation peak, fitted on the host;
    without those factors the tensor lower bound (weights + activation liveness peak)."""
    tensors = (gc.weight_bytes + gc.activation_peak_bytes) / MIB
    if f.get("mem_base_mb") is None:
        return tensors, "tensor lower bound (weights + activation liveness peak); no memory calibration"
    v = (f["mem_base_mb"] + f["mem_weight_factor"] * gc.weight_bytes / MIB
         + f["mem_act_factor"] * gc.activation_peak_bytes / MIB)
    return v, (f"session base {f['mem_base_mb']:.1f} MiB + {f['mem_weight_factor']:.2f} x weights + "
               f"{f['mem_act_factor']:.2f} x activation peak (fitted on the host's runtime)")


def predict(onnx_path, target, *, dtype: str = "fp32", calibration=None, runtime: Optional[str] = None,
            threads: Optional[int] = None, detail: bool = False, kernel_model: Optional[bool] = None) -> dict:
    """Predict latency and peak memory of ``onnx_path`` on ``target`` (name, path or Target; "host" = this
    machine, see :func:`host_profile`).

    ``dtype``: "fp32" or "int8" (an fp32 graph with dtype="int8" is costed as its fully quantized version).
    ``runtime``: "onnxruntime" or "tflite" (default: the profile's preferred runtime) selects the calibrated
    factors. ``threads``: default the profile's. Every figure is labelled ``"source": "predicted"`` with the
    model, the calibration's host and an ``uncertainty`` sentence.

    On the host the latency comes from the kernel-level predictor (:mod:`.kernels`, "kernel-v1") when the
    calibration has its factors for the runtime/precision and the runtime's kernels can be read (onnxruntime's
    optimized graph of ``onnx_path``; for TFLite the ``.tflite`` given or lying next to the ONNX file): the result
    then carries ``error_band`` (the predictor's measured error on held-out architectures) and
    ``latency_band_ms``. ``kernel_model=False`` forces the roofline; otherwise the roofline is the fallback."""
    t = _target(target)
    if _is_host(t) and t.source_path != "<this host>":  # the host.toml profile: use this machine's facts
        import dataclasses

        t = dataclasses.replace(host_profile(), threads=t.threads, runtime=t.runtime, budget=t.budget)
    cal = load_calibration(calibration)
    runtime = runtime_key(runtime or t.runtime.get("preferred", "onnx"))
    f, key = factors_for(cal, runtime, dtype)
    f_ref, _ = factors_for(cal, runtime, "fp32")
    th = threads or t.threads
    err = f.get("lomo_median_abs_pct_err")
    if _is_host(t):
        r = host_rates(t, f, dtype, th, err)
    else:
        r = target_rates(t, f, f_ref, dtype, th, host_profile(), factors_for(cal, "onnxruntime", "fp32")[0])
    gc = analyze(onnx_path, dtype, pad_to=t.width_multiple, fuse_add=fuses_add(runtime, dtype))
    times = [r.op_us(o) for o in gc.ops]
    roof_us = sum(max(c, m) for c, m in times)
    overhead_us = r.per_op_us * gc.n_dispatched + r.per_run_us
    mem, mem_how = footprint_mb(f, gc)
    info = calibration_info(cal)
    host_cpu = info["host_cpu"] or "unknown host"
    where = "this host" if info["matches_this_host"] else f"another host ({host_cpu}), not this one"
    res = {
        "latency_ms": (roof_us + overhead_us) / 1e3,
        "peak_memory_mb": mem,
        "peak_memory_how": mem_how,
        "tensor_mb": (gc.weight_bytes + gc.activation_peak_bytes) / MIB,
        "activation_peak_mb": gc.activation_peak_bytes / MIB,
        "weight_mb": gc.weight_bytes / MIB,
        "macs": gc.macs,
        "flops": gc.flops,
        "weight_bytes": gc.weight_bytes,
        "n_ops": len(gc.ops),
        "compute_bound_ops": sum(1 for c, m in times if c >= m),
        "roofline_ms": roof_us / 1e3,
        "overhead_ms": overhead_us / 1e3,
        "target": t.name,
        "runtime": runtime,
        "dtype": dtype,
        "threads": th,
        "calibration_key": key,
        "calibration": info,
        "basis": r.basis,
        "how": r.how,
        "uncertainty": r.uncertainty,
        "source": "predicted",
        "model": (f"{MODEL_NAME}, {key} factors calibrated on {where}" if key != "uncalibrated-defaults"
                  else f"{MODEL_NAME}, UNCALIBRATED default factors"),
    }
    if detail:
        res["ops"] = [{"name": o.name, "op_type": o.op_type, "fused": o.fused, "macs": o.macs, "flops": o.flops,
                       "bytes": o.bytes, "compute_us": c, "memory_us": m} for o, (c, m) in zip(gc.ops, times)]
    if _is_host(t) and kernel_model is not False:
        factors, here, cpu = host_kernel_factors(cal)
        kf = factors.get(f"{runtime}-{dtype}")
        if kf:
            where = "this host" if here else f"another host ({cpu or 'unknown CPU'}), not this one"
            _apply_kernel_model(res, onnx_path, runtime, dtype, kf, th, where, detail)
    return res


def _kernel_artifact(path, runtime: str, dtype: str) -> Optional[str]:
    """The file whose kernels the runtime runs: the ONNX graph for onnxruntime (if it is quantized when
    ``dtype`` is int8), the .tflite given or exported next to the ONNX file for TFLite; None when not at hand."""
    p = Path(path)
    if runtime == "tflite":
        if p.suffix == ".tflite":
            return str(p)
        sib = p.with_name("model.int8.tflite" if dtype == "int8" else "model.tflite")
        return str(sib) if sib.is_file() else None
    return str(p) if p.suffix == ".onnx" else None


#: onnxruntime kernels that show a graph was quantized
_INT8_KERNELS = ("QLinear", "QGemm", "QuantizeLinear", "ConvInteger", "MatMulInteger")


def _apply_kernel_model(res: dict, path, runtime: str, dtype: str, kf: dict, threads: int, where: str,
                        detail: bool) -> None:
    """Replace the roofline latency in ``res`` by the kernel-level predictor's (see :func:`predict`)."""
    from . import fusion, kernels

    art = _kernel_artifact(path, runtime, dtype)
    if art is None:
        return
    try:
        ks, how = fusion.kernels_for(art, runtime, dtype)
    except InputError:
        return  # the roofline stays
    if runtime == "onnxruntime" and dtype == "int8" and not any(k.op.startswith(_INT8_KERNELS) for k in ks):
        return  # an fp32 graph costed as int8: no int8 kernels to read
    us, per = kernels.predict_us(ks, kf, detail=True)
    n = min(threads, int(host_profile().fact("cores", threads)))
    if n > 1:  # calibrated on one thread: large conv/gemm kernels sped up as in the roofline (an assumption)
        gain = 1 + HOST_THREAD_EFFICIENCY * (n - 1)
        us -= sum(t * (1 - 1 / gain) for k, t in per if 2 * k.macs >= THREAD_MIN_FLOPS)
    band = kf.get("heldout") or {}
    key = f"{runtime}-{dtype}"
    res.update({
        "latency_ms": us / 1e3,
        "model": f"{kernels.model_name(kf)} ({len(ks)} kernels from {how}), {key} kernel factors calibrated on {where}",
        "error_band": {k: band.get(k) for k in ("n", "median_abs_pct", "p90_abs_pct", "within_10_pct")}
        | {"basis": "held-out architecture families on the calibration host, 1 thread"},
        "uncertainty": kernels.band_text(key, band, (kf.get("note") or "").split(" (")[0] or None)
        + ("" if n == 1 else f"; {n} threads scaled by assumption"),
        "kernels": fusion.summary(ks),
    })
    if band.get("p90_abs_pct") is not None:
        b = band["p90_abs_pct"] / 100
        res["latency_band_ms"] = [res["latency_ms"] * (1 - b), res["latency_ms"] * (1 + b)]
    if detail:
        res["kernel_detail"] = [dict(k.to_dict(), predicted_us=t) for k, t in per]


# ----------------------------------------------------------------------------------- fitting
