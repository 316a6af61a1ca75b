"""The comparison itself: train dense once per seed, run every method through the registry, compact,
fine-tune, count, export and time, with the pipeline's own pieces.

Data come from :func:`edgeprune.data.load_dataset` (normalised as ``build`` does), training is
:func:`edgeprune.train.train`, every method is ``get_method(name, options).fit(model, FitContext)``
followed by :func:`edgeprune.surgery.compact_and_verify` (no method is special-cased here), export is
the pipeline's :func:`edgeprune.export.onnx_export.export_onnx_fp32` checked in onnxruntime
(:class:`edgeprune.export.runtimes.OrtRunner`), latency is :func:`edgeprune.bench.host.measure_host`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
import re
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ConfigError, EdgepruneError
from ..runfolder import json_default
from .config import DENSE_FT, CompareConfig, MethodSpec, epoch_plan, expand_methods, method_options, method_train_options
from .counting import count_compact, widths_str
from .restore import needs_dense_weights, resolved_options, restore_rows, row_key

@dataclass
class Data:
    name: str
    task: str
    arrays: dict
    describe: dict
    input_shape: tuple
    num_outputs: int
    metric_name: str
    chance: float | None


def load_data(cfg: CompareConfig) -> Data:
    from ..data import load_dataset
    from ..models import model_task
    from ..train import TASK_METRIC

    ds = load_dataset(cfg.dataset, seed=cfg.data_seed, data_dir=cfg.data_dir or None, limit=cfg.train_limit or None)
    task = model_task(cfg.model)
    if task == "reconstruction":
        # the built-in autoencoder ends in a sigmoid: it reconstructs pixels in [0, 1], so it sees and
        # predicts raw pixels (normalising would put the target outside what the model can output)
        norm = lambda x: np.ascontiguousarray(x, dtype=np.float32)  # noqa: E731
    else:
        norm = ds.normalize
    arrays = {
        "x_train": norm(ds.x_train), "y_train": ds.y_train, "x_val": norm(ds.x_val), "y_val": ds.y_val,
        "x_test": norm(ds.x_test), "y_test": ds.y_test,
    }
    desc = ds.describe()
    desc["normalized_inputs"] = task != "reconstruction"
    chance = 100.0 / ds.num_classes if task == "classification" else None
    return Data(ds.name, task, arrays, desc, ds.input_shape, ds.num_classes, TASK_METRIC[task], chance)


def _fit(model, x, y, *, task: str, epochs: int, lr: float, cfg: CompareConfig, seed: int, optimizer=None,
         val=None, progress: Callable[[str], None] | None = None) -> tuple[float, list[dict]]:
    """edgeprune's ``train`` in channels-last layout where that is safe (several times faster here;
    :func:`~edgeprune.train.training_layout`).

    Returns (training seconds, per-epoch records); with ``val`` the records carry ``val_metric``, and the
    seconds exclude the time spent evaluating it. ``progress`` (a log function whose text already names the
    phase) gets one line per finished epoch: a full-data epoch of a wide model is minutes long."""
    from ..train import train, training_layout

    t0 = time.perf_counter()
    epochs_log: list[dict] = []
    if epochs > 0:
        with training_layout(model):
            epochs_log = train(model, x, y, task=task, epochs=epochs, batch_size=cfg.batch_size, lr=lr,
                               weight_decay=cfg.weight_decay, seed=seed, optimizer=optimizer, val=val,
                               on_epoch=None if progress is None else lambda r: progress(epoch_line(r, epochs))).epochs
    model.eval()
    wall = time.perf_counter() - t0
    return (sum(e["seconds"] for e in epochs_log) if val is not None else wall), epochs_log


def epoch_line(rec: dict, epochs: int) -> str:
    """One finished epoch as a progress line: ``epoch 2/4: loss 0.412, val 88.10, 61.3s``."""
    val = f", val {rec['val_metric']:.2f}" if "val_metric" in rec else ""
    return f"epoch {rec['epoch']}/{epochs}: loss {rec['loss']:.3f}{val}, {rec['seconds']:.1f}s"


def _example(data: Data):
    import torch

    return torch.zeros(1, *data.input_shape)


def _build(cfg: CompareConfig, data: Data):
    from ..models import build_model

    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model_options.items()}
    return build_model(cfg.model, data.input_shape, data.num_outputs, **opts)

# --------------------------------------------------------------------------------------------- pruning

def prune_method(spec: MethodSpec, dense, data: Data, cfg: CompareConfig, seed: int, keep: float,
                 log: Callable[[str], None]) -> tuple[object, dict]:
    """A registry method's plan (``fit``), compacted and verified by edgeprune's surgery, as the pipeline does."""
    import torch

    from ..methods import FitContext, get_method
    from ..surgery import analyze, compact_and_verify
    from ..train import seed_everything

    a = data.arrays
    example = _example(data)
    method = get_method(spec.name, method_options(spec, cfg))
    model = copy.deepcopy(dense).eval()
    graph = analyze(model, example)
    wm = spec.width_multiple or cfg.width_multiple
    ctx = FitContext(
        a["x_train"], a["y_train"], a["x_val"], a["y_val"], example, graph, data.task, keep, wm, seed,
        method_train_options(cfg, seed), progress=None, log=lambda s: log(f"    {s.strip()}"),
    )
    seed_everything(seed)
    t0 = time.perf_counter()
    result = method.fit(model, ctx)
    fit_s = time.perf_counter() - t0
    src = result.model.eval()
    g2 = graph if src is model else analyze(src, example)
    inputs = torch.from_numpy(a["x_val"][:64])
    small, report = compact_and_verify(src, result.plan, example, inputs, g2)
    prune_s = time.perf_counter() - t0
    info = {
        "prune_s": prune_s, "fit_s": fit_s, "predicted_macs": int(report["macs"]),
        "predicted_params": int(report["params"]), "verify_rel_diff": report.get("rel_diff"),
        "dropped_branches": list(result.plan.dropped), "width_multiple": wm,
        "trains_from_scratch": bool(getattr(method, "trains_from_scratch", False)),
        "plan_meta": {k: v for k, v in result.plan.meta.items() if isinstance(v, (int, float, str, bool))},
        "extras": method_extras(result),
        # every option as resolved when the row ran: a default changed later does not re-label committed rows
        "options": resolved_options(method),
    }
    return small.eval(), info

def method_extras(result) -> dict:
    """The numeric counters a method reports in ``MethodResult.extras`` (e.g. ``metric_evaluations``): recorded
    per row under ``extras`` and tabulated as extra columns (:func:`edgeprune.compare.tables.markdown_table`)."""
    extras = getattr(result, "extras", None) or {}
    return {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in extras.items()
            if isinstance(v, (int, float, np.integer, np.floating))}

# --------------------------------------------------------------------------------------------- export / latency

def export_onnx(model, example, path: Path, check_input=None) -> float | None:
    """The pipeline's ONNX exporter (dynamo + onnxsim, batch 1); return max |onnx - torch| on ``check_input``."""
    import torch

    from ..export.onnx_export import export_onnx_fp32
    from ..export.runtimes import OrtRunner

    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(memory_format=torch.contiguous_format)
    export_onnx_fp32(model, example, path)
    if check_input is None:
        return None
    got = OrtRunner(path, threads=1).run(check_input.numpy())
    with torch.no_grad():
        want = model(check_input).numpy()
    return float(np.abs(got - want).max())


