"""Models with several outputs end to end: `edgeprune build` on a two-output model with a per-channel PReLU and a
channels-last flatten (examples/multi_output/two_heads.py), every output exported and verified in every artifact;
a parity failure on the second output is caught and named; outputs that are not tensors are refused in one line."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.data import load_dataset
from edgeprune.errors import InputError
from edgeprune.export.parity import compare, parity_error, shape_problem
from edgeprune.export.runtimes import OrtRunner, TfliteRunner
from edgeprune.imports import name_code
from edgeprune.models import arch_spec, build_arch, check_input_shape, example_for, output_list, primary_output
from edgeprune.pipeline import EXIT_BAD_INPUT, EXIT_OK
from edgeprune.surgery import load_compact

from .conftest import REPO, run_cli

FACTORY = f"{REPO / 'examples' / 'multi_output' / 'two_heads.py'}:make_net"
FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "tflite": "model.tflite",
         "tflite-int8": "model.int8.tflite"}


def _runner(path):
    return OrtRunner(path) if str(path).endswith(".onnx") else TfliteRunner(path)


@pytest.fixture(scope="module")
def two_head_run(tmp_path_factory):
    """The CLI build of the two-output example on digits, every format (bench kept short)."""
    out = tmp_path_factory.mktemp("multi")
    (out / "quick.toml").write_text("[bench]\nruns = 5\nwarmup = 1\nrepeats = 1\n")
    p = run_cli("build", "--model", FACTORY, "--dataset", "digits", "--epochs", "6", "--finetune-epochs", "4",
                "--formats", ",".join(FILES), "--config", out / "quick.toml", "--output", out, "--name", "r")
    return out / "r", p


@pytest.fixture(scope="module")
def torch_reference(two_head_run):
    """The run's final compact model, replayed from the factory + plan + weights, and its outputs on the test split."""
    run, _ = two_head_run
    name_code(FACTORY)
    model, _, arch = load_compact(run / "model.pt", build_arch, example_for)
    ds = load_dataset("digits")
    x = ds.normalize(ds.x_test)
    with torch.no_grad():
        refs = [o.numpy() for o in output_list(model.eval()(torch.from_numpy(x)))]
    return x, refs, model


@pytest.mark.slow  # one full build with all four formats (~2 min on the shared 2-core box, TFLite conversion most)
def test_build_exits_0_with_both_outputs_verified_in_every_artifact(two_head_run, torch_reference):
    run, p = two_head_run
    assert p.returncode == EXIT_OK, p.stdout[-2000:] + p.stderr[-3000:]
    exp = json.loads((run / "export.json").read_text())
    assert set(exp["artifacts"]) == set(FILES)
    for fmt, e in exp["artifacts"].items():
        assert e["ok"], (fmt, e["error"])
        assert e["output_names"] == ["output_0", "output_1"] and e["output_shapes"] == [[1, 10], [1, 2]]
        assert [o["name"] for o in e["outputs"]] == ["output_0", "output_1"], fmt
        bound = 1e-4 if "int8" not in fmt else 0.25
        assert all(o["rel_diff"] <= bound and o["finite"] for o in e["outputs"]), (fmt, e["outputs"])
    # independently of export.json: each shipped file, run in its runtime on the real test split, gives both of
    # the replayed torch model's outputs, in order
    x, refs, _ = torch_reference
    for fmt, name in FILES.items():
        outs = _runner(run / "export" / name).run_all(x)
        assert shape_problem(outs, refs) is None, fmt
        rows = compare(outs, refs)
        assert parity_error(rows, 1e-4 if "int8" not in fmt else 0.25) is None, (fmt, rows)
    tfl = TfliteRunner(run / "export" / "model.int8.tflite")
    assert [np.dtype(o["dtype"]).name for o in tfl.outs] == ["int8", "int8"]  # both outputs integer
    assert OrtRunner(run / "export" / "model.onnx").output_names == ["output_0", "output_1"]
    # the compaction was verified against the masked model (every output) and cut channels behind the PReLUs
    ver = json.loads((run / "compact.json").read_text())["verification"]
    assert ver["rel_diff"] <= ver["rel_tol"]
    model = torch_reference[2]
    assert model.a1.weight.numel() < 16 or model.a2.weight.numel() < 12
    assert model.a1.weight.numel() == model.c1.out_channels and model.a2.weight.numel() == model.c2.out_channels
    # bench measured every artifact; the report and the bundle list both outputs
    bench = json.loads((run / "bench" / "rpi4.json").read_text())
    assert set(bench["artifacts"]) == set(FILES)
    report = json.loads((run / "report.json").read_text())
    assert all(len(a["outputs"]) == 2 for a in report["artifacts"])
    assert "output_1" in (run / "report.html").read_text()
    meta = json.loads((run / "dist" / "rpi4" / "metadata.json").read_text())
    assert meta["outputs"] == [{"name": "output_0", "shape": [1, 10]}, {"name": "output_1", "shape": [1, 2]}]
    int8 = next(m for m in meta["models"] if m["file"] == "model.int8.tflite")
    assert [o["quantization"] is not None for o in int8["outputs"]] == [True, True]
    # the shipped .tflite describes both outputs (TFLite Metadata), the task output first in the subgraph, which is
    # the output ModelRunner.kt / .swift read (index 0)
    from edgeprune.export.tflite_metadata import output_tensor_names, read_model_metadata

    data = (run / "dist" / "rpi4" / "model.int8.tflite").read_bytes()
    md, _ = read_model_metadata(data)
    assert [t["name"] for t in md["subgraph_metadata"][0]["output_tensor_metadata"]] == ["scores", "output_1"]
    assert "output_0" in output_tensor_names(data)[0]


