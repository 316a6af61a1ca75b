"""Record the method options of harness rows that ran before rows recorded them (``details.options``).

A harness row now carries its method's options as resolved when it ran, so that a default changed later cannot
re-label it (``edgeprune.compare.restore``). Rows of older runs have none; this script writes them from what is known
of the revision that ran them: today's resolved options, overridden by ``--then KEY=VALUE`` for the defaults that
changed since (pl-gates' ``kappa_estimator`` was ``kernel`` until 2026-12-07). ``--relabel OLD=NEW`` renames a
method label so that it says what ran (e.g. ``pl-gates=pl-gates[kappa_estimator=kernel]``); a later ``--resume``
with the new label then restores those rows, verified.

    python benchmarks/pl_gates/record_options.py RESULTS.json --method pl-gates --then kappa_estimator=kernel \\
        --relabel 'pl-gates=pl-gates[kappa_estimator=kernel]'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeprune.compare.config import CompareConfig, expand_methods, method_options
from edgeprune.compare.restore import resolved_options
from edgeprune.methods import get_method


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--method", action="append", default=[], help="base method whose rows get --then (repeatable)")
    ap.add_argument("--then", action="append", default=[], help="KEY=VALUE default at the time of the run")
    ap.add_argument("--relabel", action="append", default=[], help="OLD=NEW method label")
    a = ap.parse_args(argv)

    doc = json.loads(a.results.read_text())
    conf = doc["meta"]["config"]
    cfg = CompareConfig(**{k: v for k, v in conf.items() if k in CompareConfig.__dataclass_fields__})
    then = dict(kv.split("=", 1) for kv in a.then)
    relabel = dict(kv.split("=", 1) for kv in a.relabel)
    done = 0
    for r in doc["rows"]:
        if r["method"] in ("dense", "dense+ft") or r.get("error") or (r.get("details") or {}).get("options"):
            continue
        spec = expand_methods([r["method"]])[0]
        opts = method_options(spec, cfg)
        if spec.name in a.method:
            opts = {**{k: _value(v) for k, v in then.items()}, **opts}  # the label's own [k=v] still wins
        r.setdefault("details", {})["options"] = resolved_options(get_method(spec.name, opts))
        if r["method"] in relabel:
            r["method"] = relabel[r["method"]]
        done += 1
    for m in doc["meta"].get("methods", []):
        if m.get("label") in relabel:
            m["label"] = relabel[m["label"]]
    a.results.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{a.results}: options recorded on {done} row(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