def measure_latencies(paths: list[Path], *, rounds: int, runs: int, warmup: int,
                      log: Callable[[str], None] = print) -> tuple[dict[str, dict], str]:
    """p50 latency (ms) of each ONNX file with the pipeline's host benchmark: ``rounds`` interleaved passes
    over all files (shuffled order, one fresh single-thread onnxruntime process per file and pass,
    :func:`edgeprune.bench.host.measure_host`), median over passes.

    Interleaving spreads the drift of a shared machine over every model alike. Returns
    ``({path: {"latency_ms", "latency_spread_pct", "per_round"}}, how)``.
    """
    import statistics

    from ..bench.host import measure_host

    how = "edgeprune.bench.host.measure_host(threads=1, repeats=1) per round"
    per: dict[str, list[float]] = {str(p): [] for p in paths}
    for r in range(rounds):
        order = list(paths)
        np.random.default_rng(1000 + r).shuffle(order)
        for p in order:
            per[str(p)].append(float(measure_host(p, threads=1, runs=runs, warmup=warmup, repeats=1)["p50_ms"]))
        log(f"  latency round {r + 1}/{rounds} done ({len(order)} models)")
    out = {}
    for p, vals in per.items():
        out[p] = {"latency_ms": float(statistics.median(vals)),
                  "latency_spread_pct": 100.0 * (max(vals) / max(min(vals), 1e-12) - 1.0), "per_round": vals}
    return out, how


