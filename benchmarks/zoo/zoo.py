"""Zoo coverage: structural surgery on every torchvision classification model (and a timm sample).

For each model (random init, eval mode, BatchNorm statistics randomised so that masking is
meaningful), keep a random 70% of every coupled group, then:

* ours: ``analyze`` + ``compact_and_verify`` (timed), then the independent check of
  ``reference.py`` (tagged re-compaction, masked reference, relative difference <= 1e-5);
* Torch-Pruning 1.6.1 ``MetaPruner`` (random importance, seeded, pruning ratio 0.3, final
  classifier ignored, as its README shows), its output checked against the same reference.

Each model runs in its own subprocess (a crash or a memory blow-up costs one model) and writes
``results/<zoo>__<model>.json`` when it finishes; finished models are skipped on a rerun. ``--workers N``
runs N such worker chains at once (a thread pool supervising N subprocesses, the models dealt round-robin
by size); the per-model files are the same, but each model's ``wall_s`` then includes the contention
(``loadavg`` is recorded with it).

    nice -n 10 python benchmarks/zoo/zoo.py [--only NAME ...] [--timm] [--timeout 900] [--workers N]
    python benchmarks/zoo/zoo.py --table   # results.md from the per-model files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("ZOO_RESULTS", HERE / "results"))
MAX_PARAMS = 150_000_000
KEEP = 0.7
REL_TOL = 1e-5
BIG_INPUT = ("vit_", "swin", "maxvit")  # ViT-like: 224x224
TIMM_SAMPLE = [
    "resnet18", "resnet50d", "efficientnet_b0", "mobilenetv3_large_100", "mobilenetv4_conv_small", "ghostnet_100",
    "regnety_008", "convnext_atto", "rexnet_100", "cspresnet50", "dla34", "hrnet_w18_small", "dpn68",
    "repvgg_a0", "mixnet_s", "tinynet_a", "lcnet_100", "fbnetc_100", "densenet121", "vit_tiny_patch16_224",
    "deit_tiny_patch16_224", "levit_128s", "mobilevit_xxs", "efficientformer_l1", "poolformer_s12",
]


#: models whose stride-2 stem and reductions need more than 64x64 (Inception v3's Mixed_7a needs >= 75x75)
MIN_INPUT = {"inception_v3": 128}


def input_size(name: str) -> int:
    if name in MIN_INPUT:
        return MIN_INPUT[name]
    return 224 if name.startswith(BIG_INPUT) or "_224" in name or name.startswith(("levit", "efficientformer")) else 64


def build(zoo: str, name: str):
    sys.path.insert(0, str(HERE))
    from reference import import_torchvision

    tv = import_torchvision()
    if zoo == "torchvision":
        return tv.models.get_model(name, weights=None)
    import timm

    return timm.create_model(name, pretrained=False)


def count_params(zoo: str, name: str) -> int:
    import torch

    try:
        with torch.device("meta"):  # no memory, no init: most models
            m = build(zoo, name)
    except NotImplementedError:  # regnet's init copies data
        m = build(zoo, name)
    return sum(p.numel() for p in m.parameters())


def randomize(model):
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
        for p in model.parameters():  # zero-initialised heads (ViT) would make every comparison trivially equal
            if p.dim() >= 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def classifier(model):
    """The last Linear (or 1x1 conv) whose output is the model output: Torch-Pruning's usual ignored layer."""
    import torch

    last = None
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            last = m
    return [last] if last is not None else []


def tp_prune(model, example):
    import torch
    import torch_pruning as tp

    torch.manual_seed(0)
    model = model.eval()
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.RandomImportance(), pruning_ratio=1 - KEEP,
                                  ignored_layers=classifier(model))
    torch.manual_seed(0)
    pruner.step()
    return model


