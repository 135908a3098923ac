"""The built-in evaluators (registered on import, in item order; ``gandiff.evaluation.registry``).

- ``export-<embedder>``, ``gan-<embedder>``, ``generate-face``: mated / non-mated score distributions of the
  exported dataset, of the identities stage's GAN images, and of every generated image in which the curate
  stage found a face (its own ``face.embedder`` embeddings, before selection), each with the analyses of
  ``gandiff.evaluation.analyses``; ``comparisons`` sets the diffusion side against the GAN side;
- ``heldout-recognizer``: the trained recognizer on the train stage's held-out pairs (``heldout.bin``);
- ``bin-<name>``: each verification ``.bin``, ``lfw-pairs``: LFW ``pairs.txt`` over raw photos (detected and
  aligned here), ``ijb-<target>``: IJB-B/C 1:1 — all with the insightface protocols.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.artifacts import read_json
from gandiff.evaluation.context import EvalContext
from gandiff.evaluation.registry import DatasetScores, Evaluator, analyses, register
from gandiff.pipeline import StageError

log = logging.getLogger(__name__)

Result = tuple[dict[str, Any], list[Path]]


# --------------------------------------------------------------------------------------------- distributions


def measure_distribution(ev: EvalContext, key: str) -> Result:
    """Pair scores of one dataset (``<kind>-<embedder>``), their histogram, and every registered analysis."""
    from gandiff.datasets.readers import EmptyDatasetError
    from gandiff.evaluation.distributions import ScoreHistogram, pair_scores

    kind, _, which = key.partition("-")
    b = ev.bench
    embedder, emb_name = ev.embedder(which)
    row: dict[str, Any] = {"key": key, "dataset": kind, "embedder": emb_name}
    try:
        emb, labels, ids, attrs, facts = ev.embed_source(kind, embedder)
    except EmptyDatasetError as e:
        log.warning("%s: %s", key, e)
        return {**row, "status": "empty", "reason": str(e), **_scoreless(ev, key, kind, emb_name)}, []
    row.update(facts)
    if len(emb) < 2:
        return {**row, "status": "empty", "reason": f"{len(emb)} image(s): no pairs to score",
                **_scoreless(ev, key, kind, emb_name)}, []
    ps = pair_scores(emb, labels, max_pairs=b.max_pairs, seed=ev.seed)
    meta = {"dataset": ev.ctx.portable(facts["dataset"]), "embedder": emb_name, **ps.describe()}
    hist = ScoreHistogram.from_scores(ps.mated, ps.nonmated, bins=b.histogram_bins, metadata=meta)
    files = [hist.save(ev.dir / "histograms" / f"{key}.json"), ev.npz(key, mated=ps.mated, nonmated=ps.nonmated)]
    row.update({"status": "ok", **ps.describe(), "summary": hist.stats})
    data = DatasetScores(key, kind, emb, labels, ids, attrs, ps, emb_name)
    for a in analyses():
        row[a.field] = a.compute(ev, data)
    return row, files


def _scoreless(ev: EvalContext, key: str, kind: str, emb_name: str) -> dict[str, Any]:
    """The fields of the analyses that need no scores (``Analysis.needs_scores`` False), for an empty dataset."""
    data = DatasetScores(key, kind, np.zeros((0, 1)), np.zeros(0, int), [], {}, None, emb_name)
    out = {a.field: a.compute(ev, data) for a in analyses() if not a.needs_scores}
    return {k: v for k, v in out.items() if v is not None}


COMPARISONS = tuple((f"diffusion_vs_gan/{w}", f"export-{w}", f"gan-{w}") for w in ("face", "recognizer")) + (
    ("generated_vs_gan/face", "generate-face", "gan-face"),)


def compare_to_gan(stage_dir: Path, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Diffusion variations (the export; every generated face) against the GAN variations of the same identities."""
    from gandiff.evaluation.distributions import compare_samples

    out: dict[str, Any] = {}
    for name, ka, kg in COMPARISONS:
        a, g = rows.get(ka), rows.get(kg)
        if a and g and a.get("status") == "ok" and g.get("status") == "ok":
            sa = np.load(stage_dir / "scores" / f"{ka}.npz")
            sg = np.load(stage_dir / "scores" / f"{kg}.npz")
            out[name] = {"mated": compare_samples(sa["mated"], sg["mated"]),
                         "nonmated": compare_samples(sa["nonmated"], sg["nonmated"])}
    return out


# --------------------------------------------------------------------------------------------- verification sets


def verification_row(ev: EvalContext, key: str, source: str, emb: np.ndarray, issame: np.ndarray, emb_name: str,
                     **extra: Any) -> Result:
    """The insightface 10-fold protocol over pair embeddings (rows 2i, 2i+1), and its pair scores."""
    from gandiff.evaluation.verification import evaluate_verification, pair_distances, scalar_metrics

    b = ev.bench
    res = evaluate_verification(emb, issame, nfolds=b.num_folds, far_target=b.far_target)
    scores = 1.0 - pair_distances(emb) / 2.0  # cosine
    files = [ev.npz(key, scores=scores.astype(np.float32), issame=issame, tpr=res["tpr"], fpr=res["fpr"])]
    return {"key": key, "status": "ok", "dataset": source, "embedder": emb_name,
            "benchmark": scalar_metrics(res), "fold_accuracy": res["fold_accuracy"].tolist(), **extra}, files