# --------------------------------------------------------------------------------------------- the run

def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)


def run_compare(cfg: CompareConfig, log: Callable[[str], None] = print) -> dict:
    """Run the comparison; return ``{"rows": [...], "meta": {...}}`` (files are written by :func:`write_outputs`).

    Rows: one per (method, level, seed) plus, per seed, the dense row (method "dense", level 0) and the
    dense model after the same fine-tuning budget (method "dense+ft", level 0); a row whose method
    failed has ``error`` set and no measurements.
    """
    from ..train import torch_threads

    expand_methods(cfg.methods)
    for lv in cfg.levels:
        if not 0.0 < lv < 1.0:
            raise ConfigError(f"level {lv} must be a FLOPs-removal fraction in (0, 1), e.g. 0.5,0.75,0.9")
    if not cfg.seeds:
        raise ConfigError("give at least one seed")
    rows_file = Path(cfg.out) / "cache" / "rows.jsonl"
    if cfg.finished_only and not (cfg.resume and rows_file.is_file()):
        raise ConfigError(f"--finished-only needs --resume and the rows of an earlier run in {rows_file}")
    with torch_threads(cfg.threads):
        return _run(cfg, log)


def _run(cfg: CompareConfig, log: Callable[[str], None]) -> dict:
    import torch

    from ..train import evaluate, seed_everything

    specs = expand_methods(cfg.methods)
    out = Path(cfg.out)
    cache = out / "cache"
    t_start = time.perf_counter()
    meta = {"started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "config": asdict(cfg),
            "methods": [{"label": s.label, "name": s.name, "kind": s.kind, "width_multiple": s.width_multiple,
                         "options": dict(s.options), "summary": _method_summary(s)} for s in specs],
            "load_start": _loadavg()}

    data = load_data(cfg)  # bad input (a missing dataset) fails here, before anything is written
    (cache / "onnx").mkdir(parents=True, exist_ok=True)
    (cache / ".gitignore").write_text("*\n")
    meta["data"] = data.describe
    meta["task"], meta["metric"] = data.task, data.metric_name
    a = data.arrays
    example = _example(data)
    check = torch.from_numpy(a["x_test"][:1])
    val = (a["x_val"][: cfg.val_samples], a["y_val"][: cfg.val_samples])

    def curve_of(epochs_log: list[dict], start: float, first: float | None = None,
                 start_epochs: int = 0) -> list[list[float]]:
        """[[seconds, val metric, epochs], ...] counted from the start of training from scratch: the time
        (wall seconds, evaluation excluded; load-dependent) and the epochs trained (load-independent)."""
        pts = [[round(start, 3), first, start_epochs]] if first is not None else []
        t = start
        for i, e in enumerate(epochs_log, 1):
            t += e["seconds"]
            pts.append([round(t, 3), e.get("val_metric"), start_epochs + i])
        return pts
    dense_fp, row_fp = cfg.fingerprint(*cfg.DENSE_KEYS), cfg.fingerprint(*cfg.ROW_KEYS)
    rows_file = cache / "rows.jsonl"
    done: dict[str, dict] = {}
    if cfg.resume and rows_file.is_file():
        for line in rows_file.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("_fp") == row_fp and not r.get("error") and Path(r.get("_onnx", "")).is_file():
                done[row_key(r["method"], r["level"], r["seed"])] = r
        log(f"resuming: {len(done)} finished row(s) reused from {rows_file}")
    elif rows_file.exists():
        rows_file.unlink()
    if cfg.resume:
        restored = restore_rows(out / "results.json", cfg, specs, row_fp, done)
        if restored["restored"]:
            meta["restored_rows"], meta["restored_unverified"] = restored["restored"], restored["unverified"]
            log(f"resuming: {restored['restored']} more finished row(s) restored from {out / 'results.json'} (no "
                "model in the cache: their latency, if any, is the earlier run's)")
        if restored["unverified"]:
            log(f"warning: {restored['unverified']} restored row(s) predate per-row method options; they are assumed "
                "to have run with today's defaults")
        meta["reused_rows"] = len(done)

    def record(row: dict) -> None:
        with rows_file.open("a") as f:
            f.write(json.dumps(row, default=json_default) + "\n")

    # latency depends on the architecture, not on the weights: one ONNX file per distinct compact
    # architecture (its module tree with every layer's shape), shared by the rows that have it
    arch_onnx: dict[str, Path] = {r["arch"]: Path(r["_onnx"]) for r in done.values()
                                  if r.get("arch") and r.get("_onnx")}

    def export_shared(model, stem: str) -> tuple[str, Path, float | None]:
        arch = hashlib.sha256(repr(model).encode()).hexdigest()[:12]
        if arch in arch_onnx and arch_onnx[arch].is_file():
            return arch, arch_onnx[arch], None
        path = cache / "onnx" / f"{stem}.onnx"
        diff = export_onnx(copy.deepcopy(model), example, path, check)
        arch_onnx[arch] = path
        return arch, path, diff

    rows: list[dict] = []
    total = len(specs) * len(cfg.levels) * len(cfg.seeds)
    n = 0
    for seed in cfg.seeds:
        # ---------------- dense (cached per seed, shared by every method and level)
        key = row_key("dense", 0.0, seed)
        ckpt = cache / f"dense-seed{seed}.pt"
        dense = _build(cfg, data)
        if key in done and not ckpt.is_file():
            if needs_dense_weights(specs, cfg, done, seed):
                done.pop(key)  # the row survived but its checkpoint did not: retrain (never prune an untrained model)
            else:  # every row still to run re-initialises the weights (from scratch): the dense row is enough
                dense_row = done[key]
                log(f"[dense seed {seed}] checkpoint absent, not needed (every row still to run trains from "
                    f"scratch): row reused, {data.metric_name} {dense_row['metric']:.2f}")
        if key in done and ckpt.is_file():
            blob = torch.load(ckpt, map_location="cpu", weights_only=True)
            if blob.get("fp") == dense_fp:
                dense.load_state_dict(blob["state_dict"])
                dense_row = done[key]
                log(f"[dense seed {seed}] reused from cache: {data.metric_name} {dense_row['metric']:.2f}")
            else:
                done.pop(key)
        if key not in done and cfg.finished_only:
            log(f"[dense seed {seed}] not finished: seed left out (--finished-only)")
            meta.setdefault("left_out", []).append(f"seed {seed} (every row)")
            n += len(specs) * len(cfg.levels)
            continue
        if key not in done:
            seed_everything(seed)
            dense = _build(cfg, data)
            log(f"[dense seed {seed}] training {cfg.epochs} epoch(s) on {len(a['x_train'])} samples ...")
            train_s, dlog = _fit(dense, a["x_train"], a["y_train"], task=data.task, epochs=cfg.epochs, lr=cfg.lr,
                                 cfg=cfg, seed=seed, val=val, progress=lambda t: log(f"[dense seed {seed}] {t}"))
            torch.save({"fp": dense_fp, "state_dict": dense.state_dict()}, ckpt)
            cnt = count_compact(dense, example)
            arch, onnx_path, diff = export_shared(dense, f"dense-s{seed}")
            dense_row = {
                "method": "dense", "base_method": "dense", "kind": "dense", "level": 0.0, "requested_keep": 1.0,
                "seed": seed, "width_multiple": None, "task": data.task, "metric_name": data.metric_name,
                "metric": evaluate(dense, a["x_test"], a["y_test"], data.task), "metric_before_ft": None,
                "macs": cnt["macs"], "params": cnt["params"], "tp_ops": cnt["tp_ops"], "macs_check": cnt["macs_check"],
                "widths": widths_str(cnt["widths"]), "prune_s": 0.0, "train_s": train_s, "onnx_max_abs_diff": diff,
                "arch": arch, "error": None, "_onnx": str(onnx_path), "_fp": row_fp,
                "curve": curve_of(dlog, 0.0), "finetune_epochs": 0, "own_epochs": cfg.epochs,
            }
            record(dense_row)
            log(f"[dense seed {seed}] {data.metric_name} {dense_row['metric']:.2f}, {cnt['macs']:,} MACs, "
                f"{cnt['params']:,} params, train {train_s:.1f}s")
        dense.eval()
        dmacs, dparams, dops = dense_row["macs"], dense_row["params"], dense_row["tp_ops"]
        dense_row.update(dense_metric=dense_row["metric"], dense_macs=dmacs, dense_params=dparams,
                         macs_kept=1.0, params_kept=1.0, tp_ops_kept=1.0)
        rows.append(dense_row)
        dense_end = dense_row["curve"][-1][0] if dense_row.get("curve") else dense_row["train_s"]
        dense_val = dense_row["curve"][-1][1] if dense_row.get("curve") else None
        # ---------------- the unpruned model given the same post-dense budget: what the extra epochs alone give
        ft_epochs = cfg.finetune_epochs if cfg.epoch_budget == "equal-finetune" else cfg.post_dense_epochs
        if ft_epochs > 0:
            key = row_key(DENSE_FT, 0.0, seed)
            if key in done:
                rows.append(done[key])
            elif not cfg.finished_only and cfg.dense_ft:
                m = copy.deepcopy(dense)
                seed_everything(seed)
                ft_s, flog = _fit(m, a["x_train"], a["y_train"], task=data.task, epochs=ft_epochs,
                                  lr=cfg.finetune_lr, cfg=cfg, seed=seed, val=val,
                                  progress=lambda t: log(f"[{DENSE_FT} seed {seed}] {t}"))
                ft_row = {k: v for k, v in dense_row.items() if k not in ("latency_ms", "latency_spread_pct", "speedup",
                                                                         "latency_per_round")}
                ft_row.update(method=DENSE_FT, base_method=DENSE_FT, metric_before_ft=dense_row["metric"],
                              metric=evaluate(m, a["x_test"], a["y_test"], data.task), train_s=ft_s,
                              onnx_max_abs_diff=None, curve=curve_of(flog, dense_end, dense_val, cfg.epochs),
                              finetune_epochs=ft_epochs, own_epochs=0)
                record(ft_row)
                rows.append(ft_row)
                log(f"[{DENSE_FT} seed {seed}] {data.metric_name} {dense_row['metric']:.2f} -> {ft_row['metric']:.2f} "
                    f"after the fine-tuning budget, train {ft_s:.1f}s")

        # ---------------- every method x level from that dense model
        for spec in specs:
            for level in cfg.levels:
                n += 1
                keep = round(1.0 - level, 10)
                key = row_key(spec.label, level, seed)
                tag = f"[{n}/{total} {spec.label} -{level:.0%} seed {seed}]"
                if key in done:
                    rows.append(done[key])
                    log(f"{tag} reused from cache")
                    continue
                if cfg.finished_only:
                    log(f"{tag} not finished: left out (--finished-only)")
                    meta.setdefault("left_out", []).append(f"{spec.label} −{level:.0%} seed {seed}")
                    continue
                row = {"method": spec.label, "base_method": spec.name, "kind": spec.kind, "level": level,
                       "requested_keep": keep, "seed": seed, "task": data.task, "metric_name": data.metric_name,
                       "dense_metric": dense_row["metric"], "dense_macs": dmacs, "dense_params": dparams,
                       "error": None, "_fp": row_fp}
                try:
                    plan = epoch_plan(spec, cfg)
                    seed_everything(seed)
                    small, info = prune_method(spec, dense, data, cfg, seed, keep, log)
                    cnt = count_compact(small, example)
                    if "predicted_macs" in info and (info["predicted_macs"], info["predicted_params"]) != (
                            cnt["macs"], cnt["params"]):
                        cnt["macs_check"] += f"; plan predicted {info['predicted_macs']} MACs / " \
                                             f"{info['predicted_params']} params"
                    before = evaluate(small, a["x_test"], a["y_test"], data.task)
                    before_val = evaluate(small, val[0], val[1], data.task)
                    seed_everything(seed)
                    train_s, flog = _fit(small, a["x_train"], a["y_train"], task=data.task,
                                         epochs=plan["finetune_epochs"], lr=cfg.finetune_lr, cfg=cfg, seed=seed, val=val,
                                         progress=lambda t: log(f"{tag} fine-tune {t}"))
                    metric = evaluate(small, a["x_test"], a["y_test"], data.task)
                    # the clock starts at zero for a method that trains from scratch, else after the dense phase
                    start = (0.0 if plan["from_scratch"] else dense_end) + info["prune_s"]
                    arch, onnx_path, diff = export_shared(small, f"{_safe(spec.label)}-l{level:g}-s{seed}")
                    row.update(
                        width_multiple=info.get("width_multiple"), metric=metric, metric_before_ft=before,
                        macs=cnt["macs"], params=cnt["params"], macs_kept=cnt["macs"] / dmacs,
                        params_kept=cnt["params"] / dparams, tp_ops=cnt["tp_ops"], tp_ops_kept=cnt["tp_ops"] / dops,
                        macs_check=cnt["macs_check"], widths=widths_str(cnt["widths"]),
                        prune_s=info["prune_s"], train_s=train_s, onnx_max_abs_diff=diff,
                        details={k: v for k, v in info.items() if k not in ("prune_s", "width_multiple", "extras")},
                        extras=info["extras"],
                        arch=arch, _onnx=str(onnx_path), **plan,
                        curve=curve_of(flog, start, before_val,
                                       (0 if plan["from_scratch"] else cfg.epochs) + plan["own_epochs"]),
                    )
                    log(f"{tag} MACs kept {row['macs_kept']:.1%} params {row['params_kept']:.1%} "
                        f"{data.metric_name} {before:.2f} -> {metric:.2f}  prune {info['prune_s']:.1f}s "
                        f"train {train_s:.1f}s  widths {row['widths']}")
                except Exception as e:  # noqa: BLE001 - one failing method must not sink the whole comparison
                    row["error"] = f"{type(e).__name__}: {e}"
                    log(f"{tag} FAILED: {row['error']}")
                    if not isinstance(e, EdgepruneError):
                        log("".join(traceback.format_exception(e)[-4:]).rstrip())
                record(row)
                rows.append(row)

    # ---------------- latency, all models together at the end
    if not rows:
        raise ConfigError(f"no finished row in {rows_file} matches this configuration")
    meta["compute_s"] = time.perf_counter() - t_start
    measurable = [r for r in rows if not r.get("error") and r.get("_onnx")]
    if cfg.latency and measurable:
        unique = list(dict.fromkeys(r["_onnx"] for r in measurable))
        meta["latency_models"] = len(unique)
        log(f"measuring latency of {len(unique)} distinct compact architectures ({len(measurable)} rows): "
            f"{cfg.latency_rounds} interleaved round(s) x {cfg.latency_runs} runs (+{cfg.latency_warmup} warm-up), "
            "1 thread ...")
        lat, how = measure_latencies([Path(p) for p in unique], rounds=cfg.latency_rounds,
                                     runs=cfg.latency_runs, warmup=cfg.latency_warmup, log=log)
        meta["latency_method"] = how
        for r in measurable:
            r.update({k: v for k, v in lat[r["_onnx"]].items() if k != "per_round"})
            r["latency_per_round"] = lat[r["_onnx"]]["per_round"]
        dense_lat = {r["seed"]: r["latency_ms"] for r in measurable if r["method"] == "dense" and r.get("latency_ms")}
        for r in measurable:
            if r["seed"] in dense_lat and r.get("latency_ms"):
                r["speedup"] = dense_lat[r["seed"]] / r["latency_ms"]
    meta["wall_s"] = time.perf_counter() - t_start
    meta["load_end"] = _loadavg()
    meta["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {"rows": rows, "meta": meta}


def _method_summary(spec: MethodSpec) -> str:
    from ..methods import METHODS

    return getattr(METHODS[spec.name], "summary", "")


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None

