"""Package verified artifacts into a folder a device team can drop into their project.

``package_bundle`` writes, atomically (built beside ``dist_dir`` and renamed into place):

* the chosen model file(s), under the same names as in the export directory;
* ``metadata.json``: input shape/layout/dtype, normalization, class names, per-model
  quantization parameters, metrics and parity, source run, budget verdict, and every
  other key the caller passed in ``metadata``;
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

#: Formats a platform's bundle carries by default, best first; the first one that is ok and
#: within its INT8 budget becomes ``primary_model``.
PLATFORM_DEFAULT_FORMATS = {
    "android": ("tflite-int8", "tflite"),
    "rpi": ("tflite-int8", "tflite", "onnx"),
    # TensorRT builds its own engine: fp32 ONNX -> FP16 engine is the default, the QDQ
    # model gives an explicit-INT8 engine.
    "jetson": ("onnx", "onnx-int8"),
}
_OTHER_DEFAULT = ("tflite-int8", "tflite", "onnx", "onnx-int8")

#: Keys of ``metadata`` that package_bundle interprets (all others are copied verbatim).
_CONSUMED = ("mean", "std", "class_names", "input_shape", "task")

_MODEL_KEYS = (
    "format", "runtime", "input_dtype", "input_layout", "input_shape", "output_shape", "quant",
    "metric_name", "metric", "torch_metric", "metric_drop", "max_abs_diff", "rel_diff", "n_test",
    "within_tolerance", "opset",
)  # fmt: skip


def package_bundle(
    dist_dir: Path,
    *,
    target_name: str,
    platform: str,
    artifacts: dict[str, dict],
    metadata: dict,
    out_dir: Path | None = None,
    formats: Sequence[str] | None = None,
) -> Path:
    """Write a deployable bundle for ``target_name`` to ``dist_dir`` and return ``dist_dir``.

    ``artifacts`` maps format -> entry as returned by :func:`export_all`. An entry's
    ``path`` is resolved against ``out_dir`` (the ``out_dir`` given to export_all) unless
    it is absolute. ``formats`` picks the model files to ship (each must be ``ok``); by
    default the platform's :data:`PLATFORM_DEFAULT_FORMATS` that exported ``ok`` are
    shipped and failed ones are listed under ``skipped`` in metadata.json.

    ``metadata`` keys that are interpreted: ``mean`` and ``std`` (scalar or per channel;
    the model's input is ``(raw - mean) / std``, default 0 and 1), ``class_names``,
    ``input_shape`` (default from the entries), ``task``, ``preferred_artifact`` (a format:
    becomes ``primary_model`` when shipped; default: the first shipped format within its INT8
    budget). Anything else (``source_run``, budget verdict, dataset name, ...) is copied into
    metadata.json as given.
    An existing ``dist_dir`` is replaced.
    """
    dist_dir = Path(dist_dir)
    platform = str(platform).lower()
    metadata = dict(metadata or {})
    if formats is not None:
        missing = [f for f in formats if not (artifacts.get(f) or {}).get("ok")]
        if missing:
            raise EdgepruneError(f"cannot package {missing}: not exported successfully")
        chosen, skipped = list(formats), []
    else:
        prefs = PLATFORM_DEFAULT_FORMATS.get(platform, _OTHER_DEFAULT)
        chosen = [f for f in prefs if (artifacts.get(f) or {}).get("ok")]
        skipped = [
            {"format": f, "error": (artifacts.get(f) or {}).get("error") or "not exported"}
            for f in prefs
            if f not in chosen
        ]
    if not chosen:
        raise EdgepruneError(
            f"nothing to package for {platform!r}: none of {list(PLATFORM_DEFAULT_FORMATS.get(platform, _OTHER_DEFAULT))} "
            "exported successfully"
        )
    sources = {}
    for f in chosen:
        rel = artifacts[f].get("path")
        src = Path(rel) if rel and Path(rel).is_absolute() else (Path(out_dir) / rel if out_dir and rel else None)
        if src is None or not src.is_file():
            raise InputError(f"model file for {f} not found ({src or rel}); pass out_dir=<export directory>")
        sources[f] = src
    preferred = metadata.get("preferred_artifact")
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

    models = []
    for f in chosen:
        e = artifacts[f]
        models.append({"file": sources[f].name, "size_bytes": sources[f].stat().st_size,
                       "sha256": _files.sha256(sources[f]), **{k: e.get(k) for k in _MODEL_KEYS if k in e}})  # fmt: skip
    try:
        from .. import __version__ as version
    except ImportError:  # pragma: no cover
        version = "unknown"
    meta = {k: v for k, v in metadata.items() if k not in _CONSUMED}
    meta.update(
        {
            "schema": "edgeprune.bundle/1",
            "target": target_name,
            "platform": platform,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "edgeprune_version": version,
            "task": task,
            "primary_model": sources[primary].name,
            "input": {
                "shape": input_shape,
                "layout": first.get("input_layout", "NCHW"),
                "dtype": first.get("input_dtype", "float32"),
                "normalization": {"mean": mean, "std": std, "formula": "x = (raw - mean[c]) / std[c]"},
                "quantization": first.get("quant"),
            },
            "output": {"shape": out_shape, "dtype": "int8" if first.get("quant") else "float32",
                       "quantization": first.get("quant")},  # fmt: skip
            "class_names": class_names,
            "models": models,
            "skipped": skipped,
        }
    )

    parent = dist_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    build = _files.make_tmp_dir(parent)
    try:
        for f in chosen:
            shutil.copyfile(sources[f], build / sources[f].name)
        (build / "metadata.json").write_text(json.dumps(meta, indent=2, default=json_default) + "\n")
        if class_names:
            (build / "labels.txt").write_text("".join(f"{c}\n" for c in class_names))
        files = _write_snippets(build, platform, meta, chosen, {f: sources[f].name for f in chosen})
        (build / "README.md").write_text(_readme(meta, platform, files))
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
    onnx_files = [names[f] for f in chosen if f.startswith("onnx")]
    if platform == "jetson" and onnx_files:
        (build / "build_engine.sh").write_text(_trtexec(onnx_files))
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


def _trtexec(onnx_files: list[str]) -> str:
    lines = [
        "#!/bin/sh",
        "# Build TensorRT engines on the Jetson itself (engines are tied to the GPU and TensorRT version).",
        "# trtexec ships with JetPack at /usr/src/tensorrt/bin/trtexec.",
        "set -e",
        'TRTEXEC="${TRTEXEC:-/usr/src/tensorrt/bin/trtexec}"',
        'cd "$(dirname "$0")"',
    ]
    for f in onnx_files:
        stem = f[: -len(".onnx")]
        if ".int8" in f:
            lines.append("# explicit INT8 from the QDQ graph (scales come from the calibration in the file)")
            lines.append(f'"$TRTEXEC" --onnx={f} --int8 --fp16 --saveEngine={stem}.engine')
        else:
            lines.append("# FP16 engine from the fp32 ONNX model (usually the best accuracy/latency trade-off)")
            lines.append(f'"$TRTEXEC" --onnx={f} --fp16 --saveEngine={stem}.fp16.engine')
    return "\n".join(lines) + "\n"


_INFER_PY = '''\
#!/usr/bin/env python3
"""Run this bundle's model on a device: python3 infer.py INPUT.npy [--model FILE] [--threads N]

INPUT.npy holds raw (un-normalized) input of shape metadata["input"]["shape"] (batch 1) or
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
    return (x - mean) / std


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
    y = np.asarray(run(preprocess(np.load(args.input))), dtype=np.float32)
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
    for d in (model.get("output_shape") or [1, 1])[1:]:
        n_out *= int(d)
    spatial = n_in // max(1, int(shape[1]) if len(shape) > 1 else 1)
    q = model.get("quant") or {}
    int8 = model.get("input_dtype") == "int8"
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
        f"        const val IN_SCALE = {_kt_float(q.get('input_scale', 1.0))}\n"
        f"        const val IN_ZERO_POINT = {int(q.get('input_zero_point', 0))}\n"
        f"        const val OUT_SCALE = {_kt_float(q.get('output_scale', 1.0))}\n"
        f"        const val OUT_ZERO_POINT = {int(q.get('output_zero_point', 0))}\n"
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

    /** raw: INPUT_SIZE un-normalized values in channel-major (NCHW) order. Returns the model's scores. */
    fun predict(raw: FloatArray): FloatArray {{
        require(raw.size == INPUT_SIZE) {{ "expected $INPUT_SIZE values, got ${{raw.size}}" }}
        input.rewind()
        for (i in 0 until INPUT_SIZE) {{
            val c = i / CHANNEL_SIZE
            val v = (raw[i] - MEAN[c]) / STD[c]
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


def _readme(meta: dict, platform: str, files: list[str]) -> str:
    lines = [
        f"# {meta['target']} ({platform})",
        "",
        f"Primary model: `{meta['primary_model']}`; input {meta['input']['layout']} {meta['input']['shape']} "
        f"{meta['input']['dtype']}; normalization `(raw - mean) / std` with mean={meta['input']['normalization']['mean']}, "
        f"std={meta['input']['normalization']['std']}. All facts are in `metadata.json`.",
        "",
        "| file | format | size (bytes) | metric | torch | drop | within budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in meta["models"]:
        metric = m.get("metric")
        torch_metric = m.get("torch_metric")
        drop = m.get("metric_drop")
        lines.append(
            f"| {m['file']} | {m.get('format')} | {m['size_bytes']} | "
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
    if meta.get("skipped"):
        lines += ["Not included: " + "; ".join(f"{s['format']} ({s['error']})" for s in meta["skipped"]), ""]
    return "\n".join(lines)
