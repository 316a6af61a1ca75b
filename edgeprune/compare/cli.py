"""``edgeprune compare`` / ``tools/benchmark_methods.py``: arguments -> :class:`CompareConfig` -> run -> files."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

from ..errors import ConfigError, EdgepruneError
from ..methods import get_method
from .config import EPOCH_BUDGETS, CompareConfig, expand_methods, split_methods, tp_methods
from .harness import _method_summary, run_compare
from .outputs import rebuild_outputs, write_outputs

QUICK = {"dataset": "digits", "model": "resnet", "levels": [0.5, 0.75], "seeds": [0], "epochs": 4, "method_epochs": 1,
         "finetune_epochs": 1, "train_limit": 0, "latency_runs": 20, "latency_warmup": 5, "latency_rounds": 3}


def make_parser(prog: str = "edgeprune compare") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark pruning methods side by side (edgeprune's registry + Torch-Pruning peers): "
                    "train dense once per seed, prune to each FLOPs-removal level, compact, fine-tune with one "
                    "budget, count MACs on the compact model, measure single-thread onnxruntime latency.",
        epilog=f"Torch-Pruning peers: {', '.join(tp_methods())}. NAME@N rounds widths to multiples of N for that "
               "method; NAME[key=value,...] sets its options (`edgeprune methods` lists them), e.g. "
               "tp-taylor[samples=128], tp-groupnorm[reg=1e-3].",
    )
    d = CompareConfig()
    p.add_argument("--dataset", help=f"dataset (default {d.dataset}; --quick: digits)")
    p.add_argument("--data-dir", help="directory of the dataset files (fashion-mnist)")
    p.add_argument("--model", help=f"built-in model (default {d.model})")
    p.add_argument("--model-options", type=json.loads, metavar="JSON", help='model builder options, e.g. \'{"widths": [16, 32]}\'')
    p.add_argument("--levels", help="comma list of FLOPs-removal fractions (default 0.5,0.75,0.9; --quick 0.5,0.75)")
    p.add_argument("--methods", help="comma list of methods, or all | edgeprune | tp (default all); "
                                     "`--list-methods` shows them")
    p.add_argument("--seeds", help="comma list of seeds (default 0,1,2; --quick 0)")
    p.add_argument("--epochs", type=int, help=f"dense training epochs (default {d.epochs})")
    p.add_argument("--finetune-epochs", type=int, help=f"fine-tuning epochs, same for every method (default {d.finetune_epochs})")
    p.add_argument("--train-limit", type=int, help="use only the first K training samples (0 = all)")
    p.add_argument("--data-seed", type=int, help="seed of the data split, the same for every run seed (default 0)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help=f"dense lr (default {d.lr})")
    p.add_argument("--finetune-lr", type=float, help=f"fine-tune lr (default {d.finetune_lr})")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--width-multiple", type=int, help="round kept widths to this multiple for every method (default 1)")
    p.add_argument("--method-options", type=json.loads, metavar="JSON",
                   help='options per registry method, e.g. \'{"pl-gates": {"gamma": 0.1}}\'')
    p.add_argument("--threads", type=int, help="torch threads for training (default 1: fastest on a shared 2-core host)")
    p.add_argument("--epoch-budget", choices=EPOCH_BUDGETS,
                   help="equal-total (default): every method gets --method-epochs + --finetune-epochs epochs after the "
                        "dense phase, its own training included; equal-finetune: every method fine-tunes "
                        "--finetune-epochs and methods that train get --method-epochs on top")
    p.add_argument("--target-metric", type=float,
                   help="report the training time until the deployable model first reaches this validation metric")
    p.add_argument("--val-samples", type=int, help="validation samples for the per-epoch curves (default 2000)")
    p.add_argument("--method-epochs", type=int,
                   help="epochs of the methods' own training before pruning (pl-gates' gate training, "
                        "tp-groupnorm's sparsity training; default: --epochs, as in the pipeline)")
    p.add_argument("--latency-runs", type=int, help="timed runs per latency measurement (default 50)")
    p.add_argument("--latency-warmup", type=int, help="warm-up runs (default 10)")
    p.add_argument("--latency-rounds", type=int, help="interleaved fresh-process rounds; median reported (default 3)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--out", help="results folder (default benchmarks/results/<dataset>-<model>[-quick])")
    p.add_argument("--resume", action="store_true", help="reuse dense models and finished rows from <out>/cache")
    p.add_argument("--no-dense-ft", dest="dense_ft", action="store_false",
                   help="skip the dense+ft reference row (the dense model given the same post-dense budget) for "
                        "seeds that have not run it yet: it costs as much as a method's budget on the dense model")
    p.add_argument("--finished-only", action="store_true",
                   help="with --resume: write the results of the finished rows only (a run that was cut off); "
                        "nothing is trained, latency is measured unless --no-latency")
    p.add_argument("--quick", action="store_true",
                   help="digits, resnet, levels 0.5,0.75, seed 0, 4+1 epochs, short latency: a few minutes")
    p.add_argument("--rebuild", action="store_true",
                   help="only rewrite table.md, the plot and README.md of --out from its results.json "
                        "(e.g. after editing <out>/notes.md, which README.md includes)")
    p.add_argument("--list-methods", action="store_true", help="list the methods that can be compared and exit")
    p.add_argument("--quiet", action="store_true", help="only print the final table")
    p.add_argument("--workers", type=int, default=1,
                   help="run the (method, seed) jobs in N processes (a process pool; latency is still measured "
                        "alone at the end) (default 1)")
    return p


def _floats(s: str, what: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{what}: expected a comma list of numbers, got {s!r}") from None


def _ints(s: str, what: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{what}: expected a comma list of integers, got {s!r}") from None


def config_from_args(a: argparse.Namespace) -> CompareConfig:
    base = dict(QUICK) if a.quick else {}
    cfg = CompareConfig(**base)
    simple = ("dataset", "data_dir", "model", "model_options", "epochs", "finetune_epochs", "train_limit", "data_seed",
              "batch_size", "lr", "finetune_lr", "weight_decay", "width_multiple", "method_options", "threads",
              "method_epochs", "latency_runs", "latency_warmup",
              "latency_rounds", "out", "epoch_budget", "target_metric", "val_samples")
    for k in simple:
        v = getattr(a, k)
        if v is not None:
            setattr(cfg, k, v)
    if a.levels is not None:
        cfg.levels = _floats(a.levels, "levels")
    if a.seeds is not None:
        cfg.seeds = _ints(a.seeds, "seeds")
    if a.methods is not None:
        cfg.methods = split_methods(a.methods)
    cfg.latency = not a.no_latency
    cfg.resume = a.resume
    cfg.finished_only = a.finished_only
    cfg.dense_ft = a.dense_ft
    if cfg.finished_only and not cfg.resume:
        raise ConfigError("--finished-only tabulates the finished rows of an earlier run: add --resume")
    if a.out is None:
        cfg.out = f"benchmarks/results/{cfg.dataset}-{cfg.model}" + ("-quick" if a.quick else "")
    for k in ("epochs", "finetune_epochs", "method_epochs", "latency_runs", "latency_rounds", "threads", "batch_size",
              "val_samples"):
        v = getattr(cfg, k)
        if v is not None and v < (0 if "epochs" in k else 1):
            raise ConfigError(f"--{k.replace('_', '-')} must be {'>= 0' if 'epochs' in k else '>= 1'}")
    for name, opts in cfg.method_options.items():  # --method-options through each method's options class
        if not isinstance(opts, dict):
            raise ConfigError(f"--method-options: the options of {name!r} must be a JSON object, e.g. "
                              '\'{"pl-gates": {"gamma": 0.1}}\'')
        expand_methods([name])  # a known method name
        get_method(name, opts)
    expand_methods(cfg.methods)  # validate names and options before any training
    return cfg


def main(argv: list[str] | None = None, prog: str = "edgeprune compare") -> int:
    """``edgeprune compare`` / ``tools/benchmark_methods.py``: returns the exit status (0 ok, 1 a row failed,
    2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    a = make_parser(prog).parse_args(argv)
    try:
        if a.list_methods:
            for s in expand_methods("all"):
                print(f"{s.label:14s} {s.kind:13s} {_method_summary(s)}")
            return 0
        if a.rebuild:
            if not a.out:
                raise ConfigError("--rebuild needs --out <results folder>")
            paths = rebuild_outputs(a.out)
            print(f"rebuilt {', '.join(p.name for p in paths.values())} in {a.out}/")
            return 0
        cfg = config_from_args(a)
        log = (lambda s: None) if a.quiet else (lambda s: print(s, flush=True))
        if a.workers < 1:
            raise ConfigError("--workers must be >= 1")
        from ..runfolder import RunFolder
        from .pool import run_compare_pool

        # one study per folder: a second run on it (or a pool's worker left over from a killed run) would
        # interleave rows, checkpoints and logs
        fresh = not Path(cfg.out).exists()
        try:
            with RunFolder(Path(cfg.out) / "cache").lock(timeout=0, what="study folder",
                                                          fix="stop that run first, or give another --out"):
                result = run_compare_pool(cfg, a.workers, log)
                paths = write_outputs(result, cfg, f"{prog} {shlex.join(argv)}".strip())
        except EdgepruneError:
            if fresh:  # bad input found inside the run: leave no folder that holds only the lock
                _remove_if_only_lock(Path(cfg.out))
            raise
        print(paths["table.md"].read_text(), end="")
        print(f"results in {cfg.out}/ ({', '.join(p.name for p in paths.values())})")
        failed = [r for r in result["rows"] if r.get("error")]
        if failed:
            print(f"edgeprune: {len(failed)} row(s) failed; see README.md", file=sys.stderr)
            return 1
        return 0
    except EdgepruneError as e:
        print(f"edgeprune: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgeprune: interrupted; rerun with --resume to reuse finished rows", file=sys.stderr)
        return 130


def _remove_if_only_lock(out: Path) -> None:
    from ..runfolder import HOLDER_FILE, LOCK_FILE

    if out.is_dir() and all(f.name in (LOCK_FILE, HOLDER_FILE) for f in out.rglob("*") if not f.is_dir()):
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
