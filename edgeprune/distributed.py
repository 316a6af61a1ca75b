"""torch.distributed for edgeprune: one process per rank, started by ``torchrun`` (torch.distributed.run).

``torchrun --nproc_per_node N -m edgeprune build ...`` (or ``edgeprune build --nproc N``, which runs that
command for you) starts N copies of the build. Each reads its rank from torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and :func:`init_from_env` joins the
process group: backend ``gloo`` for CPU tensors, plus ``nccl`` for CUDA tensors where CUDA exists
(``"cpu:gloo,cuda:nccl"``). Without those variables (a plain ``edgeprune build``) every helper here is the
identity: rank 0 of a world of 1, and nothing is communicated.

What the training loop does with it (:func:`edgeprune.train.train`): the model, including every gate / π /
coefficient that is a module parameter, is wrapped in DistributedDataParallel (weights broadcast from rank 0
at wrap time, gradients averaged in backward); hook parameters outside the module have their gradients
averaged with :func:`all_reduce_mean`; each rank trains on its :func:`shard` of the global batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """True when torchrun (or another launcher) started this process as one rank of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def default_backend() -> str:
    """gloo for the CPU tensors edgeprune trains with; nccl as well for CUDA tensors where CUDA exists."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group torchrun's environment describes (no-op for a world of 1 or if joined already).

    Returns True when this process is part of a world of more than one rank."""
    if not launched() or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or os.environ.get("EDGEPRUNE_DIST_BACKEND") or default_backend())
    return dist.get_world_size() > 1


def shutdown() -> None:
    """Leave the process group (a build's last collective is rank 0's end-of-stages broadcast)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes the run folder and prints."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled over the process group: objects edgeprune made, never
    a file's contents interpreted as code)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """Every rank's ``obj``, in rank order (a world of 1: ``[obj]``)."""
    if not is_distributed():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(x):
    """The mean over ranks of a float, a tensor (in place and returned) or a list of tensors / None.

    For estimates each rank computes from its own data (κ̂ and its gradient, gate statistics): after this,
    every rank holds the same value, the estimate on ``world_size`` times as many samples."""
    if not is_distributed():
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(None if t is None else all_reduce_mean(t) for t in x)
    if isinstance(x, torch.Tensor):
        buf = x.detach()
        if buf.device.type == "cpu" and not buf.is_contiguous():
            buf = buf.contiguous()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        buf /= world_size()
        if buf is not x.detach():
            x.detach().copy_(buf)
        return x
    t = torch.tensor([float(x)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t) / world_size()


def check_batch(batch_size: int) -> int:
    """This rank's share of a global mini-batch of ``batch_size`` samples (the config's batch_size is the
    global batch, so the same config gives the same optimisation at any world size)."""
    w = world_size()
    if batch_size % w:
        from .errors import ConfigError

        raise ConfigError(f"batch size {batch_size} does not split over {w} processes: use a multiple of {w} "
                          "(train.batch_size is the global batch; each process takes batch_size / nproc)")
    return batch_size // w


def shard(perm: torch.Tensor) -> torch.Tensor:
    """This rank's indices of the global permutation ``perm``, as torch's DistributedSampler deals them
    (padded to a multiple of the world size with the first indices, then every ``world_size``-th).

    Taken in order, this rank's consecutive slices of ``batch_size / world`` hold exactly the samples of the
    one-process run's batch of ``batch_size`` (interleaved between ranks), so the averaged gradient is the
    one-process gradient when every batch splits evenly."""
    if not is_distributed():
        return perm
    from torch.utils.data import DistributedSampler

    positions = list(DistributedSampler(range(len(perm)), num_replicas=world_size(), rank=rank(), shuffle=False))
    return perm[torch.as_tensor(positions, dtype=torch.long)]


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (a world of 1: the model itself). Construction broadcasts rank 0's
    parameters and buffers, so every rank starts from the same weights and gates."""
    if not is_distributed() or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    dev = next(model.parameters()).device
    ids = [dev.index if dev.index is not None else local_rank()] if dev.type == "cuda" else None
    # empty parameters (the branch gates of a model without droppable branches) never get a gradient
    # (DDP names a top-level parameter ".name": give both spellings)
    empty = [m for n, p in model.named_parameters() if p.numel() == 0 for m in (n, "." + n)]
    if empty:
        DDP._set_params_and_buffers_to_ignore_for_model(model, empty)
    # EDGEPRUNE_DDP_FIND_UNUSED=1: for a model of your own with parameters its forward does not always use
    return DDP(model, device_ids=ids, find_unused_parameters=os.environ.get("EDGEPRUNE_DDP_FIND_UNUSED") == "1")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m torch.distributed.run --standalone --nproc_per_node N -m edgeprune <argv>`` (one machine,
    rendezvous on a free local port; through :func:`_torchrun`) and return the build's exit code (what
    ``edgeprune build --nproc N`` does). Several machines: run torchrun yourself with ``--nnodes`` and a
    ``--rdzv_endpoint`` (README)."""
    cmd = [sys.executable, "-m", "edgeprune.distributed", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "edgeprune", *argv]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgeprune-launch-") as tmp:
        base = os.path.join(tmp, "exit")
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), **{EXIT_FILE_ENV: base})
        code = subprocess.call(cmd, env=env)
        # torchrun reports any failure as 1: the job's own code comes from the files its ranks left
        verdict, error = _read_code(base + ".verdict"), _read_code(base + ".error")
        if code == 0 and verdict is not None:
            code = verdict
        elif code != 0 and error is not None:
            code = error
    return code


