"""The evaluate stage over fake upstream folders in the real formats (in-process, no pipeline run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gandiff.artifacts import ItemStore, read_table
from gandiff.config import compose
from gandiff.pipeline import StageContext


def _run(tmp_path, inputs, overrides=()):
    from gandiff.evaluation.stage import EvaluateStage

    cfg = compose(["paths.root=" + str(tmp_path / "runs"), "logger=none", "device=cpu", *overrides])
    out = tmp_path / "evaluate"
    ctx = StageContext(name="evaluate", cfg=cfg, run_dir=tmp_path, dir=out, key="k", inputs=inputs,
                       shard_index=0, shard_count=1, items=ItemStore(out))
    stage = EvaluateStage()
    keys = stage.items(ctx)
    stage.process(ctx, keys)
    counts = stage.merge(ctx, keys)
    return out, keys, counts


def test_evaluate_stage_measures_everything(tmp_path, upstream, curate):
    ident, export, train = upstream
    out, keys, counts = _run(tmp_path, {"identities": ident, "curate": curate, "export": export, "train": train})
    assert keys == ["export-face", "export-recognizer", "gan-face", "gan-recognizer", "generate-face",
                    "heldout-recognizer", "prompts-effects"]  # the last: benchmark.prompt_effects (demo: on)
    m = json.loads((out / "metrics.json").read_text())
    assert m["export_status"] == "ok"
    ex = m["items"]["export-face"]
    assert ex["status"] == "ok" and ex["num_images"] == 15 and ex["mated_pairs"] == 5 * 3 and ex["nonmated_pairs"] == 90
    assert ex["embedder"].startswith("SFaceEmbedder:")
    assert 0 <= ex["summary"]["eer"] <= 1 and ex["verification"]["pairs"] == 30
    gan = m["items"]["gan-recognizer"]
    assert gan["num_images"] == 24 and gan["mated_pairs"] == 6 * 6 and gan["undetected"] == 24
    fair = gan["fairness"]
    assert set(fair) == {"gender", "age_bin"}  # race is absent from the attributes
    assert set(fair["gender"]["differentials"]["groups"]) == {"female", "male"}
    held = m["items"]["heldout-recognizer"]
    assert held["status"] == "ok" and held["benchmark"]["num_pairs"] == 40 and len(held["fold_accuracy"]) == 10
    # every generated image with a face, before selection: 5 identities x 3 faces (no-face rows skipped)
    gen = m["items"]["generate-face"]
    assert gen["status"] == "ok" and gen["num_images"] == 15 and gen["num_identities"] == 5
    assert gen["mated_pairs"] == 5 * 3 and gen["nonmated_pairs"] == 15 * 14 // 2 - 15
    assert gen["generated"] == 24 and gen["without_face"] == 9 and gen["embedder"] == ex["embedder"]
    assert 0 <= gen["summary"]["eer"] <= 1 and gen["summary"]["d_prime"] > 0  # clustered fake embeddings
    assert set(gen["fairness"]) == {"gender", "age_bin"}
    g = np.load(out / "scores" / "generate-face.npz")
    assert len(g["mated"]) == 15 and len(g["nonmated"]) == 90 and (out / "histograms" / "generate-face.json").is_file()
    assert set(m["comparisons"]) == {"diffusion_vs_gan/face", "diffusion_vs_gan/recognizer", "generated_vs_gan/face"}
    s = np.load(out / "scores" / "gan-face.npz")
    assert len(s["mated"]) == 36 and len(s["nonmated"]) == 24 * 23 // 2 - 36
    table = read_table(out / "metrics.parquet")
    assert [r["key"] for r in table] == keys and table[0]["images"] == 15
    # these fakes have no generate/ folder behind curate: the prompt effects skip, saying so
    assert m["items"]["prompts-effects"]["status"] == "skipped" and m["items"]["prompts-effects"]["reason"]
    assert counts["export_empty"] is False and counts["skipped"] == 1 and 0 <= counts["generate-face/eer"] <= 1


def test_evaluate_stage_empty_export_and_no_recognizer(tmp_path, builders):
    ident = builders.identities(tmp_path / "identities", n_ids=3, per_id=2)
    curate = builders.curate(tmp_path / "curate", n_ids=3, per_id=3)
    export = builders.export(tmp_path / "export", empty=True)
    train = builders.train(tmp_path / "train", with_model=False)
    out, keys, counts = _run(tmp_path, {"identities": ident, "curate": curate, "export": export, "train": train})
    m = json.loads((out / "metrics.json").read_text())
    assert m["export_status"] == "empty" and "curation selected no image" in m["export_reason"]
    assert m["items"]["export-face"]["status"] == "empty"
    assert m["items"]["gan-face"]["status"] == "ok"  # measured even though the export is empty
    gen = m["items"]["generate-face"]  # so are the generated faces that selection rejected
    assert gen["status"] == "ok" and gen["num_images"] == 4 and gen["mated_pairs"] == 2 and gen["nonmated_pairs"] == 4
    assert 0 <= gen["summary"]["eer"] <= 1
    for k in ("export-recognizer", "gan-recognizer", "heldout-recognizer"):
        assert m["items"][k]["status"] == "skipped" and "the export is empty" in m["items"][k]["reason"]
    assert counts["export_empty"] is True and counts["skipped"] == 5  # 3 recognizer items + prompts-effects
    assert set(m["comparisons"]) == {"generated_vs_gan/face"}


def test_generated_faces_without_any_face_are_an_empty_item(tmp_path, builders):
    ident = builders.identities(tmp_path / "identities", n_ids=3, per_id=2)
    curate = builders.curate(tmp_path / "curate", n_ids=3, per_id=2, faces=False)
    export = builders.export(tmp_path / "export", empty=True)
    out, keys, _ = _run(tmp_path, {"identities": ident, "curate": curate, "export": export},
                        ["benchmark.embedders=[face]", "benchmark.gan_variations=false"])
    assert keys == ["export-face", "generate-face", "prompts-effects"]
    gen = json.loads((out / "metrics.json").read_text())["items"]["generate-face"]
    assert gen["status"] == "empty" and "none of the 6 generated images had a face" in gen["reason"]


def test_evaluate_stage_bins_and_reference(tmp_path, upstream, curate):
    from gandiff.evaluation.distributions import ScoreHistogram

    ident, export, train = upstream
    ref = tmp_path / "ref.json"
    ScoreHistogram.from_scores(np.random.default_rng(0).normal(0.6, 0.1, 500),
                               np.random.default_rng(1).normal(0.0, 0.1, 5000), bins=100,
                               metadata={"embedder": "other", "dataset": "real"}).save(ref)
    out, keys, _ = _run(tmp_path, {"identities": ident, "curate": curate, "export": export, "train": train},
                        [f"+benchmark.verification.mini={train / 'heldout.bin'}", f"benchmark.reference_distribution={ref}",
                         "benchmark.embedders=[face,recognizer]", "benchmark.gan_variations=false"])
    assert "bin-mini" in keys and "gan-face" not in keys and "generate-face" in keys
    m = json.loads((out / "metrics.json").read_text())
    assert m["items"]["bin-mini"]["benchmark"] == pytest.approx(m["items"]["heldout-recognizer"]["benchmark"])
    r = m["items"]["export-face"]["reference"]
    assert r["same_embedder"] is False and set(r["distances"]["mated"]) == {"kl", "js", "wasserstein", "ks", "overlap"}


def test_heldout_falls_back_to_the_train_stage_numbers(tmp_path, builders):
    ident = builders.identities(tmp_path / "identities", n_ids=2, per_id=2)
    export = builders.export(tmp_path / "export", n_ids=2, per_id=2)
    train = builders.train(tmp_path / "train")
    (train / "heldout.bin").unlink()
    (train / "metrics.json").write_text(json.dumps({"status": "trained", "val": [
        {"step": 5, "heldout/accuracy_mean": 0.61}, {"step": 10, "heldout/accuracy_mean": 0.72,
                                                     "heldout/val_mean": 0.1}]}))
    out, _, _ = _run(tmp_path, {"identities": ident, "export": export, "train": train},
                     ["benchmark.embedders=[recognizer]", "benchmark.gan_variations=false"])
    held = json.loads((out / "metrics.json").read_text())["items"]["heldout-recognizer"]
    assert held["benchmark"] == {"accuracy_mean": 0.72, "val_mean": 0.1} and "step 10" in held["dataset"]
