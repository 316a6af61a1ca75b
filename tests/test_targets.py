"""Target profiles: every built-in loads with sourced facts; user files load; every bad input says what is wrong."""

import json
from pathlib import Path

import pytest

from edgeprune.errors import ConfigError, EdgepruneError, InputError
from edgeprune.targets import ARTIFACTS, BASES, Budget, Fact, Target, list_targets, load_target

EXPECTED = {"rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "android-mid", "android-flagship"}
RPI4_TEXT = (Path(__file__).resolve().parents[1] / "edgeprune" / "targets" / "rpi4.toml").read_text()


def test_list_targets_sorted_and_complete():
    names = list_targets()
    assert names == sorted(names)
    assert EXPECTED <= set(names)


@pytest.mark.parametrize("name", sorted(EXPECTED | {"host"}))
def test_builtin_profile_loads_with_sourced_facts(name):
    t = load_target(name)
    assert isinstance(t, Target) and t.name == name and t.title
    assert t.platform in {"rpi", "jetson", "android", "other"}
    assert t.artifacts and set(t.artifacts) <= set(ARTIFACTS)
    assert t.threads >= 1 and t.width_multiple >= 1 and t.onnx_opset >= 13
    for key in ("cpu", "cores", "clock_ghz", "peak_fp32_gflops", "peak_int8_gops", "mem_bandwidth_gbs", "ram_mb",
                "int8_dot_product"):
        f = t.device[key]
        assert isinstance(f, Fact)
        assert f.source.strip(), (name, key)
        assert f.basis in BASES, (name, key)
    assert t.peak_compute("int8") > 0 and t.peak_compute("fp32") > 0
    assert t.device["cores"].unit == "count" and t.device["mem_bandwidth_gbs"].unit == "GB/s"
    b = t.budget
    assert isinstance(b, Budget)
    assert b.flops_keep is None or 0 < b.flops_keep <= 1  # optional: derived from the budget when absent
    assert b.latency_p90_ms >= b.latency_p50_ms > 0
    assert b.peak_memory_mb > 0 and b.model_size_mb > 0 and b.max_accuracy_drop >= 0
    d = json.loads(json.dumps(t.to_dict()))
    assert d["device"]["cores"]["source"] and d["budget"]["flops_keep"] == b.flops_keep
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        t.name = "x"  # frozen


def test_jetson_prefers_onnx_and_widths():
    assert load_target("jetson-nano").artifacts[0] == "onnx"
    assert load_target("jetson-orin-nano").width_multiple == 8
    assert load_target("rpi4").artifacts[0].startswith("tflite")
    assert load_target("rpi4").device["int8_dot_product"].value is False
    assert load_target("rpi5").device["int8_dot_product"].value is True


def test_load_by_path(tmp_path):
    p = tmp_path / "my-board.toml"
    p.write_text(RPI4_TEXT.replace('name = "rpi4"', 'name = "my-board"').replace("threads = 4", "threads = 2"))
    t = load_target(p)
    assert t.name == "my-board" and t.threads == 2 and t.source_path == str(p)
    assert load_target(str(p)).threads == 2


def test_optional_budget_key_is_none(tmp_path):
    p = tmp_path / "b.toml"
    p.write_text(RPI4_TEXT.replace("model_size_mb = 16.0\n", ""))
    assert load_target(p).budget.model_size_mb is None


def test_unknown_name_lists_known():
    with pytest.raises(InputError) as e:
        load_target("rpi3")
    msg = str(e.value)
    assert "rpi3" in msg and "rpi4" in msg and "\n" not in msg
    assert e.value.exit_code == 2


def test_missing_file():
    with pytest.raises(InputError, match="not found"):
        load_target("no/such/board.toml")


def _bad(tmp_path, text):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_target(p)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "old,new,key",
    [
        ("threads = 4", "thread = 4", "runtime.thread"),  # typo
        ("threads = 4", 'threads = "4"', "runtime.threads"),  # wrong type
        ("threads = 4", "threads = true", "runtime.threads"),  # bool is not an int
        ('platform = "rpi"', 'platform = "arduino"', "platform"),
        ('"tflite-int8", "tflite"', '"tflite-int4", "tflite"', "runtime.artifacts"),
        ("max_accuracy_drop = 2.0", "flops_keep = 1.5\nmax_accuracy_drop = 2.0", "budget.flops_keep"),
        ("max_accuracy_drop = 2.0", "flop_keep = 0.5\nmax_accuracy_drop = 2.0", "budget.flop_keep"),
        ('objective = "fastest"', 'objective = "cheapest"', "budget.objective"),
        ("latency_p90_ms = 15.0", "latency_p90_ms = 5.0", "budget.latency_p90_ms"),
        ('basis = "spec" }\nclock_ghz', 'basis = "guess" }\nclock_ghz', "device.cores.basis"),
        ('unit = "GB/s"', 'unit = "MB/s"', "device.mem_bandwidth_gbs.unit"),
        ("cores = { value = 4,", "cores = { value = 4.5,", "device.cores.value"),
        ("cores = { value = 4,", "corez = { value = 4,", "device.corez"),
    ],
)
def test_bad_values_name_the_key(tmp_path, old, new, key):
    assert old in RPI4_TEXT
    msg = _bad(tmp_path, RPI4_TEXT.replace(old, new, 1))
    assert f"'{key}'" in msg


