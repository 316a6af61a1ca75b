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
  ``ModelRunner.kt`` (LiteRT ``Interpreter``) and ``ModelRunner.swift`` (TensorFlowLiteSwift) for
  Android / mobile targets (templates in ``templates/``, see :mod:`.snippets`); and a ``README.md``.

Every shipped ``.tflite`` carries TFLite Metadata (:mod:`.tflite_metadata`): normalization, value
range, labels, name/version/description, as Android tools expect; its size and sha256 in
metadata.json are those of the shipped file.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..errors import EdgepruneError, InputError
from . import _files, snippets, tflite_metadata
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
_CONSUMED = ("mean", "std", "class_names", "input_shape", "task", "preprocessing", "description", "model_version")

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

    files, formats_of = {}, {}  # shipped name -> source path / (format, dynamic entry)
    for f in chosen:
        files[sources[f].name], formats_of[sources[f].name] = sources[f], (f, None)
        dyn = artifacts[f].get("dynamic_batch") if f == "onnx" else None
        if dyn and dyn.get("ok"):
            src = _source(f"{f} (dynamic batch)", dyn, out_dir)
            files[src.name], formats_of[src.name] = src, (f, dyn)
    try:
        from ..version import __version__ as version
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
            # a model with several outputs: each one's name and shape; "output" is the first (the task output)
            **({"outputs": [{"name": n, "shape": list(sh)} for n, sh in zip(first["output_names"], first["output_shapes"])]}
               if len(first.get("output_names") or []) > 1 else {}),
            "class_names": class_names,
            "models": [],
            "skipped": skipped,
        }
    )

    parent = dist_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    build = _files.make_tmp_dir(parent)
    try:
        for name, src in files.items():
            shutil.copyfile(src, build / name)
            f, dyn = formats_of[name]
            if name.endswith(".tflite"):
                _embed_metadata(build / name, meta, artifacts[f], metadata)
            meta["models"].append(_model_entry(build / name, artifacts[f], f == primary and dyn is None, dynamic=dyn))
            if name.endswith(".tflite"):
                meta["models"][-1]["tflite_metadata"] = True  # normalization, labels, ... inside the file
        (build / "metadata.json").write_text(json.dumps(meta, indent=2, default=json_default) + "\n")
        if class_names:
            (build / "labels.txt").write_text("".join(f"{c}\n" for c in class_names))
        usage = _write_snippets(build, platform, meta, chosen, {f: sources[f].name for f in chosen})
        (build / "README.md").write_text(snippets.readme(meta, platform, usage))
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
    names = e.get("output_names") or []
    if len(names) > 1:  # every output's dtype, shape and quantization, in the model's order
        per_q = (quant or {}).get("outputs") or [None] * len(names)
        shapes = [[out_shape[0], *sh[1:]] for sh in e.get("output_shapes")]
        entry["outputs"] = [dict(_io("int8" if q else "float32", sh, {"output_scale": q["scale"],
                                     "output_zero_point": q["zero_point"]} if q else None, "output"), name=n)
                            for n, sh, q in zip(names, shapes, per_q)]
        entry["output_parity"] = e.get("outputs")
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