@pytest.mark.slow
def test_the_bundle_script_returns_every_output(two_head_run, torch_reference):
    import subprocess
    import sys

    run, p = two_head_run
    assert p.returncode == EXIT_OK
    dist = run / "dist" / "rpi4"
    raw = load_dataset("digits").x_test[0] * 16  # digits as stored: counts 0..16 (input_scale 1/16)
    np.save(dist / "x.npy", raw)
    res = subprocess.run([sys.executable, "infer.py", "x.npy", "--model", "model.tflite"], cwd=dist,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    _, refs, _ = torch_reference
    np.testing.assert_allclose(got["other_outputs"]["output_1"], refs[1][0], rtol=1e-4, atol=1e-5)
    assert got["index"] == int(np.argmax(refs[0][0]))


@pytest.mark.slow
def test_a_parity_failure_on_the_second_output_is_caught_and_named(two_head_run, torch_reference, tmp_path):
    import onnx
    from onnx import numpy_helper

    run, p = two_head_run
    assert p.returncode == EXIT_OK
    x, refs, _ = torch_reference
    # (1) a corrupted file: scale the weights of the head that computes output_1 by 1.01
    proto = onnx.load(str(run / "export" / "model.onnx"))
    producer = next(n for n in proto.graph.node if "output_1" in n.output)
    inits = {i.name: i for i in proto.graph.initializer}
    w = next(inits[i] for i in producer.input if i in inits and numpy_helper.to_array(inits[i]).ndim == 2)
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(1.01), w.name))
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    rows = compare(OrtRunner(tmp_path / "bad.onnx").run_all(x), refs)
    err = parity_error(rows, 1e-4)
    assert err and "output_1 of 2" in err and rows[0]["rel_diff"] <= 1e-4  # output_0 still fine: only 1 is named
    # (2) the real LiteRT file against a reference whose second output is off by 0.1% of its scale
    outs = TfliteRunner(run / "export" / "model.tflite").run_all(x)
    assert parity_error(compare(outs, refs), 1e-4) is None
    bent = [refs[0], refs[1] + 1e-3 * np.abs(refs[1]).max()]
    err = parity_error(compare(outs, bent), 1e-4)
    assert err and "output_1 of 2" in err
    # (3) a dropped output is a count mismatch, not a silent pass
    assert "1 output(s), torch's model 2" in shape_problem(outs[:1], refs)


# ------------------------------------------------------------------ the contract, fast


class Returns(nn.Module):
    def __init__(self, make):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.make = make

    def forward(self, x):
        return self.make(self.fc(x.flatten(1)))


@pytest.mark.parametrize("make, what", [
    (lambda y: None, "returns None"),
    (lambda y: {"logits": "cat"}, "returns a dict (logits: str)"),
    (lambda y: (y, None), "returns a tuple whose output 1 is NoneType"),
    (lambda y: [], "returns an empty list"),
    (lambda y: y.tolist(), "returns a list whose output 0 is list"),
])
def test_outputs_that_are_not_tensors_are_refused_in_one_line(make, what):
    arch = arch_spec("mine", (1, 8, 8), 10)
    with pytest.raises(InputError) as e:
        check_input_shape(Returns(make), arch)
    msg = str(e.value)
    assert what in msg and "return one tensor or a tuple of tensors" in msg and "\n" not in msg


def test_a_tuple_of_tensors_is_accepted_and_the_first_is_the_task_output():
    m = Returns(lambda y: (y, y[:, :2] * 2))
    out = check_input_shape(m, arch_spec("mine", (1, 8, 8), 10))
    assert [tuple(o.shape) for o in output_list(out)] == [(1, 10), (1, 2)]
    assert primary_output(out) is out[0] and primary_output(out[0]) is out[0]


def test_the_cli_refuses_a_dict_of_strings_before_any_work(tmp_path):
    (tmp_path / "bad.py").write_text("import torch\n"
                                     "class M(torch.nn.Module):\n"
                                     "    def __init__(self):\n"
                                     "        super().__init__(); self.fc = torch.nn.Linear(64, 10)\n"
                                     "    def forward(self, x):\n"
                                     "        return {'scores': 'high'}\n"
                                     "def make():\n    return M()\n")
    p = run_cli("build", "--model", f"{tmp_path / 'bad.py'}:make", "--dataset", "digits", "--output", tmp_path / "runs")
    assert p.returncode == EXIT_BAD_INPUT
    err = [line for line in p.stderr.strip().splitlines() if line.strip()]
    assert len(err) == 1 and "returns a dict (scores: str)" in err[0] and "tuple of tensors" in err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
