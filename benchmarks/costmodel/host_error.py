"""How well does the roofline cost model predict latency and memory on this host, for the BUILT-IN models?

Every registered built-in model (``edgeprune models``) at default widths on an 8x8 input and at default and
half widths on a 28x28 input (:func:`edgeprune.bench.hostcal.suite`), exported with ``edgeprune.export`` to
ONNX fp32, ONNX INT8 (QDQ), TFLite fp32 and TFLite INT8, measured with ``measure_host`` (fresh processes,
1 thread, batch 1; the artifacts of one model measured back to back). The four runtime/precision factor sets
are fitted on all models (what ships in calibration.json) and, for the error, LEAVE-ONE-MODEL-OUT: each
architecture family is predicted by factors fitted on the other six families only.

    python benchmarks/costmodel/host_error.py --write-calibration [--workdir DIR] [--refit]

Writes results.md / results.json next to this script (command, date, machine, load average) and, with
--write-calibration, edgeprune/bench/calibration.json (factors fitted on all models + the LOMO errors).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from edgeprune.bench import costmodel, hostcal  # noqa: E402

TARGETS = ("rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "android-mid", "android-flagship")
SHOWN = ("cnn-8x8-w1", "resnet-28x28-w1", "mobilenetv2-28x28-w1")


def _command(argv) -> str:
    """The command line as run, with machine-specific paths (--workdir) elided."""
    args = list(argv if argv is not None else sys.argv[1:])
    if "--workdir" in args:
        i = args.index("--workdir")
        args[i:i + 2] = ["--workdir", "DIR"]
    return " ".join(["python benchmarks/costmodel/host_error.py"] + args)


def _dtype(fmt: str) -> str:
    return "int8" if fmt.endswith("int8") else "fp32"


def predict_row(r: dict, fmt: str, cal: dict) -> dict:
    g = costmodel.graph_for_artifact(r["artifacts"], fmt)
    return costmodel.predict(g, "host", dtype=_dtype(fmt), runtime=costmodel.runtime_of(fmt), calibration=cal)


def lomo(rows: list) -> None:
    """Adds rows[i]["lomo"][fmt] = {predicted_ms, err_pct, predicted_mb, mem_err_mb}: each family predicted
    by factors fitted without it."""
    for fam in sorted({r["family"] for r in rows}):
        cal = {"factors": hostcal.fit_all(rows, exclude_family=fam)}
        for r in rows:
            if r["family"] != fam:
                continue
            r["lomo"] = {}
            for fmt, m in r["measured"].items():
                if hostcal.KEY_OF[fmt] not in cal["factors"]:
                    continue
                p = predict_row(r, fmt, cal)
                r["lomo"][fmt] = {"predicted_ms": p["latency_ms"], "err_pct": (p["latency_ms"] / m["p50_ms"] - 1) * 100,
                                  "predicted_mb": p["peak_memory_mb"],
                                  "mem_err_mb": p["peak_memory_mb"] - m["model_footprint_mb"]}


def in_sample(rows: list, cal: dict) -> None:
    for r in rows:
        r["fit"] = {}
        for fmt, m in r["measured"].items():
            p = predict_row(r, fmt, cal)
            r["fit"][fmt] = {"predicted_ms": p["latency_ms"], "err_pct": (p["latency_ms"] / m["p50_ms"] - 1) * 100,
                             "tensor_mb": p["tensor_mb"]}


def summarize(rows: list) -> dict:
    out = {}
    for fmt, key in hostcal.KEY_OF.items():
        lo = [abs(r["lomo"][fmt]["err_pct"]) for r in rows if fmt in r.get("lomo", {})]
        fi = [abs(r["fit"][fmt]["err_pct"]) for r in rows if fmt in r.get("fit", {})]
        me = [abs(r["lomo"][fmt]["mem_err_mb"]) for r in rows if fmt in r.get("lomo", {})]
        if lo:
            out[key] = {"n": len(lo), "lomo_median_abs_pct_err": statistics.median(lo), "lomo_max_abs_pct_err": max(lo),
                        "fit_median_abs_pct_err": statistics.median(fi),
                        "lomo_median_abs_mem_err_mb": statistics.median(me),
                        "families": sorted({r["family"] for r in rows if fmt in r.get("lomo", {})})}
    return out


def target_predictions(rows: list, cal: dict) -> dict:
    out = {}
    for r in rows:
        if r["name"] not in SHOWN:
            continue
        out[r["name"]] = {t: {fmt: costmodel.predict(costmodel.graph_for_artifact(r["artifacts"], fmt), t,
                                                     dtype=_dtype(fmt), runtime=costmodel.runtime_of(fmt),
                                                     calibration=cal)["latency_ms"]
                              for fmt in r["artifacts"]} for t in TARGETS}
    return out


def write_md(res: dict) -> None:
    L = ["# Cost model: prediction error on this host, built-in models", ""]
    m = res["machine"]
    L.append(f"- Date: {res['date']}; machine: {m['cpu']} ({m['isa']}), {m['cores']} cores, {m['platform']}; "
             f"load average before / after: {res['loadavg_before']} / {res['loadavg_after']} (shared machine)")
    L.append(f"- Command: `{res['command']}` (wall {res['wall_min']:.1f} min)")
    L.append(f"- Models: every built-in model ({', '.join(sorted({r['model'] for r in res['rows']}))}) at default "
             "widths on 8x8 and 28x28 inputs and at half widths on 28x28 (random init, seed 0), exported with "
             "`edgeprune.export` to the four artifacts; artifacts that failed to export are listed below.")
    L.append(f"- Measurement: `measure_host`, 1 thread, batch 1, {res['repeats']} fresh processes x {res['runs']} runs "
             f"({res['warmup']} warm-up) per artifact; the value is the median over processes of each process's p50.")
    L.append(f"- Model: {costmodel.MODEL_NAME} (`edgeprune/bench/costmodel.py`). This host's spec peak: "
             f"{m['spec']['formula']} = {m['spec']['peak_fp32_gflops']} GFLOP/s fp32, {m['spec']['peak_int8_gops']} "
             "GOP/s int8 (derived from /proc/cpuinfo). **Leave-one-model-out**: each architecture family is "
             "predicted by factors fitted on the other families only; 'fit' = in-sample.")
    L.append("")
    L.append("## Summary: median absolute latency error")
    L.append("")
    L.append("| runtime, precision | models | leave-one-model-out median | max | in-sample median | memory: median abs error (MiB) |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for key, s in res["summary"].items():
        L.append(f"| {key} | {s['n']} | **{s['lomo_median_abs_pct_err']:.1f}%** | {s['lomo_max_abs_pct_err']:.0f}% | "
                 f"{s['fit_median_abs_pct_err']:.1f}% | {s['lomo_median_abs_mem_err_mb']:.2f} |")
    L.append("")
    L.append("Fitted factors (all models; these ship in `edgeprune/bench/calibration.json`):")
    L.append("")
    L.append("| key | eff_compute (of spec peak) | eff_mem (fits L2) | eff_mem (larger) | per-op us | per-run us | "
             "memory: base MiB + k_w x weights + k_a x activations |")
    L.append("|---|---:|---:|---:|---:|---:|---|")
    for key, f in res["fits"].items():
        L.append(f"| {key} | {f['eff_compute']:.3f} | {f['eff_mem']:.2f} | {f['eff_mem_large']:.2f} | "
                 f"{f['per_op_overhead_us']:.2f} | {f['per_run_overhead_us']:.2f} | {f.get('mem_base_mb', 0):.1f} + "
                 f"{f.get('mem_weight_factor', 0):.2f} w + {f.get('mem_act_factor', 0):.2f} a |")
    L.append("")
    for fmt, key in hostcal.KEY_OF.items():
        L.append(f"## {key}")
        L.append("")
        L.append("| model | MMACs | ops | measured p50 (us) | spread | LOMO predicted (us) | LOMO error | in-sample error | "
                 "memory measured / LOMO predicted (MiB) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in res["rows"]:
            if fmt not in r["measured"]:
                continue
            mm, lo, fi = r["measured"][fmt], r["lomo"].get(fmt), r["fit"][fmt]
            L.append(f"| {r['name']} | {r['macs'] / 1e6:.2f} | {r['n_ops']} | {mm['p50_ms'] * 1e3:.1f} | "
                     f"{mm['p50_spread_pct']:.0f}% | {lo['predicted_ms'] * 1e3:.1f} | {lo['err_pct']:+.0f}% | "
                     f"{fi['err_pct']:+.0f}% | {mm['model_footprint_mb']:.1f} / {lo['predicted_mb']:.1f} |")
        L.append("")
    failed = [(r["name"], f) for r in res["rows"] for f in hostcal.ARTIFACTS if f not in r["artifacts"]]
    L.append("## Artifacts that did not export (not measured)")
    L.append("")
    L.append(", ".join(f"{n} {f}" for n, f in failed) if failed else "none")
    L.append("")
    L.append("## Predicted on the targets (NOT measured: no device was available)")
    L.append("")
    L.append("Latency in ms at each profile's threads, artifact onnx / tflite / tflite-int8. Compute comes from the "
             "profile's sustained throughput (rpi4: ncnn's published MobileNet v1 figure; the others: the Pi 4's "
             "efficiency applied to their peak, basis `unverified`), overheads from this host's fit scaled by "
             "per-lane speed. Unvalidated on the devices: ±2x (rpi4) to ±3x (the others).")
    L.append("")
    L.append("| model | " + " | ".join(TARGETS) + " |")
    L.append("|---|" + "---:|" * len(TARGETS))
    for name, per in res["target_predictions"].items():
        L.append(f"| {name} | " + " | ".join(" / ".join(f"{per[t][f]:.3f}" if f in per[t] else "—"
                                                        for f in ("onnx", "tflite", "tflite-int8")) for t in TARGETS) + " |")
    L.append("")
    L.append("## What this does and does not show")
    L.append("")
    L.append("- The error is ON THIS HOST. Targets do not reuse this host's efficiency: they use the profile's "
             "sustained throughput; only the per-op overheads (scaled by per-lane speed) and the memory model "
             "(session base + tensors, fitted on x86 runtime builds) come from here. No target figure has a "
             "measured error bound until a device is measured (`edgeprune bench RUN --remote` / `--adb`).")
    L.append("- Small models (a few us) are dominated by per-op and per-run overheads that differ between "
             "runtimes and op types (onnxruntime runs 1-D convs and Gemm-only graphs through different paths); "
             "one overhead per runtime is the model's main limitation on them.")
    L.append("")
    (HERE / "results.md").write_text("\n".join(L))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write-calibration", action="store_true",
                    help="write the factors fitted on all models into edgeprune/bench/calibration.json")
    ap.add_argument("--workdir", help="keep the exported models here (reused when present; default: a temp dir)")
    ap.add_argument("--refit", action="store_true", help="reuse the measurements in results.json (needs --workdir)")
    a = ap.parse_args(argv)
    if a.refit and not a.workdir:
        ap.error("--refit needs --workdir with the exported models")
    t0 = time.time()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="edgeprune-costmodel-") as td:
        rows = hostcal.export_suite(hostcal.suite(), Path(a.workdir or td))
        if a.refit:
            prev = json.loads((HERE / "results.json").read_text())
            old = {r["name"]: r["measured"] for r in prev["rows"]}
            for r in rows:
                r["measured"] = old[r["name"]]
        else:
            hostcal.measure_suite(rows, repeats=a.repeats, runs=a.runs, warmup=a.warmup)
        for r in rows:
            gc = costmodel.analyze(r["artifacts"]["onnx"])
            r.update(macs=gc.macs, n_ops=len(gc.ops), shape=list(r["shape"]))
        factors = hostcal.fit_all(rows)
        cal = hostcal.calibration_dict(factors, f"fitted by benchmarks/costmodel/host_error.py on {len(rows)} "
                                                "built-in model configurations")
        in_sample(rows, cal)
        lomo(rows)
        summary = summarize(rows)
        for key, f in cal["factors"].items():
            f["lomo_median_abs_pct_err"] = summary[key]["lomo_median_abs_pct_err"]
            f["lomo_max_abs_pct_err"] = summary[key]["lomo_max_abs_pct_err"]
        spec = hostcal.host_spec()
        res = {
            "date": prev["date"] if a.refit else dt.date.today().isoformat(),
            "command": _command(argv),
            "machine": {"cpu": spec["cpu"], "isa": spec["isa"], "cores": os.cpu_count(),
                        "platform": platform.platform(), "spec": spec},
            "fingerprint": cal["fingerprint"],
            "loadavg_before": prev.get("loadavg_before") if a.refit else load_before,
            "runs": a.runs, "warmup": a.warmup, "repeats": a.repeats,
            "summary": summary, "fits": cal["factors"],
            "target_predictions": target_predictions(rows, cal),
            "rows": [{k: v for k, v in r.items() if k != "artifacts"} | {"artifacts": sorted(r["artifacts"])}
                     for r in rows],
        }
        res["loadavg_after"] = prev.get("loadavg_after") if a.refit else [round(x, 2) for x in os.getloadavg()]
        res["wall_min"] = (time.time() - t0) / 60
        (HERE / "results.json").write_text(json.dumps(res, indent=1, default=list) + "\n")
        write_md(res)
        if a.write_calibration:
            costmodel.CALIBRATION_PATH.write_text(json.dumps(cal, indent=1, sort_keys=True) + "\n")
    for key, s in summary.items():
        print(f"{key:18s} leave-one-model-out median abs error {s['lomo_median_abs_pct_err']:5.1f}% "
              f"(max {s['lomo_max_abs_pct_err']:.0f}%, in-sample {s['fit_median_abs_pct_err']:.1f}%, n={s['n']})")


if __name__ == "__main__":
    main()