def _embed_metadata(path: Path, meta: dict, entry: dict, given: dict) -> None:
    """Write TFLite Metadata (and the labels) into the shipped .tflite ``path``; see :mod:`.tflite_metadata`."""
    norm, prep = meta["input"]["normalization"], meta["input"]["preprocessing"]
    scale = norm["input_scale"]
    data = path.read_bytes()
    in_name, out_name = tflite_metadata.io_tensor_names(data)
    quant = entry.get("quant") or {}
    labels = "labels.txt" if meta.get("class_names") else None
    what = ("scores per class (logits; the highest is the prediction), in the order of labels.txt"
            if meta["task"] == "classification" else f"{meta['task']} output")
    if quant.get("output_scale") is not None:
        what += "; int8: real = (q - zero_point) * scale of the output tensor"
    md = tflite_metadata.classifier_metadata(
        name=f"{given.get('model') or path.stem} ({meta['task']})",
        description=given.get("description") or f"{meta['task']} model for {meta['target']}, packaged by edgeprune",
        version=str(given.get("model_version") or f"edgeprune {meta['edgeprune_version']}"), author="edgeprune",
        layout=meta["input"]["layout"], shape=list(entry.get("input_shape") or meta["input"]["shape"]),
        dtype=entry.get("input_dtype") or "float32", raw_mean=[m / scale for m in norm["mean"]],
        raw_std=[s / scale for s in norm["std"]], raw_max=1.0 / scale, color_mode=prep.get("color_mode"),
        output_shape=list(entry.get("output_shape") or meta["output"]["shape"]), output_description=what,
        labels_file=labels, input_tensor=in_name, output_tensor=out_name)  # fmt: skip
    names = entry.get("output_names") or []
    if len(names) > 1:  # one TensorMetadata per output, in the subgraph's order; the task output keeps the above
        md["subgraph_metadata"][0]["output_tensor_metadata"] = _output_metadata(
            data, md["subgraph_metadata"][0]["output_tensor_metadata"][0], entry)
    files = {labels: "".join(f"{c}\n" for c in meta["class_names"]).encode()} if labels else {}
    path.write_bytes(tflite_metadata.embed(data, md, files))


def _output_metadata(data: bytes, task_meta: dict, entry: dict) -> list[dict]:
    """TensorMetadata of every output tensor of a multi-output .tflite, in the subgraph's order: litert-torch
    names them ``..._output_<k>...`` after the model's tuple position ``k``; output 0 gets ``task_meta``."""
    import re

    rows, shapes = [], entry.get("output_shapes") or []
    for pos, tensor in enumerate(tflite_metadata.output_tensor_names(data)):
        m = re.search(r"output_(\d+)", tensor)
        k = int(m.group(1)) if m else pos
        if k == 0:
            rows.append(task_meta)
            continue
        shape = shapes[k] if k < len(shapes) else []
        rows.append({"name": f"output_{k}", "description": f"{list(shape)} (tensor {tensor}): output {k} of the model "
                     "(not the task output)" + ("; int8: real = (q - zero_point) * scale of this tensor"
                                                      if (entry.get("quant") or {}).get("outputs") else ""),
                     "content": {"content_properties_type": "FeatureProperties", "content_properties": {}}})
    return rows


def _write_snippets(build: Path, platform: str, meta: dict, chosen: list[str], names: dict[str, str]) -> list[str]:
    """mobile (android): ModelRunner.kt + .swift; jetson: infer.py + build_engine.sh; rpi, others: infer.py."""
    files = []
    if platform in snippets.MOBILE_PLATFORMS:
        tfl = [f for f in chosen if f.startswith("tflite")]
        model = names[meta_primary_format(meta, chosen, names)] if tfl else None
        if model and model.endswith(".tflite"):
            entry = snippets.model_meta(meta, model)
            (build / "ModelRunner.kt").write_text(snippets.kotlin(meta, model, entry))
            (build / "ModelRunner.swift").write_text(snippets.swift(meta, model, entry))
            files += ["ModelRunner.kt", "ModelRunner.swift"]
        return files
    (build / "infer.py").write_text(snippets.template("infer.py.tmpl"))
    files.append("infer.py")
    onnx_models = [m for m in meta["models"] if m["file"].endswith(".onnx")]
    if platform == "jetson" and onnx_models:
        (build / "build_engine.sh").write_text(snippets.trtexec(onnx_models))
        os.chmod(build / "build_engine.sh", 0o755)
        files.append("build_engine.sh")
    return files


def meta_primary_format(meta: dict, chosen: list[str], names: dict[str, str]) -> str:
    """The primary model's format if it is TFLite, else the first TFLite format shipped."""
    for f in chosen:
        if names[f] == meta["primary_model"] and f.startswith("tflite"):
            return f
    return next(f for f in chosen if f.startswith("tflite"))
