"""``gandiff compare``: a finished run and datasets on disk in one field table, measured by the same code."""

from __future__ import annotations

import pytest

from gandiff.artifacts import ItemStore, atomic_write_json
from gandiff.config import compose
from gandiff.pipeline import StageContext


@pytest.mark.slow  # ~30 s on 2 busy cores: SFace loads twice, matplotlib renders
def test_compare_a_run_and_external_datasets(tmp_path, upstream, curate):
    from gandiff.evaluation.stage import EvaluateStage

    ident, export, train = upstream
    run = tmp_path / "run"
    cfg = compose(["paths.root=" + str(tmp_path / "runs"), "logger=none", "device=cpu", "benchmark.embedders=[face]",
                   "benchmark.gan_variations=false"])
    out = run / "evaluate" / "k"
    ctx = StageContext(name="evaluate", cfg=cfg, run_dir=run, dir=out, key="k",
                       inputs={"identities": ident, "curate": curate, "export": export, "train": train},
                       shard_index=0, shard_count=1, items=ItemStore(out))
    st = EvaluateStage()
    keys = st.items(ctx)
    st.process(ctx, keys)
    st.merge(ctx, keys)
    stage_measures = {r["key"]: r for r in ctx.items.rows(keys)}["export-face"]["measures"]

    # the same export as an external dataset (its imagefolder), and as a plain <identity>/<image> tree
    plain = tmp_path / "plain"
    for f in (export / "imagefolder" / "train").glob("*/*.png"):
        (plain / f.parent.name).mkdir(parents=True, exist_ok=True)
        (plain / f.parent.name / f.name).write_bytes(f.read_bytes())
    from gandiff.evaluation.compare import compare, measure_dataset
    from gandiff.evaluation.distributions import make_embedder

    emb = make_embedder("sface", device="cpu")  # what `gandiff compare` uses for datasets by default
    compare([run, export / "imagefolder" / "train", plain], tmp_path / "cmp", emb)
    html = (tmp_path / "cmp" / "compare.html").read_text()
    for needle in ("run: k", "train", "plain", "GANDiffFace (synthetic)", "Variation and separability",
                   "Score distributions"):
        assert needle in html, needle
    row, _ = measure_dataset(export / "imagefolder" / "train", emb)
    # the stage and compare measure the same images with the same code: the same numbers
    assert row["measures"]["vendi"] == pytest.approx(stage_measures["vendi"])
    assert row["measures"]["separability"] == stage_measures["separability"]
    assert row["measures"]["attributes"]["gender"]["identities"] == 5
    plain_row, _ = measure_dataset(plain, emb)
    assert plain_row["measures"]["attributes"] == {} and plain_row["measures"]["vendi"] == pytest.approx(
        stage_measures["vendi"])
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| plain |" in md and md.count("–") > 10  # no recognizer for a dataset: benchmarks are dashes


def test_compare_names_a_missing_path(tmp_path, caplog):
    from gandiff.evaluation.compare import main

    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope: no such run folder or dataset" in caplog.text


def test_compare_finished_runs_needs_no_embedder(tmp_path):
    import numpy as np

    from gandiff.evaluation.compare import compare
    from gandiff.evaluation.measures import dataset_measures

    emb = np.eye(4)[[0, 0, 1, 1, 2, 3]] + 0.01
    items = {"export-face": {"status": "ok", "embedder": "SFaceEmbedder:x.onnx", "num_images": 6,
                             "num_identities": 3, "measures": dataset_measures(emb, np.array([0, 0, 1, 1, 2, 2])),
                             "leakage": None},
             "bin-lfw": {"status": "ok", "benchmark": {"accuracy_mean": 0.9512}}}
    for k in ("a", "b"):
        atomic_write_json(tmp_path / "run" / "evaluate" / k / "metrics.json", {"items": items})
    files = compare([tmp_path / "run"], tmp_path / "cmp", embedder=None)
    md = files["md"].read_text()
    assert md.count("| run: a |") == 1 and "| run: b | 3 ids x 6 images | 95.12 | – | – | – | – | – |" in md
    assert "run: a: dataset (export)" in md and "Vec2Face" in md
