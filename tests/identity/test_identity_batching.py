"""The identity funnel keeps the same identities whatever its batch size (issue 20): seeds, order,
latents, embeddings, rows and recorded similarities; embeddings are made only for candidates the walk
reaches."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff.face.analyzer import FaceAnalyzer
from gandiff.face.attributes import Attributes
from gandiff.face.types import Detection
from gandiff.identity.demographics import parse_target
from gandiff.identity.distinct import DistinctSet
from gandiff.identity.sampling import QualityGate, select_identities

AG = ("gender", "age_bin")
IDENTITY_FIELDS = ("seeds", "z", "w", "embeddings")


def assert_same_identities(a, b):
    for name in IDENTITY_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name
    assert a.rows == b.rows
    assert a.accept_max == b.accept_max  # exact floats: the similarity bits do not depend on batching


# ------------------------------------------------------------------- planted models (FaceAnalyzer parts)


class Planted:
    """Seed s -> one face (or none, or two) with planted gender, age and embedding; the image carries s."""

    def __init__(self, n: int = 400, dim: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        base = rng.standard_normal((8, dim)).astype(np.float32)  # 8 "families": members look alike
        emb = base[rng.integers(0, 8, n)] + 0.9 * rng.standard_normal((n, dim)).astype(np.float32)
        self.emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
        self.gender = np.where(rng.random(n) < 0.5, "female", "male")
        self.age = np.where(rng.random(n) < 0.7, 25.0, 35.0)  # 30-39 is the scarcer bin: it fills later
        self.faces = np.where(rng.random(n) < 0.1, 0, np.where(rng.random(n) < 0.05, 2, 1))
        self.score = np.where(rng.random(n) < 0.1, 0.3, 0.9)
        self.embedded = 0  # faces embedded so far


class Source:
    z_dim = w_dim = 4
    editable = True

    def __init__(self, planted: Planted):
        self.p = planted

    def sample(self, seeds):
        return np.stack([np.full(4, s, np.float32) for s in seeds])

    def to_w(self, z, truncation):
        return np.asarray(z, np.float32) * np.float32(truncation)

    def render(self, w):  # 32x32 image whose pixel (0, 0) holds the seed in base 256
        out = np.zeros((len(w), 32, 32, 3), np.uint8)
        for k, s in enumerate(np.asarray(w)[:, 0].astype(np.int64)):
            out[k, 0, 0, :2] = (s // 256, s % 256)
        return out


def _seed(image) -> int:
    return int(image[0, 0, 0]) * 256 + int(image[0, 0, 1])


LANDMARKS = np.array([[11, 12], [21, 12], [16, 17], [12, 22], [20, 22]], np.float32)


class Detector:
    def __init__(self, planted: Planted):
        self.p = planted

    def detect_batch(self, images):
        out = []
        for im in images:
            s = _seed(im)
            out.append([Detection([4, 4, 28, 28], self.p.score[s], LANDMARKS + k) for k in range(self.p.faces[s])])
        return out


class Embedder:
    dim = 16

    def __init__(self, planted: Planted):
        self.p = planted

    def embed_faces(self, faces):
        self.p.embedded += len(faces)
        return np.stack([self.p.emb[_seed(im)] for im, _ in faces])


class Classifier:
    def __init__(self, planted: Planted):
        self.p = planted

    def classify_many(self, faces):
        out = []
        for im, _ in faces:
            s = _seed(im)
            age = float(self.p.age[s])
            out.append(Attributes(gender=str(self.p.gender[s]), gender_prob=0.9, age=age,
                                  age_bin="20-29" if age < 30 else "30-39"))
        return out


def planted_funnel(planted: Planted, num: int, batch_size: int, thr: float, first_seed: int = 0):
    analyzer = FaceAnalyzer(Detector(planted), Embedder(planted), Classifier(planted))
    target = parse_target("gender*age_bin:20-29/30-39", num, AG)
    return select_identities(Source(planted), analyzer, target, num, 1.0, first_seed, batch_size, 400,
                             QualityGate(0.6, 10.0), thr)


def reference_walk(planted: Planted, num: int, thr: float, first_seed: int = 0) -> list[int]:
    """The funnel's definition, one seed at a time with exact (float64) similarities."""
    quota = parse_target("gender*age_bin:20-29/30-39", num, AG).quotas
    kept: list[int] = []
    counts = dict.fromkeys(quota, 0)
    for s in range(first_seed, 400):
        if planted.faces[s] != 1 or planted.score[s] < 0.6:
            continue
        cell = (str(planted.gender[s]), "20-29" if planted.age[s] < 30 else "30-39")
        if counts[cell] >= quota[cell]:
            continue
        e = planted.emb[s].astype(np.float64)
        if kept and max(float(planted.emb[k].astype(np.float64) @ e) for k in kept) >= thr:
            continue
        kept.append(s)
        counts[cell] += 1
        if sum(counts.values()) == num:
            break
    return kept


