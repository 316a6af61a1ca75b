"""Export stage: torch model -> verified ONNX / TFLite artifacts and a device bundle.

::

    from edgeprune.export import export_all, FORMATS, package_bundle

:func:`export_all` writes ``model.onnx``, ``model.int8.onnx``, ``model.tflite`` and
``model.int8.tflite`` (whichever are asked for) to ``out_dir`` and runs each in its real
runtime over the whole test split. Each returned entry holds::

    ok, path (relative to out_dir, None unless ok), size_bytes, sha256, runtime,
    metric_name, metric, torch_metric, metric_drop, max_abs_diff, rel_diff, n_test,
    input_layout, input_shape, output_shape, input_dtype, quant, within_tolerance,
    error, seconds, format, opset (ONNX only), details (converter/quantizer facts),
    dynamic_batch (``onnx`` only, with ``dynamic_batch=True``: the model.dynamic.onnx entry)

``out_dir/export.json`` also lists ``int8_over_tolerance``: the INT8 artifacts whose metric
drop exceeds ``int8_tolerance`` (they stay ``ok``; the build reports them).

:func:`package_bundle` turns chosen entries into a deployable folder for a target.
litert-torch is only ever imported in a child process (:mod:`.tflite_worker`).
"""

from .bundle import PLATFORM_DEFAULT_FORMATS, package_bundle
from .core import FILENAMES, FORMATS, FP32_REL_TOL, export_all

__all__ = ["FORMATS", "FILENAMES", "FP32_REL_TOL", "PLATFORM_DEFAULT_FORMATS", "export_all", "package_bundle"]

