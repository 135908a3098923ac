"""The built-in analyses of a score distribution (each fills one field of every ``export`` / ``gan`` /
``generate`` item; ``gandiff.evaluation.registry``): 10-fold accuracy on balanced pairs, distances to the
reference histogram (``benchmark.reference_distribution``), fairness over the identities' attribute groups,
the variation / separability measures, and the export's leakage audit.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from gandiff.artifacts import read_json
from gandiff.evaluation.context import EvalContext
from gandiff.evaluation.registry import Analysis, DatasetScores, register

log = logging.getLogger(__name__)


def balanced_accuracy(ev: EvalContext, d: DatasetScores) -> dict[str, Any] | None:
    from gandiff.evaluation.fairness import group_accuracy

    ps = d.pairs
    if not (len(ps.mated) and len(ps.nonmated)):
        return None
    return group_accuracy(ps.mated, ps.nonmated, nfolds=ev.bench.num_folds, seed=ev.seed)


def reference_distances(ev: EvalContext, d: DatasetScores) -> dict[str, Any] | None:
    """The reference histogram's facts and the distances of these scores to it (None when none is configured)."""
    from gandiff.evaluation.distributions import ScoreHistogram, compare_to_reference

    if not ev.bench.reference_distribution:
        return None
    path = str(ev.bench.reference_distribution)
    if "reference" not in ev.cache:
        ev.cache["reference"] = ScoreHistogram.load(path)
    ref = ev.cache["reference"]
    ref_emb = ref.metadata.get("embedder")
    if ref_emb != d.embedder:
        log.warning("reference %s was measured with %r, these scores with %r: distances compare different "
                    "embedders", path, ref_emb, d.embedder)
    return {"path": path, "embedder": ref_emb, "same_embedder": ref_emb == d.embedder,
            "dataset": ref.metadata.get("dataset"), "stats": ref.stats,
            "distances": compare_to_reference(d.pairs.mated, d.pairs.nonmated, ref)}


def group_fairness(ev: EvalContext, d: DatasetScores) -> dict[str, Any]:
    """Per attribute: RFW-style group accuracy and the differentials at one global-FMR threshold."""
    from gandiff.evaluation.distributions import pair_scores
    from gandiff.evaluation.fairness import differential_report, group_accuracy, rfw_summary

    b = ev.bench
    emb, labels, ids, attrs = d.embeddings, d.labels, d.ids, d.attributes
    out: dict[str, Any] = {}
    for attr in b.group_attributes:
        group_of = np.array([str(attrs.get(ids[y], {}).get(attr)) if attrs.get(ids[y], {}).get(attr) is not None
                             else "" for y in labels])
        groups = sorted(g for g in set(group_of.tolist()) if g)
        if len(groups) < 2:
            continue
        mated, nonmated, acc, acc_pairs = {}, {}, {}, {}
        for g in groups:
            sel = group_of == g
            ps = pair_scores(emb[sel], labels[sel], max_pairs=b.max_pairs, seed=ev.seed)
            mated[g], nonmated[g] = ps.mated, ps.nonmated
            a = group_accuracy(ps.mated, ps.nonmated, nfolds=b.num_folds, seed=ev.seed)
            if a["accuracy"] is not None:
                acc[g], acc_pairs[g] = a["accuracy"], a["pairs"]
        out[attr] = {"rfw": rfw_summary(acc, acc_pairs, confidence=b.fairness_confidence),
                     "differentials": differential_report(mated, nonmated, global_fmr=b.fairness_fmr,
                                                          threshold=b.fairness_threshold,
                                                          confidence=b.fairness_confidence),
                     "images": {g: int((group_of == g).sum()) for g in groups}}
    return out


def variation_measures(ev: EvalContext, d: DatasetScores) -> dict[str, Any]:
    """Variation / separability measures (``gandiff.evaluation.measures``), with per-image pose and attributes
    where the dataset stores them."""
    from gandiff.evaluation.measures import dataset_measures

    meta = ev.cache.get(f"image_meta/{d.kind}")
    return dataset_measures(d.embeddings, d.labels, meta if meta is not None and len(meta) == len(d.labels) else None)


def leakage_audit(ev: EvalContext, d: DatasetScores) -> dict[str, Any] | None:
    """The export's leakage audit (``leakage.json``; None elsewhere, or when curation.leakage_gallery was not set)."""
    leak = ev.ctx.input_dir("export") / "leakage.json"
    if d.kind != "export" or not leak.is_file():
        return None
    full = read_json(leak)
    return {k: full.get(k) for k in ("threshold", "images_checked", "images_flagged", "identities_flagged",
                                     "max_similarity")}


register(Analysis("verification", balanced_accuracy, section="distributions"))
register(Analysis("reference", reference_distances, section="distributions"))
register(Analysis("fairness", group_fairness, section="fairness"))
register(Analysis("measures", variation_measures, section="field"))
register(Analysis("leakage", leakage_audit, section="field"))
