#!/usr/bin/env python3
"""Benchmark every registered pruning method (edgeprune's and Torch-Pruning's tp-*) side by side.

A thin wrapper around :func:`edgeprune.compare.main` (also available as ``edgeprune compare``)::

    python tools/benchmark_methods.py --quick
    python tools/benchmark_methods.py --dataset fashion-mnist --model resnet --levels 0.5,0.75,0.9 \\
        --methods 'l1,tp-l1,tp-taylor[samples=256],tp-groupnorm,pl-gates' --seeds 0,1,2 \\
        --epochs 3 --method-epochs 1 --finetune-epochs 1 --train-limit 10000 --out benchmarks/results/<name>

Methods come from the registry (``edgeprune methods``); ``NAME[key=value,...]`` sets a method's options,
``NAME@N`` rounds its widths to multiples of N. See ``--help`` for every option and
``benchmarks/results/*/README.md`` for committed results.
"""

import sys

from edgeprune.compare import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python tools/benchmark_methods.py"))
