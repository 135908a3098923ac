"""The field's table: published numbers as their sources give them, bad rows named, '–' for what is not
measured, and the evaluate stage's dataset measures in the report."""

from __future__ import annotations

import pytest

from gandiff.artifacts import ItemStore, atomic_write_json
from gandiff.config import compose
from gandiff.evaluation import field_table as FT
from gandiff.pipeline import StageContext, StageError

# (LFW, CFP-FP, CPLFW, AgeDB-30, CALFW, Avg) as read in each source:
#   HaiyuWu/Vec2Face_plus README.md, "Datasets in 0.5M scale" (IDiff-Face, DCFace, ID^3, Arc2Face, HSFace10K,
#   VFace10K, CASIA-WebFace (Real));
#   kim1102/VIGFace README.md, "FR Benchmarks" (GANDiffFace, HyperFace, VIGFace(S); IR-SE50 + AdaFace).
SOURCES = {
    "GANDiffFace": ((90.77, 73.27, 72.32, 66.35, 74.68, 75.48), "kim1102/VIGFace README.md", True),
    "IDiff-Face": ((98.00, 85.47, 80.45, 86.43, 90.65, 88.20), "HaiyuWu/Vec2Face_plus README.md", True),
    "DCFace": ((98.55, 85.33, 82.62, 89.70, 91.60, 89.56), "HaiyuWu/Vec2Face_plus README.md", True),
    "HyperFace": ((98.50, 88.83, 84.23, 86.53, 89.40, 89.50), "kim1102/VIGFace README.md", True),
    "ID3": ((97.68, 86.84, 82.77, 91.00, 90.73, 89.80), "HaiyuWu/Vec2Face_plus README.md", True),
    "Arc2Face": ((98.81, 91.87, 85.16, 90.18, 92.63, 91.73), "HaiyuWu/Vec2Face_plus README.md", True),
    "Vec2Face (HSFace10K)": ((98.87, 88.97, 85.47, 93.12, 93.57, 92.00), "HaiyuWu/Vec2Face_plus README.md", False),
    "VIGFace(S)": ((99.02, 95.09, 87.72, 90.95, 90.00, 92.56), "kim1102/VIGFace README.md", False),
    "VFace10K (Vec2Face+)": ((99.35, 93.56, 88.03, 94.33, 94.17, 93.89), "HaiyuWu/Vec2Face_plus README.md", False),
    "CASIA-WebFace": ((99.38, 96.91, 89.78, 94.50, 93.35, 94.79), "HaiyuWu/Vec2Face_plus README.md", False),
}


def test_shipped_published_numbers_are_the_sources():
    rows = {p.dataset: p for p in FT.load_published()}
    assert set(rows) == set(SOURCES)
    for name, (numbers, source, second_hand) in SOURCES.items():
        p = rows[name]
        assert tuple(p.scores[b] for b, _ in FT.BENCHMARKS) + (p.avg,) == numbers, name
        assert p.source.startswith(source) and p.second_hand is second_hand and p.recognizer
        assert p.images == (490000 if name == "CASIA-WebFace" else 500000)
    assert rows["CASIA-WebFace"].kind == "real"


HEADER = ",".join(FT.COLUMNS)
GOOD = "X,synthetic,500000,10000,90,80,70,60,50,70.00,r50,somewhere,no,"


@pytest.mark.parametrize("line, needle", [
    ("X,synthetic,500000,10000,90,80,70,sixty,50,70.00,r50,src,no,", "agedb_30='sixty' is not a number"),
    ("X,synthetic,500000,10000,90,80,70,60,50,71.00,r50,src,no,", "avg=71.0 is not the mean"),
    ("X,synthetic,500000,10000,90,80,170,60,50,,r50,src,no,", "cplfw='170' is outside"),
    ("X,fake,500000,10000,90,80,70,60,50,70,r50,src,no,", "kind='fake'"),
    ("X,synthetic,500000,10000,90,80,70,60,50,70,r50,,no,", "source is empty"),
    ("X,synthetic,500000,10000,90,80,70,60,50,70,r50,a,b,no,", "15 fields"),
    ("X,synthetic,500000,10000,90,80,70,60,50,70,r50,src,maybe,", "second_hand='maybe'"),
])
def test_malformed_published_row_names_the_row(tmp_path, line, needle):
    f = tmp_path / "pub.csv"
    f.write_text(f"# comment\n{HEADER}\n{GOOD}\n{line}\n")
    with pytest.raises(FT.PublishedResultsError) as e:
        FT.load_published(f)
    msg = str(e.value)
    assert str(f) in msg and "line 4" in msg and "'X'" in msg and needle in msg


