"""The identity funnel: seeds -> faces -> quality gate -> demographic quota -> distinctiveness -> kept.

Sequential by nature (whether a candidate is kept depends on what was kept before it), batched for
speed: each step renders ``batch_size`` seeds at once, detects and classifies them in one call each,
then walks the batch in seed order, embedding candidates only as the walk reaches them (a few at a time,
sized from what the open cells still need and the acceptance so far). Seeds are ``first_seed,
first_seed + 1, ...``; the identities kept do not depend on ``batch_size`` (only the bookkeeping of the
seeds drawn does: see :func:`select_identities`). It stops after the batch in which every cell of the
target fills, and raises ``TargetNotMetError`` naming the unfilled cells when ``max_attempts`` seeds did
not suffice.
"""

from __future__ import annotations

import logging
import math
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
    # For benchmarks only, never written: render/analyze/embed seconds, faces embedded, seeds drawn past the last
    # identity kept and their share of the last batch's render + analyse seconds.
    seconds: dict[str, float] = field(default_factory=dict)


def _analysis(analyzer: Any) -> tuple[Callable, Callable]:
    """``(analyse, embed)``: ``analyse(images)`` gives per-image face records, ``embed(images, records, idx)``
    the (len(idx), D) float32 embeddings of the first face of images ``idx``.

    An analyzer with ``embed_records`` (gandiff's ``FaceAnalyzer``) analyses without embedding, and ``embed``
    embeds only the faces asked for: the funnel embeds a candidate only when it reaches the distinctiveness
    check, never one the gate or a full cell rejects, nor the seeds of the last batch after the target filled
    (a face's embedding does not depend on what shares its call; tests/identity/test_identity_batching.py
    checks it end to end). Any other analyzer is called as it is and ``embed`` reads its embeddings.
    """
    if callable(getattr(analyzer, "embed_records", None)) and getattr(analyzer, "embedder", None) is not None:
        def embed(images: list, records: list, idx: list[int]) -> np.ndarray:
            out = analyzer.embed_records([(images[i], records[i][0]) for i in idx])
            return np.asarray(out, np.float32).reshape(len(idx), -1)

        return (lambda images: analyzer.analyze_batch(images, embed=False)), embed

    def read(images: list, records: list, idx: list[int]) -> np.ndarray:
        return np.stack([np.asarray(records[i][0].embedding, np.float32) for i in idx])

    return analyzer.analyze_batch, read


def _embed_plan(order: list[int], start: int, cells: list, quotas: QuotaTracker, done: set[int],
                acceptance: float, least: int = 2) -> list[int]:
    """The candidates to embed now, from ``order[start]`` on (seed order): those whose cell is open, at most
    ``ceil(still needed in the cell / acceptance)`` per cell, and at least ``least`` when there are that many
    (SFace runs a lone crop as a pair: a second one is free). Only how much is embedded per call depends on
    this, never which identities are kept."""
    room: dict = {}
    plan: list[int] = []
    spare: list[int] = []
    for i in order[start:]:
        c = cells[i]
        if i in done or not quotas.open(c):
            continue
        if c not in room:
            n = quotas.counts[c]
            room[c] = math.ceil((n.target - n.kept) / acceptance)
        if room[c] > 0:
            room[c] -= 1
            plan.append(i)
        elif len(spare) < least:
            spare.append(i)
    return sorted(plan + spare[: max(0, least - len(plan))])


