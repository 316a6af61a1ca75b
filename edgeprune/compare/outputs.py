"""The results folder: results.csv/json, table.md, the plot and a README that says how the numbers were made."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

from ..errors import ConfigError
from ..runfolder import atomic_write_bytes, atomic_write_text, json_default
from .config import CSV_FIELDS, DENSE_FT, RESULT_FILES, CompareConfig
from .plots import plot
from .tables import extra_names, markdown_table, observations, summarize, widths_table


def machine_info() -> dict:
    """The pipeline's host description (:func:`edgeprune.bench.runner.machine_info`), without the host name."""
    from ..bench.runner import machine_info as host_info

    info = {k: v for k, v in host_info().items() if k != "node"}
    # the lscpu-style keys earlier results and benchmarks/pl_gates/overhead.py read
    info.update({"Model name": info.get("cpu"), "CPU(s)": info.get("cores")})
    return info


def versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("edgeprune", "torch", "torch-pruning", "onnx", "onnxscript", "onnxruntime", "numpy", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        root = Path(__file__).resolve().parents[2]
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if rev:
            out["git"] = rev + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def write_outputs(result: dict, cfg: CompareConfig, command: str | None = None) -> dict[str, Path]:
    """Write results.csv/json, table.md, the plot and README.md into ``cfg.out``.

    ``command`` set: a fresh run (machine and versions are read now); ``None``: a rebuild that keeps
    the command, machine and versions stored in ``result["meta"]``.
    """
    rows, meta = result["rows"], result["meta"]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows, cfg.target_metric)
    if command is not None:
        meta = dict(meta, command=command, machine=machine_info(), versions=versions())
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    paths = {name: out / name for name in RESULT_FILES}

    # everything is rendered first and each file replaced atomically: an interruption never leaves a
    # truncated results.json (which --rebuild reads) beside the previous tables
    table = markdown_table(summary, meta["metric"], cfg.target_metric)
    csv_text = io.StringIO(newline="")
    fields = CSV_FIELDS + [k for k in extra_names(summary) if k not in CSV_FIELDS]  # method counters last
    w = csv.DictWriter(csv_text, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in public:
        r = {**(r.get("extras") or {}), **r}
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r[k]))
                    for k in fields})
    title = f"{cfg.model} on {meta['data']['name']} ({len(cfg.seeds)} seed(s); {_budget_phrase(cfg)})"
    png = io.BytesIO()
    plot(summary, meta["metric"], png, title)
    texts = {
        "results.json": json.dumps({"meta": meta, "rows": public, "summary": summary}, indent=1,
                                   default=json_default) + "\n",
        "results.csv": csv_text.getvalue(), "table.md": table, "README.md": readme(meta, cfg, summary, rows, table),
    }
    for name, text in texts.items():
        atomic_write_text(paths[name], text)
    atomic_write_bytes(paths["metric_vs_macs.png"], png.getvalue())
    return paths


def rebuild_outputs(out: str | Path) -> dict[str, Path]:
    """Rewrite table.md, the plot and README.md (and the CSV) of a results folder from its results.json,
    e.g. after editing ``notes.md``; nothing is trained or measured."""
    out = Path(out)
    path = out / "results.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: --rebuild needs the results folder of an earlier run")
    doc = json.loads(path.read_text())
    fields = set(CompareConfig.__dataclass_fields__)
    stored = dict(doc["meta"]["config"])
    stored.setdefault("epoch_budget", "equal-finetune")  # results written before the option existed
    cfg = CompareConfig(**{k: v for k, v in stored.items() if k in fields})
    cfg.out = str(out)
    return write_outputs({"rows": doc["rows"], "meta": doc["meta"]}, cfg, None)


def _budget_phrase(cfg: CompareConfig) -> str:
    if cfg.epoch_budget == "equal-finetune":
        return f"FT {cfg.finetune_epochs} epoch(s)"
    return f"{cfg.post_dense_epochs} epoch(s) per method after the dense phase"


def budget_text(cfg: CompareConfig) -> str:
    """The epoch budget of a comparison, in words (README's Budget line)."""
    common = f"dense {cfg.epochs} epoch(s) per seed (shared by every method); "
    if cfg.epoch_budget == "equal-finetune":
        return common + (f"fine-tuning {cfg.finetune_epochs} epoch(s) for every method; methods that train before "
                         f"pruning (pl-gates' gates, tp-groupnorm's sparsity) get {cfg.method_train_epochs} epoch(s) of "
                         "their own training on top, counted in *prune s* (`--epoch-budget equal-finetune`)")
    return common + (f"then the same **{cfg.post_dense_epochs} epoch(s) for every method** (`--epoch-budget "
                     f"equal-total`): a method that trains before pruning (pl-gates' gates, tp-groupnorm's sparsity "
                     f"training, {cfg.method_train_epochs} epoch(s) by default) spends part of them on its own "
                     "training (counted in *prune s*) and fine-tunes the rest, the others fine-tune them all; a method "
                     "that trains from scratch also gets the dense phase's epochs; *epochs (own + FT)* shows the split")