def test_published_file_missing_or_without_columns(tmp_path):
    with pytest.raises(FT.PublishedResultsError, match="not found"):
        FT.load_published(tmp_path / "nope.csv")
    f = tmp_path / "pub.csv"
    f.write_text("dataset,lfw\nX,99\n")
    with pytest.raises(FT.PublishedResultsError, match=r"header lacks \['kind'"):
        FT.load_published(f)
    f.write_text(f"{HEADER}\n{GOOD}\n")
    assert FT.load_published(f)[0].scores["calfw"] == 50.0


def _bench(acc):
    return {"status": "ok", "benchmark": {"accuracy_mean": acc}}


def test_run_row_dashes_what_is_not_measured_and_averages_only_all_five():
    items = {"bin-lfw": _bench(0.99), "bin-agedb": _bench(0.9), "heldout-recognizer": _bench(0.875),
             "bin-cplfw": {"status": "skipped", "reason": "no model"},
             "export-face": {"status": "ok", "num_images": 500000, "num_identities": 10000}}
    row = FT.run_field_row("mine", items)
    assert row["LFW"] == "99.00" and row["AgeDB-30"] == "90.00" and row["held-out (own data)"] == "87.50"
    assert row["CPLFW"] == FT.DASH and row["CFP-FP"] == FT.DASH and row["Avg"] == FT.DASH
    assert row["scale"] == "10.0K ids x 0.50M images"
    items.update({"bin-cfp_fp": _bench(0.8), "bin-cplfw": _bench(0.7), "bin-calfw": _bench(0.6),
                  "ijb-ijbc": {"status": "ok", "benchmark": {"tar@far=0.0001": 0.5, "tar@far=1e-05": 0.25}}})
    rows, cols = FT.field_rows([("mine", items)], FT.load_published())
    assert rows[0]["Avg"] == "79.80"  # (99 + 80 + 70 + 90 + 60) / 5
    assert "IJBC TAR@FAR=1e-4" in cols and rows[0]["IJBC TAR@FAR=1e-5"] == "25.00"
    assert all(r["IJBC TAR@FAR=1e-4"] == FT.DASH for r in rows[1:])  # published rows: not given
    gdf = next(r for r in rows if r["dataset"].startswith("GANDiffFace"))
    assert gdf["Avg"] == "75.48" and "[second-hand]" in gdf["source"]
    assert FT.field_summary(items)["avg"] == pytest.approx(79.8)
    assert "Avg" not in FT.run_field_row("x", {}) or FT.run_field_row("x", {})["Avg"] == FT.DASH


def _ctx(cfg, tmp_path, name, inputs):
    out = tmp_path / name
    return StageContext(name=name, cfg=cfg, run_dir=tmp_path, dir=out, key="k", inputs=inputs, shard_index=0,
                        shard_count=1, items=ItemStore(out))


def test_report_renders_the_field_table_and_measures_from_metrics(tmp_path):
    import numpy as np

    from gandiff.evaluation.measures import dataset_measures
    from gandiff.evaluation.report import build_report

    m = dataset_measures(np.eye(4)[[0, 0, 1, 1, 2, 3]] + 0.01, np.array([0, 0, 1, 1, 2, 2]),
                         [{"yaw": float(i), "pitch": 0.0, "roll": 0.0} for i in range(6)])
    items = {"export-face": {"key": "export-face", "status": "ok", "embedder": "SFace", "num_images": 6,
                             "num_identities": 3, "measures": m,
                             "leakage": {"identities_flagged": 0, "images_flagged": 0}},
             "gan-face": {"key": "gan-face", "status": "ok", "embedder": "SFace", "measures": m, "leakage": None},
             "heldout-recognizer": {"key": "heldout-recognizer", "status": "ok",
                                    "benchmark": {"accuracy_mean": 0.8}}}
    atomic_write_json(tmp_path / "ev" / "metrics.json", {"items": items})
    md = build_report("t", {}, tmp_path / "ev", diffusion=False).to_markdown()
    assert "| this run (GAN only) | 3 ids x 6 images | – | – | – | – | – | – | 80.00 |" in md
    assert "No benchmark .bin files are configured" in md
    assert "| GAN only (export) | SFace | 6 | 3 |" in md and "| 0 (0 images) |" in md and "not audited" in md
    assert "| 3/3 (100.0%) |" in md  # centres near e0, e1, (e2 + e3) / 2: all below 0.4