def select_identities(source: Any, analyzer: Any, target: DemographicTarget, num: int, truncation: float,
                      first_seed: int, batch_size: int, max_attempts: int, gate: QualityGate,
                      max_similarity: float, pool_limit: int = 5000,
                      on_batch: Callable[[int, int], None] | None = None) -> Selection:
    """Run the funnel until ``target`` is filled. ``on_batch(drawn, kept)`` reports progress.

    The kept identities (seeds, latents, embeddings, rows, ``accept_max``) do not depend on ``batch_size``
    (tests/identity/test_identity_batching.py). The bookkeeping does: ``funnel``, ``rejections``, the cells'
    ``candidates`` and the latent pool count every seed drawn, i.e. through the end of the last batch (its
    seeds after the last identity kept are rendered, detected and classified for them, not embedded).
    """
    quotas = QuotaTracker(target)
    distinct: DistinctSet | None = None
    funnel = Counter({k: 0 for k in FUNNEL})
    rejections: Counter = Counter()
    kept: dict[str, list] = {"seeds": [], "z": [], "w": [], "emb": [], "rows": []}
    pool_w: list[np.ndarray] = []
    pool_labels: dict[str, list] = {"gender": [], "age": [], "yaw": []}
    seconds = Counter()
    analyse, embed = _analysis(analyzer)
    decided, accepted = 0, 0  # distinctiveness checks so far and how many passed: the acceptance estimate
    drawn = 0
    last_batch = (0, 0.0)  # (seeds, render + analyse seconds) of the latest batch
    while not quotas.done:
        if drawn >= max_attempts:
            raise TargetNotMetError(quotas.shortfall_message(max_attempts))
        n = min(batch_size, max_attempts - drawn)
        seeds = np.arange(first_seed + drawn, first_seed + drawn + n, dtype=np.int64)
        drawn += n
        t0 = time.perf_counter()
        z = source.sample(seeds.tolist())
        w = source.to_w(z, truncation)
        images = list(source.render(w))
        t1 = time.perf_counter()
        records = analyse(images)
        t2 = time.perf_counter()
        seconds["render"] += t1 - t0
        seconds["analyze"] += t2 - t1
        last_batch = (n, t2 - t0)
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
        # Walk the batch in seed order: a cell may fill up part-way through the batch. Embeddings are made
        # on demand, a few candidates at a time (_embed_plan), so seeds past the last identity kept cost none.
        order = [int(i) for i in np.nonzero(wanted)[0]]
        emb: dict[int, np.ndarray] = {}
        quick: dict[int, float] = {}
        for pos, i in enumerate(order):
            if not quotas.open(cells[i]):
                rejections["cell_full_or_outside_target"] += 1
                continue
            funnel["in_open_cell"] += 1
            if i not in emb:
                part = _embed_plan(order, pos, cells, quotas, set(emb), max(0.05, (accepted + 1) / (decided + 1)))
                t3 = time.perf_counter()
                vecs = embed(images, records, part)
                seconds["embed"] += time.perf_counter() - t3
                seconds["embedded"] += len(part)
                if distinct is None:
                    distinct = DistinctSet(vecs.shape[1], max_similarity)
                for j, v, q in zip(part, vecs, distinct.max_to_kept(vecs)):
                    emb[j], quick[j] = v, float(q)
            e = emb[i]
            decided += 1
            # The fast batch pass rejects only what is too similar beyond any rounding; every other candidate
            # gets the canonical similarity, whose bits do not depend on batching (gandiff.identity.distinct).
            clear = quick[i] - distinct.rounding_bound(e) >= max_similarity
            sim = np.inf if clear else distinct.max_similarity(e)
            if sim >= max_similarity:
                rejections["too_similar"] += 1
                quotas.counts[cells[i]].too_similar += 1
                continue
            accepted += 1
            funnel["distinct"] += 1
            distinct.add(e, sim)
            quotas.counts[cells[i]].kept += 1
            face = records[i][0]
            det = face.detection
            kept["seeds"].append(int(seeds[i]))
            kept["z"].append(z[i])
            kept["w"].append(w[i])
            kept["emb"].append(e)
            kept["rows"].append({
                "seed": int(seeds[i]), "cell": target.label(cells[i]), **attribute_record(face.attributes),
                "det_score": round(float(det.score), 4), "face_size": round(float(min(det.width, det.height)), 2),
                "box": [round(float(v), 2) for v in det.box],
                "max_similarity": None if sim == -np.inf else round(sim, 4),
            })
        if on_batch:
            on_batch(drawn, len(kept["seeds"]))
    if kept["seeds"]:  # render + analyse share of the last batch's seeds after the last identity kept
        past = first_seed + drawn - 1 - kept["seeds"][-1]
        seconds["past_last_kept"] = past
        seconds["past_last_kept_seconds"] = last_batch[1] * past / max(1, last_batch[0])
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
