"""The usage files of a device bundle: infer.py, build_engine.sh, ModelRunner.kt/.swift, README.md.

The app snippets are template files in ``templates/`` (package data); :func:`render` fills their
``{{name}}`` placeholders. Each snippet carries the exact preprocessing that training used (scale,
mean/std per channel, colour mode, resize) and names the model file and tensor shapes of the bundle.
"""

from __future__ import annotations

import re
from importlib import resources

#: Platforms whose bundle gets the phone app samples (Kotlin for Android, Swift for iOS).
MOBILE_PLATFORMS = ("android",)

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def template(name: str) -> str:
    """The text of template ``name`` (edgeprune/export/templates/)."""
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def render(name: str, **values) -> str:
    """Template ``name`` with every ``{{key}}`` replaced by ``values[key]``; a missing or unused value is a bug."""
    text = template(name)
    keys = set(_PLACEHOLDER.findall(text))
    if keys != set(values):
        raise KeyError(f"template {name}: missing {sorted(keys - set(values))}, unused {sorted(set(values) - keys)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def model_meta(meta: dict, file: str) -> dict:
    """metadata.json's entry for model ``file``."""
    return next(m for m in meta["models"] if m["file"] == file)


def trtexec(onnx_models: list[dict]) -> str:
    lines = [
        "#!/bin/sh",
        "# Build TensorRT engines on the Jetson itself (engines are tied to the GPU and TensorRT version).",
        "# trtexec ships with JetPack at /usr/src/tensorrt/bin/trtexec.",
        "set -e",
        'TRTEXEC="${TRTEXEC:-/usr/src/tensorrt/bin/trtexec}"',
        'cd "$(dirname "$0")"',
    ]
    for m in onnx_models:
        f = m["file"]
        stem = f[: -len(".onnx")]
        if m["batch"] == "dynamic":
            dims = "x".join(str(d) for d in m["input"]["shape"][1:])
            lines.append("# dynamic batch: pick the batch range the application needs (here 1..32, tuned for 8)")
            lines.append(f'# "$TRTEXEC" --onnx={f} --fp16 --minShapes={m["input_name"]}:1x{dims} '
                         f'--optShapes={m["input_name"]}:8x{dims} --maxShapes={m["input_name"]}:32x{dims} '
                         f"--saveEngine={stem}.fp16.engine")  # fmt: skip
        elif ".int8" in f:
            lines.append("# explicit INT8 from the QDQ graph (scales come from the calibration in the file)")
            lines.append(f'"$TRTEXEC" --onnx={f} --int8 --fp16 --saveEngine={stem}.engine')
        else:
            lines.append("# FP16 engine from the fp32 ONNX model (usually the best accuracy/latency trade-off)")
            lines.append(f'"$TRTEXEC" --onnx={f} --fp16 --saveEngine={stem}.fp16.engine')
    return "\n".join(lines) + "\n"



def _kt_float(v) -> str:
    """A Kotlin Float literal that round-trips a float32 (9 significant digits)."""
    text = f"{float(v):.9g}"
    if not any(c in text for c in ".en"):
        text += ".0"
    return text + "f"


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _mobile_values(meta: dict, file: str, model: dict) -> dict:
    """What the Kotlin and Swift templates share: files, shapes, sizes, the training preprocessing."""
    shape = meta["input"]["shape"]
    out_shape = model["output"]["shape"] or [1, 1]
    n_in = _prod(shape[1:])
    norm = meta["input"]["normalization"]
    words = _prep_words(meta["input"].get("preprocessing") or {})
    return {
        "target": meta["target"], "created": meta["created_utc"], "model_file": file, "labels_file": "labels.txt",
        "layout": meta["input"]["layout"], "shape": shape, "dtype": model["input"]["dtype"],
        "n_in": n_in, "n_out": _prod(out_shape[1:]), "spatial": n_in // max(1, int(shape[1]) if len(shape) > 1 else 1),
        "dims": " x ".join(str(d) for d in shape[1:]), "prep_words": f"{words}, then " if words else "",
        "mean_values": norm["mean"], "std_values": norm["std"], "input_scale_value": norm.get("input_scale", 1.0),
        "output_shape": out_shape,
    }  # fmt: skip


def kotlin(meta: dict, file: str, model: dict) -> str:
    """ModelRunner.kt: LiteRT Interpreter, labels and a normalization check from the model's own metadata."""
    v = _mobile_values(meta, file, model)
    in_q, out_q = model["input"]["quantization"] or {}, model["output"]["quantization"] or {}
    int8 = model["input"]["dtype"] == "int8"
    if int8:
        put = ("            val q = Math.round(v / IN_SCALE) + IN_ZERO_POINT\n"
               "            input.put(q.coerceIn(-128, 127).toByte())")
        read = ("        output.rewind()\n"
                "        return FloatArray(OUTPUT_SIZE) { (output.get().toInt() - OUT_ZERO_POINT) * OUT_SCALE }")
        consts = (f"        const val IN_SCALE = {_kt_float(in_q.get('scale', 1.0))}\n"
                  f"        const val IN_ZERO_POINT = {int(in_q.get('zero_point', 0))}\n"
                  f"        const val OUT_SCALE = {_kt_float(out_q.get('scale', 1.0))}\n"
                  f"        const val OUT_ZERO_POINT = {int(out_q.get('zero_point', 0))}\n")
    else:
        put = "            input.putFloat(v)"
        read = "        output.rewind()\n        return FloatArray(OUTPUT_SIZE) { output.getFloat() }"
        consts = ""
    return render("ModelRunner.kt.tmpl", target=v["target"], created=v["created"], model_file=file,
                  labels_file=v["labels_file"], prep_words=v["prep_words"], layout=v["layout"], shape=v["shape"],
                  dtype=v["dtype"], n_in=v["n_in"], dims=v["dims"], spatial=v["spatial"], n_out=v["n_out"],
                  input_scale=_kt_float(v["input_scale_value"]), mean=", ".join(map(_kt_float, v["mean_values"])),
                  std=", ".join(map(_kt_float, v["std_values"])), quant_consts=consts, put=put, read=read,
                  in_bytes=1 if int8 else 4, out_bytes=1 if int8 else 4)  # fmt: skip


def swift(meta: dict, file: str, model: dict) -> str:
    """ModelRunner.swift: TensorFlowLiteSwift Interpreter; INT8 scale/zero point read from the model's tensors."""
    v = _mobile_values(meta, file, model)
    num = lambda x: f"{float(x):.9g}"  # noqa: E731  (float32 round trip)
    return render("ModelRunner.swift.tmpl", target=v["target"], created=v["created"], model_file=file,
                  labels_file=v["labels_file"], prep_words=v["prep_words"], layout=v["layout"], shape=v["shape"],
                  dtype=v["dtype"], shape_items=", ".join(map(str, v["shape"])), n_in=v["n_in"], spatial=v["spatial"],
                  output_shape_items=", ".join(map(str, v["output_shape"])), n_out=v["n_out"],
                  input_scale=num(v["input_scale_value"]), mean=", ".join(map(num, v["mean_values"])),
                  std=", ".join(map(num, v["std_values"])))  # fmt: skip


def _prep_words(prep: dict) -> str:
    """``{"color_mode": "L", "resize": [28, 28], ...}`` -> "convert to L, resize to 28x28 (bilinear)"."""
    parts = []
    if prep.get("color_mode"):
        parts.append(f"convert to {prep['color_mode']}")
    if prep.get("resize"):
        parts.append(f"resize to {'x'.join(map(str, prep['resize']))}" + (f" ({prep['resample']})" if prep.get("resample") else ""))
    return ", ".join(parts)


def readme(meta: dict, platform: str, files: list[str]) -> str:
    primary = model_meta(meta, meta["primary_model"])
    lines = [
        f"# {meta['target']} ({platform})",
        "",
        f"Primary model: `{meta['primary_model']}`; input {meta['input']['layout']} {meta['input']['shape']} "
        f"{primary['input']['dtype']}; from raw input as stored (e.g. 0-255 pixels): "
        f"`(raw * {meta['input']['normalization']['input_scale']:.6g} - mean) / std` with "
        f"mean={meta['input']['normalization']['mean']}, std={meta['input']['normalization']['std']}"
        + (f"; images: {_prep_words(meta['input']['preprocessing'])}" if _prep_words(meta['input']['preprocessing'])
           else "") + ". Each model's input/output dtype and quantization are in "
        "`metadata.json` (`models`).",
        "",
        "| file | format | batch | input dtype | output dtype | size (bytes) | metric | torch | drop | within INT8 tolerance |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in meta["models"]:
        metric = m.get("metric")
        torch_metric = m.get("torch_metric")
        drop = m.get("metric_drop")
        lines.append(
            f"| {m['file']} | {m.get('format')} | {m['batch']} | {m['input']['dtype']} | {m['output']['dtype']} | {m['size_bytes']} | "
            f"{'' if metric is None else f'{metric:.3f}'} | {'' if torch_metric is None else f'{torch_metric:.3f}'} | "
            f"{'' if drop is None else f'{drop:.3f}'} | {m.get('within_tolerance')} |"
        )
    lines.append("")
    if len(meta.get("outputs") or []) > 1:  # a model with several outputs
        outs = ", ".join(f"`{o['name']}` {o['shape']}" for o in meta["outputs"])
        lines += [f"Outputs, in the model's order: {outs}. The first is the task output (the metric above, the "
                  "labels); every output was compared with torch in every file (`metadata.json` `models[].outputs` "
                  "and `output_parity`). `infer.load_all()` returns them all; `ModelRunner.kt` / `.swift` read the "
                  "first.", ""]
    if "infer.py" in files:
        lines += [
            "## Python (" + ("Raspberry Pi: `pip install ai-edge-litert numpy`" if platform == "rpi" else "onnxruntime / ai_edge_litert") + ")",
            "",
            "```sh",
            "python3 infer.py sample.npy            # raw input, shape " + str(meta["input"]["shape"]),
            "```",
            "",
            "or from Python: `import infer; run = infer.load(); y = run(infer.preprocess(raw))`.",
            "",
        ]
    if "build_engine.sh" in files:
        lines += [
            "## Jetson / TensorRT",
            "",
            "```sh",
            "./build_engine.sh     # runs trtexec on the device, see the file for the exact commands",
            "```",
            "",
            "ONNX Runtime with the TensorRT/CUDA providers (`onnxruntime-gpu` from the JetPack wheels) also runs "
            "`infer.py` directly.",
            "",
        ]
    if any(m["file"].endswith(".tflite") for m in meta["models"]):
        lines += _mobile_readme(meta, files)
    lines += _budget_lines(meta.get("budget"))
    if meta.get("skipped"):
        lines += ["Not included: " + "; ".join(f"{s['format']} ({s['error']})" for s in meta["skipped"]), ""]
    return "\n".join(lines)


def _mobile_readme(meta: dict, files: list[str]) -> list[str]:
    """README sections: the TFLite Metadata in the .tflite files and, where shipped, Android (Kotlin), iOS (Swift)."""
    tfl = [m for m in meta["models"] if m["file"].endswith(".tflite")]
    norm = meta["input"]["normalization"]
    scale = float(norm.get("input_scale") or 1.0)
    raw_mean = ", ".join(f"{m / scale:.6g}" for m in norm["mean"])
    raw_std = ", ".join(f"{s / scale:.6g}" for s in norm["std"])
    out = [
        "## TFLite Metadata (in every .tflite here)",
        "",
        f"{', '.join('`' + m['file'] + '`' for m in tfl)} describe themselves the Android way (TFLite Metadata): "
        f"input normalization `(raw - mean) / std` with mean=[{raw_mean}], std=[{raw_std}] on raw values "
        f"0..{1 / scale:g}, the value range, "
        + ("`labels.txt` packed inside and attached to the output as its axis labels, " if meta.get("class_names") else "")
        + "model name, version and description. Android Studio's ML Model Binding and the metadata "
        "extractor read it" + (". The input is a feature tensor (NCHW), not an NHWC image: the Task Library's "
                               "image classifier does not take it." if meta["input"]["layout"] != "NHWC" else "."),
        "",
    ]
    if "ModelRunner.kt" in files:
        out += [
            "## Android (Kotlin, LiteRT Interpreter)",
            "",
            "Copy the `.tflite` file to `app/src/main/assets/` and `ModelRunner.kt` into your sources; the header "
            "of `ModelRunner.kt` lists the Gradle dependencies. The labels come from the model's own metadata.",
            "",
            "```kotlin",
            "ModelRunner(context).use { runner -> val (index, label) = runner.classify(rawNchwValues) }",
            "```",
            "",
        ]
    if "ModelRunner.swift" in files:
        out += [
            "## iOS (Swift, TensorFlowLiteSwift)",
            "",
            "`pod 'TensorFlowLiteSwift'`; add the `.tflite` file and `labels.txt` to the app target and "
            "`ModelRunner.swift` to your sources.",
            "",
            "```swift",
            "let runner = try ModelRunner()",
            "let (index, label) = try runner.classify(rawNchwValues)",
            "```",
            "",
        ]
    return out


def _budget_lines(budget) -> list[str]:
    """README lines for a ``budget`` verdict (as the package stage passes it), or none."""
    if not isinstance(budget, dict) or not isinstance(budget.get("lines"), list):
        return []
    verdict = {True: "PASSED", False: "FAILED"}.get(budget.get("passed"), "not checked")
    out = [
        "## Budget",
        "",
        f"{verdict} for `{budget.get('artifact')}` (`{budget.get('file', 'metadata.json')}` has the details).",
        "",
        "| line | value | budget | source | passed |",
        "|---|---|---|---|---|",
    ]
    for ln in budget["lines"]:
        out.append(f"| {ln.get('name')} | {_num(ln.get('value'))} | {_num(ln.get('budget'))} | {ln.get('source') or ''} | "
                   f"{ln.get('passed')} |")  # fmt: skip
    return out + [""]


def _num(x) -> str:
    return "n/a" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))
