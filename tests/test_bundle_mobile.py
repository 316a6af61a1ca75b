"""The packaged .tflite files describe themselves (TFLite Metadata) and the phone samples match the bundle.

Uses the session's real `edgeprune build --target rpi4` run (conftest ``built``: digits + cnn, ai-edge-litert
for every model run here); the android bundle is packaged from that run's own export folder.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from edgeprune.errors import InputError  # noqa: E402
from edgeprune.export import package_bundle  # noqa: E402
from edgeprune.export import tflite_metadata as tm  # noqa: E402


def _run(model: bytes, x: np.ndarray) -> tuple[np.ndarray, dict, dict]:
    it = Interpreter(model_content=model)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    ys = []
    for row in x:
        it.set_tensor(inp["index"], row[None])
        it.invoke()
        ys.append(it.get_tensor(out["index"])[0].copy())
    return np.stack(ys), inp, out


def _test_split(run):
    """The run's own test split as raw values (digits: counts 0..16) and train.json's dataset facts."""
    from edgeprune.data import load_dataset

    cfg = json.loads((run / "config.json").read_text())
    d = json.loads((run / "train.json").read_text())["dataset"]
    ds = load_dataset(cfg["dataset"], seed=cfg["seed"])
    return ds.x_test / d["preprocessing"]["input_scale"], ds.y_test, d


def test_packaged_tflite_carries_training_preprocessing_and_labels(built):
    run, _ = built
    d = json.loads((run / "train.json").read_text())["dataset"]
    prep = d["preprocessing"]
    dist = run / "dist" / "rpi4"
    meta_json = json.loads((dist / "metadata.json").read_text())
    tflites = sorted(dist.glob("*.tflite"))
    assert [p.name for p in tflites] == ["model.int8.tflite", "model.tflite"]
    for path in tflites:
        data = path.read_bytes()
        md, files = tm.read_model_metadata(data)
        assert md is not None, path.name
        assert md["min_parser_version"] == "1.0.0" and md["author"] == "edgeprune"
        assert "cnn" in md["name"] and "rpi4" in md["description"] and run.name in md["version"]
        sub = md["subgraph_metadata"][0]
        (inp_md,), (out_md,) = sub["input_tensor_metadata"], sub["output_tensor_metadata"]
        norm = inp_md["process_units"][0]
        assert norm["options_type"] == "NormalizationOptions"
        # raw units: (raw - mean) / std == (raw * input_scale - mean_train) / std_train
        s = prep["input_scale"]
        assert norm["options"]["mean"] == pytest.approx([d["normalization"]["mean"] / s], rel=1e-6)
        assert norm["options"]["std"] == pytest.approx([d["normalization"]["std"] / s], rel=1e-6)
        # labels: the training classes, packed in the file and attached to the output as its axis labels
        (af,) = out_md["associated_files"]
        assert af["type"] == "TENSOR_AXIS_LABELS" and af["name"] == "labels.txt"
        assert files["labels.txt"].decode().splitlines() == d["classes"] == meta_json["class_names"]
        # the I/O descriptions name the real tensors, with the real shapes
        it = Interpreter(model_content=data)
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        assert inp["name"] in inp_md["description"] and out["name"] in out_md["description"]
        assert str(inp["shape"].tolist()) in inp_md["description"] and str(out["shape"].tolist()) in out_md["description"]
        assert inp_md["dimension_names"] == ["batch", "channel", "height", "width"]
        if inp["dtype"] == np.float32:  # value range of the normalized input, from the raw range 0..1/input_scale
            m, sd = norm["options"]["mean"][0], norm["options"]["std"][0]
            assert inp_md["stats"]["min"] == pytest.approx([-m / sd]) and inp_md["stats"]["max"] == pytest.approx([(1 / s - m) / sd])
        else:
            assert inp_md["stats"] == {"max": [127.0], "min": [-128.0]}
        entry = next(m for m in meta_json["models"] if m["file"] == path.name)
        assert entry["tflite_metadata"] is True and entry["size_bytes"] == len(data)


def test_embedded_models_run_identically_and_metadata_reproduces_the_int8_input(built):
    """Same outputs as the exported file on the whole test split; the metadata's pipeline [normalize with
    NormalizationOptions, quantize with the input tensor's scale/zero point] gives exactly the int8 input that
    training's preprocessing gives."""
    run, _ = built
    raw, y_test, d = _test_split(run)
    prep = d["preprocessing"]
    for name in ("model.tflite", "model.int8.tflite"):
        shipped = (run / "dist" / "rpi4" / name).read_bytes()
        exported = (run / "export" / name).read_bytes()
        assert shipped != exported and tm.read_model_metadata(exported)[0] is None
        md = tm.read_model_metadata(shipped)[0]
        opts = md["subgraph_metadata"][0]["input_tensor_metadata"][0]["process_units"][0]["options"]
        x_train = ((raw * prep["input_scale"] - d["normalization"]["mean"]) / d["normalization"]["std"]).astype(np.float32)
        x_meta = ((raw - opts["mean"][0]) / opts["std"][0]).astype(np.float32)
        probe = Interpreter(model_content=shipped)
        inp = probe.get_input_details()[0]
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            q = lambda x: np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)  # noqa: E731
            x_train, x_meta = q(x_train), q(x_meta)
            assert np.abs(x_train.astype(int) - x_meta.astype(int)).max() <= 1  # float rounding at .5 only
            assert (x_train == x_meta).mean() > 0.999
        else:
            np.testing.assert_allclose(x_meta, x_train, rtol=1e-5, atol=1e-5)
        y_shipped, _, _ = _run(shipped, x_train)
        y_exported, _, _ = _run(exported, x_train)
        assert np.array_equal(y_shipped, y_exported), name
        acc = (y_shipped.argmax(1) == np.asarray(y_test)).mean()
        assert acc > 0.8, (name, acc)  # a real classifier, not zeros