def test_missing_key(tmp_path):
    text = "\n".join(line for line in RPI4_TEXT.splitlines() if not line.startswith("peak_int8_gops"))
    assert "'device.peak_int8_gops'" in _bad(tmp_path, text)
    text = "\n".join(line for line in RPI4_TEXT.splitlines() if not line.startswith("width_multiple"))
    assert "'runtime.width_multiple'" in _bad(tmp_path, text)


def test_fact_without_source(tmp_path):
    text = RPI4_TEXT.replace('ram_mb = { value = 4096, unit = "MB", source = "Raspberry Pi 4 product brief (4 GB variant)", ',
                             'ram_mb = { value = 4096, unit = "MB", ')
    assert "'device.ram_mb.source'" in _bad(tmp_path, text)


def test_malformed_toml(tmp_path):
    msg = _bad(tmp_path, RPI4_TEXT + "\n[budget\n")
    assert "malformed TOML" in msg


def test_errors_are_edgeprune_errors():
    assert issubclass(ConfigError, EdgepruneError) and issubclass(InputError, EdgepruneError)


def test_user_profiles_in_the_working_directory(tmp_path, monkeypatch):
    """A <name>.toml profile in the working directory is listed and loads by name; other TOML files are not."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-board.toml").write_text(RPI4_TEXT.replace('name = "rpi4"', 'name = "my-board"'))
    (tmp_path / "edgeprune.toml").write_text("[train]\nepochs = 1\n")  # a build config, not a profile
    (tmp_path / "other.toml").write_text(RPI4_TEXT)  # name "rpi4" != file stem: not a profile named "other"
    (tmp_path / "rpi4.toml").write_text(RPI4_TEXT.replace("threads = 4", "threads = 2"))  # cannot shadow a built-in
    names = list_targets()
    assert "my-board" in names and "edgeprune" not in names and "other" not in names
    assert names == sorted(names) and EXPECTED <= set(names)
    t = load_target("my-board")
    assert t.name == "my-board" and t.source_path == str(tmp_path / "my-board.toml")
    assert load_target("rpi4").threads == 4 and load_target("rpi4").source_path == "<builtin>/rpi4.toml"
    with pytest.raises(InputError, match="my-board"):  # the error lists user profiles too
        load_target("nope")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_targets_carry_sustained_throughput_with_sources(name):
    """The cost model's per-target compute: sustained figures, each saying where it comes from."""
    t = load_target(name)
    for key in ("sustained_fp32_gflops", "sustained_1t_fp32_gflops", "sustained_int8_gops"):
        f = t.device[key]
        assert f.basis in ("derived", "unverified") and f.source
        assert 0 < f.value <= t.peak_compute("int8" if "int8" in key else "fp32")
    f = t.device["sustained_fp32_gflops"]
    if name == "rpi4":
        assert f.basis == "derived" and "ncnn" in f.source and "72.08 ms" in f.source
    else:
        assert f.basis == "unverified" and "Raspberry Pi 4" in f.source
    assert t.fact("sustained_1t_fp32_gflops") <= t.fact("sustained_fp32_gflops")