@pytest.mark.parametrize("thr", [0.3, 0.6])
def test_planted_selection_is_the_same_for_batch_sizes_1_5_32(thr):
    planted = Planted()
    runs = {bs: planted_funnel(planted, 10, bs, thr, first_seed=3) for bs in (1, 5, 32)}
    seeds = runs[1].seeds.tolist()
    assert seeds == reference_walk(planted, 10, thr, first_seed=3)
    assert len(seeds) == 10 and runs[1].rejections.get("too_similar", 0) > 0  # the case exercises rejection
    for bs in (5, 32):
        assert_same_identities(runs[1], runs[bs])
    # The bookkeeping counts whole batches: every seed of the last batch is drawn and counted.
    for bs, sel in runs.items():
        assert sel.funnel["drawn"] == -(-(seeds[-1] - 3 + 1) // bs) * bs
        assert sel.funnel["drawn"] == sum(c["candidates"] for c in sel.cells) + sum(
            v for k, v in sel.rejections.items() if k in ("no_face", "multiple_faces", "low_score", "small_face"))


def test_only_candidates_the_walk_reaches_are_embedded():
    planted = Planted()
    sel = planted_funnel(planted, 4, 32, 0.99)  # nearly everything distinct: the target fills early
    assert sel.funnel["drawn"] == 32 and sel.seeds[-1] < 24
    # Embedded: the candidates checked for distinctiveness, plus at most one spare per embedding call.
    assert sel.funnel["in_open_cell"] <= planted.embedded <= sel.funnel["in_open_cell"] + sel.seconds["embedded"] // 2
    assert planted.embedded == sel.seconds["embedded"] < sel.funnel["quality"]


def test_max_similarity_is_canonical_and_bounds_the_fast_pass():
    rng = np.random.default_rng(3)
    kept = rng.standard_normal((200, 64)).astype(np.float32)
    kept /= np.linalg.norm(kept, axis=1, keepdims=True)
    cand = rng.standard_normal((40, 64)).astype(np.float32)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    ds = DistinctSet(64, 0.5, capacity=3)
    for e in kept:
        ds.add(e, 0.0)
    exact = (cand.astype(np.float64) @ kept.astype(np.float64).T).max(axis=1)
    canon = np.array([ds.max_similarity(c) for c in cand])
    bound = np.array([ds.rounding_bound(c) for c in cand])
    assert (np.abs(canon - exact) <= bound).all() and (bound < 1e-4).all()
    for rows in (cand[:1], cand[:7], cand):  # any grouping of the fast pass stays within the bound
        assert (np.abs(ds.max_to_kept(rows) - exact[: len(rows)]) <= bound[: len(rows)]).all()
    assert DistinctSet(64, 0.5).max_similarity(cand[0]) == -np.inf


# --------------------------------------------------------------------------------- the demo's models


def test_demo_models_select_the_same_identities_for_batch_sizes_1_5_32():
    from gandiff.config import compose
    from gandiff.identity.stage import build_analyzer, build_source

    cfg = compose(["logger=none", "device=cpu", "experiment=demo"])
    source, analyzer = build_source(cfg, "cpu"), build_analyzer(cfg, "cpu")
    gate = QualityGate(float(cfg.identity.min_det_score), float(cfg.identity.min_face_size))
    target = parse_target("gender*age_bin:20-29/30-39", 4, AG)
    runs = {bs: select_identities(source, analyzer, target, 4, 1.0, 0, bs, 200, gate, 0.2) for bs in (1, 5, 32)}
    assert runs[1].rejections.get("too_similar", 0) > 0 and runs[1].seeds[-1] >= 5  # spans several batches of 5
    for bs in (5, 32):
        assert_same_identities(runs[1], runs[bs])
