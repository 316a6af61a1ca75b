"""pl-gates vs dense training, L1-magnitude pruning and Torch-Pruning's group-norm pruner.

Fashion-MNIST, the built-in ``resnet`` (widths 16/32/64), two budgets (50% and 75% of MACs
removed), several seeds. Every method gets the same total epoch budget:

* shared: ``--dense-epochs`` epochs of dense training (the pipeline's train stage);
* then ``--method-epochs`` more epochs per method:
  - dense: keeps training the unpruned model (lr x 0.5, like the finetune stage);
  - l1: ``edgeprune`` method ``l1`` (uniform per-group L1), compact, fine-tune all epochs;
  - tp-groupnorm: Torch-Pruning ``MetaPruner`` + ``GroupMagnitudeImportance(p=2)`` (the
    group-norm importance; ``GroupNormImportance`` in older releases) through its own API,
    the pruning ratio bisected to the same MACs budget, fine-tune all epochs;
  - pl-gates: ``--gate-epochs`` epochs of joint gate training, compact, fine-tune the
    remaining epochs; variants: ``gamma=0`` (the ablation), ``@ l1 MACs`` (budget set to
    the MACs the uniform baselines actually reach, for a same-MACs comparison) and
    ``no branch gates`` (opt-in via ``--methods``).

MACs are counted with edgeprune's exact cost table for every method (conv/linear MACs).
Timing: per-epoch training seconds (evaluation excluded); "time to target" is the training
seconds a method spends after the shared dense phase until its deployable (compact) model
first reaches ``--target-acc`` on the validation subset (checked after compaction and after
every fine-tuning epoch; the dense baseline after every epoch).

Writes ``results.json`` and ``results.md`` next to this file (``notes.md`` is appended to
the markdown when present). Run from the repository root:

    python benchmarks/pl_gates/run.py
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.data import load_dataset
from edgeprune.methods import FitContext, get_method
from edgeprune.methods.base import uniform_widths
from edgeprune.models import build_model
from edgeprune.surgery import analyze, compact_and_verify
from edgeprune.train import evaluate, seed_everything, train

HERE = Path(__file__).resolve().parent
TASK = "classification"


def _rel(path: Path) -> str:
    """A path relative to the repository when it is inside it (no machine-specific absolute paths in results)."""
    try:
        return str(path.resolve().relative_to(HERE.parents[1]))
    except ValueError:
        return path.name


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def macs_of(model: torch.nn.Module, example: torch.Tensor) -> int:
    return analyze(model, example).dense_cost()["macs"]


def tp_groupnorm_prune(model, example, flops_keep: float) -> tuple[torch.nn.Module, float]:
    """Torch-Pruning MetaPruner + group-norm importance, local (uniform) ratio bisected to the MACs budget."""
    import torch_pruning as tp

    goal = flops_keep * macs_of(model, example)

    def prune_at(ratio: float):
        m = copy.deepcopy(model).eval()
        imp = tp.importance.GroupMagnitudeImportance(p=2)  # group L2 norm (DepGraph's group-norm criterion)
        pruner = tp.pruner.MetaPruner(m, example, importance=imp, pruning_ratio=ratio, global_pruning=False,
                                      ignored_layers=[m[-1]])
        pruner.step()
        return m

    lo, hi = 0.0, 0.95
    best = (model, 0.0)
    for _ in range(14):
        mid = (lo + hi) / 2
        m = prune_at(mid)
        if macs_of(m, example) <= goal:
            hi, best = mid, (m, mid)
        else:
            lo = mid
    return best


class Curve:
    """Training seconds and validation accuracy of the deployable model over a method's phase."""

    def __init__(self):
        self.seconds = 0.0
        self.points: list[tuple[float, float]] = []  # (cumulative training seconds, val acc)

    def add(self, seconds: float, acc: float) -> None:
        self.seconds += seconds
        self.points.append((round(self.seconds, 3), float(acc)))

    def time_to(self, target: float) -> float | None:
        for s, a in self.points:
            if a >= target:
                return s
        return None


def finetune(model, data, epochs, args, curve: Curve, seed: int) -> list[float]:
    secs: list[float] = []

    def on_epoch(rec):
        secs.append(rec["seconds"])
        curve.add(rec["seconds"], rec["val_metric"])

    train(model, data["xtr"], data["ytr"], task=TASK, epochs=epochs, batch_size=args.batch_size, lr=args.lr * 0.5,
          weight_decay=args.weight_decay, seed=seed, val=(data["xv"], data["yv"]), on_epoch=on_epoch)
    return secs


