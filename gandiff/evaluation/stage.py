"""The ``evaluate`` stage: benchmark accuracy of the trained recognizer and score distributions of the data.

What it measures (each an item, so a killed run resumes and a shard can take some):

- ``export-<embedder>``: mated / non-mated score distributions of the exported dataset (GANDiffFace's
  validation, Sec. 4), 10-fold accuracy on balanced pairs of it, distances to the configured reference
  histogram (``benchmark.reference_distribution``), and fairness over the identities' attribute groups;
- ``gan-<embedder>``: the same for the identities stage's GAN images (anchor + latent-edit variations), so
  the report can set GAN-only variation against the diffusion variation the paper argues for;
- ``generate-face``: the same for ALL generated (diffusion) images in which the curate stage found a face,
  before selection, from the curate stage's own embeddings (``scores.parquet`` rows with ``status == "ok"``,
  ``embeddings.npy`` row ``embedding_row``; computed with ``face.embedder``, so only the ``face`` embedder):
  the diffusion side of GAN-vs-diffusion even when selection keeps nothing (the export is then empty);
- ``heldout-recognizer``: the trained recognizer on the held-out pairs the train stage wrote
  (``heldout.bin``), with the insightface 10-fold protocol;
- ``bin-<name>``: each configured verification ``.bin`` (LFW, CFP-FP, AgeDB-30 ...), ``lfw-pairs``: LFW
  ``pairs.txt`` over raw photos (detected and aligned here), ``ijb-<target>``: IJB-B/C 1:1.

Embedders: ``face`` is the face toolkit's embedder (``face.embedder``: SFace offline), ``recognizer`` is the
network the train stage exported (``train/<key>/backbone.onnx``, insightface ONNX layout, flip-fused as in
insightface's tests when ``benchmark.flip``).

Upstream: ``identities`` (GAN images and attributes), ``curate`` (scores and embeddings of every generated
image, for ``generate-face``), ``export`` (the dataset) and ``train`` (the recognizer).

An empty export (the demo's untrained diffusion model makes noise that curation rejects) is an outcome,
not an error: its items are recorded with ``status: "empty"`` and the reason, ``metrics.json`` says so at
the top, and everything that does not need the dataset (GAN distributions, benchmarks) is still measured.

Outputs: ``metrics.json`` (everything, nested), ``metrics.parquet`` (one flat row per item),
``scores/<item>.npz`` (mated / non-mated scores, or pair scores of a benchmark), ``histograms/<item>.json``
(compact ``ScoreHistogram`` files, usable later as a reference).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.artifacts import atomic_path, atomic_write_json, read_json, read_table, write_table
from gandiff.pipeline import Stage, StageContext, StageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FLAT_NUMBERS = ("eer", "d_prime", "fnmr@fmr=0.01", "fnmr@fmr=0.001", "fnmr@fmr=0.0001", "mated_mean", "mated_std",
                "nonmated_mean", "nonmated_std")


class RecognizerMissing(RuntimeError):
    """The train stage left no exported network (e.g. it had no data to train on)."""


def _plain(node: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


class EvaluateStage(Stage):
    name = "evaluate"
    upstream = ("identities", "curate", "export", "train")
    config_keys = ("benchmark", "face")
    ignore_keys = ("benchmark.batch_size", "face.batch_size", "face.match_threshold")

    # ----------------------------------------------------------------------------------------- items

    def items(self, ctx: StageContext) -> list[str]:
        from gandiff.config import validate

        b = validate(ctx.cfg).benchmark
        embedders = list(b.embedders)
        keys = [f"export-{e}" for e in embedders]
        if b.gan_variations:
            keys += [f"gan-{e}" for e in embedders]
        if "face" in embedders:  # the curate stage's embeddings are face.embedder's
            keys.append("generate-face")
        if "recognizer" in embedders:
            keys.append("heldout-recognizer")
            keys += [f"bin-{name}" for name in b.bin_paths()]
            if b.lfw_pairs is not None:
                keys.append("lfw-pairs")
            if b.ijb is not None:
                keys.append(f"ijb-{str(b.ijb['target']).lower()}")
        return keys

    def process(self, ctx: StageContext, keys: list[str]) -> None:
        self._cache: dict[str, Any] = {}
        for key in keys:
            kind, _, which = key.partition("-")
            try:
                if kind in ("export", "gan", "generate"):
                    row, files = self._distribution(ctx, key, kind, which)
                elif kind == "heldout":
                    row, files = self._heldout(ctx, key)
                elif kind == "bin":
                    row, files = self._bin(ctx, key, which)
                elif kind == "lfw":
                    row, files = self._lfw(ctx, key)
                elif kind == "ijb":
                    row, files = self._ijb(ctx, key)
                else:  # pragma: no cover - items() makes only the kinds above
                    raise StageError(f"evaluate: unknown item {key!r}")
            except RecognizerMissing as e:
                log.warning("%s: skipped: %s", key, e)
                row, files = {"key": key, "status": "skipped", "reason": str(e)}, []
            # Inputs named by stage and key, not by where this run is: the same results give the same bytes.
            ctx.items.put(key, ctx.portable(row), files)

    # ----------------------------------------------------------------------------------------- models

    def _bench(self, ctx: StageContext) -> Any:
        if "bench" not in self._cache:
            from gandiff.config import validate

            self._cache["bench"] = validate(ctx.cfg).benchmark
        return self._cache["bench"]

    def _device(self, ctx: StageContext) -> str:
        return str(ctx.cfg.get("device", "auto"))

    def _face_embedder(self, ctx: StageContext) -> tuple[Any, str]:
        if "face" not in self._cache:
            from hydra.utils import instantiate

            spec = _plain(ctx.cfg.face.embedder)
            if spec is None:
                raise StageError("face.embedder is null: the evaluate stage needs an embedder (see conf/face/)")
            name = f"{spec['_target_'].rsplit('.', 1)[-1]}:{Path(str(spec.get('model_path', ''))).name}"
            self._cache["face"] = (instantiate(spec, device=self._device(ctx)), name)
        return self._cache["face"]

    def _detector(self, ctx: StageContext) -> Any:
        if "detector" not in self._cache:
            from hydra.utils import instantiate

            spec = _plain(ctx.cfg.face.detector)
            self._cache["detector"] = None if spec is None else instantiate(spec, device=self._device(ctx))
        return self._cache["detector"]

    def _recognizer(self, ctx: StageContext) -> tuple[Any, str]:
        """The trained network as an ``OnnxEmbedder`` (insightface layout: RGB, (x - 127.5) / 127.5)."""
        if "recognizer" not in self._cache:
            train = ctx.input_dir("train")
            onnx = train / "backbone.onnx"
            if not onnx.is_file():
                reason = "no backbone.onnx"
                if (train / "metrics.json").is_file():
                    m = read_json(train / "metrics.json")
                    reason = str(m.get("reason") or m.get("status") or reason)
                self._cache["recognizer"] = RecognizerMissing(f"the train stage exported no recognizer in {train} "
                                                              f"({reason})")
            else:
                from gandiff.face.embedders import OnnxEmbedder

                emb = OnnxEmbedder(model_path=onnx, flip=self._bench(ctx).flip, device=self._device(ctx),
                                   batch_size=self._bench(ctx).batch_size, config_key=f"{onnx}")
                self._cache["recognizer"] = (emb, f"recognizer:train/{train.name}")
        got = self._cache["recognizer"]
        if isinstance(got, Exception):
            raise got
        return got

    def _embedder(self, ctx: StageContext, which: str) -> tuple[Any, str]:
        return self._face_embedder(ctx) if which == "face" else self._recognizer(ctx)

    # ----------------------------------------------------------------------------------------- data

    def _identity_table(self, ctx: StageContext) -> tuple[list[str], dict[str, dict]]:
        """(identity ids in table order, attributes per id) from the identities stage's table."""
        if "identity_table" not in self._cache:
            rows = read_table(ctx.input_dir("identities") / "identities.parquet")
            self._cache["identity_table"] = ([str(r["id"]) for r in rows],
                                             {str(r["id"]): {**(r.get("attributes") or {}), **r} for r in rows})
        return self._cache["identity_table"]

    def _generated_embeddings(self, ctx: StageContext) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The curate stage's embeddings of every generated image with a face (before selection):
        (embeddings (N, D) L2-normalised, labels (N,) indexing the identity table, facts)."""
        from gandiff.datasets.readers import EmptyDatasetError

        folder = ctx.input_dir("curate")
        rows = read_table(folder / "scores.parquet")
        emb_path = folder / "embeddings.npy"
        emb = np.load(emb_path, allow_pickle=False) if rows else np.zeros((0, 0), np.float32)
        ids, _ = self._identity_table(ctx)
        pos = {i: k for k, i in enumerate(ids)}
        ok = [r for r in rows if r.get("status") == "ok"]
        unknown = sorted({str(r["id"]) for r in ok} - set(pos))
        if unknown:
            raise StageError(f"{folder / 'scores.parquet'}: identities {unknown[:5]} are not in the identities "
                             "stage's table (curate was built from another identities run)")
        if not ok:
            raise EmptyDatasetError(f"{folder / 'scores.parquet'}: none of the {len(rows)} generated images had a "
                                    "face")
        at = np.asarray([int(r["embedding_row"]) for r in ok], np.int64)
        if emb.ndim != 2 or len(emb) != len(rows):
            raise StageError(f"{emb_path}: shape {emb.shape} does not match the {len(rows)} rows of scores.parquet")
        e = emb[at].astype(np.float32)
        e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        labels = np.asarray([pos[str(r["id"])] for r in ok], np.int64)
        self._cache["image_meta/generate"] = ok  # per-image pose and attributes, for the dataset measures
        return e, labels, {"dataset": str(folder), "generated": len(rows), "without_face": len(rows) - len(ok)}

    def _gan_faces(self, ctx: StageContext) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, dict], int]:
        """Identities stage images aligned to 112x112: (faces (N,112,112,3), labels (N,), ids, attributes, undetected)."""
        if "gan" in self._cache:
            return self._cache["gan"]
        import cv2

        from gandiff.face.align import align_face
        from gandiff.face.images import read_image

        folder = ctx.input_dir("identities")
        ids, attrs = self._identity_table(ctx)
        detector = self._detector(ctx)
        faces, labels, missed = [], [], 0
        for label, ident in enumerate(ids):
            d = folder / "images" / ident
            paths = sorted(p for p in d.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if d.is_dir() else []
            for p in paths:
                img = read_image(p)
                dets = detector.detect(img) if detector is not None else []
                if dets:
                    best = max(dets, key=lambda x: x.score)
                    faces.append(align_face(img, best.landmarks, size=112))
                else:  # GAN samples are face-centred crops: use the whole image
                    faces.append(cv2.resize(img, (112, 112), interpolation=cv2.INTER_CUBIC))
                    missed += 1
                labels.append(label)
        if missed:
            log.info("GAN images: no face detected in %d of %d; the whole image was used", missed, len(faces))
        out = (np.stack(faces) if faces else np.zeros((0, 112, 112, 3), np.uint8), np.asarray(labels, np.int64),
               ids, attrs, missed)
        self._cache["gan"] = out
        return out

    def _embed_source(self, ctx: StageContext, kind: str, embedder: Any
                      ) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, dict], dict[str, Any]]:
        """(embeddings, labels, identity ids, identity attributes, facts) of the export, the GAN images or the
        generated images (``generate``: the curate stage's embeddings, ``embedder`` is not run)."""
        from gandiff.evaluation.distributions import embed_dataset
        from gandiff.evaluation.verification import embed_images

        b = self._bench(ctx)
        if kind == "generate":
            emb, labels, facts = self._generated_embeddings(ctx)
            if b.max_images is not None and len(emb) > int(b.max_images):
                keep = np.sort(np.random.default_rng(int(ctx.cfg.seed)).choice(len(emb), int(b.max_images), False))
                emb, labels = emb[keep], labels[keep]
                self._cache["image_meta/generate"] = [self._cache["image_meta/generate"][i] for i in keep]
            ids, attrs = self._identity_table(ctx)
            return emb, labels, ids, attrs, facts
        if kind == "gan":
            faces, labels, ids, attrs, missed = self._gan_faces(ctx)
            if b.max_images is not None and len(faces) > int(b.max_images):
                keep = np.sort(np.random.default_rng(int(ctx.cfg.seed)).choice(len(faces), int(b.max_images), False))
                faces, labels = faces[keep], labels[keep]
            emb = embed_images(embedder.embed, faces, batch_size=b.batch_size, flip=False,
                               progress=ctx.progress).astype(np.float32)
            return emb, labels, ids, attrs, {"dataset": str(ctx.input_dir("identities")), "undetected": missed}
        from gandiff.datasets.readers import open_dataset

        ds = open_dataset(ctx.input_dir("export"))  # EmptyDatasetError for an empty export
        emb, labels, idx = embed_dataset(ds, embedder.embed, batch_size=b.batch_size, max_images=b.max_images,
                                         seed=int(ctx.cfg.seed), progress=ctx.progress)
        self._cache["image_meta/export"] = [ds.metadata(int(i)) for i in idx]  # pose, attributes (if stored)
        return emb, labels, list(ds.identities), dict(ds.identity_attributes), {"dataset": str(ds.path),
                                                                               "format": ds.format}

    # ----------------------------------------------------------------------------------------- items

    def _distribution(self, ctx: StageContext, key: str, kind: str, which: str) -> tuple[dict, list[Path]]:
        from gandiff.datasets.readers import EmptyDatasetError
        from gandiff.evaluation.distributions import ScoreHistogram, compare_to_reference, pair_scores
        from gandiff.evaluation.fairness import group_accuracy

        b = self._bench(ctx)
        embedder, emb_name = self._embedder(ctx, which)
        row: dict[str, Any] = {"key": key, "dataset": kind, "embedder": emb_name}
        try:
            emb, labels, ids, attrs, facts = self._embed_source(ctx, kind, embedder)
        except EmptyDatasetError as e:
            log.warning("%s: %s", key, e)
            return {**row, "status": "empty", "reason": str(e)}, []
        row.update(facts)
        if len(emb) < 2:
            return {**row, "status": "empty", "reason": f"{len(emb)} image(s): no pairs to score"}, []
        seed = int(ctx.cfg.seed)
        ps = pair_scores(emb, labels, max_pairs=b.max_pairs, seed=seed)
        meta = {"dataset": ctx.portable(facts["dataset"]), "embedder": emb_name, **ps.describe()}
        hist = ScoreHistogram.from_scores(ps.mated, ps.nonmated, bins=b.histogram_bins, metadata=meta)
        files = [hist.save(ctx.dir / "histograms" / f"{key}.json"),
                 _npz(ctx.dir / "scores" / f"{key}.npz", mated=ps.mated, nonmated=ps.nonmated)]
        row.update({"status": "ok", **ps.describe(), "summary": hist.stats})
        row["verification"] = group_accuracy(ps.mated, ps.nonmated, nfolds=b.num_folds, seed=seed) if len(
            ps.mated) and len(ps.nonmated) else None
        row["reference"] = self._reference(ctx, ps, emb_name) if b.reference_distribution else None
        row["fairness"] = self._fairness(ctx, emb, labels, ids, attrs)
        row["measures"], row["leakage"] = self._measures(ctx, kind, emb, labels)
        if row["reference"] is not None:
            row["reference"]["distances"] = compare_to_reference(ps.mated, ps.nonmated, self._cache["reference"])
        return row, files

    def _measures(self, ctx: StageContext, kind: str, emb: np.ndarray, labels: np.ndarray
                  ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Variation / separability measures (``gandiff.evaluation.measures``) and, for the export, its
        leakage audit (``leakage.json``; None when ``curation.leakage_gallery`` was not set)."""
        from gandiff.evaluation.measures import dataset_measures

        meta = self._cache.get(f"image_meta/{kind}")
        measures = dataset_measures(emb, labels, meta if meta is not None and len(meta) == len(labels) else None)
        leak = ctx.input_dir("export") / "leakage.json"
        leakage = None
        if kind == "export" and leak.is_file():
            full = read_json(leak)
            leakage = {k: full.get(k) for k in ("threshold", "images_checked", "images_flagged", "identities_flagged",
                                                 "max_similarity")}
        return measures, leakage

    def _reference(self, ctx: StageContext, ps: Any, emb_name: str) -> dict[str, Any]:
        from gandiff.evaluation.distributions import ScoreHistogram

        path = str(self._bench(ctx).reference_distribution)
        if "reference" not in self._cache:
            self._cache["reference"] = ScoreHistogram.load(path)
        ref = self._cache["reference"]
        ref_emb = ref.metadata.get("embedder")
        if ref_emb != emb_name:
            log.warning("reference %s was measured with %r, these scores with %r: distances compare different "
                        "embedders", path, ref_emb, emb_name)
        return {"path": path, "embedder": ref_emb, "same_embedder": ref_emb == emb_name,
                "dataset": ref.metadata.get("dataset"), "stats": ref.stats}

    def _fairness(self, ctx: StageContext, emb: np.ndarray, labels: np.ndarray, ids: list[str],
                  attrs: dict[str, dict]) -> dict[str, Any]:
        """Per attribute: RFW-style group accuracy and the differentials at one global-FMR threshold."""
        from gandiff.evaluation.distributions import pair_scores
        from gandiff.evaluation.fairness import differential_report, group_accuracy, rfw_summary

        b = self._bench(ctx)
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
                ps = pair_scores(emb[sel], labels[sel], max_pairs=b.max_pairs, seed=int(ctx.cfg.seed))
                mated[g], nonmated[g] = ps.mated, ps.nonmated
                a = group_accuracy(ps.mated, ps.nonmated, nfolds=b.num_folds, seed=int(ctx.cfg.seed))
                if a["accuracy"] is not None:
                    acc[g], acc_pairs[g] = a["accuracy"], a["pairs"]
            out[attr] = {"rfw": rfw_summary(acc, acc_pairs, confidence=b.fairness_confidence),
                         "differentials": differential_report(mated, nonmated, global_fmr=b.fairness_fmr,
                                                              threshold=b.fairness_threshold,
                                                              confidence=b.fairness_confidence),
                         "images": {g: int((group_of == g).sum()) for g in groups}}
        return out

    def _heldout(self, ctx: StageContext, key: str) -> tuple[dict, list[Path]]:
        embedder, name = self._recognizer(ctx)
        path = ctx.input_dir("train") / "heldout.bin"
        metrics_path = ctx.input_dir("train") / "metrics.json"
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
        return self._verification_set(ctx, key, path, embedder, name)

    def _bin(self, ctx: StageContext, key: str, name: str) -> tuple[dict, list[Path]]:
        embedder, emb_name = self._recognizer(ctx)
        bench = self._bench(ctx)
        path = Path(bench.bin_paths()[name])
        where = (f"benchmark.verification.{name}" if name in bench.verification
                 else f"benchmark.names[{name}] under benchmark.root={bench.root}")
        try:
            return self._verification_set(ctx, key, path, embedder, emb_name)
        except (FileNotFoundError, ValueError) as e:  # missing, or not an insightface verification .bin
            raise StageError(f"{where}: {e} (give the path of an insightface verification .bin, e.g. lfw.bin "
                             "from faces_webface_112x112)") from None

    def _verification_set(self, ctx: StageContext, key: str, path: Path, embedder: Any, emb_name: str
                          ) -> tuple[dict, list[Path]]:
        from gandiff.evaluation.verification import embed_images, load_bin

        b = self._bench(ctx)
        images, issame = load_bin(path)
        emb = embed_images(embedder.embed, images, batch_size=b.batch_size, flip=False, progress=ctx.progress)
        return self._verification_row(ctx, key, str(path), emb, issame, emb_name)

    def _verification_row(self, ctx: StageContext, key: str, source: str, emb: np.ndarray, issame: np.ndarray,
                          emb_name: str, **extra: Any) -> tuple[dict, list[Path]]:
        from gandiff.evaluation.verification import evaluate_verification, pair_distances, scalar_metrics

        b = self._bench(ctx)
        res = evaluate_verification(emb, issame, nfolds=b.num_folds, far_target=b.far_target)
        scores = 1.0 - pair_distances(emb) / 2.0  # cosine
        files = [_npz(ctx.dir / "scores" / f"{key}.npz", scores=scores.astype(np.float32), issame=issame,
                      tpr=res["tpr"], fpr=res["fpr"])]
        return {"key": key, "status": "ok", "dataset": source, "embedder": emb_name,
                "benchmark": scalar_metrics(res), "fold_accuracy": res["fold_accuracy"].tolist(), **extra}, files

    def _lfw(self, ctx: StageContext, key: str) -> tuple[dict, list[Path]]:
        from gandiff.evaluation.verification import embed_images, load_pair_images, read_lfw_pairs

        b = self._bench(ctx)
        embedder, name = self._recognizer(ctx)
        detector = self._detector(ctx)
        if detector is None:
            raise StageError("benchmark.lfw_pairs needs face.detector to align the photos")
        pairs, issame = read_lfw_pairs(b.lfw_pairs["pairs"], b.lfw_pairs["root"], b.lfw_pairs.get("ext", "jpg"))
        images, missed = load_pair_images(pairs, detector, progress=ctx.progress)
        emb = embed_images(embedder.embed, images, batch_size=b.batch_size, flip=False, progress=ctx.progress)
        return self._verification_row(ctx, key, str(b.lfw_pairs["pairs"]), emb, issame, name, undetected=missed)

    def _ijb(self, ctx: StageContext, key: str) -> tuple[dict, list[Path]]:
        from gandiff.evaluation.ijb import evaluate_ijb

        b = self._bench(ctx)
        embedder, name = self._recognizer(ctx)
        # insightface mode N1 keeps raw feature norms; the ONNX embedder's unnormalised output is ``_raw``.
        embed_raw = getattr(embedder, "_raw", None) or embedder.embed
        try:
            res = evaluate_ijb(b.ijb["root"], str(b.ijb["target"]), embed_raw, batch_size=b.batch_size, flip=b.flip,
                               progress=ctx.progress)
        except FileNotFoundError as e:
            raise StageError(f"benchmark.ijb.root={b.ijb['root']}: {e} (expected insightface's IJB layout: "
                             f"meta/{str(b.ijb['target']).lower()}_*.txt and loose_crop/)") from None
        files = [_npz(ctx.dir / "scores" / f"{key}.npz", scores=res.scores, labels=res.labels)]
        return {"key": key, "status": "ok", "dataset": str(b.ijb["root"]), "embedder": name,
                "benchmark": res.summary()}, files

    # ----------------------------------------------------------------------------------------- merge

    def merge(self, ctx: StageContext, keys: list[str]) -> dict[str, Any]:
        from gandiff.evaluation.distributions import compare_samples

        rows = {r["key"]: r for r in ctx.items.rows(keys)}
        comparisons: dict[str, Any] = {}
        pairs = [(f"diffusion_vs_gan/{w}", f"export-{w}", f"gan-{w}") for w in ("face", "recognizer")]
        pairs.append(("generated_vs_gan/face", "generate-face", "gan-face"))
        for name, ka, kg in pairs:
            a, g = rows.get(ka), rows.get(kg)
            if a and g and a.get("status") == "ok" and g.get("status") == "ok":
                sa = np.load(ctx.dir / "scores" / f"{ka}.npz")
                sg = np.load(ctx.dir / "scores" / f"{kg}.npz")
                comparisons[name] = {"mated": compare_samples(sa["mated"], sg["mated"]),
                                     "nonmated": compare_samples(sa["nonmated"], sg["nonmated"])}
        export_rows = [r for k, r in rows.items() if k.startswith("export-")]
        empty = next((r for r in export_rows if r.get("status") == "empty"), None)
        metrics = {
            "export_status": "empty" if empty else "ok",
            "export_reason": empty.get("reason") if empty else None,
            "items": rows,
            "comparisons": comparisons,
        }
        atomic_write_json(ctx.dir / "metrics.json", metrics)
        write_table(ctx.dir / "metrics.parquet", [self._flat(r) for r in rows.values()], schema=_flat_schema())
        counts: dict[str, Any] = {"items": len(keys), "export_empty": bool(empty),
                                  "skipped": sum(r.get("status") != "ok" for r in rows.values())}
        for k, r in rows.items():
            if r.get("status") != "ok":
                continue
            if "summary" in r:
                counts[f"{k}/eer"] = r["summary"].get("eer")
                counts[f"{k}/d_prime"] = r["summary"].get("d_prime")
            if "benchmark" in r:
                acc = r["benchmark"].get("accuracy_mean")
                counts[f"{k}/accuracy"] = acc
        if empty:
            log.warning("evaluate: the exported dataset is empty (%s); its distributions are not measured",
                        empty.get("reason"))
        if ctx.tracker is not None:
            ctx.tracker.log_table("evaluate/metrics", [self._flat(r) for r in rows.values()])
            from gandiff.evaluation.fairness import tracker_rows

            # numbers, or "not measurable: ..." in `shown` (value None) where the data cannot resolve them
            ctx.tracker.log_table("evaluate/fairness", tracker_rows(rows))
        return counts

    @staticmethod
    def _flat(r: dict[str, Any]) -> dict[str, Any]:
        s = r.get("summary") or {}
        bm = r.get("benchmark") or {}
        v = r.get("verification") or {}
        out: dict[str, Any] = {
            "key": r["key"], "status": r.get("status"), "dataset": str(r.get("dataset", "")),
            "embedder": str(r.get("embedder", "")), "reason": str(r.get("reason", "") or ""),
            "images": r.get("num_images"), "identities": r.get("num_identities"),
            "mated_pairs": r.get("mated_pairs"), "nonmated_pairs": r.get("nonmated_pairs"),
            "accuracy": bm.get("accuracy_mean", v.get("accuracy")), "accuracy_std": bm.get("accuracy_std",
                                                                                          v.get("accuracy_std")),
            "val": bm.get("val_mean"),
        }
        out.update({k: s.get(k) for k in FLAT_NUMBERS})
        return out


def _flat_schema() -> Any:
    import pyarrow as pa

    fields = [("key", pa.string()), ("status", pa.string()), ("dataset", pa.string()), ("embedder", pa.string()),
              ("reason", pa.string()), ("images", pa.int64()), ("identities", pa.int64()),
              ("mated_pairs", pa.int64()), ("nonmated_pairs", pa.int64()), ("accuracy", pa.float64()),
              ("accuracy_std", pa.float64()), ("val", pa.float64())]
    fields += [(k, pa.float64()) for k in FLAT_NUMBERS]
    return pa.schema(fields)
