"""The stages of ``edgeprune build``, in order. One module per stage.

A stage module defines ``name``, ``summary_file`` (its JSON record in the run folder),
``depends(build)`` (the config it reads, for resume fingerprints), ``describe(build)``
(one line for the console) and ``run(build) -> list of files written`` (relative to the
run folder). A stage reads the artifacts of earlier stages from the run folder, never
from memory, so each can be rerun alone: ``edgeprune export runs/x``.
"""

from . import bench, budget, compact, export, finetune, package, prune, report, train

STAGES = [train, prune, compact, finetune, export, bench, budget, report, package]
STAGE_NAMES = [s.name for s in STAGES]