def _android_bundle(run, tmp_path):
    exp = json.loads((run / "export.json").read_text())
    train = json.loads((run / "train.json").read_text())
    d = train["dataset"]
    meta = {"model": "cnn", "task": train["task"], "input_shape": [1, *d["input_shape"]],
            "mean": d["normalization"]["mean"], "std": d["normalization"]["std"], "class_names": d["classes"],
            "preprocessing": d["preprocessing"], "source_run": run.name}  # fmt: skip
    return package_bundle(tmp_path / "android", target_name="android-mid", platform="android",
                          artifacts=exp["artifacts"], metadata=meta, out_dir=run / exp["dir"],
                          preference=["tflite-int8", "tflite"])  # fmt: skip


def test_android_bundle_snippets_name_the_real_files_and_shapes(built, tmp_path):
    run, _ = built
    dist = _android_bundle(run, tmp_path)
    names = sorted(p.name for p in dist.iterdir())
    assert names == sorted(["model.int8.tflite", "model.tflite", "metadata.json", "labels.txt", "ModelRunner.kt",
                            "ModelRunner.swift", "README.md"])  # fmt: skip
    meta = json.loads((dist / "metadata.json").read_text())
    kt, sw = (dist / "ModelRunner.kt").read_text(), (dist / "ModelRunner.swift").read_text()
    assert "{{" not in kt + sw
    kt_file = re.search(r'const val MODEL_FILE = "([^"]+)"', kt).group(1)
    sw_file = re.search(r'static let modelFile = "([^"]+)"', sw).group(1)
    assert kt_file == sw_file == meta["primary_model"] and (dist / kt_file).is_file()
    for snippet in (kt, sw):
        assert "labels.txt" in snippet and (dist / "labels.txt").is_file()
    it = Interpreter(model_path=str(dist / kt_file))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    n_in, n_out = int(np.prod(inp["shape"][1:])), int(np.prod(out["shape"][1:]))
    assert int(re.search(r"const val INPUT_SIZE = (\d+)", kt).group(1)) == n_in
    assert int(re.search(r"const val OUTPUT_SIZE = (\d+)", kt).group(1)) == n_out
    assert f"static let inputShape = [{', '.join(map(str, inp['shape']))}]" in sw
    assert f"static let outputShape = [{', '.join(map(str, out['shape']))}]" in sw
    assert int(re.search(r"static let inputSize = (\d+)", sw).group(1)) == n_in
    assert int(re.search(r"static let outputSize = (\d+)", sw).group(1)) == n_out
    # the training preprocessing, in both languages
    d = json.loads((run / "train.json").read_text())["dataset"]
    kt_mean = float(re.search(r"val MEAN = floatArrayOf\(([0-9.eE+-]+)f\)", kt).group(1))
    sw_mean = float(re.search(r"static let mean: \[Float\] = \[([0-9.eE+-]+)\]", sw).group(1))
    sw_std = float(re.search(r"static let std: \[Float\] = \[([0-9.eE+-]+)\]", sw).group(1))
    sw_scale = float(re.search(r"static let inputScale: Float = ([0-9.eE+-]+)", sw).group(1))
    assert kt_mean == pytest.approx(d["normalization"]["mean"], rel=1e-7) == sw_mean
    assert sw_std == pytest.approx(d["normalization"]["std"], rel=1e-7)
    assert sw_scale == pytest.approx(d["preprocessing"]["input_scale"], rel=1e-7)
    assert "(raw[i] * INPUT_SCALE - MEAN[c]) / STD[c]" in kt and "(raw[i] * Self.inputScale - Self.mean[c]) / Self.std[c]" in sw
    assert "MetadataExtractor(model)" in kt and "getAssociatedFile(LABELS_FILE)" in kt  # reads the model's metadata
    readme = (dist / "README.md").read_text()
    assert "## Android (Kotlin" in readme and "## iOS (Swift" in readme and "## TFLite Metadata" in readme
    assert "ModelRunner(context)" in readme and "try ModelRunner()" in readme