def run_seed(seed: int, data: dict, args) -> dict:
    ex = torch.zeros(1, *data["shape"])
    out: dict = {"seed": seed, "methods": {}}
    seed_everything(seed)
    dense = build_model("resnet", data["shape"], 10)
    dense_macs = macs_of(dense, ex)
    dense_secs: list[float] = []
    train(dense, data["xtr"], data["ytr"], task=TASK, epochs=args.dense_epochs, batch_size=args.batch_size, lr=args.lr,
          weight_decay=args.weight_decay, seed=seed, on_epoch=lambda r: dense_secs.append(r["seconds"]))
    out["pretrain"] = {"epochs": args.dense_epochs, "epoch_seconds": dense_secs,
                       "val_acc": evaluate(dense, data["xv"], data["yv"], TASK),
                       "test_acc": evaluate(dense, data["xte"], data["yte"], TASK)}
    log(f"seed {seed}: dense pretrain {out['pretrain']['test_acc']:.2f}% ({sum(dense_secs):.0f}s)")

    plain_epoch = None
    if "dense" in args.methods:  # dense baseline: the same extra epochs, unpruned
        m = copy.deepcopy(dense)
        curve = Curve()
        secs = finetune(m, data, args.method_epochs, args, curve, seed)
        out["methods"]["dense"] = {"1.0": {"test_acc": evaluate(m, data["xte"], data["yte"], TASK), "macs_kept": 1.0,
                                           "curve": curve.points, "epoch_seconds": secs,
                                           "time_to_target": curve.time_to(args.target_acc)}}
        plain_epoch = float(np.mean(secs)) if secs else None
        log(f"seed {seed}: dense {out['methods']['dense']['1.0']['test_acc']:.2f}%")

    graph = analyze(dense, ex)
    for removed in args.removed:
        fk = 1.0 - removed
        key = f"{fk:g}"
        ctx = FitContext(data["xtr"], data["ytr"], data["xv"], data["yv"], ex, graph, TASK, fk, 1, seed,
                         {"epochs": args.gate_epochs, "lr": args.lr, "batch_size": args.batch_size,
                          "weight_decay": args.weight_decay}, log=lambda s: log(s.strip()))
        # ---- l1 + fine-tune
        if "l1" in args.methods:
            run_l1(out, key, dense, ctx, data, args, seed, dense_macs)
        if "tp-groupnorm" in args.methods:
            run_tp(out, key, dense, fk, data, args, seed, dense_macs)
        for name, opts in PL_VARIANTS.items():
            if name in args.methods:
                run_pl(out, key, name, opts, dense, ctx, data, args, seed, dense_macs, plain_epoch)
    out["plain_epoch_seconds"] = plain_epoch
    return out


def run_l1(out, key, dense, ctx, data, args, seed, dense_macs):
    ex, graph, fk = ctx.example, ctx.graph, ctx.flops_keep
    curve = Curve()
    t0 = time.perf_counter()
    res = get_method("l1").fit(copy.deepcopy(dense), ctx)
    small, rep = compact_and_verify(res.model, res.plan, ex, torch.from_numpy(data["xv"][:64]), graph)
    curve.add(time.perf_counter() - t0, evaluate(small, data["xv"], data["yv"], TASK))
    secs = finetune(small, data, args.method_epochs, args, curve, seed)
    out["methods"].setdefault("l1", {})[key] = {
        "test_acc": evaluate(small, data["xte"], data["yte"], TASK), "macs_kept": rep["macs"] / dense_macs,
        "curve": curve.points, "epoch_seconds": secs, "time_to_target": curve.time_to(args.target_acc)}
    log(f"seed {seed} keep {fk:.2f}: l1 {out['methods']['l1'][key]['test_acc']:.2f}%")


def run_tp(out, key, dense, fk, data, args, seed, dense_macs):
    ex = torch.zeros(1, *data["shape"])
    # Torch-Pruning group-norm + fine-tune
    curve = Curve()
    t0 = time.perf_counter()
    small, ratio = tp_groupnorm_prune(dense, ex, fk)
    curve.add(time.perf_counter() - t0, evaluate(small, data["xv"], data["yv"], TASK))
    secs = finetune(small, data, args.method_epochs, args, curve, seed)
    out["methods"].setdefault("tp-groupnorm", {})[key] = {
        "test_acc": evaluate(small, data["xte"], data["yte"], TASK), "macs_kept": macs_of(small, ex) / dense_macs,
        "pruning_ratio": ratio, "curve": curve.points, "epoch_seconds": secs,
        "time_to_target": curve.time_to(args.target_acc)}
    log(f"seed {seed} keep {fk:.2f}: tp-groupnorm {out['methods']['tp-groupnorm'][key]['test_acc']:.2f}%")


