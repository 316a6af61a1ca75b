"""One benchmark harness for every registered pruning method (edgeprune's and Torch-Pruning's), side by side.

A thin layer over the pipeline's own pieces. For a dataset, a built-in model, FLOPs-removal levels,
methods and seeds, :func:`run_compare` runs each (method, level, seed) from the same starting point::

    for seed:      train the dense model once (edgeprune.train.train; cached, shared by every method and level)
      for method, level:
        prune      get_method(name, options).fit(model, FitContext(flops_keep = 1 - level)) -> plan,
                   then edgeprune.surgery.compact_and_verify (the same for every method, TP's included)
        count      params and MACs on the COMPACT model (edgeprune's graph, cross-checked with TP's counter)
        fine-tune  the same total epoch budget for everyone (``--epoch-budget``: a method's own training
                   before pruning counts against it), same lr, batch and seed-fixed batch order
        evaluate   test metric: accuracy (%) or PSNR (dB) for reconstruction models
        export     the pipeline's ONNX exporter, parity-checked in onnxruntime
    latency        at the end, every ONNX file in interleaved rounds of the pipeline's host benchmark
                   (``edgeprune.bench.host.measure_host``, fresh single-thread processes), median p50 over rounds

Modules: :mod:`.config` (method specs ``NAME[key=value,...]@N``, :class:`CompareConfig`, epoch budget),
:mod:`.harness` (the run), :mod:`.counting`, :mod:`.tables`, :mod:`.plots`, :mod:`.outputs` (results folder
and README), :mod:`.cli`. Outputs in the results folder: ``results.csv`` / ``results.json``, ``table.md``,
``metric_vs_macs.png`` and ``README.md``; ``<out>/cache/`` (dense checkpoints, ONNX files, finished rows for
``--resume``) ignores itself in git.
"""

from .cli import QUICK, config_from_args, main, make_parser
from .config import (
    DENSE_FT, EPOCH_BUDGETS, RESULT_FILES, CompareConfig, MethodSpec, available_methods, epoch_plan, expand_methods,
    parse_method, split_methods, tp_methods,
)
from .counting import count_compact, tp_counts, widths_str
from .harness import export_onnx, measure_latencies, run_compare
from .outputs import machine_info, rebuild_outputs, versions, write_outputs
from .tables import markdown_table, summarize, time_to_target

__all__ = [
    "DENSE_FT", "EPOCH_BUDGETS", "QUICK", "RESULT_FILES", "CompareConfig", "MethodSpec", "available_methods",
    "config_from_args", "count_compact", "epoch_plan", "expand_methods", "export_onnx", "machine_info", "main",
    "make_parser", "markdown_table", "measure_latencies", "parse_method", "rebuild_outputs", "run_compare",
    "split_methods", "summarize", "time_to_target", "tp_counts", "tp_methods", "versions", "widths_str",
    "write_outputs",
]