def run_one(zoo: str, name: str, partial=None) -> dict:
    import copy

    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    from reference import ReferenceError, check_against_reference

    from edgeprune.errors import EdgepruneError
    from edgeprune.surgery import analyze, compact, compact_and_verify, plan_from_scores

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = randomize(build(zoo, name))
    size = input_size(name)
    dense = sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    ex = x[:1]
    res: dict = {"zoo": zoo, "model": name, "input": size, "params": dense}
    # ours
    t0 = time.perf_counter()
    try:
        graph = analyze(model, ex)
        rng = np.random.default_rng(0)
        scores = {g: rng.random(v.size) for g, v in graph.groups.items()}
        plan = plan_from_scores(graph, scores, {g: max(1, round(v.size * KEEP)) for g, v in graph.groups.items()})
        t1 = time.perf_counter()
        small, rep = compact_and_verify(model, plan, ex, x, graph)
        t2 = time.perf_counter()
        res["ours"] = {"status": "compacted", "analyze_s": t1 - t0, "compact_verify_s": t2 - t1, "total_s": t2 - t0,
                       "params_kept": rep["params"], "kept_frac": rep["params"] / dense, "groups": len(graph.groups),
                       "frozen": len(graph.frozen), "self_check_rel": rep["rel_diff"]}
        try:
            chk = check_against_reference(model, lambda m, e: compact(m, plan, e, graph), ex, x, small)
            ok = chk["rel_diff"] <= REL_TOL
            res["ours"].update(status="verified" if ok else "WRONG", ref_rel=chk["rel_diff"])
        except ReferenceError as e:
            res["ours"].update(status="WRONG", ref_error=str(e))
    except EdgepruneError as e:
        res["ours"] = {"status": "refused", "reason": str(e).splitlines()[0], "error": type(e).__name__,
                       "total_s": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 - a raw error is a result here
        res["ours"] = {"status": "failed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                       "total_s": time.perf_counter() - t0}
    if partial is not None:  # ours is kept if Torch-Pruning then runs past the timeout (its traversal through
        partial(res)         # ReXNet's channel slices did)
    # Torch-Pruning
    t0 = time.perf_counter()
    try:
        with torch.enable_grad():
            pruned = tp_prune(copy.deepcopy(model), ex)
        t1 = time.perf_counter()
        kept = sum(p.numel() for p in pruned.parameters())
        res["tp"] = {"status": "ran", "time_s": t1 - t0, "params_kept": kept, "kept_frac": kept / dense}
        try:
            with torch.enable_grad():
                chk = check_against_reference(model, lambda m, e: tp_prune(copy.deepcopy(m), e), ex, x, pruned)
            ok = chk["rel_diff"] <= REL_TOL
            res["tp"].update(status="matches reference" if ok else "WRONG", ref_rel=chk["rel_diff"])
        except ReferenceError as e:
            res["tp"].update(status="WRONG", ref_error=str(e))
        except Exception as e:  # noqa: BLE001
            res["tp"].update(status="WRONG", ref_error=f"pruned model fails: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    except Exception as e:  # noqa: BLE001
        res["tp"] = {"status": "crashed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                     "time_s": time.perf_counter() - t0}
    return res


def models(zoo: str) -> list[str]:
    if zoo == "timm":
        return TIMM_SAMPLE
    tv = build.__globals__  # noqa: F841
    sys.path.insert(0, str(HERE))
    from reference import import_torchvision

    t = import_torchvision()
    return t.models.list_models(module=t.models)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--timm", action="store_true")
    ap.add_argument("--timeout", type=int, default=1200)
    ap.add_argument("--workers", type=int, default=1, help="models run in this many worker processes at once")
    ap.add_argument("--one", nargs=2, metavar=("ZOO", "NAME"))
    ap.add_argument("--worker", nargs="+", metavar="ZOO NAME")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--redo", choices=["refused", "failed", "all"], help="rerun models whose result has this status")
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(*a.one)))
        return
    if a.worker:
        worker(a.worker[0], a.worker[1:])
        return
    if a.table:
        from table import write_table

        write_table(RESULTS, HERE / "results.md")
        return
    RESULTS.mkdir(exist_ok=True)
    zoo = "timm" if a.timm else "torchvision"
    names = a.only or models(zoo)
    sized = []
    for n in names:
        try:
            sized.append((count_params(zoo, n), n))
        except Exception as e:  # noqa: BLE001
            print(f"{n}: cannot build ({type(e).__name__}: {e})", flush=True)
    todo = []
    for params, n in sorted(sized):
        out = RESULTS / f"{zoo}__{n}.json"
        if params > MAX_PARAMS:
            if not out.exists():
                out.write_text(json.dumps({"zoo": zoo, "model": n, "params": params, "skipped": f"over {MAX_PARAMS} params"}))
            continue
        if out.exists():
            st = json.loads(out.read_text()).get("ours", {}).get("status")
            if not a.redo or (a.redo != "all" and st != a.redo and not (a.redo == "refused" and st == "timeout")):
                continue
        todo.append((params, n))
    if a.workers < 1:
        ap.error(f"--workers must be >= 1, got {a.workers}")
    run_pool(zoo, todo, a.timeout, a.workers)


def run_pool(zoo: str, todo: list, timeout: int, workers: int) -> None:
    """:func:`run_workers` on ``workers`` shares of ``todo`` at once (dealt round-robin: ``todo`` is sorted by
    size, so the shares are balanced). The threads only supervise; each share runs in its own worker process
    with the same per-model timeout and crash handling as the serial run."""
    from concurrent.futures import ThreadPoolExecutor

    shares = [todo[i::workers] for i in range(min(workers, len(todo)))]
    if len(shares) <= 1:
        run_workers(zoo, todo, timeout)
        return
    with ThreadPoolExecutor(len(shares)) as pool:
        for f in [pool.submit(run_workers, zoo, share, timeout) for share in shares]:
            f.result()


def run_workers(zoo: str, todo: list, timeout: int) -> None:
    """One worker process runs the models in turn (imports once); a model that kills it or runs past
    ``timeout`` is recorded as such and a new worker goes on with the next one."""
    while todo:
        names = [n for _, n in todo]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        p = subprocess.Popen([sys.executable, __file__, "--worker", zoo, *names], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=env)
        done, t0, pending = 0, time.time(), None
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        while True:
            if not sel.select(timeout=5):
                if time.time() - t0 > timeout:
                    p.kill()
                    break
                continue
            line = p.stdout.readline()
            if not line:
                break
            if line.startswith("{"):
                res = json.loads(line)
                if res.pop("partial", False):  # ours done, Torch-Pruning next
                    pending = res
                    continue
                _save(zoo, res, time.time() - t0)
                done, t0, pending = done + 1, time.time(), None
        p.wait()
        todo = todo[done:]
        if todo:  # the first model not done killed the worker or ran too long
            params, n = todo.pop(0)
            status = "timeout" if time.time() - t0 > timeout else "failed"
            reason = f"over {timeout} s" if status == "timeout" else f"worker process died (rc {p.returncode})"
            if pending is not None and pending.get("model") == n:  # ours finished; Torch-Pruning did not
                pending["tp"] = {"status": "timeout" if status == "timeout" else "crashed", "reason": reason}
                _save(zoo, pending, time.time() - t0)
                continue
            _save(zoo, {"zoo": zoo, "model": n, "params": params, "ours": {"status": status, "reason": reason}},
                  time.time() - t0)


def _save(zoo: str, res: dict, wall: float) -> None:
    res["wall_s"] = wall
    res["loadavg"] = os.getloadavg()
    res["machine"] = f"{platform.machine()} {os.cpu_count()} cores (shared)"
    res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    res["git"] = os.environ.get("ZOO_GIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    (RESULTS / f"{zoo}__{res['model']}.json").write_text(json.dumps(res, indent=1))
    print(f"{res['model']}: ours={res.get('ours', {}).get('status')} tp={res.get('tp', {}).get('status')} {wall:.0f}s",
          flush=True)


def worker(zoo: str, names: list[str]) -> None:
    import gc

    for n in names:
        res = run_one(zoo, n, lambda r: print(json.dumps(dict(r, partial=True)), flush=True))
        print(json.dumps(res), flush=True)
        gc.collect()

if __name__ == "__main__":
    main()