# pl-gates variants: the method, the ablation gamma = 0, the method at the MACs the uniform baselines
# actually reach (their uniform widths land below the budget), and without branch gates
PL_VARIANTS = {
    "pl-gates": {},
    "pl-gates gamma=0": {"gamma": 0.0},
    "pl-gates @ l1 MACs": {"_match_l1": True},  # budget = the MACs l1's uniform widths actually keep
    "pl-gates no branch gates": {"branches": False},
}


def run_pl(out, key, name, opts, dense, ctx, data, args, seed, dense_macs, plain_epoch):
    ex, graph = ctx.example, ctx.graph
    opts = dict(opts)
    if opts.pop("_match_l1", False):
        widths = uniform_widths(graph, ctx.flops_keep, ctx.width_multiple)
        ctx = dataclasses.replace(ctx, flops_keep=graph.cost(widths)["macs"] / dense_macs)
    fk = ctx.flops_keep
    curve = Curve()
    t0 = time.perf_counter()
    res = get_method("pl-gates", dict(opts, epochs=args.gate_epochs, **args.pl_options)).fit(copy.deepcopy(dense), ctx)
    gate_secs = time.perf_counter() - t0
    small, rep = compact_and_verify(res.model, res.plan, ex, torch.from_numpy(data["xv"][:64]), graph)
    curve.add(gate_secs, evaluate(small, data["xv"], data["yv"], TASK))
    secs = finetune(small, data, args.method_epochs - args.gate_epochs, args, curve, seed)
    h = res.history
    gated_epochs = [e["seconds"] for e in h["epochs"]]
    out["methods"].setdefault(name, {})[key] = {
        "test_acc": evaluate(small, data["xte"], data["yte"], TASK), "macs_kept": rep["macs"] / dense_macs,
        "curve": curve.points, "epoch_seconds": secs, "time_to_target": curve.time_to(args.target_acc),
        "gate_epoch_seconds": gated_epochs, "kappa_seconds": h["kappa_seconds_total"],
        "fit_seconds": gate_secs,
        "overhead_vs_plain_epoch": (float(np.mean(gated_epochs)) / plain_epoch) if (gated_epochs and plain_epoch) else None,
        "kappa": h["kappa"], "kappa_step": h["kappa_step"], "expected_macs": h["expected_macs"],
        "gate_open_rate": h["gate_open_rate"], "dropped_branches": h["dropped_branches"],
        "gated_val_metric": h.get("gated_val_metric"), "static_val_metric": h.get("static_val_metric"),
        "nodes_closed_by_gates": h["nodes_closed_by_gates"], "nodes_removed_by_plan": h["nodes_removed_by_plan"],
    }
    log(f"seed {seed} keep {fk:.3f}: {name} {out['methods'][name][key]['test_acc']:.2f}%")


