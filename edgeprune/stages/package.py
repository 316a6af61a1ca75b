"""Stage 9: the device bundle dist/<target>/: model file(s) with TFLite Metadata, metadata, labels, usage snippets."""

from __future__ import annotations

from ..runfolder import read_json

name = "package"

#: Keys of each budget line copied into metadata.json (the rest, e.g. advice, stays in budget/<target>.json).
BUDGET_LINE_KEYS = ("name", "value", "budget", "source", "passed")


def target_file(b) -> str:
    return f"dist/{b.target.name}/metadata.json"


def depends(b):
    return [b.target.name]


def describe(b):
    return f"dist/{b.target.name}/ for {b.target.platform}"


def budget_summary(verdict: dict, path: str) -> dict:
    """The budget verdict as metadata.json carries it: passed, artifact, one line per budgeted quantity."""
    return {
        "file": path,
        "target": verdict.get("target"),
        "passed": verdict.get("passed"),
        "artifact": verdict.get("artifact"),
        "lines": [{k: line.get(k) for k in BUDGET_LINE_KEYS} for line in verdict.get("lines", [])],
        **({"reason": verdict["reason"]} if verdict.get("reason") else {}),
    }


def _version() -> str:
    from ..version import __version__

    return __version__


def run(b) -> list[str]:
    from ..export import package_bundle
    from ..export.bundle import bundle_formats

    exp = read_json(b.run / "export.json")
    train = read_json(b.run / "train.json")
    budget_path = f"budget/{b.target.name}.json"
    verdict = read_json(b.run / budget_path)
    artifacts = exp["artifacts"]
    d = train["dataset"]
    bad = next((c for c in d["classes"] if not str(c).isprintable()), None)
    if bad is not None:  # labels.txt holds one name per line
        from ..errors import InputError

        raise InputError(f"class name {bad!r} in train.json has a newline or control character: rebuild with "
                         "one-line class names")
    metadata = {
        "model": train["arch"]["model"],
        "task": train["task"],
        "input_shape": [1, *d["input_shape"]],
        "mean": d["normalization"]["mean"],
        "std": d["normalization"]["std"],
        "class_names": d["classes"],
        "preprocessing": d.get("preprocessing") or {},
        "source_run": b.run.path.name,
        # name/description/version embedded as TFLite Metadata in each shipped .tflite
        "description": f"{train['arch']['model']} {train['task']} model trained on {d.get('name', 'the dataset')}, "
                       f"pruned with {b.cfg['method']['name']} by edgeprune for {b.target.name}: {b.target.title}",
        "model_version": f"{b.run.path.name} (edgeprune {_version()})",
        "preferred_artifact": verdict.get("artifact"),
        "budget": budget_summary(verdict, budget_path),
        "int8_over_tolerance": exp.get("int8_over_tolerance", []),
    }
    platform = b.target.platform
    from ..export.speedcheck import artifact_order

    kw = {"preference": artifact_order(b.target.artifacts, exp.get("runtime_choice"))}  # fp32 first where INT8 was slower
    if not any((artifacts.get(f) or {}).get("ok") for f in bundle_formats(platform, b.target.artifacts)):
        kw = {"formats": [f for f in b.target.artifacts if (artifacts.get(f) or {}).get("ok")]}
        b.ui.warn(f"none of the {platform} formats {bundle_formats(platform, b.target.artifacts)} exported; the "
                  f"bundle holds {kw['formats'] or 'nothing'} instead")  # fmt: skip
    dist = b.run / f"dist/{b.target.name}"
    package_bundle(dist, target_name=b.target.name, platform=platform, artifacts=artifacts, metadata=metadata,
                   out_dir=b.run / exp["dir"], **kw)  # fmt: skip
    shipped = [m["file"] for m in read_json(dist / "metadata.json")["models"]]
    b.ui.log(f"  bundle in {dist}: {', '.join(shipped)}")
    return [target_file(b)]
