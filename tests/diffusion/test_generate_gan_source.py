"""generation.source=gan: the GAN-only baseline reads the identities' own images, no diffusion model."""

from __future__ import annotations

from gandiff.artifacts import read_json, read_table
from gandiff.config import compose
from gandiff.evaluation.report_stage import ReportStage
from gandiff.pipeline import load_stage, run_stage, stage_dir


def test_gan_source_copies_each_identitys_images_without_dreambooth(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", "logger=none", "experiment=demo_gan_only", "identity.num=3"])
    run_stage(cfg, "identities")
    out = run_stage(cfg, "generate")  # no dreambooth stage has run: the GAN source does not need one
    assert out["status"] == "done" and out["images"] == 9 and out["identities"] == 3
    assert not (tmp_path / "demo" / "dreambooth").exists()
    gen, ids = stage_dir(cfg, "generate"), stage_dir(cfg, "identities")
    rows = read_table(gen / "images.parquet")
    first = [r for r in rows if r["id"] == "id_000000"]
    assert [r["gan_image"] for r in first] == ["anchor.png", "var_00.png", "var_01.png"]  # anchor first
    for r in first:
        assert (gen / r["path"]).read_bytes() == (ids / "images" / "id_000000" / r["gan_image"]).read_bytes()
        assert r["source"] == "gan" and r["prompt"] == ""
    assert read_json(gen / "stage.json")["inputs"].keys() == {"identities"}
    assert run_stage(cfg, "generate")["status"] == "up-to-date"


def test_the_source_decides_the_inputs_of_generate_and_report(tmp_path):
    diffusion = compose([f"paths.root={tmp_path}", "logger=none", "experiment=demo"])
    gan = compose([f"paths.root={tmp_path}", "logger=none", "experiment=demo_gan_only"])
    generate = load_stage("generate")
    assert generate.upstream_for(diffusion) == ("dreambooth",) and generate.upstream_for(gan) == ("identities",)
    assert "dreambooth" in ReportStage().upstream_for(diffusion)
    assert "dreambooth" not in ReportStage().upstream_for(gan)
    # Same identities folder for both (the comparison shares them); different generate folders.
    assert stage_dir(diffusion, "identities") == stage_dir(gan, "identities")
    assert stage_dir(diffusion, "generate") != stage_dir(gan, "generate")


def test_full_scale_experiments_compose_with_their_weights_given():
    weights = ["identity.source.checkpoint=/m/sg3.pkl", "dreambooth.base=/m/sd15", "face.pack_dir=/m/buffalo_l",
               "attributes.classifier.checkpoint=/m/fairface.pt", "benchmark.root=/d/bins", "logger=none"]
    full = compose(["experiment=gandiff_sd15", *weights])
    assert full.identity.source._target_.endswith("StyleGANSource") and full.identity.num == 10000
    assert full.dreambooth.base == "/m/sd15" and "accessories" in full.prompts.families
    assert full.face.embedder.model_path == "/m/buffalo_l/w600k_r50.onnx"
    from gandiff.identity.demographics import parse_target

    target = parse_target(full.identity.target, full.identity.num, ["race", "gender", "age_bin"])
    assert target.attributes == ("race", "gender") and len(target.quotas) == 14  # FairFace's 7 x 2 cells
    gan = compose(["experiment=gan_only", *weights])
    assert gan.generation.source == "gan" and "dreambooth" not in gan.stages
    assert stage_dir(gan, "identities") == stage_dir(full, "identities")  # one identities stage for both
    neutral = compose(["experiment=gandiff_sd15_neutral", *weights])
    assert "accessories" not in neutral.prompts.families and neutral.generation.source == "diffusion"
    assert stage_dir(neutral, "identities") == stage_dir(full, "identities")
    assert stage_dir(neutral, "dreambooth") == stage_dir(full, "dreambooth")  # only generation differs
    assert stage_dir(neutral, "generate") != stage_dir(full, "generate")


def test_missing_weights_are_named_with_their_keys():
    import pytest

    from gandiff.schema import ConfigError

    with pytest.raises(ConfigError, match=r"attributes.classifier.checkpoint, benchmark.root, face.pack_dir, "
                       r"identity.source.checkpoint: no value"):
        compose(["experiment=gandiff_sd15", "logger=none"])


def test_gan_source_keys_ignore_prompts_and_keep_diffusion_keys(tmp_path):
    from gandiff.pipeline import stage_config

    base = [f"paths.root={tmp_path}", "logger=none", "experiment=demo"]
    gan_a = compose([*base, "generation.source=gan"])
    gan_b = compose([*base, "generation.source=gan", "prompts=neutral", "generation.steps=7"])
    assert stage_dir(gan_a, "generate") == stage_dir(gan_b, "generate")  # copies: prompts cannot matter
    diffusion = compose(base)
    assert "source" not in stage_config(diffusion, load_stage("generate"))["generation"]  # keys as before


def test_run_leaves_out_what_nothing_reads(tmp_path):
    from gandiff.pipeline import STAGE_ORDER, _needed

    gan = compose([f"paths.root={tmp_path}", "logger=none", "experiment=demo", "generation.source=gan"])
    assert _needed(gan, list(STAGE_ORDER)) == [s for s in STAGE_ORDER if s != "dreambooth"]
    assert _needed(compose([f"paths.root={tmp_path}", "logger=none"]), list(STAGE_ORDER)) == list(STAGE_ORDER)


def test_replay_of_a_gan_copy_says_why_not(tmp_path):
    import pytest

    from gandiff.diffusion.generate_stage import replay
    from gandiff.pipeline import StageError

    cfg = compose([f"paths.root={tmp_path}", "logger=none", "experiment=demo_gan_only"])
    with pytest.raises(StageError, match="generation.source=gan copies the GAN images"):
        replay(cfg, "id_000000_0000")
