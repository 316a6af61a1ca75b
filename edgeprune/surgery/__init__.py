"""Structural surgery: coupled groups, pruning plans, compaction, verification, replay."""

from .branches import branch_output_module
from .compact import compact, compact_and_verify, load_compact, masked, save_compact, verify
from .analysis import analyze
from .graph import Branch, Group, ModelGraph
from .plan import PruningPlan, plan_from_scores, round_width

__all__ = [
    "Branch", "Group", "branch_output_module", "ModelGraph", "PruningPlan", "analyze", "compact", "compact_and_verify",
    "load_compact", "masked", "plan_from_scores", "round_width", "save_compact", "verify",
]
