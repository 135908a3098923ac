"""Fairness numbers the data cannot resolve read "not measurable" in the JSON, HTML, Markdown and W&B table alike."""

from __future__ import annotations

import json
from html import escape

from gandiff.artifacts import ItemStore
from gandiff.config import compose
from gandiff.pipeline import StageContext


class _Recorder:
    def __init__(self):
        self.tables = {}

    def log_table(self, key, rows):
        self.tables[key] = rows


def test_not_measurable_everywhere_with_the_counts(tmp_path, upstream, curate):
    from gandiff.evaluation.report import build_report
    from gandiff.evaluation.stage import EvaluateStage

    ident, export, train = upstream
    cfg = compose(["paths.root=" + str(tmp_path / "runs"), "logger=none", "device=cpu",
                   "benchmark.embedders=[face]", "benchmark.fairness_threshold=nonmated_score",
                   "benchmark.fairness_fmr=1e-3"])
    out = tmp_path / "evaluate"
    ctx = StageContext(name="evaluate", cfg=cfg, run_dir=tmp_path, dir=out, key="k",
                       inputs={"identities": ident, "curate": curate, "export": export, "train": train},
                       shard_index=0, shard_count=1, items=ItemStore(out))
    ctx.tracker = _Recorder()
    st = EvaluateStage()
    keys = st.items(ctx)
    st.process(ctx, keys)
    st.merge(ctx, keys)
    items = json.loads((out / "metrics.json").read_text())["items"]
    d = items["gan-face"]["fairness"]["gender"]["differentials"]
    # 24 GAN images, 2 identities a gender -> a few dozen pooled non-mated pairs: FMR 1e-3 needs 1000
    pooled = d["pooled_nonmated_pairs"]
    text = f"not measurable: {pooled} non-mated pairs pooled, FMR target 0.001 needs >= 1000"
    assert 0 < pooled < 1000 and d["measurable"] is False and d["threshold_rule"] == "nonmated_score"
    assert d["fdr"] == d["ir"] == d["garbe"] == d["threshold"] == text
    assert all(g["fmr"] == text for g in d["groups"].values())
    rep = build_report("t", {}, out)
    html, md = rep.to_html(), rep.to_markdown()
    for page, shown in ((html, escape(text)), (md, text)):
        assert shown in page and "Clopper-Pearson" in page and "ddof = 0" in page
        assert "bob.measure.far_threshold" in page  # the configured threshold rule is the one stated
    rows = ctx.tracker.tables["evaluate/fairness"]
    fdr_row = next(r for r in rows if r["item"] == "gan-face" and r["attribute"] == "gender" and r["metric"] == "FDR")
    assert fdr_row["value"] is None and fdr_row["shown"] == text
    # one type per column (W&B tables refuse mixed columns): value is float or None, shown a string
    assert all(r["value"] is None or isinstance(r["value"], float) for r in rows)
    assert all(isinstance(r["shown"], str) for r in rows)


def test_demo_fmr_target_is_resolved_by_its_smallest_group():
    from gandiff.config import validate
    from gandiff.evaluation.fairness import min_nonmated_pairs

    b = validate(compose(["experiment=demo", "logger=none"])).benchmark
    ids = validate(compose(["experiment=demo", "logger=none"])).identity
    # 3 identities a gender and an age bin, anchor + variations each: the fewest non-mated pairs of a group
    per_id = int(ids.variations) + 1
    smallest = (3 * per_id) * (3 * per_id - 1) // 2 - 3 * per_id * (per_id - 1) // 2
    assert smallest == 75 and min_nonmated_pairs(b.fairness_fmr) <= smallest
