"""The command line. Thin: parse, call the library, print, map errors to exit codes.

Exit codes: 0 success; 1 internal error or failed verification; 2 bad input (config,
target, paths, files) with a one-line message; 3 the build ran but the target's budget
failed; 4 the build is incomplete (an artifact failed to export).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import EdgepruneError, InputError

STAGE_HELP = {
    "train": "retrain the dense model of a run folder",
    "prune": "rerun the pruning method on the run's dense model",
    "compact": "redo the structural surgery and its verification",
    "finetune": "redo the recovery training of the compact model",
    "export": "re-export the final model (use --all for every format)",
    "bench": "benchmark the run's artifacts (on this host, predicted for --target, on --remote / --adb), "
             "then recheck the budget and rewrite the report for that target",
    "budget": "check a target's budget against the run's artifacts",
    "report": "rewrite report.json and report.html",
    "package": "write the device bundle dist/<target>/",
}


def _add_build_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to build")
    g.add_argument("--target", help="target profile name (see `edgeprune targets`) or path to a profile .toml [rpi4]")
    g.add_argument("--config", help="TOML config file [./edgeprune.toml if present]")
    g.add_argument("--dataset", help="digits (bundled), fashion-mnist, a .npz file (x_train, y_train, x_test, y_test), "
                                     "an image folder (one sub-folder per class) or file.py:function; other array "
                                     "names via the config's [data] section [digits]")
    g.add_argument("--data-dir", help="directory of the dataset files (fashion-mnist)")
    g.add_argument("--data-limit", type=int, help="use only the first N training samples (quick runs)")
    g.add_argument("--model", help="built-in model (see `edgeprune models`) or your own: file.py:factory [cnn]")
    g.add_argument("--weights", help="state_dict file (.pt) to start from (saved with torch.save(model.state_dict()))")
    g.add_argument("--input-shape", help="model input shape, e.g. 1x3x32x32 [the dataset's]")
    g.add_argument("--task", choices=["classification", "reconstruction"], help="task [the model's, else classification]")
    g.add_argument("--metric", help="metric name (accuracy, psnr) or file.py:function [the task's]")
    g.add_argument("--method", help="pruning method (see `edgeprune methods`) [l1]")
    g.add_argument("--method-option", action="append", metavar="KEY=VALUE", dest="method_option",
                   help="an option of the method, e.g. gamma=0.1 (repeatable; values as in TOML; see `edgeprune methods`)")
    g.add_argument("--flops-keep", type=float, help="fraction of dense MACs to keep, overriding the target's budget (e.g. 0.5)")
    g.add_argument("--search", action="store_true", default=None,
                   help="after bench, rebuild with a tighter (or looser) pruning target while a budget line fails "
                        "(bounded rounds, the dense model reused); exit 5 when the budget is out of reach")
    g.add_argument("--objective", choices=["least-pruning", "fastest"],
                   help="least-pruning: meet the budget, prune no more; fastest: the most pruning whose accuracy "
                        "stays within max_accuracy_drop [the target's, else least-pruning]")
    g.add_argument("--budget", action="append", metavar="KEY=VALUE", dest="budget_override",
                   help="override a budget line of the target, e.g. latency_p50_ms=0.5 (repeatable; keys: "
                        "latency_p50_ms, latency_p90_ms, peak_memory_mb, model_size_mb, max_accuracy_drop)")
    g.add_argument("--width-multiple", type=int, help="round kept channel widths up to this multiple [target's]")
    g.add_argument("--epochs", type=int, help="dense training epochs [12; 0 with --weights: the given model is the "
                                              "dense model]")
    g.add_argument("--finetune-epochs", type=int, help="recovery training epochs after compaction [6]")
    g.add_argument("--seed", type=int, help="seed for data split, init and training [0]; same seed, same plan")
    g.add_argument("--formats", help="comma-separated export formats (onnx,onnx-int8,tflite,tflite-int8) [target's list]")
    _add_device_options(g, adb=False)
    g.add_argument("--limit-guard", choices=["auto", "on", "off"],
                   help="predict the dense model's one-shot pruning limit before pruning and warn when the target "
                        "removes more (auto: small models only) [auto]")
    o = p.add_argument_group("where")
    o.add_argument("--output", help="parent directory of run folders [runs]")
    o.add_argument("--name", help="run folder name [<target>-<model>-<method>]")
    o.add_argument("--force", action="store_true", help="rerun every stage even if its artifacts are up to date")
    o.add_argument("--nproc", type=int, help="train with N processes on this machine: runs this command under "
                                             "torchrun (DDP; train.batch_size stays the global batch) [1]")


def _add_device_options(g, adb: bool = True) -> None:
    """--remote/--port/--identity (ssh) and, for `bench`, --adb/--benchmark-binary (Android)."""
    g.add_argument("--remote", help="user@host or user@host:port of a real device: also benchmark there over SSH "
                                    "(ssh options such as Port, IdentityFile, ProxyJump come from ~/.ssh/config)")
    g.add_argument("--port", type=int, help="SSH port of --remote (passed as ssh -p only when given)")
    g.add_argument("--identity", help="SSH private key file for --remote (ssh -i)")
    g.add_argument("--remote-python", metavar="PATH", help="python on the device (with numpy and onnxruntime or a "
                                                           "TFLite interpreter) [python3]")
    g.add_argument("--ssh-option", action="append", metavar="OPT", dest="ssh_option",
                   help="extra ssh -o option for --remote, e.g. UserKnownHostsFile=PATH (repeatable)")
    if adb:
        g.add_argument("--adb", nargs="?", const="any", metavar="SERIAL",
                       help="also measure the .tflite artifacts on an Android phone over adb with LiteRT's "
                            "benchmark_model (SERIAL: the device from `adb devices`; default: the only one). "
                            "UNTESTED on a real phone: the output parser is tested on copied logs only")
        g.add_argument("--benchmark-binary", default=None, metavar="PATH",
                       help="benchmark_model on the phone [/data/local/tmp/benchmark_model]; push it there first")


def _device_settings(a: argparse.Namespace) -> dict:
    """The device-connection settings of the command line that go into cfg["bench"] (None = not given)."""
    from .sshopts import check_ssh_options

    ssh = check_ssh_options(a.ssh_option) if a.ssh_option else None  # refused before any work, not at bench time
    out = {"port": a.port, "identity": a.identity, "python": a.remote_python, "ssh_options": ssh}
    if hasattr(a, "adb"):
        out.update(adb=a.adb, benchmark_binary=a.benchmark_binary)
    if a.identity is not None and not Path(a.identity).is_file():
        raise InputError(f"--identity {a.identity}: file not found; pass the private key of the device login")
    return {k: v for k, v in out.items() if v is not None}


def _overrides(a: argparse.Namespace) -> dict:
    top = {"target": a.target, "dataset": a.dataset, "data_dir": a.data_dir, "data_limit": a.data_limit,
           "model": a.model, "seed": a.seed, "output": a.output, "name": a.name, "weights": a.weights,
           "input_shape": a.input_shape, "task": a.task, "metric": a.metric}
    ov = {k: v for k, v in top.items() if v is not None}
    sections = {
        "method": {"name": a.method, "flops_keep": a.flops_keep, "width_multiple": a.width_multiple},
        "train": {"epochs": a.epochs, "finetune_epochs": a.finetune_epochs},
        "export": {"formats": a.formats.split(",") if a.formats else None},
        "bench": {"remote": a.remote},
        "limit": {"guard": a.limit_guard},
        "search": {"enabled": a.search, "objective": a.objective},
        "budget": _budget_overrides(a.budget_override),
    }
    for sec, vals in sections.items():
        vals = {k: v for k, v in vals.items() if v is not None}
        if vals:
            ov[sec] = vals
    if getattr(a, "method_option", None):
        from .methods.options import parse_assignments

        ov["method_options"] = parse_assignments(a.method_option)
    return ov


def _budget_overrides(items) -> dict:
    """--budget KEY=VALUE (repeatable) -> {key: float}; a wrong key or value is a one-line error."""
    from .config import SCHEMA

    out = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or key not in SCHEMA["budget"]:
            raise InputError(f"--budget {item!r}: give KEY=VALUE with KEY one of {', '.join(SCHEMA['budget'])}")
        try:
            out[key] = float(val)
        except ValueError:
            raise InputError(f"--budget {item!r}: {val!r} is not a number") from None
    return out


def make_parser() -> argparse.ArgumentParser:
    from .version import __version__

    p = argparse.ArgumentParser(
        prog="edgeprune",
        description="Prune, compact, export and benchmark a neural network for an edge target.",
        epilog="exit codes: 0 ok, 1 internal/verification error, 2 bad input, 3 budget failed, 4 build incomplete, "
               "5 budget out of reach",
    )
    p.add_argument("--version", action="version", version=f"edgeprune {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the final verdict")
    # -q is accepted after the subcommand too (SUPPRESS keeps it from resetting the global flag)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="print only errors and the final verdict")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_parser = sub.add_parser

    def add_parser(*args, **kw):
        return _add_parser(*args, parents=[common], **kw)

    sub.add_parser = add_parser

    b = sub.add_parser("build", help="run the whole pipeline for a target (resumes a run folder)",
                       description="Train, prune, compact, fine-tune, export, benchmark, check the budget, report "
                                   "and package, into runs/<name>/. Complete stages are skipped on rerun.")
    _add_build_options(b)

    t = sub.add_parser("targets", help="list target profiles, or `targets show NAME` for one")
    t.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    t.add_argument("name", nargs="?", help="profile name or path (with show)")
    t.add_argument("--json", action="store_true", help="machine-readable output")

    for kind in ("models", "methods", "datasets"):
        k = sub.add_parser(kind, help=f"list the registered {kind}" + (" with their options" if kind == "methods" else ""))
        if kind == "methods":
            k.add_argument("--json", action="store_true", help="machine-readable output")

    for stage, help_ in STAGE_HELP.items():
        later = "" if stage == "bench" else "; later stages are not rerun"
        s = sub.add_parser(stage, help=help_, description=help_ + later + ".")
        s.add_argument("run_dir", type=Path, help="an existing run folder (from `edgeprune build`)")
        if stage in ("bench", "budget", "report", "package"):
            s.add_argument("--target", help="target profile: a name from `edgeprune targets` (built-in, or a "
                                            "<name>.toml in the working directory) or a path (default: the run's)")
        if stage == "bench":
            _add_device_options(s.add_argument_group("measure on a device"))
        if stage == "export":
            s.add_argument("--all", action="store_true", help="export every format, not only the target's")
        own = s.add_argument_group("your code (a run folder's recorded code is never run on its own; SECURITY.md)")
        own.add_argument("--model", help="your model factory file.py:factory, when the run was built with one")
        own.add_argument("--metric", help="your metric file.py:function, when the run was built with one")
        own.add_argument("--dataset", help="your dataset file.py:function, when the run was built with one")

    cmp_ = sub.add_parser("compare", help="benchmark pruning methods side by side (Torch-Pruning peers included)",
                          add_help=False)
    cmp_.add_argument("args", nargs=argparse.REMAINDER, help="see `edgeprune compare --help`")

    lim = sub.add_parser("limit", help="predict how far one-shot pruning can go (s*) and measure the actual limit",
                         add_help=False)
    lim.add_argument("args", nargs=argparse.REMAINDER, help="see `edgeprune limit --help`")

    c = sub.add_parser("calibrate", help="measure a device over SSH (writes <target>-measured.toml) or this host "
                                         "(--host: the cost model's calibration, cached per CPU)",
                       description="With --remote: run micro-benchmarks on the device (sustained fp32/int8 "
                                   "throughput, bandwidth, per-op overhead) and write a measured profile, loadable "
                                   "as --target <target>-measured from the directory it is written to. With "
                                   "--host: export and measure the built-in models on this machine (a few "
                                   "minutes) and cache the cost model's calibration for this CPU.")
    c.add_argument("--host", action="store_true", help="calibrate the cost model on this machine instead")
    c.add_argument("--target", help="the spec profile the device belongs to (e.g. rpi5)")
    _add_device_options(c, adb=False)
    c.add_argument("--out", type=Path, help="where to write the measured profile [./<target>-measured.toml, or "
                                            "next to a --target .toml file] or the host calibration [user cache]")
    return p


def _cmd_targets(a) -> int:
    from .targets import list_targets, load_target

    if a.action == "show":
        if not a.name:
            raise EdgepruneError("`targets show` needs a profile name, e.g. `edgeprune targets show rpi5`")
        t = load_target(a.name)
        if a.json:
            print(json.dumps(t.to_dict(), indent=2))
            return 0
        print(f"{t.name}: {t.title}  [{t.platform}]  ({t.source_path})")
        print(f"  runtime: {t.runtime.get('preferred')}, artifacts {', '.join(t.artifacts)}, {t.threads} threads, "
              f"widths rounded to {t.width_multiple}, ONNX opset {t.onnx_opset}")
        print("  device:")
        for k, f in t.device.items():
            unit = f" {f.unit}" if f.unit and f.unit != "count" else ""
            print(f"    {k:20s} {f.value}{unit}  [{f.basis}] {f.source}")
        print("  budget:")
        for k, v in t.budget.to_dict().items():
            if v is not None and k != "rationale":
                print(f"    {k:20s} {v}")
        if t.budget.rationale:
            print(f"    why: {t.budget.rationale}")
        return 0
    rows = [load_target(n) for n in list_targets()]
    if a.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    print(f"{'name':22s} {'platform':8s} {'runtime':8s} {'sustained':>12s} {'bw GB/s':>8s} {'keep MACs':>9s} "
          f"{'p50 ms':>7s} {'mem MB':>7s}  title [where]")
    for t in rows:
        bud = t.budget
        sus = t.device.get("sustained_fp32_gflops")
        sus_txt = f"{sus.value:>6.1f} GF {sus.basis[:1]}" if sus else f"{'—':>10s}  "
        where = "" if t.source_path.startswith("<builtin>") else f"  [{t.source_path}]"
        print(f"{t.name:22s} {t.platform:8s} {t.runtime.get('preferred', ''):8s} {sus_txt:>12s} "
              f"{t.fact('mem_bandwidth_gbs', 0):>8.1f} {'derived' if bud.flops_keep is None else format(bud.flops_keep, '.0%'):>9s} {bud.latency_p50_ms or 0:>7.1f} "
              f"{bud.peak_memory_mb or 0:>7.0f}  {t.title}{where}")
    print("sustained: fp32 conv-net GFLOP/s the cost model uses (d = derived from a published benchmark, "
          "u = unverified, m = measured); user profiles: <name>.toml in the working directory")
    _print_families()
    return 0


def _print_families() -> None:
    """`edgeprune targets`: each family name (and aliases), the member it resolves to, the other members."""
    from .targets import families

    print("\nfamilies (--target FAMILY builds for its default, the first member):")
    for f in families().values():
        names = ", ".join([f"{f.name}"] + list(f.aliases))
        print(f"  {names:38s} -> {', '.join(f.members())}")


def _cmd_list(kind: str) -> int:
    if kind == "models":
        from .models import MODELS, model_task

        for n in sorted(MODELS):
            doc = (MODELS[n].__doc__ or "").strip().splitlines()
            print(f"{n:12s} {model_task(n):15s} {doc[0] if doc else ''}")
    else:
        from .data import DATASETS

        for n in sorted(DATASETS):
            doc = (DATASETS[n].__doc__ or "").strip().splitlines()
            print(f"{n:15s} {doc[0] if doc else ''}")
    return 0


def _cmd_methods(a) -> int:
    """Every registered method: summary, whether it trains, its options with defaults and help (one declaration)."""
    from .methods import list_methods, method_info

    infos = [method_info(n) for n in list_methods()]
    if a.json:
        print(json.dumps(infos, indent=2, default=str))
        return 0
    for m in infos:
        trains = "trains (from scratch)" if m["trains_from_scratch"] else "trains" if m["trains"] else "no training"
        print(f"{m['name']}  [{trains}]  {m['summary']}")
        if m["options"]:
            print(f"    {'option':14s} {'type':22s} {'default':>22s}  meaning")
        for o in m["options"]:
            d = o["default"]
            default = ("run's " + o["from_run"] if d is None and o.get("from_run") else "auto" if d is None else
                       f"{d:.4g}" if isinstance(d, float) else json.dumps(d) if not isinstance(d, str) else repr(d))
            rng = "".join(f" {op}{o[k]}" for k, op in (("min", ">="), ("gt", ">"), ("max", "<=")) if o.get(k) is not None)
            print(f"    {o['name']:14s} {o['type'] + rng:22s} {default:>22s}  {o['help']}")
    print("options: --method-option KEY=VALUE (build), [method_options] or [method.<name>] in the config TOML")
    return 0


def _final_line(code: int, b) -> None:
    from .pipeline import EXIT_BUDGET_FAILED, EXIT_INCOMPLETE

    msg = {0: "build complete", EXIT_BUDGET_FAILED: "build complete, but the target's budget FAILED", 5: "build stopped: "
           "the budget is out of reach (see search.json and the report)",
           EXIT_INCOMPLETE: "build incomplete: an artifact failed to export (see export.json)"}.get(code, "")
    print(f"{msg}: {b.run.path}  (report: {b.run.path / 'report.html'})")


def _cmd_build(a) -> int:
    from . import config
    from . import distributed as D
    from .pipeline import build
    from .targets import load_target, resolve_family
    from .ui import UI

    if a.nproc is not None and a.nproc < 1:
        raise InputError(f"--nproc {a.nproc}: give a number of processes >= 1")
    # a broken config, target or device option fails here, once, before any rank starts
    cfg = config.resolve(a.config, _overrides(a))
    cfg["bench"].update(_device_settings(a))
    fam = resolve_family(cfg["target"])
    load_target(fam.default if fam else cfg["target"])
    if cfg["search"]["enabled"] and ((a.nproc or 1) > 1 or D.launched()):
        raise InputError("build --search runs in one process: drop --nproc (or run the search without torchrun)")
    if (a.nproc or 1) > 1 and not D.launched():
        return D.launch(a.nproc, _without_nproc(a.argv))
    D.init_from_env()
    ui = UI(quiet=a.quiet or not D.is_main())
    _resolve_family(cfg, ui)
    try:
        if cfg["search"]["enabled"]:
            from .search import build_search

            code, b = build_search(cfg, ui=ui, force=a.force)
        else:
            code, b = build(cfg, ui=ui, force=a.force)
    except EdgepruneError:
        raise
    except Exception:
        if D.peer_failed():  # another rank stopped on an error it reported; this one lost its peer
            return 1
        raise
    if D.is_main():
        _final_line(code, b)
    code = D.report_exit(code)
    D.shutdown()
    return code


def _first_error(code: int) -> bool:
    """False in a rank of ``build --nproc N`` whose error another rank already reported (and left its exit code
    for the launcher, :func:`edgeprune.distributed.report_error`)."""
    from .distributed import report_error

    return report_error(code)


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line without ``--nproc N`` / ``--nproc=N`` (each torchrun rank runs the rest)."""
    out, skip = [], False
    for t in argv:
        if skip:
            skip = False
        elif t == "--nproc":
            skip = True
        elif not t.startswith("--nproc="):
            out.append(t)
    return out


