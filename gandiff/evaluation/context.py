"""What an evaluator reads: the benchmark settings, the embedders (each loaded once) and the upstream data.

``EvalContext`` wraps the evaluate stage's ``StageContext`` for one ``process`` call: models and embedded
datasets are cached on it, so the items of a call share them. Embedders: ``face`` is ``face.embedder`` (SFace
offline), ``recognizer`` the network the train stage exported (``train/<key>/backbone.onnx``, insightface
ONNX layout, flip-fused as in insightface's tests when ``benchmark.flip``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.artifacts import atomic_path, read_json, read_table
from gandiff.pipeline import StageContext, StageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class RecognizerMissing(RuntimeError):
    """The train stage left no exported network (e.g. it had no data to train on)."""


class EvalContext:
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.bench = ctx.settings.benchmark  # the validated BenchmarkConfig
        self.seed = ctx.settings.seed
        self.cache: dict[str, Any] = {}

    @property
    def dir(self) -> Path:
        return self.ctx.dir

    def npz(self, name: str, **arrays: np.ndarray) -> Path:
        """``scores/<name>.npz`` in the stage folder, written atomically."""
        path = self.ctx.dir / "scores" / f"{name}.npz"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        return path

    # ----------------------------------------------------------------------------------------- models

    def _device(self) -> str:
        return self.ctx.settings.device

    def face_embedder(self) -> tuple[Any, str]:
        if "face" not in self.cache:
            from hydra.utils import instantiate

            spec = self.ctx.settings.face.embedder
            if spec is None:
                raise StageError("face.embedder is null: the evaluate stage needs an embedder (see conf/face/)")
            name = f"{spec['_target_'].rsplit('.', 1)[-1]}:{Path(str(spec.get('model_path', ''))).name}"
            self.cache["face"] = (instantiate(spec, device=self._device()), name)
        return self.cache["face"]

    def detector(self) -> Any:
        if "detector" not in self.cache:
            from hydra.utils import instantiate

            spec = self.ctx.settings.face.detector
            self.cache["detector"] = None if spec is None else instantiate(spec, device=self._device())
        return self.cache["detector"]

    def recognizer(self) -> tuple[Any, str]:
        """The trained network as an ``OnnxEmbedder`` (insightface layout: RGB, (x - 127.5) / 127.5)."""
        if "recognizer" not in self.cache:
            train = self.ctx.input_dir("train")
            onnx = train / "backbone.onnx"
            if not onnx.is_file():
                reason = "no backbone.onnx"
                if (train / "metrics.json").is_file():
                    m = read_json(train / "metrics.json")
                    reason = str(m.get("reason") or m.get("status") or reason)
                self.cache["recognizer"] = RecognizerMissing(f"the train stage exported no recognizer in {train} "
                                                             f"({reason})")
            else:
                from gandiff.face.embedders import OnnxEmbedder

                emb = OnnxEmbedder(model_path=onnx, flip=self.bench.flip, device=self._device(),
                                   batch_size=self.bench.batch_size, config_key=f"{onnx}")
                self.cache["recognizer"] = (emb, f"recognizer:train/{train.name}")
        got = self.cache["recognizer"]
        if isinstance(got, Exception):
            raise got
        return got

    def embedder(self, which: str) -> tuple[Any, str]:
        return self.face_embedder() if which == "face" else self.recognizer()

    # ----------------------------------------------------------------------------------------- data

    def identity_table(self) -> tuple[list[str], dict[str, dict]]:
        """(identity ids in table order, attributes per id) from the identities stage's table."""
        if "identity_table" not in self.cache:
            rows = read_table(self.ctx.input_dir("identities") / "identities.parquet")
            self.cache["identity_table"] = ([str(r["id"]) for r in rows],
                                            {str(r["id"]): {**(r.get("attributes") or {}), **r} for r in rows})
        return self.cache["identity_table"]

    def generated_embeddings(self) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The curate stage's embeddings of every generated image with a face (before selection):
        (embeddings (N, D) L2-normalised, labels (N,) indexing the identity table, facts)."""
        from gandiff.datasets.readers import EmptyDatasetError

        folder = self.ctx.input_dir("curate")
        rows = read_table(folder / "scores.parquet")
        emb_path = folder / "embeddings.npy"
        emb = np.load(emb_path, allow_pickle=False) if rows else np.zeros((0, 0), np.float32)
        ids, _ = self.identity_table()
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
        self.cache["image_meta/generate"] = ok  # per-image pose and attributes, for the dataset measures
        return e, labels, {"dataset": str(folder), "generated": len(rows), "without_face": len(rows) - len(ok)}

    def gan_faces(self) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, dict], int]:
        """Identities stage images aligned to 112x112: (faces (N,112,112,3), labels (N,), ids, attributes, undetected)."""
        if "gan" in self.cache:
            return self.cache["gan"]
        import cv2

        from gandiff.face.align import align_face
        from gandiff.face.images import read_image

        folder = self.ctx.input_dir("identities")
        ids, attrs = self.identity_table()
        detector = self.detector()
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
        self.cache["gan"] = out
        return out

    def embed_source(self, kind: str, embedder: Any
                     ) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, dict], dict[str, Any]]:
        """(embeddings, labels, identity ids, identity attributes, facts) of the export, the GAN images or the
        generated images (``generate``: the curate stage's embeddings, ``embedder`` is not run)."""
        from gandiff.evaluation.distributions import embed_dataset
        from gandiff.evaluation.verification import embed_images

        b = self.bench
        if kind == "generate":
            emb, labels, facts = self.generated_embeddings()
            if b.max_images is not None and len(emb) > int(b.max_images):
                keep = np.sort(np.random.default_rng(self.seed).choice(len(emb), int(b.max_images), False))
                emb, labels = emb[keep], labels[keep]
                self.cache["image_meta/generate"] = [self.cache["image_meta/generate"][i] for i in keep]
            ids, attrs = self.identity_table()
            return emb, labels, ids, attrs, facts
        if kind == "gan":
            faces, labels, ids, attrs, missed = self.gan_faces()
            if b.max_images is not None and len(faces) > int(b.max_images):
                keep = np.sort(np.random.default_rng(self.seed).choice(len(faces), int(b.max_images), False))
                faces, labels = faces[keep], labels[keep]
            emb = embed_images(embedder.embed, faces, batch_size=b.batch_size, flip=False,
                               progress=self.ctx.progress).astype(np.float32)
            return emb, labels, ids, attrs, {"dataset": str(self.ctx.input_dir("identities")), "undetected": missed}
        from gandiff.datasets.readers import open_dataset

        ds = open_dataset(self.ctx.input_dir("export"))  # EmptyDatasetError for an empty export
        emb, labels, idx = embed_dataset(ds, embedder.embed, batch_size=b.batch_size, max_images=b.max_images,
                                         seed=self.seed, progress=self.ctx.progress)
        self.cache["image_meta/export"] = [ds.metadata(int(i)) for i in idx]  # pose, attributes (if stored)
        return emb, labels, list(ds.identities), dict(ds.identity_attributes), {"dataset": str(ds.path),
                                                                               "format": ds.format}