def overhead_bench(data: dict, args, rounds: int = 2, n: int = 1280) -> dict:
    """Interleaved timing on the same batches: plain training steps vs pl-gates steps.

    Load on a shared machine drifts over minutes, so the variants alternate within each
    round (one epoch of ``n`` samples each, after a warm-up of every code path); the ratio
    of mean epoch times is the per-epoch overhead of gate training.
    """
    ex = torch.zeros(1, *data["shape"])
    seed_everything(0)
    base = build_model("resnet", data["shape"], 10)
    graph = analyze(base, ex)
    sub = {k: data[k] for k in ("xv", "yv")}
    xs, ys = data["xtr"][:n], data["ytr"][:n]
    variants = {"pl-gates": {}, "pl-gates gamma=0 (κ̂ logged only)": {"gamma": 0.0},
                "gates only (no κ̂)": {"gamma": 0.0, "kappa_every": 0}}
    ctx = FitContext(xs, ys, sub["xv"][:0], sub["yv"][:0], ex, graph, TASK, 0.5, 1, 0,
                     {"epochs": 1, "lr": args.lr, "batch_size": args.batch_size, "weight_decay": args.weight_decay},
                     log=lambda s: None)
    times: dict[str, list[float]] = {"plain": [], **{k: [] for k in variants}}
    kappa_s: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds + 1):  # round 0 warms every path up and is discarded
        m = copy.deepcopy(base)
        hist = train(m, xs, ys, task=TASK, epochs=1, batch_size=args.batch_size, lr=args.lr, seed=r)
        if r:
            times["plain"].append(hist.epochs[0]["seconds"])
        for name, opts in variants.items():
            res = get_method("pl-gates", dict(opts, epochs=1, eval_samples=0, calib_samples=64)).fit(copy.deepcopy(base), ctx)
            if r:
                times[name].append(res.history["epochs"][0]["seconds"])
                kappa_s[name].append(res.history["epochs"][0]["kappa_seconds"])
        log(f"overhead round {r}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items() if v))
    plain = float(np.mean(times["plain"]))
    return {
        "samples_per_epoch": n, "rounds": rounds, "epoch_seconds": times, "kappa_seconds": kappa_s,
        "ratio": {k: float(np.mean(v)) / plain for k, v in times.items() if k != "plain"},
        "kappa_share": {k: float(np.sum(kappa_s[k]) / np.sum(times[k])) for k in variants},
    }


def summarize(runs: list[dict], args) -> dict:
    table = {}
    for method in runs[0]["methods"]:
        for key in runs[0]["methods"][method]:
            rows = [r["methods"][method][key] for r in runs]
            acc = np.array([r["test_acc"] for r in rows])
            ttt = [r["time_to_target"] for r in rows]
            reached = [t for t in ttt if t is not None]
            ovh = [r.get("overhead_vs_plain_epoch") for r in rows if r.get("overhead_vs_plain_epoch") is not None]
            table.setdefault(key, {})[method] = {
                "test_acc_mean": float(acc.mean()), "test_acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                "macs_kept_mean": float(np.mean([r["macs_kept"] for r in rows])),
                "time_to_target_mean": float(np.mean(reached)) if reached else None,
                "reached": f"{len(reached)}/{len(rows)}",
                "overhead_mean": float(np.mean(ovh)) if ovh else None,
                "overhead_std": float(np.std(ovh, ddof=1)) if len(ovh) > 1 else None,
                "kappa_seconds_mean": float(np.mean([r["kappa_seconds"] for r in rows])) if "kappa_seconds" in rows[0] else None,
                "fit_seconds_mean": float(np.mean([r["fit_seconds"] for r in rows])) if "fit_seconds" in rows[0] else None,
            }
    return table


def table_lines(summary: dict) -> list[str]:
    lines = ["| MACs kept (asked) | method | test acc % (mean ± std) | MACs kept (actual) | time to target (s) | reached | "
             "gate-epoch time / plain epoch | κ̂ seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for key, methods in summary.items():
        for m, s in methods.items():
            ttt = f"{s['time_to_target_mean']:.0f}" if s["time_to_target_mean"] is not None else "-"
            ovh = (f"{s['overhead_mean']:.2f}x" + (f" ± {s['overhead_std']:.2f}" if s["overhead_std"] is not None else "")
                   if s["overhead_mean"] is not None else "-")
            ks = f"{s['kappa_seconds_mean']:.0f}" if s["kappa_seconds_mean"] is not None else "-"
            lines.append(f"| {float(key):.0%} | {m} | {s['test_acc_mean']:.2f} ± {s['test_acc_std']:.2f} | "
                         f"{s['macs_kept_mean']:.1%} | {ttt} | {s['reached']} | {ovh} | {ks} |")
    return lines


def write_markdown(result: dict, path: Path) -> None:
    a = result["args"]
    lines = [
        "# pl-gates benchmark: Fashion-MNIST, built-in resnet (16/32/64)",
        "",
        f"- Date: {result['date']}; machine: {result['machine']}",
        f"- Command: `{result['command']}` (wall {result['wall_seconds'] / 60:.1f} min)",
        f"- Load average of the shared machine at start / end: {result['load_start']} / {result['load_end']}",
        f"- Data: Fashion-MNIST, a fixed **training subset of {a['n_train']}** images (of 55,000), validation subset "
        f"{a['n_val']} (for time-to-target), test {a['n_test']} images (the official test set"
        f"{'' if a['n_test'] >= 10000 else ', first ' + str(a['n_test'])}).",
        f"- Budget: {a['dense_epochs']} shared dense epochs + {a['method_epochs']} epochs per method "
        f"(pl-gates: {a['gate_epochs']} gate epoch(s) + {a['method_epochs'] - a['gate_epochs']} fine-tune). SGD momentum 0.9, "
        f"batch {a['batch_size']}, lr {a['lr']} (fine-tuning {a['lr'] * 0.5}), weight decay {a['weight_decay']}, cosine schedule "
        f"per phase. Seeds {a['seeds']}. pl-gates options: defaults{(' + ' + json.dumps(a['pl_options'])) if a['pl_options'] else ''}.",
        f"- Time to target: training seconds after the shared dense phase until the deployable model reaches "
        f"{a['target_acc']}% validation accuracy (mean over the seeds that reached it).",
        "",
    ]
    lines += table_lines(result["summary"])
    ov = result.get("overhead")
    if ov:
        lines += ["", f"## Per-epoch wall time of gate training vs plain training (interleaved, {ov['rounds']} rounds of one "
                  f"{ov['samples_per_epoch']}-sample epoch each, same model and batches; goal <= 1.5x)", "",
                  "| variant | epoch seconds (mean) | ratio to plain | share of the epoch spent in κ̂ |", "|---|---:|---:|---:|",
                  f"| plain training (`edgeprune.train.train`) | {np.mean(ov['epoch_seconds']['plain']):.1f} | 1.00x | - |"]
        for k, r in ov["ratio"].items():
            lines.append(f"| {k} | {np.mean(ov['epoch_seconds'][k]):.1f} | {r:.2f}x | {ov['kappa_share'][k]:.0%} |")
    pre = [r["pretrain"]["test_acc"] for r in result["runs"]]
    lines += ["", f"Dense model after the shared {a['dense_epochs']} epochs: {np.mean(pre):.2f} ± "
              f"{np.std(pre, ddof=1) if len(pre) > 1 else 0.0:.2f} % test accuracy.", ""]
    notes = HERE / "notes.md"
    if path.name == "results.md" and notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-val", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--removed", type=float, nargs="+", default=[0.5, 0.75], help="fractions of MACs removed")
    p.add_argument("--dense-epochs", type=int, default=3)
    p.add_argument("--method-epochs", type=int, default=2)
    p.add_argument("--gate-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--target-acc", type=float, default=85.0)
    p.add_argument("--pl-options", type=json.loads, default={}, help="JSON dict of extra pl-gates options")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overhead-rounds", type=int, default=3, help="interleaved timing rounds (0: skip)")
    p.add_argument("--overhead-samples", type=int, default=2560, help="samples per timed epoch")
    p.add_argument("--methods", nargs="+",
                   default=["dense", "l1", "tp-groupnorm", "pl-gates", "pl-gates gamma=0", "pl-gates @ l1 MACs"],
                   help=f"methods to run; pl-gates variants: {list(PL_VARIANTS)}")
    p.add_argument("--name", default="results", help="output basename (results.json / results.md)")
    p.add_argument("--rewrite-md", action="store_true", help="only rewrite the markdown from the existing json")
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)
    if args.rewrite_md:
        write_markdown(json.loads((args.out / f"{args.name}.json").read_text()), args.out / f"{args.name}.md")
        return
    unknown = set(args.methods) - {"dense", "l1", "tp-groupnorm", *PL_VARIANTS}
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}")
    if not 0 <= args.gate_epochs <= args.method_epochs:
        p.error("--gate-epochs must be between 0 and --method-epochs")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    ds = load_dataset("fashion-mnist", seed=0)
    data = {
        "shape": ds.input_shape,
        "xtr": ds.normalize(ds.x_train[: args.n_train]), "ytr": ds.y_train[: args.n_train],
        "xv": ds.normalize(ds.x_val[: args.n_val]), "yv": ds.y_val[: args.n_val],
        "xte": ds.normalize(ds.x_test[: args.n_test]), "yte": ds.y_test[: args.n_test],
    }
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, data, args))
    overhead = overhead_bench(data, args, rounds=args.overhead_rounds, n=args.overhead_samples) if args.overhead_rounds else None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    result = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{cpu}, {os.cpu_count()} cores (shared), {platform.platform()}, python {platform.python_version()}, "
                   f"torch {torch.__version__}, {args.threads} threads",
        "command": "python benchmarks/pl_gates/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {k: (_rel(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": time.perf_counter() - t_start,
        "summary": summarize(runs, args),
        "overhead": overhead,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    write_markdown(result, args.out / f"{args.name}.md")
    log(f"done in {result['wall_seconds'] / 60:.1f} min -> {args.out / (args.name + '.md')}")


if __name__ == "__main__":
    main()
