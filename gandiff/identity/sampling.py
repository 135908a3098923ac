"""The identity funnel: seeds -> faces -> quality gate -> demographic quota -> distinctiveness -> kept.

Sequential by nature (whether a candidate is kept depends on what was kept before it), batched for
speed: each step renders ``batch_size`` seeds at once, analyses them in one detector / embedder /
classifier call, then walks the batch in seed order. Seeds are ``first_seed, first_seed + 1, ...``, so
the result is a pure function of the config; it stops as soon as every cell of the target is full, and
raises ``TargetNotMetError`` naming the unfilled cells when ``max_attempts`` seeds did not suffice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gandiff.identity.demographics import DemographicTarget, QuotaTracker, TargetNotMetError
from gandiff.identity.distinct import DistinctSet
from gandiff.identity.edits import yaw_from_landmarks

log = logging.getLogger(__name__)

FUNNEL = ("drawn", "one_face", "quality", "in_open_cell", "distinct")


@dataclass
class QualityGate:
    """Exactly one face, detector score and face size (shorter box side, source pixels) at least the minimum."""

    min_det_score: float = 0.6
    min_face_size: float = 24.0

    def check(self, faces: list) -> str | None:
        """None when the image passes; otherwise the reason (``no_face``, ``multiple_faces``, ...)."""
        if not faces:
            return "no_face"
        if len(faces) > 1:
            return "multiple_faces"
        d = faces[0].detection
        if d.score < self.min_det_score:
            return "low_score"
        if min(d.width, d.height) < self.min_face_size:
            return "small_face"
        return None


def attribute_record(attrs: Any) -> dict[str, Any]:
    """Classifier output -> plain, rounded fields for manifests (missing attributes stay None)."""
    if attrs is None:
        return {"gender": None, "gender_prob": None, "age": None, "age_bin": None, "race": None,
                "race_probs": None, "age_probs": None}
    d = attrs.to_dict() if hasattr(attrs, "to_dict") else dict(attrs)
    return {k: d.get(k) for k in ("gender", "gender_prob", "age", "age_bin", "race", "race_probs", "age_probs")}


@dataclass
class Selection:
    seeds: np.ndarray  # (N,) int64
    z: np.ndarray  # (N, z_dim)
    w: np.ndarray  # (N, w_dim) edit-space latents
    embeddings: np.ndarray  # (N, D) anchors, L2-normalised
    rows: list[dict[str, Any]]  # per identity: cell, attributes, probabilities, quality, max_similarity
    funnel: dict[str, int]
    rejections: dict[str, int]
    cells: list[dict[str, Any]]
    accept_max: list[float]
    # Every candidate that passed the quality gate: latents and labels to learn edit directions from.
    pool_w: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    pool_labels: dict[str, list] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # for benchmarks only; never written to rows


def select_identities(source: Any, analyzer: Any, target: DemographicTarget, num: int, truncation: float,
                      first_seed: int, batch_size: int, max_attempts: int, gate: QualityGate,
                      max_similarity: float, pool_limit: int = 5000,
                      on_batch: Callable[[int, int], None] | None = None) -> Selection:
    """Run the funnel until ``target`` is filled. ``on_batch(drawn, kept)`` reports progress."""
    quotas = QuotaTracker(target)
    distinct: DistinctSet | None = None
    funnel = Counter({k: 0 for k in FUNNEL})
    rejections: Counter = Counter()
    kept: dict[str, list] = {"seeds": [], "z": [], "w": [], "emb": [], "rows": []}
    pool_w: list[np.ndarray] = []
    pool_labels: dict[str, list] = {"gender": [], "age": [], "yaw": []}
    seconds = Counter()
    drawn = 0
    while not quotas.done:
        if drawn >= max_attempts:
            raise TargetNotMetError(quotas.shortfall_message(max_attempts))
        n = min(batch_size, max_attempts - drawn)
        seeds = np.arange(first_seed + drawn, first_seed + drawn + n, dtype=np.int64)
        drawn += n
        t0 = time.perf_counter()
        z = source.sample(seeds.tolist())
        w = source.to_w(z, truncation)
        images = source.render(w)
        t1 = time.perf_counter()
        records = analyzer.analyze_batch(list(images))
        t2 = time.perf_counter()
        seconds["render"] += t1 - t0
        seconds["analyze"] += t2 - t1
        funnel["drawn"] += n
        wanted = np.zeros(n, bool)
        cells: list = [None] * n
        for i, faces in enumerate(records):
            reason = gate.check(faces)
            if reason in ("no_face", "multiple_faces"):
                rejections[reason] += 1
                continue
            funnel["one_face"] += 1
            if reason:
                rejections[reason] += 1
                continue
            funnel["quality"] += 1
            face = faces[0]
            if len(pool_w) < pool_limit:
                pool_w.append(w[i])
                a = face.attributes
                pool_labels["gender"].append(getattr(a, "gender", None))
                pool_labels["age"].append(getattr(a, "age", None))
                pool_labels["yaw"].append(float(yaw_from_landmarks(face.detection.landmarks)[0]))
            cells[i] = target.cell_of(face.attributes) if target.attributes else ()
            if cells[i] is not None:
                quotas.counts[cells[i]].seen += 1
            if not quotas.open(cells[i]):
                rejections["cell_full_or_outside_target"] += 1
                continue
            wanted[i] = True
        if not wanted.any():
            if on_batch:
                on_batch(drawn, len(kept["seeds"]))
            continue
        if distinct is None:
            dim = next(len(f[0].embedding) for f, ok in zip(records, wanted) if ok)
            distinct = DistinctSet(dim, max_similarity)
        # Walk the batch in seed order: a cell may fill up part-way through the batch.
        emb = np.stack([records[i][0].embedding if wanted[i] else np.zeros(distinct.dim, np.float32)
                        for i in range(n)]).astype(np.float32)
        to_kept = distinct.max_to_kept(emb)  # (n,) one blocked pass over everything kept before this batch
        accepted_here: list[int] = []
        for i in np.nonzero(wanted)[0]:
            if not quotas.open(cells[i]):
                rejections["cell_full_or_outside_target"] += 1
                continue
            funnel["in_open_cell"] += 1
            sim = float(to_kept[i])
            if accepted_here:  # identities kept earlier in this same batch
                sim = max(sim, float((emb[accepted_here] @ emb[i]).max()))
            if sim >= max_similarity:
                rejections["too_similar"] += 1
                quotas.counts[cells[i]].too_similar += 1
                continue
            funnel["distinct"] += 1
            distinct.add(emb[i], sim)
            accepted_here.append(int(i))
            quotas.counts[cells[i]].kept += 1
            face = records[i][0]
            det = face.detection
            kept["seeds"].append(int(seeds[i]))
            kept["z"].append(z[i])
            kept["w"].append(w[i])
            kept["emb"].append(emb[i])
            kept["rows"].append({
                "seed": int(seeds[i]), "cell": target.label(cells[i]), **attribute_record(face.attributes),
                "det_score": round(float(det.score), 4), "face_size": round(float(min(det.width, det.height)), 2),
                "box": [round(float(v), 2) for v in det.box],
                "max_similarity": None if sim == -np.inf else round(sim, 4),
            })
        if on_batch:
            on_batch(drawn, len(kept["seeds"]))
    log.info("identities: %d kept from %d seeds (%s)", len(kept["seeds"]), drawn,
             ", ".join(f"{k}={v}" for k, v in funnel.items()))
    dim_w = source.w_dim
    return Selection(
        seeds=np.asarray(kept["seeds"], np.int64), z=np.asarray(kept["z"], np.float32).reshape(-1, source.z_dim),
        w=np.asarray(kept["w"], np.float32).reshape(-1, dim_w), embeddings=np.asarray(kept["emb"], np.float32),
        rows=kept["rows"], funnel=dict(funnel), rejections=dict(rejections), cells=quotas.report(),
        accept_max=list(distinct.accept_max if distinct else []),
        pool_w=np.asarray(pool_w, np.float32).reshape(-1, dim_w), pool_labels=pool_labels, seconds=dict(seconds))


def label_latents(source: Any, analyzer: Any, seeds: np.ndarray, truncation: float, gate: QualityGate,
                  batch_size: int) -> tuple[np.ndarray, dict[str, list]]:
    """Latents of extra seeds with the labels edit directions are learned from (gender, age, yaw)."""
    ws, labels = [], {"gender": [], "age": [], "yaw": []}
    for start in range(0, len(seeds), batch_size):
        part = [int(s) for s in seeds[start:start + batch_size]]
        w = source.to_w(source.sample(part), truncation)
        for wi, faces in zip(w, analyzer.analyze_batch(list(source.render(w)))):
            if gate.check(faces) is not None:
                continue
            a = faces[0].attributes
            ws.append(wi)
            labels["gender"].append(getattr(a, "gender", None))
            labels["age"].append(getattr(a, "age", None))
            labels["yaw"].append(float(yaw_from_landmarks(faces[0].detection.landmarks)[0]))
    return np.asarray(ws, np.float32).reshape(-1, source.w_dim), labels
