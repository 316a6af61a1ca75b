"""RunFolder's records without a build: what makes a stage complete or stale, and the lock (in-process, fast)."""

import json
import os
import socket
import threading

import pytest

from edgeprune.runfolder import HOLDER_FILE, RunFolder, RunFolderBusy


@pytest.fixture
def run(tmp_path):
    r = RunFolder(tmp_path / "r")
    r.path.mkdir()
    (r.path / "a.pt").write_bytes(b"dense")
    r.mark_complete("train", ["a.pt"], "fp1")
    (r.path / "b.json").write_text("{}")
    r.mark_complete("prune", ["b.json"], "fp2", inputs=r.outputs(["train"]))
    return r


def test_complete_until_an_output_or_input_changes(run):
    assert run.stale_reason("train", "fp1") is None and run.stale_reason("prune", "fp2") is None
    assert run.stale_reason("prune", "other") == "its settings changed"
    (run.path / "a.pt").write_bytes(b"DENSE")  # same size, new bytes: a size check would miss it
    assert run.stale_reason("train", "fp1") == "its output a.pt is missing or changed"
    assert run.stale_reason("prune", "fp2") == "its input a.pt changed"


def test_records_hold_content_hashes(run):
    rec = json.loads((run.path / "stages.json").read_text())
    assert rec["train"]["files"]["a.pt"]["size"] == 5 and len(rec["train"]["files"]["a.pt"]["sha256"]) == 64
    assert rec["prune"]["inputs"] == {"a.pt": rec["train"]["files"]["a.pt"]["sha256"]}


def test_partial_and_forgotten_stages_are_not_complete(run):
    run.mark_complete("prune", ["b.json"], "fp2", partial=True)
    assert run.stale_reason("prune", "fp2") == "its last run was incomplete"
    run.forget("prune")
    assert run.stale_reason("prune", "fp2") == "not run yet" and run.record("prune") is None


def test_a_record_of_an_older_edgeprune_is_stale(run):
    stages = json.loads((run.path / "stages.json").read_text())
    stages["train"] = {"files": {"a.pt": 5}, "fingerprint": "fp1"}  # sizes only, no inputs
    (run.path / "stages.json").write_text(json.dumps(stages))
    assert "older edgeprune" in run.stale_reason("train", "fp1")


def test_lock_names_its_holder_and_frees_on_exit(run):
    with run.lock():
        holder = json.loads((run.path / HOLDER_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunFolderBusy, match=rf"in use by pid {os.getpid()} on {socket.gethostname()}"):
            with RunFolder(run.path).lock(timeout=0):
                pass
    assert not (run.path / HOLDER_FILE).exists()
    with RunFolder(run.path).lock(timeout=0):  # free again
        pass


def test_a_second_writer_waits_for_the_first(run):
    """The second writer says who it waits for and gets the lock once the first lets go."""
    said, got = [], threading.Event()
    first = RunFolder(run.path).lock()
    first.__enter__()

    def second():
        with RunFolder(run.path).lock(warn=said.append, timeout=60):
            got.set()

    t = threading.Thread(target=second)
    t.start()
    while not said:  # the second is waiting (it has said so)
        t.join(0.01)
    assert not got.is_set() and f"pid {os.getpid()}" in said[0] and "waiting up to 60 s" in said[0]
    first.__exit__(None, None, None)
    t.join(60)
    assert got.is_set()
