"""Stage 9: the device bundle dist/<target>/: model file(s), metadata, labels, usage snippet."""

from __future__ import annotations

from ..runfolder import read_json

name = "package"


def target_file(b) -> str:
    return f"dist/{b.target.name}/metadata.json"


def depends(b):
    return [b.target.name]


def describe(b):
    return f"dist/{b.target.name}/ for {b.target.platform}"


def run(b) -> list[str]:
    from ..export import package_bundle

    exp = read_json(b.run / "export.json")
    train = read_json(b.run / "train.json")
    verdict = read_json(b.run / f"budget/{b.target.name}.json")
    wanted = [f for f in b.target.artifacts if exp["artifacts"].get(f, {}).get("ok")]
    artifacts = {f: exp["artifacts"][f] for f in wanted}
    d = train["dataset"]
    metadata = {
        "model": train["arch"]["model"],
        "task": train["task"],
        "input_shape": [1, *d["input_shape"]],
        "input_layout": "NCHW",
        "mean": d["normalization"]["mean"],
        "std": d["normalization"]["std"],
        "class_names": d["classes"],
        "source_run": b.run.path.name,
        "target": b.target.name,
        "preferred_artifact": verdict.get("artifact"),
        "budget_passed": verdict.get("passed"),
    }
    dist = b.run / f"dist/{b.target.name}"
    package_bundle(dist, target_name=b.target.name, platform=b.target.platform, artifacts=artifacts, metadata=metadata,
                   out_dir=b.run / exp["dir"], formats=wanted)
    b.ui.log(f"  bundle in {dist}")
    return [target_file(b)]