def readme(meta: dict, cfg: CompareConfig, summary: list[dict], rows: list[dict], table: str) -> str:
    m, v, d = meta["machine"], meta["versions"], meta["data"]
    out = Path(cfg.out)
    notes = (out / "notes.md").read_text().strip() if (out / "notes.md").is_file() else ""
    tp_methods = [x["label"] for x in meta["methods"] if x["kind"] == "torch-pruning"]
    ep_methods = [x["label"] for x in meta["methods"] if x["kind"] == "edgeprune"]
    test_n = d.get("n_test")
    L = [
        f"# {cfg.model} on {d['name']}: pruning methods side by side",
        "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['started']} → {meta['finished']} (UTC); wall {meta['wall_s'] / 60:.1f} min "
        f"({meta['compute_s'] / 60:.1f} min training/pruning/export, rest latency)"
        + (f"; this invocation reused {meta['reused_rows']} finished rows of an earlier one (`--resume`), so its wall "
           "time does not include them" if meta.get("reused_rows") else "")
        + (f" ({meta['restored_rows']} of them restored from the committed `results.json`, whose models were not in "
           "the cache: their latency, where they have one, is the earlier run's, not measured beside this run's"
           + (f"; {meta['restored_unverified']} of them predate per-row method options and are assumed to have run "
              "with the defaults of this revision" if meta.get("restored_unverified") else "") + ")"
           if meta.get("restored_rows") else ""),
        *([f"- Left out (not finished when the run was cut off; `--finished-only`): {', '.join(meta['left_out'])}"]
          if meta.get("left_out") else []),
        f"- Machine: {m.get('cpu') or m.get('Model name', '?')}, {m.get('cores') or m.get('CPU(s)')} CPU(s), "
        f"{m['platform']}; shared with other jobs: load average {meta.get('load_start')} at start, "
        f"{meta.get('load_end')} at end",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- Data: {d['name']} ({d.get('source', '')}); {d['n_train']} training samples"
        + (f" (the first {cfg.train_limit} of the split made with data seed {cfg.data_seed})" if cfg.train_limit else "")
        + f", test metric on all {test_n} test samples; inputs "
        + ("normalised" if d.get("normalized_inputs") else "raw pixels in [0, 1] (sigmoid autoencoder)"),
        f"- Model: `{cfg.model}` {cfg.model_options or ''} ({meta['task']}, metric {meta['metric']}); "
        f"dense {rows[0]['macs']:,} MACs, {rows[0]['params']:,} params",
        f"- Budget: {budget_text(cfg)}; SGD momentum 0.9 nesterov, cosine, batch {cfg.batch_size}, lr {cfg.lr} "
        f"(fine-tune {cfg.finetune_lr}), weight decay {cfg.weight_decay}; torch threads {cfg.threads}; "
        f"seeds {', '.join(map(str, cfg.seeds))}; FLOPs-removal levels {', '.join(f'{x:g}' for x in cfg.levels)}",
        f"- Methods: edgeprune {', '.join(ep_methods) or '(none)'}; Torch-Pruning {', '.join(tp_methods) or '(none)'}",
        f"- Latency: {meta.get('latency_method', 'not measured')}; {meta.get('latency_models', 0)} distinct compact "
        f"architectures (rows sharing one share its ONNX file); {cfg.latency_rounds} interleaved round(s) × "
        f"{cfg.latency_runs} runs (+{cfg.latency_warmup} warm-up), batch 1; value = median over rounds of each "
        "round's p50",
        "",
        "## Results (mean ± std over seeds)",
        "",
        table,
        "MACs and params are counted on the compact model after pruning (see protocol). *speed-up* = dense latency / "
        "latency (same seed); *ideal* = 1 / MACs kept. *before FT* = test metric right after pruning. "
        f"*{DENSE_FT}* = the dense model given the same post-dense budget (what the extra epochs alone give)."
        + (f" *time to {cfg.target_metric:g}* = training seconds from scratch (the shared dense phase included, for "
           f"methods that start from it) until the deployable model first reaches {cfg.target_metric:g} on "
           f"{cfg.val_samples} validation samples (checked after pruning and after every fine-tuning epoch; evaluation "
           "time excluded), mean over the seeds that reached it; *epochs to* counts the epochs trained instead "
           "(the dense phase's included; a pl-gates epoch costs more than a plain one, see its overhead benchmark)."
           if cfg.target_metric is not None else ""),
        "",
        "![metric vs MACs kept](metric_vs_macs.png)",
        "",
        "## Kept widths",
        "",
        widths_table(summary),
        "## Computed observations",
        "",
        *[f"- {o}" for o in observations(rows, summary)],
        "",
    ]
    if notes:
        L += ["## Notes", "", notes, ""]
    L += [
        "## Protocol",
        "",
        "1. Per seed, the dense model is trained once (`edgeprune.train.train`, channels-last) and every method "
        "and level starts from a copy of it.",
        "2. edgeprune methods (registry, `edgeprune.methods.get_method`) get a `FitContext` with "
        "`flops_keep = 1 - level` and return a plan; `edgeprune.surgery.compact_and_verify` cuts the model and checks "
        "it against the masked model. *prune s* = `fit` + compaction + verification.",
        "3. Torch-Pruning's criteria are registered methods too (`edgeprune.methods.tp`: tp-l1, tp-l2, tp-taylor, "
        "tp-groupnorm, tp-random), run through the same `fit` as every method: TP's own pruner on a copy "
        "(`tp.pruner.MetaPruner(model, example_inputs, importance=..., pruning_ratio=r, ignored_layers=[layers "
        "edgeprune keeps whole], global_pruning=False, round_to=width multiple)` with `MagnitudeImportance(p=1|2)`, "
        "`TaylorImportance()` (task-loss gradients of one seeded batch of training samples, option `samples`, "
        "default 256, BN in eval mode), `RandomImportance()`; *tp-groupnorm* is TP's `GroupNormPruner` with "
        "`GroupMagnitudeImportance(p=2)` after group-sparsity training (`pruner.regularize`, option `reg`, default "
        "5e-4, at half the run's lr, for the method epochs). The output channels TP removes from each group's root "
        "layer (`pruner.step(interactive=True)`) become edgeprune's `PruningPlan`; `r` is bisected to 1e-3 in "
        "[0, 1 - multiple/(smallest group)] for the smallest ratio whose plan keeps at most `1 - level` of the dense "
        "MACs (the plan's exact cost on edgeprune's graph); each level runs its own fit (tp-groupnorm's sparsity "
        "training and tp-taylor's gradients are in every level's *prune s*). A method written `NAME@N` rounds "
        "widths to multiples of N: edgeprune's `width_multiple=N` (rounds each kept width up, then lowers the "
        "uniform ratio to stay in budget), TP's `round_to=N` (rounds the remaining width down).",
        "4. Everyone is then fine-tuned with the lr and seed-fixed batch order, for the epochs the budget line gives; "
        "the metric is on the test split. A method written `NAME[key=value,...]` runs with those options (e.g. "
        "`pl-gates[gamma=0]`, the ablation without the condition-number term).",
        "5. MACs/params: `edgeprune.surgery.analyze(compact_model).dense_cost()` (conv/linear weight MACs); "
        "cross-checked against the sum of `tp.utils.count_ops_and_params(layer_wise=True)`'s conv/linear entries minus their bias term "
        "(TP also counts BN/ReLU/pool element ops, reported as `tp_ops`, and counts ConvTranspose at output "
        "positions, converted to input positions for the check).",
        "6. Export: the pipeline's exporter (`edgeprune.export.onnx_export.export_onnx_fp32`: dynamo, onnxsim, "
        "batch 1), compared with torch in onnxruntime (`onnx_max_abs_diff` in the CSV). Latency is measured after all training, in interleaved rounds of "
        "fresh processes, so the drift of the shared machine spreads over every model alike. Latency depends on the "
        "architecture, not on the weights, so one ONNX file is exported and measured per distinct compact architecture "
        "(`arch` = hash of the module tree with every layer's shape) and rows with the same architecture share it "
        "(their parity check is the first row's; latency std over seeds is then 0 where all seeds share one "
        "architecture).",
        "",
        "Files: `results.csv` / `results.json` (one row per method, level and seed; dense rows have level 0), "
        "`table.md`, `metric_vs_macs.png`. `cache/` (dense checkpoints, ONNX files, rows for `--resume`) is not "
        "committed.",
        "",
    ]
    return "\n".join(L)


