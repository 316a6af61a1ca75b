"""Why is INT8 not faster on a model? Per-layer INT8 / fp32 latency ratios, measured, and their time shares.

A whole-model ratio (``int8_speed.py``) says *whether* INT8 pays on a runtime; this script says *where*. Each
convolution of a built-in model (with its batch norm and activation, the kernel the runtimes fuse), its linear
layers and its residual adds are cut out as single-kernel models at the exact shapes they see inside the model;
each is converted with the project's own export functions (the same as ``benchmarks/costmodel/kernel_suite.py``)
to fp32 and INT8 for onnxruntime and TFLite, and timed in this process, 1 thread, batch 1, fp32 and INT8 of one
layer back to back in every round (rounds rotate the order), so each round gives a paired ratio. The whole model
is measured the same way. The table groups layers by kind (stem / expand 1x1 / depthwise kxk / project 1x1 /
dense kxk / linear / add) and gives, per runtime: fp32 µs, INT8 µs, their ratio, and the kind's share of the
fp32 time: where the time is, and how much INT8 saves there.

    python benchmarks/export/int8_layers.py --models mobilenetv2,resnet --input 1,28,28 --rounds 7 \
        --workdir DIR --out benchmarks/export/int8_layers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent / "costmodel"))

import kernel_suite  # noqa: E402  (benchmarks/costmodel: build, convert, _session, time_runs)

PAIRS = {"onnxruntime": ("onnx", "onnx-int8"), "tflite": ("tflite", "tflite-int8")}


def layer_rows(model_name: str, shape: tuple) -> list[dict]:
    """The model's fused kernels as kernel_suite rows (deduplicated, with a count), plus the whole model."""
    import torch
    from torch import nn

    from edgeprune.models import Residual, build_model

    model = build_model(model_name, shape, 10).eval()
    acts = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish"}
    seen, order = {}, []

    def add(key, row):
        if key not in seen:
            seen[key] = row | {"count": 0}
            order.append(key)
        seen[key]["count"] += 1

    def conv_hook(conv, act):
        def hook(mod, inp, out):
            cin, h, _ = inp[0].shape[1:]
            k, s, g = conv.kernel_size[0], conv.stride[0], conv.groups
            if g > 1 and g == cin == conv.out_channels:
                kind = f"depthwise {k}x{k}"
            elif k == 1:
                kind = "pointwise 1x1" + (" (linear)" if act == "none" else f" + {act}")
            else:
                kind = f"conv {k}x{k}"
            spec = {"cin": cin, "cout": conv.out_channels, "k": k, "s": s, "groups": g, "act": act}
            name = f"{kind.split()[0]}-c{cin}-o{conv.out_channels}-k{k}-s{s}-g{g}-hw{h}-{act}"
            add(name, {"name": name, "kind": "conv", "layer_kind": kind, "spec": spec, "shape": (cin, h, h)})
        return hook

    def lin_hook(m, inp, out):
        name = f"linear-{m.in_features}-{m.out_features}"
        add(name, {"name": name, "kind": "linear", "layer_kind": "linear",
                   "spec": {"fin": m.in_features, "fout": m.out_features, "act": False}, "shape": (m.in_features,)})

    def res_hook(m, inp, out):
        c, h = out.shape[1], out.shape[2]
        name = f"add-c{c}-hw{h}"
        add(name, {"name": name, "kind": "add", "layer_kind": "residual add", "spec": {}, "shape": (c, h, h)})

    handles = []
    for mod in model.modules():
        kids = list(mod.children()) if isinstance(mod, nn.Sequential) else []
        for i, m in enumerate(kids):
            if isinstance(m, nn.Conv2d):
                nxt = kids[i + 2] if i + 2 < len(kids) and isinstance(kids[i + 1], nn.BatchNorm2d) else None
                act = acts.get(type(nxt), "none")
                handles.append(m.register_forward_hook(conv_hook(m, act)))
        if isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(lin_hook))
        if isinstance(mod, Residual):
            handles.append(mod.register_forward_hook(res_hook))
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    rows = [seen[k] for k in order]
    rows.append({"name": f"whole-{model_name}", "kind": "builtin", "layer_kind": "whole model", "count": 1,
                 "spec": {"model": model_name, "options": {}}, "shape": tuple(shape)})
    return rows


def measure(workdir: Path, rows: list[dict], rounds: int) -> dict:
    """Per row and runtime: the p50 of fp32 and INT8 in each round, back to back, order alternating."""
    res = {}
    artifacts = {r["name"]: json.loads((workdir / r["name"] / "done.json").read_text())["artifacts"] for r in rows}
    for rnd in range(rounds):
        for r in rows[rnd % len(rows):] + rows[:rnd % len(rows)]:
            arts = artifacts[r["name"]]
            for rt, (f32, i8) in PAIRS.items():
                if f32 not in arts or i8 not in arts:
                    continue
                pair = [(f32, arts[f32]), (i8, arts[i8])]
                if rnd % 2:
                    pair.reverse()
                got = {}
                for fmt, fn in pair:
                    got[fmt] = statistics.median(kernel_suite.time_runs(kernel_suite._session(str(workdir / r["name"] / fn))))
                res.setdefault(f"{r['name']}|{rt}", []).append((got[f32], got[i8]))
        print(f"round {rnd + 1}/{rounds} done, load {os.getloadavg()[0]:.2f}", flush=True)
    return res


