"""The built-in report sections (registered on import, in page order; ``gandiff.evaluation.registry``).

``distributions``: score histograms, ROC / DET, the distribution table, diffusion against GAN and distances to
the reference; ``fairness``: per-group tables and bars; ``benchmarks``: one row per item of every evaluator
whose ``section`` is ``benchmarks`` (its ``row``, else ``benchmark_row``); ``field``: the field's table beside
published datasets, and the variation / separability measures.
"""

from __future__ import annotations

from typing import Any

from gandiff.evaluation.document import Report
from gandiff.evaluation.plots import load_scores, plot_group_bars, plot_roc_det, plot_score_histograms
from gandiff.evaluation.registry import ReportView, Section, evaluator_for, register

DISTRIBUTION_COLUMNS = ("eer", "d_prime", "fnmr@fmr=0.01", "fnmr@fmr=0.001", "mated_mean", "nonmated_mean")


def distributions(rep: Report, view: ReportView) -> None:
    items = view.items
    rep.heading("Score distributions")
    made = "diffusion" if view.diffusion else "GAN only"
    dist_rows = []
    for which in ("face", "recognizer"):
        series = []
        for kind, label in (("export", f"{made} (export)"), ("generate", f"{made} (all generated faces)"),
                            ("gan", "GAN variations")):
            key = f"{kind}-{which}"
            r = items.get(key)
            if not r:
                continue
            row = {"item": key, "status": r.get("status"), "embedder": r.get("embedder"),
                   "images": r.get("num_images"), "mated": r.get("mated_pairs"), "non-mated": r.get("nonmated_pairs"),
                   "sampled": bool(r.get("mated_sampled") or r.get("nonmated_sampled"))}
            s = r.get("summary") or {}
            row.update({k: s.get(k) for k in DISTRIBUTION_COLUMNS})
            row["accuracy"] = (r.get("verification") or {}).get("accuracy")
            dist_rows.append(row)
            sc = load_scores(view.evaluate_dir, key) if r.get("status") == "ok" else None
            if sc is not None:
                series.append((label, *sc))
        if series:
            rep.image(f"histograms_{which}", plot_score_histograms(series, view.reference, title=f"embedder: {which}"),
                      f"Mated (solid) and non-mated (dashed) scores, {which} embedder")
            rep.image(f"roc_det_{which}", plot_roc_det(series, title=which), f"ROC and DET, {which} embedder")
    rep.table(dist_rows)
    comps = [{"comparison": k, "kind": kind, **(v.get(kind) or {})}
             for k, v in view.metrics.get("comparisons", {}).items() for kind in ("mated", "nonmated")]
    if comps and view.diffusion:
        rep.text("Diffusion variations (diffusion_vs_gan: the exported selection; generated_vs_gan: every "
                 "generated image with a face, before selection) against GAN-only variations of the same identities "
                 "(GANDiffFace's claim: diffusion adds intra-class variation, i.e. lower and wider mated scores).")
        rep.table(comps)
    ref_rows = [{"item": k, "kind": kind, **((r.get("reference") or {}).get("distances", {}).get(kind) or {})}
                for k, r in items.items() if r.get("reference") for kind in ("mated", "nonmated")]
    if ref_rows:
        rep.text(f"Distances to the reference distribution {view.reference_path}.")
        rep.table(ref_rows)


def fairness(rep: Report, view: ReportView) -> None:
    from gandiff.evaluation import fairness as F

    items = view.items
    fair_rows = F.summary_rows(items)
    fair_images = []
    for key, attr, d, rfw in F.fairness_items(items):
        groups = d.get("groups") or {}
        # bars only for numbers: a "not measurable" rate is in the table, not drawn as 0
        rep_vals = {name: {g: v[k] for g, v in groups.items() if F.is_measurable(v[k]) and v[k] is not None}
                    for name, k in (("FMR", "fmr"), ("FNMR", "fnmr"))}
        if rfw.get("groups"):
            rep_vals["1 - accuracy"] = {g: 1 - a for g, a in rfw["groups"].items()}
        rep_vals = {k: v for k, v in rep_vals.items() if v}
        if rep_vals:
            fair_images.append((f"fairness_{key}_{attr}", plot_group_bars(
                rep_vals, f"{key}: {attr} (threshold at global FMR {d.get('global_fmr')})", "rate"),
                f"Per-group error rates, {key}, {attr}"))
    if fair_rows:
        rep.heading("Fairness")
        first = next(d for _, _, d, _ in F.fairness_items(items))
        rep.text(F.conventions(first.get("threshold_rule", "max_tmr"), first.get("confidence", F.CONFIDENCE),
                               first.get("global_fmr", 1e-3)))
        rep.table(fair_rows)
        rep.table(F.group_rows(items))
    for name, png, caption in fair_images:
        rep.image(name, png, caption)


def benchmark_row(key: str, r: dict[str, Any]) -> dict[str, Any]:
    """A verification benchmark's row: pairs, 10-fold accuracy, VAL@FAR and any TAR@FAR the item measured."""
    b = r.get("benchmark") or {}
    return {"benchmark": key, "status": r.get("status"), "pairs": b.get("num_pairs", b.get("pairs")),
            "accuracy": b.get("accuracy_mean"), "std": b.get("accuracy_std"), "VAL@FAR": b.get("val_mean"),
            **{k: v for k, v in b.items() if k.startswith("tar@far")}, "note": r.get("reason")}


def benchmarks(rep: Report, view: ReportView) -> None:
    rows = []
    for key, r in view.items.items():
        ev = evaluator_for(key)
        # an item of an evaluator no longer registered is still shown if it holds benchmark numbers
        if (ev.section == "benchmarks") if ev is not None else "benchmark" in r:
            rows.append((ev.row if ev is not None and ev.row is not None else benchmark_row)(key, r))
    rep.heading("Benchmarks (trained recognizer)")
    if rows:
        rep.table(rows)
    else:
        rep.text("No benchmark was configured or the recognizer is missing.")


def field(rep: Report, view: ReportView) -> None:
    from gandiff.evaluation.field_table import add_field_sections, run_measures

    made = "diffusion" if view.diffusion else "GAN only"
    add_field_sections(rep, [(f"this run ({made})", view.items)], run_measures(view.items, made))


register(Section("distributions", distributions))
register(Section("fairness", fairness))
register(Section("benchmarks", benchmarks))
register(Section("field", field))