def _resolve_family(cfg: dict, ui) -> None:
    """``--target jetson``: build for the family's default member, and say so in one line."""
    from .targets import resolve_family

    fam = resolve_family(cfg["target"])
    if fam is not None:
        ui.log(f"{cfg['target']} -> {fam.default}; `edgeprune targets` lists the others")
        cfg["target"] = fam.default


def _cmd_stage(a) -> int:
    from . import config
    from .pipeline import build, open_run
    from .ui import UI

    from .trust import adopt_user_code, drop_device_settings

    cfg = open_run(a.run_dir)
    cfg = config.merge(config.defaults(), cfg, str(a.run_dir / "config.json"))
    aliases = adopt_user_code(cfg, {"model": a.model, "metric": a.metric, "dataset": a.dataset}, a.run_dir, a.command)
    drop_device_settings(cfg, config.defaults())  # ssh/adb settings come from this command line only
    if getattr(a, "remote", None):
        cfg["bench"]["remote"] = a.remote
    if a.command == "bench":
        cfg["bench"].update(_device_settings(a))
    config.validate(cfg)
    if getattr(a, "all", False):
        from .export import FORMATS

        cfg["export"]["formats"] = list(FORMATS)
    # bench changes the evidence: the budget and the report for that target are redone with it
    only = ["bench", "budget", "report"] if a.command == "bench" else [a.command]
    from . import distributed as D

    D.init_from_env()  # `torchrun -m edgeprune finetune RUN`: the training stages run on every rank
    code, b = build(cfg, a.run_dir, ui=UI(quiet=a.quiet or not D.is_main()), only=only,
                    target_override=getattr(a, "target", None), code_aliases=aliases)
    if D.is_main():
        _final_line(code, b)
    D.shutdown()
    return code