def summarise(rows: list[dict], meas: dict) -> dict:
    out = {}
    for rt in PAIRS:
        kinds, whole = {}, None
        for r in rows:
            pairs = meas.get(f"{r['name']}|{rt}")
            if not pairs:
                continue
            f32 = statistics.median(p[0] for p in pairs)
            i8 = statistics.median(p[1] for p in pairs)
            ratio = statistics.median(p[1] / p[0] for p in pairs)
            r.setdefault("measured", {})[rt] = {"fp32_us": f32, "int8_us": i8, "ratio": ratio,
                                                "spread_pct": 100 * (max(p[0] for p in pairs) / min(p[0] for p in pairs) - 1)}
            if r["kind"] == "builtin":
                whole = {"fp32_us": f32, "int8_us": i8, "ratio": ratio}
                continue
            k = kinds.setdefault(r["layer_kind"], {"layers": 0, "fp32_us": 0.0, "int8_us": 0.0})
            k["layers"] += r["count"]
            k["fp32_us"] += r["count"] * f32
            k["int8_us"] += r["count"] * i8
        tot32 = sum(k["fp32_us"] for k in kinds.values())
        tot8 = sum(k["int8_us"] for k in kinds.values())
        for k in kinds.values():
            k["ratio"] = k["int8_us"] / k["fp32_us"]
            k["share_fp32"] = k["fp32_us"] / tot32
            k["share_int8"] = k["int8_us"] / tot8
        out[rt] = {"kinds": kinds, "layers_fp32_us": tot32, "layers_int8_us": tot8,
                   "layers_ratio": tot8 / tot32 if tot32 else None, "whole": whole}
    return out


def write_md(path: Path, header: list[str], per_model: dict) -> None:
    lines = ["# Where INT8 saves time and where it does not: per-layer INT8 / fp32, built-in models", ""] + header
    for model, summ in per_model.items():
        lines += ["", f"## {model}", ""]
        lines += ["| runtime | layer kind | layers | fp32 µs | INT8 µs | INT8 / fp32 | share of fp32 time | "
                  "share of INT8 time |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for rt, s in summ.items():
            for kind, k in sorted(s["kinds"].items(), key=lambda kv: -kv[1]["fp32_us"]):
                lines.append(f"| {rt} | {kind} | {k['layers']} | {k['fp32_us']:.1f} | {k['int8_us']:.1f} | "
                             f"{k['ratio']:.2f}x | {100 * k['share_fp32']:.0f}% | {100 * k['share_int8']:.0f}% |")
            lines.append(f"| {rt} | **sum of the layers** | | {s['layers_fp32_us']:.1f} | {s['layers_int8_us']:.1f} | "
                         f"**{s['layers_ratio']:.2f}x** | | |")
            w = s["whole"]
            if w:
                lines.append(f"| {rt} | **whole model** | | {w['fp32_us']:.1f} | {w['int8_us']:.1f} | "
                             f"**{w['ratio']:.2f}x** | | |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenetv2,resnet")
    ap.add_argument("--input", default="1,28,28", help="C,H,W of the input")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workdir", required=True, help="artifacts (reused on a rerun: converted layers are kept)")
    ap.add_argument("--out", required=True, help="writes OUT.md and OUT.json")
    a = ap.parse_args(argv)
    shape = tuple(int(v) for v in a.input.split(","))
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = {m: layer_rows(m, shape) for m in a.models.split(",")}
    kernel_suite.convert([r for rs in rows.values() for r in rs], work)
    load0, t0 = os.getloadavg(), time.time()
    per_model, raw = {}, {}
    for m, rs in rows.items():
        meas = measure(work, rs, a.rounds)
        per_model[m] = summarise(rs, meas)
        raw[m] = rs
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    cmd = "python benchmarks/export/int8_layers.py " + " ".join(
        f"--{k} {v}" for k, v in (("models", a.models), ("input", a.input), ("rounds", a.rounds))) + \
        " --workdir DIR --out " + a.out
    header = [f"- Command: `{cmd}`",
              f"- Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime(t0))}; git {git}; measuring took "
              f"{time.time() - t0:.0f} s",
              f"- Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; load average (1 min) "
              f"{load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after",
              "- How: every fused kernel of the model (conv + BN + activation, linear, residual add) cut out at the "
              "shape it sees inside the model (random weights; a BN that is not the identity), converted with the "
              "project's export functions; in-process, 1 thread, batch 1; per round and layer fp32 and INT8 back to "
              f"back (order alternating), p50 of 15-400 runs each; {a.rounds} rounds; values are medians over "
              "rounds, the ratio is the median of the per-round paired ratios. *Sum of the layers* counts repeated "
              "layers as often as the model has them; the whole model adds what is between kernels "
              "(quantize/dequantize of the input and output, pooling, flatten, the runtime's per-op overhead). A residual "
              "add is measured as kernel_suite's `relu(x + 0.5 x)` at the add's shape."]
    write_md(Path(a.out + ".md"), header, per_model)
    Path(a.out + ".json").write_text(json.dumps({"header": header, "summary": per_model, "rows": raw}, indent=1,
                                                default=str))
    print(f"wrote {a.out}.md / .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
