"""Export a torch model to ONNX / ONNX INT8 / TFLite / TFLite INT8 and prove each artifact.

Every artifact is run in its real runtime (onnxruntime, ai-edge-litert) over the whole test
split and compared with the torch model; see :func:`export_all`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ConfigError, InputError
from ..metrics import get_metric
from . import _files
from .parity import compare, output_names, parity_error, shape_problem, torch_outputs, worst
from .runtimes import OrtRunner, TfliteRunner, runtime_version
from .speedcheck import runtime_choices

FORMATS = ("onnx", "onnx-int8", "tflite", "tflite-int8")

#: Final file name of each artifact inside ``out_dir``.
FILENAMES = {
    "onnx": "model.onnx",
    "onnx-int8": "model.int8.onnx",
    "tflite": "model.tflite",
    "tflite-int8": "model.int8.tflite",
}

#: The optional dynamic-batch fp32 ONNX model (``export_all(..., dynamic_batch=True)``); its
#: entry is ``entry["dynamic_batch"]`` inside the ``onnx`` entry.
DYNAMIC_ONNX = "model.dynamic.onnx"

#: Batch sizes a dynamic-batch model is run with, besides the whole test split in chunks of 256.
DYNAMIC_CHECK_BATCHES = (1, 7)

TASK_METRICS = {"classification": "accuracy", "reconstruction": "psnr"}

#: An fp32 artifact fails when max|artifact - torch| / max|torch| exceeds this.
FP32_REL_TOL = 1e-4

#: An INT8 artifact's outputs after the first (which the metric judges) fail beyond this relative max
#: difference to torch: a gross-error bound (a wrong or dropped head), not a quality claim.
INT8_AUX_REL_TOL = 0.25

#: Wall-clock limit for the litert-torch child process (both TFLite artifacts together).
TFLITE_TIMEOUT_S = 1800.0

#: Where a failed TFLite conversion's full converter log is kept (inside out_dir).
TFLITE_LOG = "export-tflite.log"

_INT8 = {"onnx-int8", "tflite-int8"}


def _layout(ndim: int) -> str:
    return {2: "NC", 3: "NCL", 4: "NCHW", 5: "NCDHW"}.get(ndim, f"rank{ndim}")


def export_all(
    model,
    example_input,
    *,
    calib: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray | None,
    out_dir: Path,
    formats: list[str],
    task: str = "classification",
    opset: int | None = None,
    int8_tolerance: float = 1.0,
    dynamic_batch: bool = False,
    metric: str | None = None,
    progress: Callable[[str], None] | None = None,
    int8_runtime: str = "onnxruntime",
    threads: int = 1,
    target_x86: bool = False,
    speed_check: bool = True,
) -> dict[str, dict]:
    """Export ``model`` to each of ``formats`` in ``out_dir`` and verify every artifact.

    ``example_input`` is a batch-1 tensor; every artifact has that fixed input shape.
    ``calib`` holds float32 real training samples ``(N, *input_shape[1:])`` for INT8
    calibration (all of them are used: the caller picks N, a few hundred is plenty).
    ``test_x``/``test_y`` is the whole test split; for ``task="reconstruction"`` the target
    is ``test_x`` and the metric PSNR (dB), for ``"classification"`` top-1 accuracy (%), unless
    ``metric`` names another one (a registered name or ``file.py:function``, higher is better).

    Returns ``{format: entry}`` with the keys documented in the package docstring. One
    artifact's failure (converter error, crash, parity failure) never stops the others: it
    gives ``ok=False`` and a one-line ``error``. fp32 artifacts fail when their relative
    max difference to torch exceeds :data:`FP32_REL_TOL`; INT8 artifacts whose metric drops
    more than ``int8_tolerance`` (points, or dB for PSNR) stay ``ok`` with
    ``within_tolerance=False`` and are listed by :func:`int8_over_tolerance`. Only ``ok``
    artifacts are written under their final name (:data:`FILENAMES`), atomically. A summary
    (with ``int8_over_tolerance``) is also written to ``out_dir/export.json``.

    ``dynamic_batch=True`` (with ``"onnx"`` in ``formats``) also writes :data:`DYNAMIC_ONNX`,
    the fp32 ONNX model with a symbolic batch axis, checked in onnxruntime on the test split
    in chunks of 256 and on batches of :data:`DYNAMIC_CHECK_BATCHES`; its entry (``ok``,
    ``path``, ``size_bytes``, ``sha256``, ``max_abs_diff``, ``rel_diff``, ``batches_checked``,
    ``error``) is ``results["onnx"]["dynamic_batch"]``. Its failure does not fail ``onnx``.

    ONNX export and quantization run in this process, the litert-torch conversions in a
    child process (see :func:`_export_onnx` for why).

    ``int8_runtime`` is what will run ``model.int8.onnx``: ``"onnxruntime"`` (uint8 activations,
    the fast CPU kernels) or ``"tensorrt"`` (symmetric int8); ``target_x86`` allows 7-bit
    weights on an x86 CPU without VNNI. With ``speed_check`` each runtime's INT8 artifact is
    timed against its fp32 one (batch 1, ``threads``) on this machine, and export.json's
    ``runtime_choice`` records which one the build prefers and why (see :mod:`.speedcheck`).
    """
    import torch

    fmts = list(dict.fromkeys(formats))
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    if task not in TASK_METRICS:
        raise ConfigError(f"unknown task {task!r}; choose one of {sorted(TASK_METRICS)}")
    if not isinstance(example_input, torch.Tensor) or example_input.ndim < 2 or example_input.shape[0] != 1:
        raise InputError("example_input must be a batch-1 torch.Tensor, e.g. shape (1, 1, 8, 8)")
    sample_shape = tuple(example_input.shape[1:])
    test_x = np.ascontiguousarray(test_x, dtype=np.float32)
    calib = np.ascontiguousarray(calib, dtype=np.float32)
    for name, arr in (("test_x", test_x), ("calib", calib)):
        if tuple(arr.shape[1:]) != sample_shape or len(arr) == 0:
            raise InputError(f"{name} has shape {arr.shape}, expected (N, {', '.join(map(str, sample_shape))}) with N > 0")
    if task == "classification":
        if test_y is None or len(test_y) != len(test_x):
            raise InputError("classification needs test_y with one label per test sample")
        targets = np.asarray(test_y)
    else:
        targets = test_x
    progress = progress or (lambda message: None)
    metric_name = metric or TASK_METRICS[task]  # the run's one metric (a user metric too), else the task's
    metric_fn = get_metric(metric_name)
    out_dir = Path(out_dir).resolve()  # the TFLite child runs with another cwd: relative paths would break
    out_dir.mkdir(parents=True, exist_ok=True)
    _files.remove_stale_tmp(out_dir)

    if any(t.device.type != "cpu" for t in list(model.parameters()) + list(model.buffers())):
        import copy

        model = copy.deepcopy(model).cpu()  # export and parity run on the CPU
    was_training = model.training
    model.eval()
    scratch = _files.make_tmp_dir(out_dir)
    child = None
    try:
        example = example_input.detach().to(torch.float32).contiguous()
        refs = torch_outputs(model, test_x)  # every output; the first is the task output (the metric's)
        ref = refs[0]
        out_shape = [1, *ref.shape[1:]]
        ctx = _Ctx(
            ref=ref,
            refs=refs,
            targets=targets,
            test_x=test_x,
            metric_name=metric_name,
            metric_fn=metric_fn,
            torch_metric=float(metric_fn(ref, targets)),
            int8_tolerance=float(int8_tolerance),
            int8_runtime=int8_runtime,
            target_x86=bool(target_x86),
            dynamic_batch=bool(dynamic_batch),
            out_dir=out_dir,
            base={
                "metric_name": metric_name,
                "n_test": int(len(test_x)),
                "input_layout": _layout(example.ndim),
                "input_shape": [1, *sample_shape],
                "output_shape": out_shape,
                "output_names": output_names(len(refs)),
                "output_shapes": [[1, *r.shape[1:]] for r in refs],
            },
        )
        results: dict[str, dict] = {}

        # The TFLite child converts while this process does ONNX (two cores, both busy).
        tflite_fmts = [f for f in fmts if f.startswith("tflite")]
        if tflite_fmts:
            child = _TfliteChild.start(model, example, calib, scratch, tflite_fmts)
        if "onnx" in fmts or "onnx-int8" in fmts:
            results.update(_export_onnx(model, example, calib, scratch, fmts, opset, ctx, progress))
        if child is not None:
            results.update(child.finish(ctx, progress))
        results = {f: results[f] for f in fmts}
        choice = runtime_choices(results, {f: out_dir / n for f, n in FILENAMES.items()}, int8_runtime, threads,
                                 speed_check, progress)  # fmt: skip
        _files.write_json_atomic(
            out_dir / "export.json",
            {
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "task": task,
                "metric_name": metric_name,
                "torch_metric": ctx.torch_metric,
                "int8_tolerance": int8_tolerance,
                "int8_over_tolerance": int8_over_tolerance(results, int8_tolerance),
                "runtime_choice": choice,
                "artifacts": results,
            },
        )
        return results
    finally:
        if child is not None:
            child.kill()
        shutil.rmtree(scratch, ignore_errors=True)
        model.train(was_training)


def int8_over_tolerance(results: dict[str, dict], tolerance: float) -> list[dict]:
    """The INT8 artifacts that exported ``ok`` but lose more than ``tolerance`` of the metric.

    One dict per such artifact: ``format, metric_name, metric, torch_metric, metric_drop, tolerance``.
    """
    return [
        {"format": f, "metric_name": e["metric_name"], "metric": e["metric"], "torch_metric": e["torch_metric"],
         "metric_drop": e["metric_drop"], "tolerance": float(tolerance)}
        for f, e in results.items()
        if f in _INT8 and e.get("ok") and not e.get("within_tolerance")
    ]  # fmt: skip


class _Ctx:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def entry(self, fmt: str) -> dict:
        runtime = runtime_version("onnx" if fmt.startswith("onnx") else "tflite")
        return {
            "format": fmt,
            "ok": False,
            "path": None,
            "size_bytes": None,
            "runtime": runtime,
            "metric_name": self.metric_name,
            "metric": None,
            "torch_metric": self.torch_metric,
            "metric_drop": None,
            "max_abs_diff": None,
            "rel_diff": None,
            **self.base,
            "input_dtype": "float32",
            "quant": None,
            "within_tolerance": False,
            "error": None,
            "seconds": 0.0,
            "sha256": None,
            "details": {},
        }


def _fail(entry: dict, reason: str, out_dir: Path) -> dict:
    entry["ok"], entry["within_tolerance"], entry["error"] = False, False, _files.one_line(reason)
    # never leave an older run's file under the final name next to a failed entry
    (out_dir / FILENAMES[entry["format"]]).unlink(missing_ok=True)
    return entry


def _verify_and_publish(entry: dict, tmp_path: Path, ctx: _Ctx) -> dict:
    """Run the artifact in its runtime over the test split, compare, publish if ok."""
    fmt = entry["format"]
    try:
        if fmt.startswith("onnx"):
            runner = OrtRunner(tmp_path)
        else:
            runner = TfliteRunner(tmp_path)
            entry["input_dtype"] = runner.input_dtype.name
            entry["quant"] = runner.quant
        outs = runner.run_all(ctx.test_x)
    except Exception as exc:  # noqa: BLE001
        return _fail(entry, f"{entry['runtime']} could not run the artifact: {_files.one_line(exc)}", ctx.out_dir)
    problem = shape_problem(outs, ctx.refs)
    if problem:
        return _fail(entry, problem, ctx.out_dir)
    rows = compare(outs, ctx.refs)  # each output against torch's, on its own scale
    bad = worst(rows)
    metric = float(ctx.metric_fn(outs[0].reshape(ctx.ref.shape), ctx.targets))  # the task output
    entry.update(
        metric=metric,
        metric_drop=float(ctx.torch_metric - metric),
        max_abs_diff=bad["max_abs_diff"],
        rel_diff=bad["rel_diff"],
        outputs=rows,
    )
    if not bad["finite"]:
        return _fail(entry, parity_error(rows, float("inf")), ctx.out_dir)

    if fmt in _INT8:
        problem = _int8_problem(fmt, tmp_path, runner, entry)
        problem = problem or parity_error(rows, INT8_AUX_REL_TOL, first=1)  # the first is judged by the metric
        if problem:
            return _fail(entry, problem, ctx.out_dir)
        entry["within_tolerance"] = bool(entry["metric_drop"] <= ctx.int8_tolerance)
    else:
        problem = parity_error(rows, FP32_REL_TOL)
        if problem:
            return _fail(entry, problem, ctx.out_dir)
        entry["within_tolerance"] = True

    final = ctx.out_dir / FILENAMES[fmt]
    entry["size_bytes"] = tmp_path.stat().st_size
    entry["sha256"] = _files.sha256(tmp_path)
    _files.publish(tmp_path, final)
    entry["path"] = final.name
    entry["ok"] = True
    return entry


def _int8_problem(fmt: str, path: Path, runner, entry: dict) -> str | None:
    """Prove an INT8 artifact is integer; return why not, or None."""
    if fmt == "onnx-int8":
        from .onnx_export import onnx_int8_stats

        stats = onnx_int8_stats(path)
        entry["details"]["int8"] = stats
        if not (stats["quantize_linear"] and stats["dequantize_linear"] and stats["int8_initializers"]):
            return f"quantized ONNX graph holds no int8 QDQ pairs/initializers ({stats})"
        return None
    dtypes = runner.tensor_dtypes()
    io = (runner.input_dtype.name, *(np.dtype(o["dtype"]).name for o in runner.outs))  # input, every output
    floats = sorted(name for name, dt in dtypes.items() if dt.startswith("float"))
    entry["details"]["int8"] = {"io_dtypes": list(io), "float_tensors": len(floats), "tensors": len(dtypes)}
    if set(io) != {"int8"}:
        return f"TFLite INT8 input/output dtypes are {io}, expected int8 everywhere"
    if floats:
        return f"TFLite INT8 model still has {len(floats)} float tensor(s), e.g. {floats[0]!r}"
    return None


# --------------------------------------------------------------------------- ONNX


def _export_onnx(model, example, calib, scratch: Path, fmts, opset, ctx: _Ctx, progress) -> dict[str, dict]:
    """fp32 ONNX (and the optional dynamic-batch copy), then static INT8 from the fp32 model.

    Runs in the calling process, unlike litert-torch: the dynamo exporter, onnxsim and the
    strided MinMax calibration are bounded by a few copies of the weights plus the exporters'
    imports. Measured once on the development host (``benchmarks/export/results.md``, "ONNX
    export memory": VmHWM of a fresh process): exporting and quantizing the Fashion-MNIST
    ResNet (175k parameters, 256 calibration images) raised the peak RSS from 320 MB to 462 MB
    (+142 MB), while a child process would first cost 220 MB just to import torch again.
    Models whose ONNX export could exhaust memory would not fit the targets' memory budgets.
    """
    from .onnx_export import DEFAULT_OPSET, DYNAMO_MIN_OPSET, export_onnx_fp32, quantize_onnx_int8

    results: dict[str, dict] = {}
    fp32_tmp = scratch / "model.fp32.onnx"
    fp32_error = None
    t0 = time.perf_counter()
    entry = ctx.entry("onnx")
    exporter = "dynamo" if (DEFAULT_OPSET if opset is None else opset) >= DYNAMO_MIN_OPSET else "torchscript"
    progress(f"onnx: exporting with torch.onnx ({exporter}) + onnxsim")
    try:
        info = export_onnx_fp32(model, example, fp32_tmp, opset)
        entry["details"].update(info)
        entry["opset"] = info["opset"]
    except Exception as exc:  # noqa: BLE001
        fp32_error = f"ONNX export failed: {_files.one_line(exc)}"
    if "onnx" in fmts:
        if fp32_error:
            _fail(entry, fp32_error, ctx.out_dir)
        else:
            progress("onnx: verifying in onnxruntime")
            # verify a copy: the scratch fp32 model is still needed for quantization
            pub_tmp = scratch / (_files.TMP_PREFIX + FILENAMES["onnx"])
            shutil.copyfile(fp32_tmp, pub_tmp)
            _verify_and_publish(entry, pub_tmp, ctx)
        if ctx.dynamic_batch:
            entry["dynamic_batch"] = _export_onnx_dynamic(model, example, scratch, opset, ctx, progress)
        else:
            (ctx.out_dir / DYNAMIC_ONNX).unlink(missing_ok=True)  # an older run's would not match model.onnx
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        results["onnx"] = entry

    if "onnx-int8" in fmts:
        t0 = time.perf_counter()
        entry = ctx.entry("onnx-int8")
        progress(f"onnx-int8: static QDQ quantization with onnxruntime (for {ctx.int8_runtime})")
        if fp32_error:
            _fail(entry, f"needs the fp32 ONNX model: {fp32_error}", ctx.out_dir)
        else:
            tmp = scratch / (_files.TMP_PREFIX + FILENAMES["onnx-int8"])
            try:
                entry["details"].update(quantize_onnx_int8(fp32_tmp, tmp, calib, scratch, ctx.int8_runtime,
                                                           ctx.target_x86))  # fmt: skip
                entry["opset"] = results.get("onnx", {}).get("opset") or _read_opset(tmp)
            except Exception as exc:  # noqa: BLE001
                _fail(entry, f"ONNX INT8 quantization failed: {_files.one_line(exc)}", ctx.out_dir)
            else:
                progress("onnx-int8: verifying in onnxruntime")
                _verify_and_publish(entry, tmp, ctx)
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        results["onnx-int8"] = entry
    return results


def _export_onnx_dynamic(model, example, scratch: Path, opset, ctx: _Ctx, progress) -> dict:
    """Export :data:`DYNAMIC_ONNX`, check it against torch at several batch sizes, publish if ok."""
    from .onnx_export import export_onnx_fp32

    progress("onnx: exporting the dynamic-batch model")
    entry = {"ok": False, "path": None, "size_bytes": None, "sha256": None, "max_abs_diff": None, "rel_diff": None,
             "batches_checked": [], "error": None}  # fmt: skip
    final = ctx.out_dir / DYNAMIC_ONNX
    tmp = scratch / (_files.TMP_PREFIX + DYNAMIC_ONNX)
    try:
        entry["details"] = export_onnx_fp32(model, example, tmp, opset, dynamic_batch=True)
        runner = OrtRunner(tmp)
        outs = [(len(ctx.test_x), runner.run_all(ctx.test_x))]  # chunks of 256
        outs += [(n, runner.run_batch_all(ctx.test_x[:n])) for n in DYNAMIC_CHECK_BATCHES if n <= len(ctx.test_x)]
    except Exception as exc:  # noqa: BLE001
        entry["error"] = f"dynamic-batch ONNX export failed: {_files.one_line(exc)}"
        final.unlink(missing_ok=True)
        return entry
    rows = []
    for n, out in outs:
        refs = [r[:n] for r in ctx.refs]
        problem = shape_problem(out, refs)
        if problem:
            entry["error"] = f"dynamic-batch model at batch {n}: {problem}"
            final.unlink(missing_ok=True)
            return entry
        rows += compare(out, refs)
    bad = worst(rows)
    entry.update(max_abs_diff=bad["max_abs_diff"], rel_diff=bad["rel_diff"], batches_checked=[n for n, _ in outs])
    if not (bad["finite"] and bad["rel_diff"] <= FP32_REL_TOL):
        entry["error"] = (f"dynamic-batch parity failure ({bad['name']}): relative max difference {bad['rel_diff']:.3g} "
                          f"exceeds {FP32_REL_TOL:g}")
        final.unlink(missing_ok=True)
        return entry
    entry.update(size_bytes=tmp.stat().st_size, sha256=_files.sha256(tmp), path=final.name, ok=True)
    _files.publish(tmp, final)
    return entry


def _read_opset(path: Path) -> int | None:
    import onnx

    for imp in onnx.load(str(path), load_external_data=False).opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


# --------------------------------------------------------------------------- TFLite


class _TfliteChild:
    """The litert-torch conversion running in ``python -m edgeprune.export.tflite_worker``."""

    def __init__(self, fmts, scratch: Path, outs: dict, proc=None, log=None, error=None, timer=None):
        self.fmts, self.scratch, self.outs = fmts, scratch, outs
        self.proc, self.log, self.error, self.timer = proc, log, error, timer
        self.t0 = time.perf_counter()
        self.timed_out = False

    @classmethod
    def start(cls, model, example, calib, scratch: Path, fmts: list[str]) -> "_TfliteChild":
        import torch

        outs = {f: scratch / (_files.TMP_PREFIX + FILENAMES[f]) for f in fmts}
        program = scratch / "model.pt2"
        try:
            with torch.no_grad():
                ep = torch.export.export(model, (example,))
            torch.export.save(ep, str(program))
        except Exception as exc:  # noqa: BLE001
            return cls(fmts, scratch, outs, error=f"torch.export failed: {_files.one_line(exc)}")
        np.save(scratch / "calib.npy", calib)
        log = scratch / "tflite.log"
        job = {
            "program": str(program),
            "example_shape": list(example.shape),
            "calib": str(scratch / "calib.npy"),
            "log": str(log),
            "result": str(scratch / "tflite_result.json"),
            "jobs": [{"format": f, "out": str(outs[f])} for f in fmts],
            "watch_parent": True,  # the child exits when our end of its stdin closes
        }
        (scratch / "tflite_job.json").write_text(json.dumps(job))
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env.setdefault("GLOG_minloglevel", "2")
        env.setdefault("PYTHONWARNINGS", "ignore")
        pkg_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
        try:
            with open(log, "ab") as logf:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "edgeprune.export.tflite_worker", str(scratch / "tflite_job.json")],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=logf,
                    env=env,
                    cwd=str(scratch),
                    text=True,
                )
        except OSError as exc:
            return cls(fmts, scratch, outs, error=f"could not start the TFLite converter process: {_files.one_line(exc)}")
        child = cls(fmts, scratch, outs, proc=proc, log=log)

        def _kill():
            child.timed_out = True
            proc.kill()

        child.timer = threading.Timer(TFLITE_TIMEOUT_S, _kill)
        child.timer.daemon = True
        child.timer.start()
        return child

    def kill(self) -> None:
        """Stop the child if it still runs (the parent failed or was interrupted)."""
        if self.timer is not None:
            self.timer.cancel()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream and not stream.closed:
                    stream.close()

    def finish(self, ctx: _Ctx, progress) -> dict[str, dict]:
        results: dict[str, dict] = {}
        if self.error:
            for f in self.fmts:
                progress(f"{f}: skipped")
                results[f] = _fail(ctx.entry(f), self.error, ctx.out_dir)
            return results
        started = 0
        try:
            for line in self.proc.stdout:
                line = line.strip()
                if line.startswith("START "):
                    started += 1
                    progress(f"{line[6:]}: converting with litert-torch (child process)")
            rc = self.proc.wait()
        finally:
            self.timer.cancel()
            self.proc.stdout.close()
            self.proc.stdin.close()
        try:
            child_results = json.loads((self.scratch / "tflite_result.json").read_text())
        except (OSError, ValueError):
            child_results = {}
        if self.timed_out:
            death = f"TFLite converter timed out after {TFLITE_TIMEOUT_S:g} s"
        elif rc < 0:
            death = f"TFLite converter process killed by signal {-rc}" + (" (out of memory?)" if rc == -9 else "")
        else:
            death = f"TFLite converter process exited with code {rc}"
        any_failed = False
        for f in self.fmts:
            entry = ctx.entry(f)
            r = child_results.get(f)
            t0 = time.perf_counter()
            if r is None:
                _fail(entry, f"{death} before finishing {f} (see {TFLITE_LOG})", ctx.out_dir)
                any_failed = True
            elif not r.get("ok"):
                entry["seconds"] = r.get("seconds", 0.0)
                _fail(entry, f"litert-torch conversion failed: {_files.one_line(r.get('error') or 'unknown')}", ctx.out_dir)
                any_failed = True
            else:
                progress(f"{f}: verifying in ai-edge-litert")
                entry["details"].update({k: v for k, v in r.items() if k not in ("ok", "error", "seconds")})
                _verify_and_publish(entry, self.outs[f], ctx)
            entry["seconds"] = round(float(r.get("seconds", 0.0) if r else 0.0) + time.perf_counter() - t0, 3)
            results[f] = entry
        if any_failed and self.log and self.log.exists():
            shutil.copyfile(self.log, self.scratch / (_files.TMP_PREFIX + TFLITE_LOG))
            _files.publish(self.scratch / (_files.TMP_PREFIX + TFLITE_LOG), ctx.out_dir / TFLITE_LOG)
        elif not any_failed:
            (ctx.out_dir / TFLITE_LOG).unlink(missing_ok=True)  # an older failure's log would mislead
        return results
