"""Child process that converts a model to TFLite with litert-torch.

litert-torch costs ~5 s and ~550 MB to import, prints absl/torchao noise, and its MLIR
converter can exhaust memory or abort; so it runs here, in a process of its own, never in
the pipeline's process. The parent (:mod:`edgeprune.export.core`) passes everything as
files: ::

    python -m edgeprune.export.tflite_worker JOB.json

``JOB.json``::

    {"program": "model.pt2",          # torch.export.save() of the eval-mode model (no class needed)
     "example_shape": [1, 1, 8, 8],
     "calib": "calib.npy",            # float32 real samples, used by the INT8 job
     "log": "tflite.log",             # everything the converter prints goes here
     "result": "result.json",         # rewritten (atomically) after every job
     "jobs": [{"format": "tflite", "out": "tmp.tflite"},
              {"format": "tflite-int8", "out": "tmp.int8.tflite"}]}   # optional "observer": "histogram"

Protocol: the original stdout carries only ``START <format>`` lines (the parent turns them
into progress messages); each job's outcome ``{"ok", "error", "seconds", ...}`` lands in
``result.json`` as soon as it is known, so a crash in the second job keeps the first.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path


def _redirect_output(log_path: str):
    """Keep a private handle on stdout for protocol lines, send fds 1 and 2 to the log."""
    sys.stdout.flush()
    sys.stderr.flush()
    marker = os.fdopen(os.dup(1), "w", buffering=1)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return marker


def _exit_with_parent() -> None:
    """The parent holds our stdin open; EOF means it died: stop converting at once."""
    import threading

    def watch():
        try:
            while sys.stdin.buffer.read(1 << 16):
                pass
        except (OSError, ValueError):
            pass
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _write_result(path: Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, path)


def _calib_tensors(calib, torch):
    for i in range(len(calib)):
        yield torch.from_numpy(calib[i : i + 1].copy())


def _to_eval(gm) -> None:
    """Exported GraphModules refuse .eval(); the graph is already eval (exported in eval mode)."""
    for m in gm.modules():
        m.training = False


def convert_fp32(program_path: str, example, out: str) -> dict:
    import litert_torch
    import torch

    module = torch.export.load(program_path).module()
    _to_eval(module)
    litert_torch.convert(module, (example,)).export(out)
    return {"converter": f"litert-torch {litert_torch.__version__}"}


#: What each PT2E INT8 recipe is, written into the artifact entry (``details.quantizer``). The
#: export stage always uses ``"minmax"``; ``"histogram"`` (litert-torch's own default) exists
#: so that benchmarks/export can measure the difference (job key ``"observer"``).
PT2E_RECIPES = {
    "minmax": "pt2e static int8: weights symmetric per-channel (PerChannelMinMaxObserver), activations per-tensor "
    "affine (MinMaxObserver: plain min/max over the calibration samples), int8 input and output",
    "histogram": "pt2e static int8: weights symmetric per-channel (PerChannelMinMaxObserver), activations per-tensor "
    "affine (HistogramObserver: L2-optimal clipping range), int8 input and output",
}


def quantization_config(observer: str = "minmax"):
    """litert-torch's static per-channel int8 config, with plain min/max activation observers by default.

    ``get_symmetric_quantization_config(is_per_channel=True)`` observes activations with a
    HistogramObserver (it searches the clipping range that minimises the L2 quantization
    error); for ``observer="minmax"`` the activation spec keeps every other field (int8,
    [-128, 127], per-tensor affine, eps) and only swaps the observer for a MinMaxObserver.
    Weights use PerChannelMinMaxObserver in both.
    """
    import dataclasses

    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.observer import MinMaxObserver, PerChannelMinMaxObserver

    if observer not in PT2E_RECIPES:
        raise ValueError(f"unknown activation observer {observer!r}; choose from {sorted(PT2E_RECIPES)}")
    base = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    if base.weight.observer_or_fake_quant_ctr.p.func is not PerChannelMinMaxObserver:  # a future litert-torch may change it
        raise RuntimeError(f"unexpected weight observer in litert-torch's config: {base.weight.observer_or_fake_quant_ctr}")
    if observer == "histogram":
        return base
    act = dataclasses.replace(base.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    return dataclasses.replace(base, input_activation=act, output_activation=act)


def annotate_adds(model, config) -> int:
    """Annotate every tensor + tensor ``aten.add`` the litert-torch annotators left alone.

    litert-torch's "add" annotator finds adds by their source partition (``operator.add``,
    ``torch.add`` in ``source_fn_stack``), which torch 2.13's exported graphs do not carry
    (they record ``torch_fn`` instead), so it annotates no residual ``a + b`` at all; an
    unannotated add is lowered to int8 only when its neighbours happen to be observed, so two
    chained residual adds (MobileNetV2's first stage) became DEQUANTIZE + float ADD +
    QUANTIZE in a "full INT8" model. Both inputs and the output get the config's activation
    spec, as that annotator would give them. Returns how many adds were annotated.
    """
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    count = 0
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten.add.Tensor:
            continue
        if node.meta.get("quantization_annotation") is not None or len(node.args) < 2:
            continue
        a, b = node.args[:2]
        if not (isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node)):
            continue
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={a: config.input_activation, b: config.input_activation},
            output_qspec=config.output_activation,
            _annotated=True,
        )
        count += 1
    return count


def decompose_prelus(model) -> int:
    """Rewrite every ``aten.prelu(x, w)`` as ``relu(x) + w * (x - relu(x))`` (the same values), in place.

    litert-torch lowers a PReLU after quantization by its own decomposition, which stays in float
    between a DEQUANTIZE and a QUANTIZE inside a "full INT8" model; RELU, SUB, MUL and ADD all
    have int8 TFLite kernels, so this form, annotated by :func:`annotate_prelus`, is integer
    throughout. Returns how many PReLUs were rewritten.
    """
    import torch

    aten, g, count = torch.ops.aten, model.graph, 0
    for node in list(g.nodes):
        if node.op != "call_function" or node.target is not aten.prelu.default:
            continue
        x, w = node.args[:2]
        val = x.meta.get("val")
        if val is None or not isinstance(w, torch.fx.Node):
            continue
        channels = int(model.get_parameter(w.target).numel()) if w.op == "get_attr" else None
        if channels is None:
            continue
        shape = [1, channels] + [1] * (val.dim() - 2) if val.dim() > 1 else [channels]
        with g.inserting_before(node):
            pos = g.call_function(aten.relu.default, (x,))
            neg = g.call_function(aten.sub.Tensor, (x, pos))
            slope = g.call_function(aten.view.default, (w, shape))
            scaled = g.call_function(aten.mul.Tensor, (neg, slope))
            out = g.call_function(aten.add.Tensor, (pos, scaled))
        for n in (pos, neg, scaled, out):
            n.meta["val"], n.meta["edgeprune_prelu"] = val, True
        slope.meta["val"] = torch.empty(shape, device=val.device)
        node.replace_all_uses_with(out)
        g.erase_node(node)
        count += 1
    if count:
        g.lint()
        model.recompile()
    return count


def annotate_prelus(model, config) -> int:
    """Annotate the ops :func:`decompose_prelus` wrote: inputs and outputs int8 with the activation spec
    (the slope, one value per channel, too: per-tensor affine). Returns how many ops were annotated."""
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    count = 0
    for node in model.graph.nodes:
        if not node.meta.get("edgeprune_prelu") or node.meta.get("quantization_annotation") is not None:
            continue
        ins = [a for a in node.args if isinstance(a, torch.fx.Node)]
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={a: config.input_activation for a in ins},
            output_qspec=config.output_activation,
            _annotated=True,
        )
        count += 1
    return count


def _quantizer(observer: str):
    """A litert-torch PT2EQuantizer with :func:`quantization_config` that also runs :func:`annotate_adds` and
    :func:`annotate_prelus`."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    class _Quantizer(PT2EQuantizer):
        def transform_for_annotation(self, model):
            model = super().transform_for_annotation(model)
            decompose_prelus(model)
            return model

        def annotate(self, model):
            annotate_prelus(model, self.global_config)  # first: a conv-bn-relu pattern must not take its relu
            model = super().annotate(model)
            annotate_adds(model, self.global_config)
            return model

    return _Quantizer().set_global(quantization_config(observer))


def convert_int8_pt2e(program_path: str, example, calib, out: str, observer: str = "minmax") -> dict:
    """Full INT8 (int8 input and output) through PT2E with :func:`quantization_config`,
    calibrated on the real samples in ``calib``, lowered by litert-torch."""
    import litert_torch
    import torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = _quantizer(observer)
    module = torch.export.load(program_path).module()
    prepared = prepare_pt2e(module, quantizer)
    with torch.no_grad():
        for x in _calib_tensors(calib, torch):
            prepared(x)
    converted = convert_pt2e(prepared, fold_quantize=False)
    try:
        from torchao.quantization.pt2e import move_exported_model_to_eval

        move_exported_model_to_eval(converted)
    except Exception:
        pass
    _to_eval(converted)
    litert_torch.convert(converted, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(out)
    return {
        "converter": f"litert-torch {litert_torch.__version__}",
        "quantizer": PT2E_RECIPES[observer],
        "calib_samples": int(len(calib)),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    marker = _redirect_output(job["log"])
    if job.get("watch_parent"):
        _exit_with_parent()
    result_path = Path(job["result"])
    results: dict[str, dict] = {}
    _write_result(result_path, results)

    import numpy as np
    import torch

    if os.environ.get("EDGEPRUNE_EXPORT_THREADS"):
        torch.set_num_threads(int(os.environ["EDGEPRUNE_EXPORT_THREADS"]))
    example = torch.zeros(job["example_shape"], dtype=torch.float32)
    calib = None
    for spec in job["jobs"]:
        fmt, out = spec["format"], spec["out"]
        print(f"START {fmt}", file=marker, flush=True)
        print(f"===== {fmt} =====", flush=True)
        t0 = time.perf_counter()
        try:
            if fmt == "tflite":
                info = convert_fp32(job["program"], example, out)
            elif fmt == "tflite-int8":
                if calib is None:
                    calib = np.load(job["calib"]).astype(np.float32, copy=False)
                info = convert_int8_pt2e(job["program"], example, calib, out, spec.get("observer", "minmax"))
            else:
                raise ValueError(f"unknown TFLite format {fmt!r}")
            if not Path(out).is_file():
                raise RuntimeError("converter reported success but wrote no file")
            results[fmt] = {"ok": True, "error": None, **info}
        except BaseException as exc:  # noqa: BLE001 - every failure is reported per artifact
            traceback.print_exc()
            results[fmt] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            Path(out).unlink(missing_ok=True)
            if isinstance(exc, KeyboardInterrupt):
                raise
        results[fmt]["seconds"] = round(time.perf_counter() - t0, 3)
        _write_result(result_path, results)
        sys.stdout.flush()
        sys.stderr.flush()
    print("DONE", file=marker, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
