"""benchmarks/pl_gates/paired.py: paired differences by seed, and merging the rows of several folders of one study."""

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "pl_gates"))

import paired  # noqa: E402


def _row(method, seed, metric, level=0.75):
    return {"method": method, "level": 0.0 if method == "dense" else level, "seed": seed, "metric": metric}


def test_paired_difference_and_interval_by_seed():
    rows = [_row("a", s, 90.0 + s + d) for s, d in enumerate([0.5, 0.7, 0.6])] + \
           [_row("b", s, 90.0 + s) for s in range(3)] + [_row("b", 3, 50.0)]  # seed 3 has no A: not paired
    (r,) = paired.paired(rows, "a")
    assert r["n"] == 3 and r["seeds"] == [0, 1, 2] and math.isclose(r["mean_diff"], 0.6)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert r["ci95"] == pytest.approx([0.6 - half, 0.6 + half]) and r["excludes_zero"]


def test_merge_pairs_rows_of_one_study_and_refuses_different_dense_models():
    one = [_row("dense", 0, 93.05), _row("l1", 0, 92.1)]
    two = [_row("dense", 0, 93.05), _row("l1", 0, 99.0), _row("l1@8", 0, 92.2)]
    rows = paired.merge([("one", one), ("two", two)])
    assert sorted((r["method"], r["metric"]) for r in rows) == [("dense", 93.05), ("l1", 92.1), ("l1@8", 92.2)]
    with pytest.raises(SystemExit, match="seed 0's dense model differs"):
        paired.merge([("one", one), ("other", [_row("dense", 0, 85.66)])])