def test_new_fact_units_are_checked(tmp_path):
    text = RPI4_TEXT.replace('sustained_fp32_gflops = { value = 15.8, unit = "GFLOP/s"',
                             'sustained_fp32_gflops = { value = 15.8, unit = "MFLOP/s"')
    assert "'device.sustained_fp32_gflops.unit'" in _bad(tmp_path, text)


# --------------------------------------------------------------------------- families


@pytest.mark.parametrize("typed, member", [("jetson", "jetson-orin-nano"), ("rpi", "rpi5"), ("raspberry-pi", "rpi5"),
                                           ("pi", "rpi5"), ("Raspberry-Pi", "rpi5"), ("android", "android-mid")])
def test_family_resolves_to_its_default_member(typed, member):
    from edgeprune.targets import resolve_family

    t = load_target(typed)
    assert t.name == member
    fam = resolve_family(typed)
    assert fam.default == member and fam.members()[0] == member and t.platform == fam.name


def test_families_are_data_and_list_every_member():
    from edgeprune.targets import families, resolve_family

    fams = families()
    assert set(fams) == {"jetson", "rpi", "android"}
    for f in fams.values():  # every built-in profile of the platform is a member, the default first
        assert set(f.members()) == {n for n in list_targets() if load_target(n).platform == f.name}
        assert f.why
    assert resolve_family("rpi4") is None and resolve_family("jetson-nano") is None  # a board is not a family


def test_user_profile_named_like_an_alias_wins(tmp_path, monkeypatch):
    (tmp_path / "pi.toml").write_text(RPI4_TEXT.replace('name = "rpi4"', 'name = "pi"').replace("threads = 4", "threads = 3"))
    monkeypatch.chdir(tmp_path)
    assert load_target("pi").threads == 3 and load_target("rpi").name == "rpi5"


@pytest.mark.parametrize("typo, suggestion", [("jetsn", "'jetson'"), ("andriod", "'android'"), ("raspbery-pi", "'raspberry-pi'"),
                                              ("rpi3", "'rpi4'")])
def test_close_misspelling_gets_did_you_mean(typo, suggestion):
    with pytest.raises(InputError) as e:
        load_target(typo)
    msg = str(e.value)
    assert "did you mean" in msg and suggestion in msg and "\n" not in msg
    with pytest.raises(InputError) as e:
        load_target("quantum-toaster")
    assert "did you mean" not in str(e.value)


def test_targets_command_shows_families(tmp_path):
    from .conftest import run_cli

    p = run_cli("targets", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = {ln.split("->")[0].strip(): ln.split("->")[1].strip() for ln in p.stdout.splitlines() if "->" in ln}
    assert lines["jetson, nvidia-jetson"] == "jetson-orin-nano, jetson-nano"
    assert lines["rpi, raspberry-pi, raspberrypi, pi"] == "rpi5, rpi4"
    assert lines["android, phone"].startswith("android-mid")


def test_build_names_the_member_it_chose_and_the_run_folder_uses_it(tmp_path):
    from edgeprune.pipeline import default_run_name

    from .conftest import run_cli

    assert default_run_name({"target": "jetson", "model": "cnn", "method": {"name": "l1"}}) == "jetson-orin-nano-cnn-l1"
    # fails fast after resolving (unknown model): the one line is printed before any work
    p = run_cli("build", "--target", "pi", "--model", "no-such-model", "--output", tmp_path, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert "pi -> rpi5; `edgeprune targets` lists the others" in " ".join(p.stderr.split())
    assert list(tmp_path.iterdir()) == []