def test_metadata_round_trip_every_field_kind():
    md = tm.classifier_metadata(name="m", description="d", version="3", author="a", layout="NHWC", shape=[1, 32, 24, 3],
                                dtype="float32", raw_mean=[127.5, 128.0, 0.0], raw_std=[127.5, 64.0, 1.0],
                                raw_max=255.0, color_mode="RGB", output_shape=[1, 4], output_description="s",
                                labels_file="labels.txt", input_tensor="in", output_tensor="out")  # fmt: skip
    md["subgraph_metadata"][0]["input_tensor_metadata"][0]["content"]["range"] = {"min": 1, "max": 2}
    back = tm.unpack_metadata(tm.pack_metadata(md))
    assert back == md  # these floats are exact in float32
    assert back["subgraph_metadata"][0]["input_tensor_metadata"][0]["stats"] == {"min": [-1.0, -2.0, 0.0],
                                                                                  "max": [1.0, 1.984375, 255.0]}
    props = back["subgraph_metadata"][0]["input_tensor_metadata"][0]["content"]["content_properties"]
    assert props == {"color_space": "RGB", "default_size": {"width": 24, "height": 32}}
    with pytest.raises(ValueError, match="no field"):
        tm.pack_metadata({"name": "x", "nmae": "typo"})
    with pytest.raises(InputError, match="ModelMetadata"):
        tm.unpack_metadata(b"\x00" * 16)


def test_embedding_twice_replaces_and_bad_input_refused(built):
    run, _ = built
    src = (run / "export" / "model.tflite").read_bytes()
    md = {"name": "a", "min_parser_version": "1.0.0"}
    once = tm.embed(src, md, {"labels.txt": b"x\n"})
    twice = tm.embed(once, dict(md, name="b"), {"labels.txt": b"y\n"})
    got, files = tm.read_model_metadata(twice)
    assert got["name"] == "b" and files == {"labels.txt": b"y\n"}
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAs(twice, 0)
    names = [model.Metadata(i).Name() for i in range(model.MetadataLength())]
    assert names.count(b"TFLITE_METADATA") == 1
    with pytest.raises(InputError, match="not a .tflite"):
        tm.embed(b"PK\x03\x04 not a model", md)
