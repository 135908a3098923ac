"""The report: HTML with every plot embedded and decodable (and rendered by Chromium when installed),
Markdown beside it, the report stage over fake upstream folders, the sweep comparison."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from gandiff.artifacts import ItemStore, atomic_write_json
from gandiff.config import compose
from gandiff.evaluation import document as D
from gandiff.evaluation import report as R
from gandiff.evaluation import sweep as S
from gandiff.pipeline import StageContext


def _ctx(cfg, tmp_path, name, inputs):
    out = tmp_path / name
    return StageContext(name=name, cfg=cfg, run_dir=tmp_path, dir=out, key="k", inputs=inputs, shard_index=0,
                        shard_count=1, items=ItemStore(out))


@pytest.fixture
def evaluated(tmp_path, upstream, curate):
    """An evaluate folder over the fake upstream, plus stage.json files for every upstream stage."""
    from gandiff.evaluation.stage import EvaluateStage

    ident, export, train = upstream
    cfg = compose(["paths.root=" + str(tmp_path / "runs"), "logger=none", "device=cpu"])
    ctx = _ctx(cfg, tmp_path, "evaluate", {"identities": ident, "curate": curate, "export": export, "train": train})
    st = EvaluateStage()
    keys = st.items(ctx)
    st.process(ctx, keys)
    counts = st.merge(ctx, keys)
    inputs = {"identities": ident, "curate": curate, "export": export, "train": train, "evaluate": ctx.dir}
    for s in ("dreambooth", "generate"):
        inputs[s] = tmp_path / s
        inputs[s].mkdir()
    for s, d in inputs.items():
        atomic_write_json(d / "stage.json", {"stage": s, "key": f"{s}key", "counts": {"items": 3} if s != "evaluate"
                                             else counts, "timings": {"seconds": 1.5}})
    # curated crops for the grid
    crops = tmp_path / "curate" / "crops" / "id_000000"
    crops.mkdir(parents=True)
    from gandiff.artifacts import save_image

    save_image(crops / "a.png", np.full((112, 112, 3), 128, np.uint8))
    return cfg, inputs


def test_report_stage_writes_self_contained_html(tmp_path, evaluated):
    from gandiff.evaluation.report_stage import ReportStage
    from gandiff.tracking import Tracker

    cfg, inputs = evaluated
    logged = {"images": [], "tables": [], "refs": []}

    class Recorder(Tracker):
        def log_image(self, key, path, caption=""):
            logged["images"].append(key)

        def log_table(self, key, rows):
            logged["tables"].append((key, len(rows)))

        def log_artifact_ref(self, name, path, kind="dataset"):
            logged["refs"].append(kind)

    ctx = _ctx(cfg, tmp_path, "report", inputs)
    ctx.tracker = Recorder()
    st = ReportStage()
    st.process(ctx, st.items(ctx))
    counts = st.merge(ctx, ["report"])
    text = (ctx.dir / "report.html").read_text()
    n, problems = D.html_images_ok(text)
    assert problems == [] and n == counts["images"]
    # samples, histograms + ROC/DET for both embedders, fairness bars (gender, age_bin of the GAN items)
    assert n >= 1 + 4 + 4
    for needle in ("Stages", "Score distributions", "Fairness", "Benchmarks", "heldout-recognizer", "FDR", "GARBE",
                   "generate-face", "generated_vs_gan/face"):
        assert needle in text
    md = (ctx.dir / "report.md").read_text()
    assert "![" in md and (ctx.dir / "assets" / "samples.png").is_file()
    # the first table: one row per evaluate item, prompts-effects included: benchmark.prompt_effects is on in the demo
    assert len(logged["images"]) == n and logged["tables"][0][1] == 7 and logged["refs"] == ["dataset", "report"]


def test_report_of_an_empty_export_says_so(tmp_path, builders):
    from gandiff.evaluation.report import build_report
    from gandiff.evaluation.stage import EvaluateStage

    inputs = {"identities": builders.identities(tmp_path / "identities", n_ids=3, per_id=2),
              "curate": builders.curate(tmp_path / "curate", n_ids=3, per_id=3),
              "export": builders.export(tmp_path / "export", empty=True),
              "train": builders.train(tmp_path / "train", with_model=False)}
    cfg = compose(["paths.root=" + str(tmp_path / "runs"), "logger=none", "device=cpu"])
    ctx = _ctx(cfg, tmp_path, "evaluate", inputs)
    st = EvaluateStage()
    st.process(ctx, st.items(ctx))
    st.merge(ctx, st.items(ctx))
    rep = build_report("t", {}, ctx.dir, identities_dir=inputs["identities"])
    text = rep.to_html()
    assert "The exported dataset is EMPTY" in text and D.html_images_ok(text)[1] == []
    # the diffusion side is still shown, from every generated face before selection, beside the GAN side
    assert "generate-face" in text and "gan-face" in text and "generated_vs_gan/face" in text


def test_report_opens_in_chromium(tmp_path, evaluated):
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from gandiff.evaluation.report import build_report

    cfg, inputs = evaluated
    rep = build_report("t", {}, inputs["evaluate"], identities_dir=inputs["identities"])
    files = rep.write(tmp_path / "rep")
    loaded, shown = D.browser_check(files["html"])
    assert shown == len(rep.images) > 0 and loaded == shown


def test_sweep_report_compares_evaluations(tmp_path, evaluated):
    _, inputs = evaluated
    run = tmp_path / "run"
    for k, tag in (("aaa", "min_sim=0.3"), ("bbb", "min_sim=0.5")):
        shutil.copytree(inputs["evaluate"], run / "evaluate" / k)
        atomic_write_json(run / "evaluate" / k / "stage.json", {"inputs": {"export": {"key": f"e{k}"}}})
        (run / "export" / f"e{k}").mkdir(parents=True)
        (run / "export" / f"e{k}" / "tag.txt").write_text(tag + "\n")
    found = S.find_evaluations(run)
    assert [label for label, _ in found] == ["min_sim=0.3", "min_sim=0.5"]
    files = S.sweep_report(run, tmp_path / "sweep")
    text = files["html"].read_text()
    n, problems = D.html_images_ok(text)
    assert problems == [] and n == 4 and text.count("min_sim=0.5") >= 2
    with pytest.raises(FileNotFoundError, match="no evaluate/ folder and no Hydra jobs"):
        S.find_evaluations(tmp_path / "curate")


def test_html_images_ok_catches_broken_images():
    n, problems = D.html_images_ok("<img alt='x' src='data:image/png;base64,AAAA'><img alt='y' src='x.png'>")
    assert n == 2 and len(problems) == 2


def _item(mated, nonmated, eer, n=30, ids=6, status="ok"):
    return {"status": status, "num_images": n, "num_identities": ids,
            "summary": {"mated_mean": mated, "mated_std": 0.1, "nonmated_mean": nonmated, "nonmated_std": 0.1,
                        "eer": eer, "d_prime": 2.0}}


def test_claims_say_what_came_out_favourable_or_not():
    gan = _item(0.66, 0.17, 0.03)
    export = {"config": {"curation": {"min_anchor_similarity": 0.3}}, "counts": {"images": 20, "empty": False}}
    kept = R.claims_summary({"gan-face": gan, "generate-face": _item(0.45, 0.15, 0.10),
                             "export-face": _item(0.50, 0.15, 0.05, n=20)}, export)
    assert kept[0].startswith("GAN variations alone (gan-face, 30 images of 6 identities): mated 0.660")
    assert "EER 0.030, d′ 2.00" in kept[0]
    assert len(kept) == 4 and "the exported diffusion images have a mated mean 0.500" in kept[3]
    assert "added variation (the mated mean is 0.160 lower)" in kept[3]
    assert "each of the 20 exported images stayed at least 0.3 cosine similar" in kept[3]
    lost = R.claims_summary({"gan-face": gan, "generate-face": _item(0.13, 0.12, 0.52),
                             "export-face": {"status": "empty"}},
                            {"config": {}, "counts": {"images": 0, "empty": True}})
    assert "diffusion lost identity rather than adding variation" in lost[2] and "EER 0.520" in lost[2]
    assert lost[-1] == "No generated image passed curation: the exported dataset is empty."
    same = R.claims_summary({"gan-face": gan, "export-face": _item(0.70, 0.15, 0.02)}, export)
    assert "added no variation" in same[-1]
    gan_only = R.claims_summary({"gan-face": gan, "export-face": _item(0.66, 0.17, 0.03)}, export, diffusion=False)
    assert gan_only[1].startswith("GAN-only run (generation.source=gan), the exported selection")
    assert not any("variation:" in x or "diffusion lost" in x for x in gan_only) and "report-sweep" in gan_only[-1]


def test_sweep_labels_name_gan_only_chains_and_what_tells_the_others_apart(tmp_path):
    def stage(name, key, config, inputs):
        atomic_write_json(tmp_path / name / key / "stage.json",
                          {"config": config, "inputs": {s: {"key": k} for s, k in inputs.items()}})

    stage("generate", "g_gan", {}, {"identities": "i"})
    stage("generate", "g_a", {"prompts": {"negative": "x"}}, {"dreambooth": "d"})
    stage("generate", "g_b", {"prompts": {"negative": "y"}}, {"dreambooth": "d"})
    for c, g in (("c_gan", "g_gan"), ("c_a", "g_a"), ("c_b", "g_b")):
        stage("curate", c, {}, {"generate": g})
    assert S._generation_source(tmp_path, {"curate": {"key": "c_gan"}}) == "gan"
    assert S._generation_source(tmp_path, {"curate": {"key": "c_a"}}) == "diffusion"
    for e, c in (("e_a", "c_a"), ("e_b", "c_b")):
        stage("evaluate", e, {}, {"curate": c})
    labels = S._distinct_labels([("tag", tmp_path / "evaluate" / "e_a"), ("tag", tmp_path / "evaluate" / "e_b"),
                                           ("other", tmp_path / "evaluate" / "e_b")])
    assert [lab for lab, _ in labels] == ["tag [prompts.negative=x]", "tag [prompts.negative=y]", "other"]
