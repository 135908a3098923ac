"""Detect -> align -> embed -> classify in one call: what the stages use to measure faces.

``FaceAnalyzer(detector, embedder, classifier=None)`` holds models built once (usually by
:func:`build_analyzer` from the ``face`` and ``attributes`` config groups). ``analyze(image)`` returns
one :class:`FaceRecord` per face, best detection first; ``analyze_batch`` does the same for many images
with batched model calls (detector batch, then one embedder and one classifier call over every face).
``analyze_file`` adds the reason when an image yields no usable face. An embedder that frames faces its
own way and has ``embed_faces([(image, landmarks), ...])`` (DlibEmbedder) is given the original image
instead of the ArcFace crop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gandiff.face.align import align_face
from gandiff.face.images import ImageReadError, read_image, to_rgb_uint8
from gandiff.face.types import Detection, FaceRecord

log = logging.getLogger(__name__)


def largest_face(records: Sequence[Any]) -> Any | None:
    """The record (FaceRecord or Detection) with the largest box area, or None for no faces."""
    if not records:
        return None
    return max(records, key=lambda r: (r.detection if isinstance(r, FaceRecord) else r).area)


@dataclass
class ImageFaces:
    """The faces of one image file, or why there are none."""

    path: str
    faces: list[FaceRecord] = field(default_factory=list)
    reason: str | None = None  # None when faces were found; otherwise what went wrong
    size: tuple[int, int] | None = None  # (width, height)


class FaceAnalyzer:
    def __init__(self, detector: Any, embedder: Any = None, classifier: Any = None, align_size: int = 112,
                 min_face_size: float = 0.0):
        """``min_face_size``: faces whose box is smaller (pixels, shorter side) are dropped as too small."""
        self.detector, self.embedder, self.classifier = detector, embedder, classifier
        self.align_size, self.min_face_size = int(align_size), float(min_face_size)

    def analyze(self, image: np.ndarray) -> list[FaceRecord]:
        return self.analyze_batch([image])[0]

    def analyze_batch(self, images: Sequence[np.ndarray], embed: bool = True) -> list[list[FaceRecord]]:
        """Every face of every image. ``embed=False`` leaves ``embedding`` None (``embed_records`` fills in
        the ones a caller needs later: the identity funnel embeds only the candidates it reaches)."""
        images = [to_rgb_uint8(im) for im in images]
        per_image = self.detector.detect_batch(images)
        return self.records_from_detections(images, per_image, embed=embed)

    def embed_records(self, faces: Sequence[tuple[np.ndarray, FaceRecord]]) -> np.ndarray:
        """The embedder's ``(len(faces), dim)`` output for ``(image, record)`` pairs: from the aligned crop, or from the image
        for embedders with their own framing (DlibEmbedder's chip). A face gets the same bytes whatever else
        shares the call (the embedders' contract), so embedding later, or fewer at a time, changes nothing."""
        if hasattr(self.embedder, "embed_faces"):
            return self.embedder.embed_faces([(to_rgb_uint8(img), f.detection.landmarks) for img, f in faces])
        return self.embedder.embed(np.stack([f.aligned for _, f in faces]))

    def records_from_detections(self, images: Sequence[np.ndarray], per_image: Sequence[Sequence[Detection]],
                                embed: bool = True) -> list[list[FaceRecord]]:
        """Align, embed (unless ``embed=False``) and classify given detections (e.g. stored by an earlier stage)."""
        flat: list[tuple[int, Detection]] = [(i, d) for i, dets in enumerate(per_image) for d in dets
                                             if min(d.width, d.height) >= self.min_face_size]
        crops = (np.stack([align_face(images[i], d.landmarks, self.align_size) for i, d in flat]) if flat
                 else np.zeros((0, self.align_size, self.align_size, 3), np.uint8))
        if self.embedder is None or not flat or not embed:
            embeddings = [None] * len(flat)
        else:
            embeddings = self.embed_records([(images[i], FaceRecord(detection=d, aligned=crops[k]))
                                             for k, (i, d) in enumerate(flat)])
        attributes = (self.classifier.classify_many([(images[i], d.landmarks) for i, d in flat])
                      if self.classifier is not None and flat else [None] * len(flat))
        out: list[list[FaceRecord]] = [[] for _ in images]
        for k, (i, d) in enumerate(flat):
            out[i].append(FaceRecord(detection=d, aligned=crops[k], embedding=embeddings[k], attributes=attributes[k]))
        return out

    def analyze_file(self, path: str | os.PathLike) -> ImageFaces:
        """Never raises for a bad image: the reason is in ``ImageFaces.reason``."""
        try:
            image = read_image(path)
        except ImageReadError as e:
            return ImageFaces(str(path), reason=str(e))
        dets = self.detector.detect(image)
        faces = self.records_from_detections([image], [dets])[0]
        reason = None
        if not dets:
            reason = "no face detected"
        elif not faces:
            reason = f"{len(dets)} face(s) smaller than min_face_size={self.min_face_size:g} px"
        return ImageFaces(str(path), faces=faces, reason=reason, size=(image.shape[1], image.shape[0]))

    def embed_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The largest face's embedding per image: ``(N, dim)`` float32 (zeros where none) and a found-mask (N,)."""
        records = self.analyze_batch(images)
        dim = self.embedder.dim
        out = np.zeros((len(images), dim), np.float32)
        found = np.zeros(len(images), bool)
        for i, recs in enumerate(records):
            best = largest_face(recs)
            if best is not None:
                out[i], found[i] = best.embedding, True
        return out, found


def build_analyzer(face_cfg: Any, attributes_cfg: Any = None, device: str = "auto") -> FaceAnalyzer:
    """Instantiate the ``face`` (and optionally ``attributes``) config groups' models into an analyzer.

    ``face_cfg``/``attributes_cfg`` are the composed groups (``cfg.face``, ``cfg.attributes``); only
    their ``_target_`` mappings are instantiated, so stages can call this with their own groups.
    """
    from hydra.utils import instantiate

    detector = instantiate(face_cfg.detector, device=device)
    embedder = instantiate(face_cfg.embedder, device=device) if face_cfg.get("embedder") else None
    classifier = None
    if attributes_cfg is not None and attributes_cfg.get("classifier"):
        classifier = instantiate(attributes_cfg.classifier, device=device)
    return FaceAnalyzer(detector, embedder, classifier, min_face_size=float(face_cfg.get("min_face_size", 0.0)))