def _cmd_calibrate(a) -> int:
    if a.host:
        from .bench.hostcal import calibrate_host

        res = calibrate_host(out=a.out, progress=(lambda m: None) if a.quiet else print)
        errs = {k: round(v["fit_median_abs_pct_err"], 1) for k, v in res["calibration"]["factors"].items()}
        print(f"host calibration for {res['calibration']['host']['cpu']} written to {res['path']} "
              f"({res['seconds']:.0f} s; in-sample median abs error %: {errs}); `edgeprune bench` uses it on this CPU")
        return 0
    if not a.remote or not a.target:
        raise InputError("calibrate needs --remote USER@HOST and --target PROFILE (or --host for this machine)")
    from .bench.remote import calibrate_remote
    from .targets import load_target

    t = load_target(a.target)
    dev = _device_settings(a)
    ssh = {"port": dev.get("port"), "identity": dev.get("identity"), "ssh_options": tuple(dev.get("ssh_options") or ())}
    if dev.get("python"):
        ssh["python"] = dev["python"]
    result = calibrate_remote(a.remote, t, out_path=a.out, **ssh)
    name = Path(result["profile"]).stem
    here = Path(result["profile"]).resolve().parent == Path.cwd().resolve()
    print(f"measured profile written to {result['profile']}"
          + (f" (the working directory: use it as --target {name} from here)" if here else
             f" (use it as --target {result['profile']})"))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from .imports import name_code

    name_code(*argv, *(t.partition("=")[2] for t in argv if t.startswith("--")))  # code named on the command line

    if argv[:1] == ["limit"]:  # the pruning-limit estimator parses its own options
        from .limit.cli import main as limit_main

        return limit_main(argv[1:])
    if argv[:1] == ["compare"]:  # the benchmark harness parses its own options
        from .compare import main as compare_main

        try:
            return compare_main(argv[1:])
        except EdgepruneError as e:
            print(f"edgeprune: error: {e}", file=sys.stderr)
            return e.exit_code
    parser = make_parser()
    a = parser.parse_args(argv)
    a.argv = argv  # build --nproc N reruns this command line under torchrun
    try:
        if a.command == "build":
            return _cmd_build(a)
        if a.command == "targets":
            return _cmd_targets(a)
        if a.command == "methods":
            return _cmd_methods(a)
        if a.command in ("models", "datasets"):
            return _cmd_list(a.command)
        if a.command == "calibrate":
            return _cmd_calibrate(a)
        return _cmd_stage(a)
    except EdgepruneError as e:
        if a.command != "build" or _first_error(e.exit_code):
            print(f"edgeprune: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgeprune: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
