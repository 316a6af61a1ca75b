#!/usr/bin/env python3
"""Benchmark every pruning method (edgeprune's registry + Torch-Pruning peers) side by side.

A thin wrapper around :func:`edgeprune.compare.main` (also available as ``edgeprune compare``)::

    python tools/benchmark_methods.py --quick
    python tools/benchmark_methods.py --dataset fashion-mnist --model resnet --levels 0.5,0.75,0.9 \\
        --methods l1,l2,tp-l1,tp-l2,tp-taylor,tp-groupnorm,tp-random --seeds 0,1,2 \\
        --epochs 3 --finetune-epochs 1 --train-limit 10000 --out benchmarks/results/<name>

See ``--help`` for every option and ``benchmarks/results/*/README.md`` for committed results.
"""

import sys

from edgeprune.compare import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python tools/benchmark_methods.py"))
