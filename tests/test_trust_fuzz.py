"""Property tests (hypothesis) over config and target-profile TOML values: whatever a user writes, edgeprune
either loads it into a config / profile that satisfies every documented constraint, or stops with exit 2 and
one line that names the key. Validation and loading only (what `build` does before any work), in-process."""

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgeprune import cli, config
from edgeprune.errors import EdgepruneError
from edgeprune.pipeline import prepare_run
from edgeprune.sshopts import ALLOWED
from edgeprune.targets import ARTIFACTS

RPI5 = (Path(__file__).resolve().parents[1] / "edgeprune" / "targets" / "rpi5.toml").read_text()
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def toml_literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    return "[" + ", ".join(toml_literal(x) for x in v) + "]"


# no ':' in strings: a "module:function" would be the user's own code (see test_trust.py), not a value
words = st.text(st.sampled_from("abcxyz019-_./ \n\"é"), max_size=12)
scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), words,
                    st.sampled_from(["onnx", "tflite", "onnx-int8", "tflite-int8", "1x1x8x8", "3x32x32", "rpi5",
                                     "StrictHostKeyChecking=no", "ProxyCommand=id", "ConnectTimeout=5", "x_train",
                                     "y_test"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3))
KEYS = [(s, k) for s, keys in config.SCHEMA.items() if s not in config.FREE_FORM for k in keys]


def check_loaded(cfg: dict) -> None:
    """The documented constraints of a loaded config (README config reference)."""
    for section, keys in config.SCHEMA.items():
        vals = cfg if section == "" else cfg[section]
        for key, (typ, _, _) in keys.items():
            v = vals.get(key)
            assert v is None or typ is float and isinstance(v, float) or isinstance(v, typ), (section, key, v)
            assert not isinstance(v, float) or math.isfinite(v), (section, key, v)
    t, m, b, e = cfg["train"], cfg["method"], cfg["bench"], cfg["export"]
    assert t["epochs"] >= 0 and t["finetune_epochs"] >= 0 and t["batch_size"] >= 1 and t["lr"] > 0
    assert t["weight_decay"] >= 0 and t["threads"] >= 0 and cfg["data_limit"] >= 0 and cfg["seed"] is not None
    assert 0 <= m["flops_keep"] <= 1 and m["width_multiple"] >= 0
    assert b["runs"] >= 1 and b["repeats"] >= 1 and b["warmup"] >= 0 and b["threads"] >= 0 and b["port"] >= 0
    assert e["calib_samples"] >= 1 and set(e["formats"]) <= set(ARTIFACTS)
    for k, v in cfg["budget"].items():
        assert v is None or (v >= 0 if k == "max_accuracy_drop" else v > 0), (k, v)
    assert "/" not in cfg["name"] and cfg["name"] not in (".", "..")
    for o in b["ssh_options"]:
        key, _, val = o.partition("=")
        assert key.lower() in ALLOWED and val and not re.search(r"[\s'\"=;|&$`]", val), o
    if cfg["input_shape"]:
        assert all(d > 0 for d in config.parse_shape(cfg["input_shape"]))
    assert cfg["task"] in ("", "classification", "reconstruction")


def one_line(e: EdgepruneError) -> str:
    msg = str(e)
    assert e.exit_code == 2 and msg and "\n" not in msg, repr(msg)
    return msg


@SETTINGS
@given(key=st.sampled_from(KEYS), value=values)
def test_config_values_load_valid_or_exit_2_in_one_line(tmp_path, key, value):
    section, name = key
    text = (f"[{section}]\n" if section else "") + f"{name} = {toml_literal(value)}\n"
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = config.resolve(path)
        prepare_run(cfg)  # names (target, model, method, metric) and the output folder, as `build` checks first
    except EdgepruneError as e:
        event("refused")
        msg = one_line(e)
        assert name in msg or "malformed TOML" in msg or "unknown" in msg or "not found" in msg, msg
        return
    event("loaded")
    check_loaded(cfg)
    got = cfg[section][name] if section else cfg[name]
    if name != "ssh_options":
        assert got == (float(value) if isinstance(got, float) else value)
    assert not list(tmp_path.glob("runs*")), "validation created a folder"


#: lines of rpi5.toml whose value the fuzzer replaces: runtime and budget keys, and device fact values
TARGET_KEYS = ["threads", "width_multiple", "onnx_opset", "flops_keep", "latency_p50_ms", "latency_p90_ms",
               "peak_memory_mb", "model_size_mb", "max_accuracy_drop", "cores", "clock_ghz", "peak_fp32_gflops",
               "mem_bandwidth_gbs", "ram_mb"]


def replace_value(src: str, key: str, literal: str) -> str:
    inline = re.compile(rf"^({re.escape(key)} = \{{ value = )([^,]+)(,.*)$", re.M)
    if inline.search(src):
        return inline.sub(lambda m: m.group(1) + literal + m.group(3), src, count=1)
    plain = re.compile(rf"^({re.escape(key)} = )(.*)$", re.M)
    assert plain.search(src), key
    return plain.sub(lambda m: m.group(1) + literal, src, count=1)


@SETTINGS
@given(key=st.sampled_from(TARGET_KEYS), value=scalars)
def test_target_values_load_valid_or_exit_2_in_one_line(tmp_path, capsys, key, value):
    path = tmp_path / "board.toml"
    path.write_text(replace_value(RPI5, key, toml_literal(value)), encoding="utf-8")
    code = cli.main(["targets", "show", str(path), "--json"])
    out, err = capsys.readouterr()
    event("refused" if code else "loaded")
    if code != 0:
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgeprune: error:") and key in lines[0], err
        return
    t = json.loads(out)
    nums = [f["value"] for f in t["device"].values() if isinstance(f["value"], (int, float))]
    nums += [v for k, v in t["budget"].items() if isinstance(v, (int, float)) and k != "rationale"]
    assert all(math.isfinite(v) and v >= 0 for v in nums), t
    assert all(v > 0 for f in t["device"].values() for v in [f["value"]] if isinstance(v, (int, float)))
    assert 1 <= t["threads"] <= 256 and 1 <= t["width_multiple"] <= 256 and 7 <= t["onnx_opset"] <= 30
    b = t["budget"]
    assert b.get("flops_keep") is None or 0 < b["flops_keep"] <= 1


def test_the_fuzzed_keys_exist_in_the_profile():
    for key in TARGET_KEYS:
        assert replace_value(RPI5, key, "1") != RPI5, key


@pytest.mark.parametrize("value,ok", [(float("nan"), False), (float("inf"), False), (-1.0, False), (4.0, True)])
def test_examples_of_the_property(tmp_path, capsys, value, ok):
    """The cases the issue names, as fixed examples of the properties above."""
    path = tmp_path / "board.toml"
    path.write_text(replace_value(RPI5, "latency_p50_ms", toml_literal(value)))
    assert (cli.main(["targets", "show", str(path)]) == 0) == ok
    capsys.readouterr()