def verification_set(ev: EvalContext, key: str, path: Path, embedder: Any, emb_name: str) -> Result:
    from gandiff.evaluation.verification import embed_images, load_bin

    images, issame = load_bin(path)
    emb = embed_images(embedder.embed, images, batch_size=ev.bench.batch_size, flip=False, progress=ev.ctx.progress)
    return verification_row(ev, key, str(path), emb, issame, emb_name)


def measure_heldout(ev: EvalContext, key: str) -> Result:
    embedder, name = ev.recognizer()
    path = ev.ctx.input_dir("train") / "heldout.bin"
    metrics_path = ev.ctx.input_dir("train") / "metrics.json"
    if not path.is_file() and metrics_path.is_file():
        # The train stage validated on its held-out pairs but kept no images: report its own numbers.
        val = [r for r in read_json(metrics_path).get("val", []) if "heldout/accuracy_mean" in r]
        if val:
            bm = {k.split("/", 1)[1]: v for k, v in val[-1].items() if k.startswith("heldout/")}
            return {"key": key, "status": "ok", "embedder": name, "benchmark": bm,
                    "dataset": f"{metrics_path} (validation of the train stage, step {val[-1].get('step')})"}, []
    if not path.is_file():
        return {"key": key, "status": "missing", "embedder": name,
                "reason": f"{path.name} not written by the train stage (trainer.heldout=none, or too few "
                          "images per identity)"}, []
    return verification_set(ev, key, path, embedder, name)


def measure_bin(ev: EvalContext, key: str) -> Result:
    name = key.partition("-")[2]
    embedder, emb_name = ev.recognizer()
    bench = ev.bench
    path = Path(bench.bin_paths()[name])
    where = (f"benchmark.verification.{name}" if name in bench.verification
             else f"benchmark.names[{name}] under benchmark.root={bench.root}")
    try:
        return verification_set(ev, key, path, embedder, emb_name)
    except (FileNotFoundError, ValueError) as e:  # missing, or not an insightface verification .bin
        raise StageError(f"{where}: {e} (give the path of an insightface verification .bin, e.g. lfw.bin "
                         "from faces_webface_112x112)") from None


def measure_lfw_pairs(ev: EvalContext, key: str) -> Result:
    from gandiff.evaluation.verification import embed_images, load_pair_images, read_lfw_pairs

    b = ev.bench
    embedder, name = ev.recognizer()
    detector = ev.detector()
    if detector is None:
        raise StageError("benchmark.lfw_pairs needs face.detector to align the photos")
    pairs, issame = read_lfw_pairs(b.lfw_pairs["pairs"], b.lfw_pairs["root"], b.lfw_pairs.get("ext", "jpg"))
    images, missed = load_pair_images(pairs, detector, progress=ev.ctx.progress)
    emb = embed_images(embedder.embed, images, batch_size=b.batch_size, flip=False, progress=ev.ctx.progress)
    return verification_row(ev, key, str(b.lfw_pairs["pairs"]), emb, issame, name, undetected=missed)


def measure_ijb(ev: EvalContext, key: str) -> Result:
    from gandiff.evaluation.ijb import evaluate_ijb

    b = ev.bench
    embedder, name = ev.recognizer()
    # insightface mode N1 keeps raw feature norms; the ONNX embedder's unnormalised output is ``_raw``.
    embed_raw = getattr(embedder, "_raw", None) or embedder.embed
    try:
        res = evaluate_ijb(b.ijb["root"], str(b.ijb["target"]), embed_raw, batch_size=b.batch_size, flip=b.flip,
                           progress=ev.ctx.progress)
    except FileNotFoundError as e:
        raise StageError(f"benchmark.ijb.root={b.ijb['root']}: {e} (expected insightface's IJB layout: "
                         f"meta/{str(b.ijb['target']).lower()}_*.txt and loose_crop/)") from None
    files = [ev.npz(key, scores=res.scores, labels=res.labels)]
    return {"key": key, "status": "ok", "dataset": str(b.ijb["root"]), "embedder": name,
            "benchmark": res.summary()}, files


# --------------------------------------------------------------------------------------------- registration


def _recognizer(b: Any) -> bool:
    return "recognizer" in b.embedders


register(Evaluator("export", lambda b: [f"export-{e}" for e in b.embedders], measure_distribution,
                   config="benchmark.embedders", section="distributions"))
register(Evaluator("gan", lambda b: [f"gan-{e}" for e in b.embedders] if b.gan_variations else [],
                   measure_distribution, config="benchmark.gan_variations", section="distributions",
                   combine=compare_to_gan))
# the curate stage's embeddings are face.embedder's
register(Evaluator("generate", lambda b: ["generate-face"] if "face" in b.embedders else [], measure_distribution,
                   config="benchmark.embedders", section="distributions"))
register(Evaluator("heldout", lambda b: ["heldout-recognizer"] if _recognizer(b) else [], measure_heldout,
                   config="benchmark.embedders"))
register(Evaluator("bin", lambda b: [f"bin-{n}" for n in b.bin_paths()] if _recognizer(b) else [], measure_bin,
                   config="benchmark.verification, benchmark.root + benchmark.names"))
register(Evaluator("lfw", lambda b: ["lfw-pairs"] if _recognizer(b) and b.lfw_pairs is not None else [],
                   measure_lfw_pairs, config="benchmark.lfw_pairs"))
register(Evaluator("ijb", lambda b: [f"ijb-{str(b.ijb['target']).lower()}"] if _recognizer(b) and b.ijb is not None
                   else [], measure_ijb, config="benchmark.ijb"))