@pytest.mark.slow  # ~35 s on 2 busy cores: the evaluate stage embeds three datasets, two reports render
def test_evaluate_measures_datasets_and_report_shows_both_tables(tmp_path, upstream, curate):
    from gandiff.evaluation.report import build_report
    from gandiff.evaluation.stage import EvaluateStage

    ident, export, train = upstream
    atomic_write_json(export / "leakage.json", {"threshold": 0.5, "images_checked": 15, "images_flagged": 2,
                                                "identities_flagged": 1, "max_similarity": 0.6, "flagged": {}})
    cfg = compose(["paths.root=" + str(tmp_path / "runs"), "logger=none", "device=cpu",
                   "benchmark.embedders=[face]"])
    ctx = _ctx(cfg, tmp_path, "evaluate", {"identities": ident, "curate": curate, "export": export, "train": train})
    st = EvaluateStage()
    keys = st.items(ctx)
    st.process(ctx, keys)
    st.merge(ctx, keys)
    items = {r["key"]: r for r in ctx.items.rows(keys)}
    m = items["export-face"]["measures"]
    assert m["identities"] == 5 and m["vendi"]["count"] == 5 and 1.0 <= m["vendi"]["mean"] <= 3.0
    assert m["attributes"]["gender"]["disagreement"]["mean"] == 0.0  # the export labels each identity once
    assert items["export-face"]["leakage"]["identities_flagged"] == 1
    assert items["gan-face"]["measures"]["pose"] is None and items["gan-face"]["leakage"] is None
    assert items["generate-face"]["measures"]["identities"] == 5  # the fake curate: 5 identities with faces
    text = build_report("t", {}, ctx.dir, identities_dir=ident).to_html()
    for needle in ("The field&#x27;s table", "GANDiffFace (synthetic)", "75.48", "this run (diffusion)",
                   "Variation and separability", "GAN variations (GAN-only data)", "1 (2 images)", "not audited",
                   "held-out"):
        assert needle in text, needle

    # the report stage sends the field table and its numbers to the tracker (W&B summary)
    from gandiff.evaluation.report_stage import ReportStage
    from gandiff.tracking import Tracker

    logged: dict = {"summary": {}, "tables": {}}

    class Recorder(Tracker):
        def log_summary(self, stage, summary):
            logged["summary"][stage] = summary

        def log_table(self, key, rows):
            logged["tables"][key] = rows

        def log_image(self, key, path, caption=""):
            pass

        def log_artifact_ref(self, name, path, kind="dataset"):
            pass

    inputs = {"identities": ident, "curate": curate, "export": export, "train": train, "evaluate": ctx.dir}
    for s_, d in inputs.items():
        atomic_write_json(d / "stage.json", {"stage": s_, "key": "k", "counts": {}, "timings": {"seconds": 1}})
    for s_ in ("dreambooth", "generate"):
        (tmp_path / s_).mkdir()
        atomic_write_json(tmp_path / s_ / "stage.json", {"stage": s_, "key": "k", "counts": {}})
        inputs[s_] = tmp_path / s_
    rctx = _ctx(cfg, tmp_path, "report", inputs)
    rctx.tracker = Recorder()
    ReportStage().process(rctx, ["report"])
    field = logged["tables"]["report/field_table"]
    assert field[0]["source"] == "this run" and field[0]["LFW"] == FT.DASH and len(field) == 11
    assert "field" in logged["summary"] and "avg" not in logged["summary"]["field"]  # no benchmark configured


def test_missing_or_wrong_benchmark_file_names_the_file_and_the_key(tmp_path, upstream, curate):
    from gandiff.evaluation.stage import EvaluateStage

    ident, export, train = upstream
    wrong = tmp_path / "cfp_fp.bin"
    wrong.write_text("not a pickle")
    cfg = compose(["paths.root=" + str(tmp_path / "runs"), "logger=none", "device=cpu",
                   f"+benchmark.verification.lfw={tmp_path / 'missing' / 'lfw.bin'}",
                   f"+benchmark.verification.cfp_fp={wrong}"])
    ctx = _ctx(cfg, tmp_path, "evaluate", {"identities": ident, "curate": curate, "export": export, "train": train})
    st = EvaluateStage()
    with pytest.raises(StageError, match=r"benchmark\.verification\.lfw: .*missing/lfw\.bin.*not found"):
        st.process(ctx, ["bin-lfw"])
    with pytest.raises(StageError, match=r"benchmark\.verification\.cfp_fp: .*cfp_fp\.bin: not an insightface"):
        st.process(ctx, ["bin-cfp_fp"])