def _read_code(path: str) -> int | None:
    try:
        return int(open(path).read().strip())
    except (OSError, ValueError):
        return None


#: the path prefix under which the ranks of a job started by :func:`launch` leave its exit code for it:
#: ``<prefix>.verdict`` (rank 0's verdict: 3 budget failed, 4 incomplete, 5 out of reach; the rank then exits 0)
#: and ``<prefix>.error`` (the first rank's error code: 2 bad input, ...). torchrun itself would turn any
#: non-zero exit of a rank into a failure of the whole job and exit 1
EXIT_FILE_ENV = "EDGEPRUNE_EXIT_FILE"


def report_exit(code: int) -> int:
    """The exit code this rank returns to torchrun: a verdict (3, 4, 5) of a job started by :func:`launch` goes
    to ``<prefix>.verdict`` and the rank exits 0; any other code (and under plain torchrun) as is."""
    path = os.environ.get(EXIT_FILE_ENV)
    if code in (3, 4, 5) and path and is_main() and is_distributed():
        with open(path + ".verdict", "w") as f:
            f.write(str(code))
        return 0
    return code


def report_error(code: int) -> bool:
    """An error's exit code (2 bad input, 5 out of reach, ...) in a rank started by :func:`launch`: left in
    ``<prefix>.error`` so that ``build --nproc N`` exits with the documented code instead of torchrun's 1.
    True when this process should print the error line: not such a rank, or the first rank to fail (the others
    fail the same way, or lose their peer because of it; one line is enough)."""
    path = os.environ.get(EXIT_FILE_ENV)
    if not (path and code):
        return True
    try:
        with open(path + ".error", "x") as f:
            f.write(str(code))
        return True
    except FileExistsError:
        return False
    except OSError:  # the launcher is gone (interrupted): say it here
        return True


def peer_failed() -> bool:
    """True in a rank of a job started by :func:`launch` once another rank has reported an error (this rank's
    own failure is then the lost connection to it, not news)."""
    path = os.environ.get(EXIT_FILE_ENV)
    return bool(path) and os.path.isfile(path + ".error")


def _torchrun(argv: list[str]) -> int:
    """``python -m torch.distributed.run`` for :func:`launch`, quiet when a rank failed with an edgeprune error
    (its one line is already printed; torchrun would add its own report and traceback). Any other failure of a
    rank (a bug, a crash) keeps torchrun's full report."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).addFilter(lambda record: not peer_failed())
    try:
        run(parse_args(argv))
    except ChildFailedError as e:
        if not peer_failed():
            print(e.format_msg(), file=sys.stderr)
        return 1
    return 0




def broadcast_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers (batch-norm running statistics) on every rank. DDP broadcasts them before each
    forward; after the last step each rank's hold its own batch's update until this call."""
    if is_distributed():
        for b in model.buffers():
            dist.broadcast(b.data, src=src)


def sync_files(root, rels) -> list[str]:
    """Make the files ``rels`` under ``root`` on every rank byte-equal to rank 0's; return those that were
    replaced on some rank. Only files whose sha256 differs travel (a rank on another machine has none)."""
    if not is_distributed():
        return []
    import hashlib
    from pathlib import Path

    from .runfolder import atomic_write_bytes

    root = Path(root)

    def digest(rel):
        p = root / rel
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None

    manifest = broadcast_object({rel: digest(rel) for rel in rels} if is_main() else None)
    need = [] if is_main() else [rel for rel, h in manifest.items() if digest(rel) != h]
    wanted = sorted({rel for part in all_gather_object(need) for rel in part})
    data = broadcast_object({rel: (root / rel).read_bytes() for rel in wanted} if is_main() else None)
    if not is_main():
        for rel in need:
            atomic_write_bytes(root / rel, data[rel])
    return wanted


if __name__ == "__main__":  # the launcher's torchrun (see launch)
    sys.exit(_torchrun(sys.argv[1:]))
