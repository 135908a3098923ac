"""The identities stage end to end on the DCGAN with the real YuNet / SFace / age-gender models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gandiff.artifacts import read_json, read_table
from gandiff.config import compose
from gandiff.pipeline import StageError, run_stage

# A mapping override replaces the demo's string target (no need to clear it with identity.target=null first).
SMALL = ["identity.num=4", "identity.variations=2", "identity.edits.samples=48", "identity.max_attempts=400",
         "identity.target={gender: {female: 0.5, male: 0.5}, age_bin: {20-29: 0.5, 30-39: 0.5}}"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("identities")
    cfg = compose([*SMALL, f"paths.root={root}", "logger=none"])
    return cfg, run_stage(cfg, "identities")


def test_identities_meet_target_distinct_and_variations_keep_identity(small_run):
    from pathlib import Path

    cfg, out = small_run
    d = Path(out["dir"])
    assert out["status"] == "done" and out["identities"] == 4 and out["cells_met"] == out["cells"] == 4
    rows = read_table(d / "identities.parquet")
    assert [r["id"] for r in rows] == [f"id_{i:06d}" for i in range(4)]
    cells = sorted((r["gender"], r["age_bin"]) for r in rows)
    assert cells == sorted([(g, a) for g in ("female", "male") for a in ("20-29", "30-39")])
    emb = np.load(d / "embeddings.npy")
    assert emb.shape == (4, 128) and np.load(d / "latents.npy").shape == (4, 100)
    sims = emb @ emb.T
    assert sims[np.triu_indices(4, 1)].max() < cfg.identity.max_similarity
    for r in rows:
        assert (d / r["anchor"]).is_file() and r["anchor"] == f"images/{r['id']}/anchor.png"
        e = np.load(d / r["embeddings"])  # anchor, then each kept variation (real SFace embeddings)
        assert len(e) == 1 + r["num_variations"] == len(r["images"])
        assert r["num_variations"] == 2
        assert (e[1:] @ e[0]).min() >= cfg.identity.min_variation_similarity
        assert r["variation_similarity"] == pytest.approx((e[1:] @ e[0]).tolist(), abs=1e-3)
        assert 0.5 <= r["gender_prob"] <= 1 and r["det_score"] >= cfg.identity.min_det_score
        assert all(e["direction"] in (None, "gender", "age", "yaw") for e in json.loads(r["variation_edits"]))
    summary = read_json(d / "summary.json")
    assert [c["achieved"] for c in summary["cells"]] == [c["target"] for c in summary["cells"]]
    f = summary["funnel"]
    assert f["drawn"] >= f["one_face"] >= f["quality"] >= f["in_open_cell"] >= f["distinct"] == 4
    assert summary["inter_identity_similarity"]["max"] == pytest.approx(sims[np.triu_indices(4, 1)].max(), abs=1e-5)
    with np.load(d / "directions.npz") as z:
        assert set(z["names"]) <= {"gender", "age", "yaw"} and z["vectors"].shape[1] == 100


def test_resume_redoes_only_damaged_items_and_never_resamples(small_run):
    from pathlib import Path

    cfg, out = small_run
    d = Path(out["dir"])
    assert run_stage(cfg, "identities")["status"] == "up-to-date"
    selection = (d / "selection" / "selection.json").read_bytes()
    anchor = d / "images" / "id_000002" / "anchor.png"
    original = anchor.read_bytes()
    anchor.write_bytes(b"truncated")
    (d / "stage.json").unlink()
    again = run_stage(cfg, "identities")
    assert again["status"] == "done" and again["identities"] == 4
    assert (d / "selection" / "selection.json").read_bytes() == selection
    assert anchor.read_bytes() == original  # re-rendered from the recorded latent: the same bytes


def test_unfillable_cell_is_a_clear_error(tmp_path):
    cfg = compose(["identity.num=2", "identity.max_attempts=64", "identity.target={age_bin: {0-2: 1, 20-29: 1}}",
                   f"paths.root={tmp_path}", "logger=none"])
    with pytest.raises(StageError, match=r"identity.max_attempts=64.*\n  age_bin=0-2: 0 of 1 kept"):
        run_stage(cfg, "identities")


def test_target_over_an_attribute_the_classifier_lacks(tmp_path):
    cfg = compose(["identity.target=race*gender", f"paths.root={tmp_path}", "logger=none"])
    with pytest.raises(StageError, match="does not estimate 'race'"):
        run_stage(cfg, "identities")


def test_nvlabs_impl_needs_a_checkout(tmp_path):
    from gandiff.identity.nvlabs import NVlabsStyleGANSource
    from gandiff.schema import ConfigError

    with pytest.raises(ConfigError, match="identity.nvlabs_path"):
        compose(["identity.impl=nvlabs", f"paths.root={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="not an NVlabs stylegan3 checkout"):
        NVlabsStyleGANSource(checkpoint=str(tmp_path / "x.pkl"), nvlabs_path=str(tmp_path))


class ReNoisedDCGAN:
    """The DCGAN behind the interface of a source with no editable latent space (like a diffusion model):
    variations come from its ``render_variations`` (here the latent plus noise from each variation's seed)."""

    editable = False
    name = "renoised-dcgan"

    def __init__(self, inner):
        self.inner = inner
        self.z_dim, self.w_dim, self.resolution = inner.z_dim, inner.w_dim, inner.resolution
        self.sample, self.to_w, self.render = inner.sample, inner.to_w, inner.render

    def render_variations(self, w, noise_seeds, shrink=1.0):
        noise = np.stack([np.random.RandomState(int(s) % 2**32).randn(self.w_dim) for s in noise_seeds])
        images = self.inner.render((w[None] + 0.3 * shrink * noise).astype(np.float32))
        return images, [{"direction": None, "step": 0.0, "noise_seed": int(s)} for s in noise_seeds]


def test_shards_share_one_selection_and_unedited_sources_vary_by_render_variations(tmp_path, monkeypatch):
    from pathlib import Path

    import gandiff.identity.stage as stage_module
    from gandiff.identity import sampling

    build = stage_module.build_source
    monkeypatch.setattr(stage_module, "build_source", lambda cfg, device: ReNoisedDCGAN(build(cfg, device)))
    selections = []
    select = sampling.select_identities
    monkeypatch.setattr(sampling, "select_identities", lambda *a, **k: selections.append(1) or select(*a, **k))
    base = ["identity.num=3", "identity.variations=1", "identity.target=null", "shard.count=2",
            f"paths.root={tmp_path}", "logger=none"]
    # id_000000..2 all belong to shard 1: shard 0 gets there first and makes the selection (rendering
    # nothing of its own), shard 1 reads it and renders every identity.
    first = run_stage(compose([*base, "shard.index=0"]), "identities")
    second = run_stage(compose([*base, "shard.index=1"]), "identities")
    assert (first["status"], second["status"]) == ("shard-done", "done") and len(selections) == 1
    d = Path(second["dir"])
    assert sorted(p.name for p in d.iterdir() if "selection" in p.name) == ["selection"]  # no claim or staging left
    thr = compose(base).identity.min_variation_similarity
    for r in read_table(d / "identities.parquet"):
        edits = json.loads(r["variation_edits"])
        assert r["num_variations"] == 1 and (d / f"images/{r['id']}/var_00.png").is_file()
        assert isinstance(edits[0]["noise_seed"], int) and r["variation_similarity"][0] >= thr
    with np.load(d / "directions.npz") as z:
        assert len(z["names"]) == 0  # nothing learned for a source without latent edits
