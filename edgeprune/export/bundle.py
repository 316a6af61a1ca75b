"""Package verified artifacts into a folder a device team can drop into their project.

``package_bundle`` writes, atomically (built beside ``dist_dir`` and renamed into place):

* the chosen model file(s), under the same names as in the export directory (the formats
  that make sense on the platform, :data:`PLATFORM_DEFAULT_FORMATS`, in the target's order);
* ``metadata.json``: the model-independent input facts (shape, layout, normalization),
  class names, ``primary_model``, and one entry per model file in ``models`` with that
  file's own input/output dtype and quantization (scale, zero point), precision, metrics and
  parity; plus source run, budget verdict and every other key the caller passed in
  ``metadata``;
* ``labels.txt`` (classification): one class name per line, index order;
* a usage snippet for the platform: ``infer.py`` (ai_edge_litert / onnxruntime) for a
  Raspberry Pi, ``infer.py`` + ``build_engine.sh`` (``trtexec``) for a Jetson,
  ``ModelRunner.kt`` (LiteRT ``Interpreter``) for Android; and a ``README.md``.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..errors import EdgepruneError, InputError
from . import _files
from ..runfolder import json_default

#: Formats that make sense in a platform's bundle, best first (a target's own preference
#: order, when given, reorders them); the first one that is ok and within its INT8 budget
#: becomes ``primary_model``.
PLATFORM_DEFAULT_FORMATS = {
    # LiteRT is the Android runtime (ModelRunner.kt); ONNX would need onnxruntime-android.
    "android": ("tflite-int8", "tflite"),
    # ai_edge_litert / tflite_runtime first (integer kernels on the Cortex-A), fp32 ONNX as the
    # onnxruntime alternative; ONNX INT8 (QDQ) is slower than fp32 in onnxruntime on CPUs
    # (benchmarks/export/results.md).
    "rpi": ("tflite-int8", "tflite", "onnx"),
    # TensorRT builds its own engine: fp32 ONNX -> FP16 engine is the default, the QDQ
    # model gives an explicit-INT8 engine. TFLite has no GPU path there.
    "jetson": ("onnx", "onnx-int8"),
}
_OTHER_DEFAULT = ("tflite-int8", "tflite", "onnx", "onnx-int8")

#: Keys of ``metadata`` that package_bundle interprets (all others are copied verbatim).
_CONSUMED = ("mean", "std", "class_names", "input_shape", "task", "preprocessing")

_MODEL_KEYS = (
    "format", "runtime", "input_layout", "metric_name", "metric", "torch_metric", "metric_drop", "max_abs_diff",
    "rel_diff", "n_test", "within_tolerance", "opset",
)  # fmt: skip


def bundle_formats(platform: str, preference: Sequence[str] | None = None) -> list[str]:
    """The formats a ``platform`` bundle ships, best first.

    Without ``preference``: :data:`PLATFORM_DEFAULT_FORMATS` (all four formats for a platform
    not listed there). With it (a target's ``runtime.artifacts``): the platform's formats in
    ``preference``'s order, those missing from ``preference`` left out.
    """
    allowed = PLATFORM_DEFAULT_FORMATS.get(str(platform).lower(), _OTHER_DEFAULT)
    if preference is None:
        return list(allowed)
    return [f for f in dict.fromkeys(preference) if f in allowed]


def package_bundle(
    dist_dir: Path,
    *,
    target_name: str,
    platform: str,
    artifacts: dict[str, dict],
    metadata: dict,
    out_dir: Path | None = None,
    formats: Sequence[str] | None = None,
    preference: Sequence[str] | None = None,
) -> Path:
    """Write a deployable bundle for ``target_name`` to ``dist_dir`` and return ``dist_dir``.

    ``artifacts`` maps format -> entry as returned by :func:`export_all`. An entry's
    ``path`` is resolved against ``out_dir`` (the ``out_dir`` given to export_all) unless
    it is absolute. ``formats`` picks the model files to ship (each must be ``ok``); by
    default the :func:`bundle_formats` of ``platform`` (ordered by ``preference``, the
    target's artifact list) that exported ``ok`` are shipped and the others are listed under
    ``skipped`` in metadata.json. An ``onnx`` entry's ok ``dynamic_batch`` model ships with it.

    ``metadata`` keys that are interpreted: ``mean`` and ``std`` (scalar or per channel;
    the model's input is ``(raw - mean) / std``, default 0 and 1), ``class_names``,
    ``input_shape`` (default from the entries), ``task``, ``preferred_artifact`` (a format,
    the one the budget was checked on: it ships even if the platform would not take it, and
    becomes ``primary_model``; default: the first shipped format within its INT8 budget).
    Anything else (``source_run``, ``budget`` verdict, dataset name, ...) is copied into
    metadata.json as given.
    An existing ``dist_dir`` is replaced.
    """
    dist_dir = Path(dist_dir)
    platform = str(platform).lower()
    metadata = dict(metadata or {})
    preferred = metadata.get("preferred_artifact")
    chosen, skipped = _choose(platform, artifacts, formats, preference, preferred)
    sources = {f: _source(f, artifacts[f], out_dir) for f in chosen}
    within = [f for f in chosen if artifacts[f].get("within_tolerance", True)]
    primary = preferred if preferred in chosen else (within or chosen)[0]
    first = artifacts[primary]

    task = metadata.get("task") or ("reconstruction" if first.get("metric_name") == "psnr" else "classification")
    input_shape = list(metadata.get("input_shape") or first.get("input_shape") or [])
    out_shape = list(first.get("output_shape") or [])
    class_names = metadata.get("class_names")
    if class_names is None and task == "classification" and out_shape:
        class_names = [str(i) for i in range(int(out_shape[-1]))]
    channels = input_shape[1] if len(input_shape) > 1 else 1
    mean, std = _per_channel(metadata.get("mean", 0.0), channels, "mean"), _per_channel(metadata.get("std", 1.0), channels, "std")

    models, files = [], {}
    for f in chosen:
        models.append(_model_entry(sources[f], artifacts[f], f == primary))
        files[sources[f].name] = sources[f]
        dyn = artifacts[f].get("dynamic_batch") if f == "onnx" else None
        if dyn and dyn.get("ok"):
            src = _source(f"{f} (dynamic batch)", dyn, out_dir)
            models.append(_model_entry(src, artifacts[f], False, dynamic=dyn))
            files[src.name] = src
    try:
        from .. import __version__ as version
    except ImportError:  # pragma: no cover
        version = "unknown"
    prep = dict(metadata.get("preprocessing") or {})
    input_scale = float(prep.get("input_scale") or 1.0)  # e.g. 1/255: uint8 pixels were scaled before training
    meta = {k: v for k, v in metadata.items() if k not in _CONSUMED}
    meta.update(
        {
            "schema": "edgeprune.bundle/2",
            "target": target_name,
            "platform": platform,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "edgeprune_version": version,
            "task": task,
            "primary_model": sources[primary].name,
            # facts every model file shares; dtypes and quantization are per model, in "models"
            "input": {
                "shape": input_shape,
                "layout": first.get("input_layout", "NCHW"),
                "normalization": {"input_scale": input_scale, "mean": mean, "std": std,
                                  "formula": "x = (raw * input_scale - mean[c]) / std[c]"},
                # how the training data was made from raw files (colour mode, resize): do the same on the device
                "preprocessing": {k: v for k, v in prep.items() if k not in ("mean", "std", "formula")},
            },
            "output": {"shape": out_shape},
            "class_names": class_names,
            "models": models,
            "skipped": skipped,
        }
    )

    parent = dist_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    build = _files.make_tmp_dir(parent)
    try:
        for name, src in files.items():
            shutil.copyfile(src, build / name)
        (build / "metadata.json").write_text(json.dumps(meta, indent=2, default=json_default) + "\n")
        if class_names:
            (build / "labels.txt").write_text("".join(f"{c}\n" for c in class_names))
        snippets = _write_snippets(build, platform, meta, chosen, {f: sources[f].name for f in chosen})
        (build / "README.md").write_text(_readme(meta, platform, snippets))
        old = None
        if dist_dir.exists():
            old = parent / (_files.TMP_PREFIX + "old-" + dist_dir.name)
            if old.exists():
                shutil.rmtree(old)
            os.replace(dist_dir, old)
        os.replace(build, dist_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return dist_dir


def _choose(platform, artifacts, formats, preference, preferred) -> tuple[list[str], list[dict]]:
    """(formats to ship, ``skipped`` entries): explicit ``formats``, else the platform's that are ok."""
    def ok(f):
        return bool((artifacts.get(f) or {}).get("ok"))

    if formats is not None:
        missing = [f for f in formats if not ok(f)]
        if missing:
            raise EdgepruneError(f"cannot package {missing}: not exported successfully")
        chosen, skipped = list(dict.fromkeys(formats)), []
    else:
        prefs = bundle_formats(platform, preference)
        chosen = [f for f in prefs if ok(f)]
        skipped = [{"format": f, "error": (artifacts.get(f) or {}).get("error") or "not exported"}
                   for f in prefs if f not in chosen]  # fmt: skip
        if preferred and preferred not in chosen and ok(preferred):
            chosen.insert(0, preferred)  # the budget verdict is about this artifact: it must be in the bundle
    if not chosen:
        raise EdgepruneError(
            f"nothing to package for {platform!r}: none of {bundle_formats(platform, preference)} exported "
            "successfully (see export.json)"
        )
    return chosen, skipped


def _source(fmt: str, entry: dict, out_dir: Path | None) -> Path:
    rel = entry.get("path")
    src = Path(rel) if rel and Path(rel).is_absolute() else (Path(out_dir) / rel if out_dir and rel else None)
    if src is None or not src.is_file():
        raise InputError(f"model file for {fmt} not found ({src or rel}); pass out_dir=<export directory>")
    return src


def _io(dtype: str | None, shape, quant: dict | None, side: str) -> dict:
    """One side (``input``/``output``) of a model file: dtype, shape and scale/zero point (None: float I/O)."""
    q = None
    if quant and quant.get(f"{side}_scale") is not None:
        q = {"scale": quant[f"{side}_scale"], "zero_point": quant[f"{side}_zero_point"],
             "formula": "real = (q - zero_point) * scale" if side == "output" else "q = round(x / scale) + zero_point"}
    return {"dtype": dtype or "float32", "shape": list(shape or []), "quantization": q}


def _model_entry(src: Path, e: dict, primary: bool, dynamic: dict | None = None) -> dict:
    """metadata.json's description of one model file (``dynamic``: the dynamic-batch ONNX entry)."""
    quant = e.get("quant")
    in_shape, out_shape = list(e.get("input_shape") or []), list(e.get("output_shape") or [])
    if dynamic is not None:
        batch = dynamic.get("details", {}).get("batch", "batch")
        in_shape, out_shape = [batch, *in_shape[1:]], [batch, *out_shape[1:]]
    out_dtype = "int8" if quant and quant.get("output_scale") is not None else "float32"
    entry = {
        "file": src.name,
        "primary": primary,
        "size_bytes": src.stat().st_size,
        "sha256": _files.sha256(src),
        "precision": "int8" if e.get("format", "").endswith("int8") else "fp32",
        "batch": "dynamic" if dynamic is not None else 1,
        "input": _io(e.get("input_dtype"), in_shape, quant, "input"),
        "output": _io(out_dtype, out_shape, quant, "output"),
        **{k: e.get(k) for k in _MODEL_KEYS if k in e},
    }
    if dynamic is not None:
        entry.update(max_abs_diff=dynamic.get("max_abs_diff"), rel_diff=dynamic.get("rel_diff"),
                     batches_checked=dynamic.get("batches_checked"),
                     input_name=dynamic.get("details", {}).get("input_name"))  # fmt: skip
        for key in ("metric", "metric_drop"):  # measured on the fixed-batch file only
            entry.pop(key, None)
    return entry


def _per_channel(value, channels: int, name: str) -> list[float]:
    vals = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * channels
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels:
        raise InputError(f"metadata {name} has {len(vals)} values, the input has {channels} channels")
    if name == "std" and any(v == 0 for v in vals):
        raise InputError("metadata std must not be 0")
    return vals


# --------------------------------------------------------------------------- snippets


def _write_snippets(build: Path, platform: str, meta: dict, chosen: list[str], names: dict[str, str]) -> list[str]:
    """android: ModelRunner.kt; jetson: infer.py + build_engine.sh; rpi and others: infer.py."""
    files = []
    if platform == "android":
        tfl = [f for f in chosen if f.startswith("tflite")]
        kt_model = names[meta_primary_format(meta, chosen, names)] if tfl else None
        if kt_model and kt_model.endswith(".tflite"):
            (build / "ModelRunner.kt").write_text(_kotlin(meta, kt_model, _model_meta(meta, kt_model)))
            files.append("ModelRunner.kt")
        return files
    (build / "infer.py").write_text(_INFER_PY)
    files.append("infer.py")
    onnx_models = [m for m in meta["models"] if m["file"].endswith(".onnx")]
    if platform == "jetson" and onnx_models:
        (build / "build_engine.sh").write_text(_trtexec(onnx_models))
        os.chmod(build / "build_engine.sh", 0o755)
        files.append("build_engine.sh")
    return files


def meta_primary_format(meta: dict, chosen: list[str], names: dict[str, str]) -> str:
    """The primary model's format if it is TFLite, else the first TFLite format shipped."""
    for f in chosen:
        if names[f] == meta["primary_model"] and f.startswith("tflite"):
            return f
    return next(f for f in chosen if f.startswith("tflite"))


def _model_meta(meta: dict, file: str) -> dict:
    return next(m for m in meta["models"] if m["file"] == file)


def _trtexec(onnx_models: list[dict]) -> str:
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


_INFER_PY = '''\
#!/usr/bin/env python3
"""Run this bundle's model on a device: python3 infer.py INPUT.npy|IMAGE.png [--model FILE] [--threads N]

INPUT.npy holds raw input as stored (e.g. 0-255 pixels; metadata["input"]["normalization"]
["input_scale"] brings it to the training scale) of shape metadata["input"]["shape"] (batch 1) or
without the batch axis. Normalization and INT8 (de)quantization are done here from
metadata.json. .tflite runs with ai_edge_litert (pip install ai-edge-litert), falling back
to tflite_runtime or tensorflow.lite; .onnx runs with onnxruntime (TensorRT/CUDA provider
when present, e.g. onnxruntime-gpu on a Jetson, else CPU).
"""
import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
META = json.loads((HERE / "metadata.json").read_text())


def preprocess(raw):
    shape = META["input"]["shape"]
    x = np.asarray(raw, dtype=np.float32).reshape(shape)
    norm = META["input"]["normalization"]
    bshape = [1, -1] + [1] * (len(shape) - 2)
    mean = np.asarray(norm["mean"], np.float32).reshape(bshape)
    std = np.asarray(norm["std"], np.float32).reshape(bshape)
    return (x * np.float32(norm.get("input_scale", 1.0)) - mean) / std


def load_tflite(path, threads):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            from tensorflow.lite import Interpreter
    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]

    def run(x):
        if inp["dtype"] != np.float32:  # full-integer model: quantize with the input's scale/zero point
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale) + zero, -128, 127).astype(inp["dtype"])
        it.set_tensor(inp["index"], x)
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    return run


def load_onnx(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = [p for p in wanted if p in ort.get_available_providers()]
    sess = ort.InferenceSession(str(path), so, providers=providers)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def read_input(path):
    """An .npy array as stored, or an image file made the way the training images were: converted to
    metadata["input"]["preprocessing"]["color_mode"] and resized to its "resize" (needs Pillow)."""
    if not str(path).lower().endswith((".png", ".jpg", ".jpeg", ".bmp")):
        return np.load(path)
    from PIL import Image

    prep = META["input"].get("preprocessing") or {}
    img = Image.open(path)
    img = img.convert(prep.get("color_mode") or ("L" if META["input"]["shape"][1] == 1 else "RGB"))
    h, w = prep.get("resize") or META["input"]["shape"][2:4]
    img = img.resize((int(w), int(h)), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # HWC -> CHW


def load(model=None, threads=None):
    path = HERE / (model or META["primary_model"])
    return load_tflite(path, threads) if path.suffix == ".tflite" else load_onnx(path, threads)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("--model", default=None, help="model file in this folder (default: primary_model)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    run = load(args.model, args.threads)
    y = np.asarray(run(preprocess(read_input(args.input))), dtype=np.float32)
    if META.get("task") == "classification":
        names = META.get("class_names") or [str(i) for i in range(y.shape[-1])]
        top = np.argsort(-y.reshape(-1))[:5]
        print(json.dumps({"top1": names[int(top[0])], "index": int(top[0]),
                          "top5": [[names[int(i)], float(y.reshape(-1)[i])] for i in top]}))
    else:
        np.save("output.npy", y)
        print(json.dumps({"output": "output.npy", "shape": list(y.shape)}))


if __name__ == "__main__":
    main()
'''


def _kt_float(v) -> str:
    """A Kotlin Float literal that round-trips a float32 (9 significant digits)."""
    text = f"{float(v):.9g}"
    if not any(c in text for c in ".en"):
        text += ".0"
    return text + "f"


def _kotlin(meta: dict, file: str, model: dict) -> str:
    shape = meta["input"]["shape"]
    n_in = 1
    for d in shape[1:]:
        n_in *= int(d)
    n_out = 1
    for d in (model["output"]["shape"] or [1, 1])[1:]:
        n_out *= int(d)
    spatial = n_in // max(1, int(shape[1]) if len(shape) > 1 else 1)
    in_q, out_q = model["input"]["quantization"] or {}, model["output"]["quantization"] or {}
    int8 = model["input"]["dtype"] == "int8"
    norm = meta["input"]["normalization"]

    def floats(vals):
        return ", ".join(_kt_float(v) for v in vals)

    if int8:
        put = (
            "            val q = Math.round(v / IN_SCALE) + IN_ZERO_POINT\n"
            "            input.put(q.coerceIn(-128, 127).toByte())"
        )
        read = (
            "        output.rewind()\n"
            "        return FloatArray(OUTPUT_SIZE) { (output.get().toInt() - OUT_ZERO_POINT) * OUT_SCALE }"
        )
        in_bytes, out_bytes = "1", "1"
    else:
        put = "            input.putFloat(v)"
        read = "        output.rewind()\n        return FloatArray(OUTPUT_SIZE) { output.getFloat() }"
        in_bytes, out_bytes = "4", "4"
    consts = (
        f"        const val IN_SCALE = {_kt_float(in_q.get('scale', 1.0))}\n"
        f"        const val IN_ZERO_POINT = {int(in_q.get('zero_point', 0))}\n"
        f"        const val OUT_SCALE = {_kt_float(out_q.get('scale', 1.0))}\n"
        f"        const val OUT_ZERO_POINT = {int(out_q.get('zero_point', 0))}\n"
        if int8
        else ""
    )
    return f"""// Generated by edgeprune for target "{meta['target']}" ({meta['created_utc']}).
// 1. Copy {file} and labels.txt into app/src/main/assets/ (keep .tflite uncompressed:
//    android {{ androidResources {{ noCompress += "tflite" }} }}).
// 2. app/build.gradle.kts: implementation("com.google.ai.edge.litert:litert:1.4.1")
//    (LiteRT keeps the org.tensorflow.lite.Interpreter API).
// The model takes {meta['input']['layout']} input {shape} ({'int8' if int8 else 'float32'}): feed values in
// channel-major order (all of channel 0, then channel 1, ...), NOT an Android bitmap's interleaved RGB.
package com.example.edgeprune

import android.content.Context
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel

class ModelRunner(context: Context, threads: Int = 2) : AutoCloseable {{
    companion object {{
        const val MODEL_FILE = "{file}"
        const val INPUT_SIZE = {n_in}      // {' x '.join(str(d) for d in shape[1:])}
        const val CHANNEL_SIZE = {spatial}
        const val OUTPUT_SIZE = {n_out}
        const val INPUT_SCALE = {_kt_float(norm.get('input_scale', 1.0))}
        val MEAN = floatArrayOf({floats(norm['mean'])})
        val STD = floatArrayOf({floats(norm['std'])})
{consts}    }}

    private val interpreter: Interpreter
    val labels: List<String> = context.assets.open("labels.txt").bufferedReader().readLines()
    private val input = ByteBuffer.allocateDirect(INPUT_SIZE * {in_bytes}).order(ByteOrder.nativeOrder())
    private val output = ByteBuffer.allocateDirect(OUTPUT_SIZE * {out_bytes}).order(ByteOrder.nativeOrder())

    init {{
        val fd = context.assets.openFd(MODEL_FILE)
        val model = FileInputStream(fd.fileDescriptor).channel
            .map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        interpreter = Interpreter(model, Interpreter.Options().setNumThreads(threads))
    }}

    /** raw: INPUT_SIZE values as stored (e.g. 0-255 pixels), channel-major (NCHW). Returns the model's scores. */
    fun predict(raw: FloatArray): FloatArray {{
        require(raw.size == INPUT_SIZE) {{ "expected $INPUT_SIZE values, got ${{raw.size}}" }}
        input.rewind()
        for (i in 0 until INPUT_SIZE) {{
            val c = i / CHANNEL_SIZE
            val v = (raw[i] * INPUT_SCALE - MEAN[c]) / STD[c]
{put}
        }}
        input.rewind()
        output.rewind()
        interpreter.run(input, output)
{read}
    }}

    /** Index and label of the highest score. */
    fun classify(raw: FloatArray): Pair<Int, String> {{
        val scores = predict(raw)
        val best = scores.indices.maxByOrNull {{ scores[it] }} ?: 0
        return best to labels.getOrElse(best) {{ best.toString() }}
    }}

    override fun close() = interpreter.close()
}}
"""


def _prep_words(prep: dict) -> str:
    """``{"color_mode": "L", "resize": [28, 28], ...}`` -> "convert to L, resize to 28x28 (bilinear)"."""
    parts = []
    if prep.get("color_mode"):
        parts.append(f"convert to {prep['color_mode']}")
    if prep.get("resize"):
        parts.append(f"resize to {'x'.join(map(str, prep['resize']))}" + (f" ({prep['resample']})" if prep.get("resample") else ""))
    return ", ".join(parts)


def _readme(meta: dict, platform: str, files: list[str]) -> str:
    primary = _model_meta(meta, meta["primary_model"])
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
    if "ModelRunner.kt" in files:
        lines += [
            "## Android (Kotlin, LiteRT Interpreter)",
            "",
            "Copy the `.tflite` file and `labels.txt` to `app/src/main/assets/` and `ModelRunner.kt` into your sources; "
            "the header of `ModelRunner.kt` lists the Gradle dependency.",
            "",
            "```kotlin",
            "ModelRunner(context).use { runner -> val (index, label) = runner.classify(rawNchwValues) }",
            "```",
            "",
        ]
    lines += _budget_lines(meta.get("budget"))
    if meta.get("skipped"):
        lines += ["Not included: " + "; ".join(f"{s['format']} ({s['error']})" for s in meta["skipped"]), ""]
    return "\n".join(lines)


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
