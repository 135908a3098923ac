"""Face verification benchmarks: insightface ``.bin`` sets and LFW ``pairs.txt``, the 10-fold protocol.

The protocol every paper reports for LFW, CFP-FP, AgeDB-30, CALFW, CPLFW ..., as insightface's
``eval/verification.py``: flip fusion, squared distances of normalised embeddings, ``KFold(10)`` threshold
search, VAL@FAR. Vectorised (sorted distances and ``searchsorted``) with exactly the reference loops' numbers
(``tests/evaluation/test_eval_verification.py``). A ``.bin`` is opened by an unpickler that resolves no
global except numpy's array constructors: loading never runs code.
One module: one protocol, insightface's; its inputs (``.bin`` or ``pairs.txt``), flip-fused embeddings and
10-fold search are what a reported number means, checked together against the reference.
Design: docs/design.md#verification-benchmarks.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.errors import UserError

log = logging.getLogger(__name__)

# The insightface threshold grids (squared L2 distance between unit vectors lies in [0, 4]).
ROC_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)

# The standard verification sets, by their insightface file stem (``<root>/<name>.bin``).
STANDARD_BINS = ("lfw", "cfp_fp", "cfp_ff", "agedb_30", "calfw", "cplfw", "vgg2_fp")


# --------------------------------------------------------------------------------------------- .bin files


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """A pickle asked for a global that a data file has no reason to need (it could run code)."""


# Globals a numpy array or scalar needs to unpickle, in numpy 1.x (``numpy.core``) and 2.x (``numpy._core``).
# None of them runs user code: they allocate an array / dtype / scalar from the bytes that follow.
_NUMPY_GLOBALS = frozenset(
    (mod, name)
    for core in ("numpy.core.multiarray", "numpy._core.multiarray")
    for mod, name in ((core, "_reconstruct"), (core, "scalar"), ("numpy", "ndarray"), ("numpy", "dtype"))
)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Python 3 pickles ``bytes`` under protocols 0-2 as ``_codecs.encode(text, "latin1")``: allow just that."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode({type(text).__name__}, {encoding!r}): only latin1 text is allowed")
    return text.encode("latin1")


class _DataOnlyUnpickler(pickle.Unpickler):
    """Accepts bytes, str, bool, int, float, None, lists, tuples, dicts and numpy arrays; nothing callable."""

    def __init__(self, file: Any, source: str):
        # encoding="bytes": the official .bin files were written by Python 2, whose ``str`` is our ``bytes``.
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:  # checked stand-ins: no path to an object array
            from gandiff.identity.stylegan_pickle import numpy_globals

            return numpy_globals()[(module, name)]
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise UnsafePickleError(
            f"{self._source}: refusing to load {module}.{name}: a verification .bin holds only image bytes "
            f"and booleans, so a pickle that imports a function is not one (it could run code)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: persistent ids are not allowed in a verification .bin")


def read_bin(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """The raw content of an insightface ``.bin``: encoded images and the ``(P,)`` bool same/different flags.

    Raises ``UnsafePickleError`` before anything executes when the pickle references a callable, and
    ``ValueError`` naming the file when the content is not ``(list of bytes, list of bool)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: verification .bin not found")
    with open(path, "rb") as f:
        from gandiff.identity.stylegan_pickle import UnsafePickleError as UnsafeNumpy

        try:
            obj = _DataOnlyUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except UnsafeNumpy as e:  # a NumPy path to an object array
            raise UnsafePickleError(f"{path}: {e}") from None
        except Exception as e:  # truncated file, not a pickle at all, ...
            raise ValueError(f"{path}: not an insightface verification .bin ({type(e).__name__}: {e})") from e
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(f"{path}: expected a pickled pair (bins, issame_list), got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)) or not all(isinstance(b, (bytes, bytearray)) for b in bins):
        raise ValueError(f"{path}: bins must be a list of encoded image bytes")
    if isinstance(issame, np.ndarray):
        if issame.dtype != np.bool_ or issame.ndim != 1:
            raise ValueError(f"{path}: issame_list must be a 1-d bool array, got {issame.dtype} {issame.shape}")
        flags = issame.copy()
    elif isinstance(issame, (list, tuple)) and all(isinstance(b, (bool, np.bool_)) for b in issame):
        flags = np.asarray(issame, dtype=bool)
    else:
        raise ValueError(f"{path}: issame_list must be a list of bools")
    if len(bins) < 2 * len(flags):
        raise ValueError(f"{path}: {len(flags)} pairs need {2 * len(flags)} images, the file has {len(bins)}")
    return [bytes(b) for b in bins[: 2 * len(flags)]], flags


def decode_image(data: bytes, image_size: tuple[int, int] = (112, 112), source: str = "") -> np.ndarray:
    """Encoded bytes -> ``(H, W, 3)`` uint8 RGB at ``image_size`` (height, width).

    insightface decodes with ``mx.image.imdecode`` (OpenCV, RGB) and, when the width differs from the
    target, resizes the short side with bicubic interpolation (``mx.image.resize_short``); so do we.
    """
    import cv2

    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{source or 'image'}: the bytes are not a decodable image (JPEG/PNG expected)")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    if w != image_size[1]:
        scale = image_size[0] / min(h, w)
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    if img.shape[:2] != tuple(image_size):
        raise ValueError(f"{source or 'image'}: {w}x{h} image does not resize to {image_size[1]}x{image_size[0]} "
                         f"(verification images must be aligned crops of that aspect ratio)")
    return img


def load_bin(path: str | os.PathLike, image_size: tuple[int, int] = (112, 112)) -> tuple[np.ndarray, np.ndarray]:
    """Open an insightface verification ``.bin`` safely.

    Returns ``images`` ``(2P, H, W, 3)`` uint8 RGB (pair ``i`` = rows ``2i, 2i+1``) and ``issame`` ``(P,)`` bool.
    """
    bins, issame = read_bin(path)
    images = np.empty((len(bins), image_size[0], image_size[1], 3), dtype=np.uint8)  # (2P, H, W, 3)
    for i, b in enumerate(bins):
        images[i] = decode_image(b, image_size, source=f"{path}[{i}]")
    log.info("%s: %d pairs (%d same)", path, len(issame), int(issame.sum()))
    return images, issame


def write_bin(path: str | os.PathLike, images: Sequence[np.ndarray] | np.ndarray, issame: Sequence[bool],
              format: str = ".png") -> Path:
    """Write a ``.bin`` in insightface's layout (for held-out sets made from our own data, and tests).

    ``images``: ``2P`` arrays ``(H, W, 3)`` uint8 RGB, pair ``i`` = images ``2i, 2i+1``.
    """
    import cv2

    from gandiff.artifacts import atomic_write_bytes

    issame = [bool(x) for x in issame]
    if len(images) != 2 * len(issame):
        raise ValueError(f"write_bin({path}): {len(issame)} pairs need {2 * len(issame)} images, got {len(images)}")
    bins = []
    for i, img in enumerate(images):
        ok, buf = cv2.imencode(format, cv2.cvtColor(np.asarray(img, dtype=np.uint8), cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"write_bin({path}): could not encode image {i} as {format}")
        bins.append(buf.tobytes())
    return atomic_write_bytes(path, pickle.dumps((bins, issame), protocol=pickle.HIGHEST_PROTOCOL))


# --------------------------------------------------------------------------------------------- embeddings


class NonFiniteEmbeddingError(UserError, ValueError):
    """An embedding with NaN or inf values; the message names the image."""


def require_finite(embeddings: np.ndarray, names: Sequence[Any] | None = None, what: str = "embedding") -> None:
    """Refuse NaN / inf rows, naming the first one's image (``names[i]`` names row ``i``): every scoring path
    calls this, since a non-finite embedding sorts first (or last) and silently decides TAR at small FAR."""
    e = np.asarray(embeddings)
    bad = ~np.isfinite(e).reshape(len(e), -1).all(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        who = str(names[k]) if names is not None else f"row {k} of the embeddings"
        raise NonFiniteEmbeddingError(
            f"{who}: {what} has non-finite values (NaN or inf; {int(bad.sum())} of {len(e)} rows): the embedder "
            "failed on this face (check its model file and input), refusing to score")


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation (``sklearn.preprocessing.normalize``: zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, eps)


def fuse_flip(embeddings: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """insightface flip fusion: ``normalize(e(x) + e(mirror(x)))`` of the raw (unnormalised) embeddings."""
    if embeddings.shape != flipped.shape:
        raise ValueError(f"fuse_flip: shapes differ, {embeddings.shape} vs {flipped.shape}")
    return l2_normalize(np.asarray(embeddings, np.float64) + np.asarray(flipped, np.float64))


def embed_images(embed: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int = 64,
                 flip: bool = True, progress: Callable[..., Any] | None = None,
                 names: Sequence[Any] | None = None) -> np.ndarray:
    """Embed ``(N, H, W, 3)`` uint8 RGB faces in batches -> ``(N, D)`` L2-normalised (flip-fused when asked).

    ``embed`` maps a ``(B, H, W, 3)`` uint8 RGB batch to ``(B, D)`` (a face-toolkit embedder's ``embed`` or a
    wrapped backbone). To reproduce insightface numbers exactly, give it the *raw* backbone output: fusion
    sums before normalising. A non-finite embedding is refused, naming ``names[i]`` (default ``image i``).
    """
    n = len(images)
    starts = range(0, n, batch_size)
    if progress is not None:
        starts = progress(starts, total=len(starts), desc="embedding")
    out: np.ndarray | None = None
    for s in starts:
        batch = images[s: s + batch_size]  # (B, H, W, 3)
        e = np.asarray(embed(batch), dtype=np.float64)
        if flip:
            e = e + np.asarray(embed(np.ascontiguousarray(batch[:, :, ::-1])), dtype=np.float64)
        require_finite(e, names[s: s + len(batch)] if names is not None else
                       [f"image {i}" for i in range(s, s + len(batch))])
        if out is None:
            out = np.empty((n, e.shape[1]), dtype=np.float64)
        out[s: s + len(batch)] = e
    if out is None:
        raise ValueError("embed_images: no images")
    return l2_normalize(out)


# --------------------------------------------------------------------------------------------- the protocol


def kfold_indices(n: int, nfolds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``sklearn.model_selection.KFold(nfolds, shuffle=False).split(range(n))``: contiguous folds, the first
    ``n % nfolds`` one item larger. ``nfolds == 1`` trains and tests on everything (insightface's ``LFold``)."""
    idx = np.arange(n)
    if nfolds == 1:
        return [(idx, idx)]
    if nfolds > n:
        raise ValueError(f"nfolds={nfolds}: more folds than the {n} pairs")
    out = []
    for test in np.array_split(idx, nfolds):
        mask = np.ones(n, dtype=bool)
        mask[test] = False
        out.append((idx[mask], test))
    return out


def _counts_below(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each threshold, how many same / different pairs have ``dist < threshold`` (the "accept" rule)."""
    same = np.sort(dist[issame])
    diff = np.sort(dist[~issame])
    return np.searchsorted(same, thresholds, side="left"), np.searchsorted(diff, thresholds, side="left")


def _rates(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TPR, FPR and accuracy per threshold, as insightface's ``calculate_accuracy`` (0 where undefined)."""
    n_same = int(issame.sum())
    n_diff = len(issame) - n_same
    tp, fp = _counts_below(dist, issame, thresholds)
    tn = n_diff - fp
    tpr = tp / n_same if n_same else np.zeros(len(thresholds))
    fpr = fp / n_diff if n_diff else np.zeros(len(thresholds))
    acc = (tp + tn) / len(dist)
    return tpr, fpr, acc


def threshold_at_far(far: np.ndarray, thresholds: np.ndarray, far_target: float) -> float:
    """The threshold where FAR reaches ``far_target``, as ``interp1d(far, thresholds, kind="slinear")``.

    ``far`` is a step function of the threshold and always repeats values (0 for the lowest thresholds).
    SciPy <= 1.8 accepted that: its ``slinear`` is the degree-1 B-spline with knots ``[x0, x..., xn]`` and
    coefficients ``y`` (after a stable sort by ``x``), i.e. linear interpolation between the last point
    at or below the target and the next one. SciPy >= 1.9 refuses duplicate ``x``, so we build that same
    spline directly: the published insightface VAL numbers were computed this way.
    """
    from scipy.interpolate import BSpline

    order = np.argsort(far, kind="mergesort")
    x, y = np.asarray(far, np.float64)[order], np.asarray(thresholds, np.float64)[order]
    if not (x[0] <= far_target <= x[-1]):
        raise ValueError(f"far_target={far_target}: outside the FAR range [{x[0]}, {x[-1]}] of the thresholds")
    spline = BSpline(np.r_[x[0], x, x[-1]], y, 1)
    return float(spline(far_target))


def calculate_roc(dist: np.ndarray, issame: np.ndarray, nfolds: int = 10,
                  thresholds: np.ndarray = ROC_THRESHOLDS) -> dict[str, np.ndarray]:
    """insightface ``calculate_roc`` on precomputed distances ``(P,)``: per-fold accuracy and best threshold,
    and the fold-averaged test TPR / FPR curves ``(T,)``."""
    folds = kfold_indices(len(dist), nfolds)
    tprs = np.zeros((len(folds), len(thresholds)))
    fprs = np.zeros((len(folds), len(thresholds)))
    accuracy = np.zeros(len(folds))
    best = np.zeros(len(folds))
    for k, (train, test) in enumerate(folds):
        _, _, acc_train = _rates(dist[train], issame[train], thresholds)
        b = int(np.argmax(acc_train))  # first best, as np.argmax in the reference
        tprs[k], fprs[k], acc_test = _rates(dist[test], issame[test], thresholds)
        accuracy[k], best[k] = acc_test[b], thresholds[b]
    return {"tpr": tprs.mean(0), "fpr": fprs.mean(0), "accuracy": accuracy, "best_thresholds": best}


def calculate_val(dist: np.ndarray, issame: np.ndarray, far_target: float = 1e-3, nfolds: int = 10,
                  thresholds: np.ndarray = VAL_THRESHOLDS) -> dict[str, np.ndarray]:
    """insightface ``calculate_val``: per-fold VAL (TAR) and FAR at the threshold interpolated to ``far_target``
    on the training folds. A test fold with no same (different) pairs gives VAL (FAR) = nan."""
    folds = kfold_indices(len(dist), nfolds)
    val = np.zeros(len(folds))
    far = np.zeros(len(folds))
    for k, (train, test) in enumerate(folds):
        n_diff_train = int((~issame[train]).sum())
        _, fp = _counts_below(dist[train], issame[train], thresholds)
        far_train = fp / n_diff_train if n_diff_train else np.zeros(len(thresholds))
        thr = threshold_at_far(far_train, thresholds, far_target) if far_train.max() >= far_target else 0.0
        d, s = dist[test], issame[test]
        accept = d < thr
        n_same, n_diff = int(s.sum()), int((~s).sum())
        val[k] = np.sum(accept & s) / n_same if n_same else np.nan
        far[k] = np.sum(accept & ~s) / n_diff if n_diff else np.nan
    return {"val": val, "far": far}


def pair_distances(embeddings: np.ndarray) -> np.ndarray:
    """``(2P, D)`` embeddings, pairs interleaved -> ``(P,)`` squared L2 distances after normalisation."""
    require_finite(embeddings, [f"pair {i // 2} image {i % 2}" for i in range(len(embeddings))])
    e = l2_normalize(embeddings)
    if len(e) % 2:
        raise ValueError(f"embeddings: {len(e)} rows, expected an even number (pairs interleaved)")
    return np.sum(np.square(e[0::2] - e[1::2]), axis=1)


def evaluate_verification(embeddings: np.ndarray, issame: Sequence[bool] | np.ndarray, nfolds: int = 10,
                          far_target: float = 1e-3) -> dict[str, Any]:
    """The insightface 10-fold verification protocol on ``(2P, D)`` embeddings (pairs interleaved).

    Embeddings are L2-normalised here (a no-op for flip-fused ones). Returns plain floats for the scalars
    and arrays for the curves:
    ``accuracy_mean``, ``accuracy_std`` (population std over folds, as insightface), ``fold_accuracy`` (F,),
    ``best_threshold`` (mean of the per-fold best squared-L2 thresholds) and ``best_cosine`` (``1 - d/2``),
    ``val_mean``, ``val_std``, ``far_mean`` (VAL@FAR=``far_target``), ``tpr``/``fpr``/``thresholds`` (T,),
    ``num_pairs``, ``num_same``.
    """
    issame = np.asarray(issame, dtype=bool)
    dist = pair_distances(embeddings)
    if len(dist) != len(issame):
        raise ValueError(f"embeddings give {len(dist)} pairs but issame has {len(issame)}")
    roc = calculate_roc(dist, issame, nfolds=nfolds)
    val = calculate_val(dist, issame, far_target=far_target, nfolds=nfolds)
    best = float(np.mean(roc["best_thresholds"]))
    return {
        "accuracy_mean": float(np.mean(roc["accuracy"])),
        "accuracy_std": float(np.std(roc["accuracy"])),
        "fold_accuracy": roc["accuracy"],
        "best_threshold": best,
        "best_cosine": 1.0 - best / 2.0,
        "val_mean": float(np.mean(val["val"])),
        "val_std": float(np.std(val["val"])),
        "far_mean": float(np.mean(val["far"])),
        "far_target": float(far_target),
        "tpr": roc["tpr"],
        "fpr": roc["fpr"],
        "thresholds": ROC_THRESHOLDS,
        "num_pairs": int(len(issame)),
        "num_same": int(issame.sum()),
        "nfolds": int(nfolds),
    }


def scalar_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The JSON-friendly scalars of ``evaluate_verification`` (drops the curves and per-fold arrays)."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float))}


# --------------------------------------------------------------------------------------------- LFW pairs.txt


def read_lfw_pairs(pairs_path: str | os.PathLike, root: str | os.PathLike,
                   ext: str = "jpg") -> tuple[list[tuple[Path, Path]], np.ndarray]:
    """Parse LFW's ``pairs.txt`` (``<folds> <pairs per fold>`` header, then ``name n1 n2`` for a same pair and
    ``name1 n1 name2 n2`` for a different one) -> image path pairs under ``root/<name>/<name>_<n:04d>.<ext>``
    and ``(P,)`` flags, in file order (so the 10 contiguous folds are LFW's own 10 sets)."""
    pairs_path, root = Path(pairs_path), Path(root)
    if not pairs_path.is_file():
        raise FileNotFoundError(f"{pairs_path}: LFW pairs file not found")
    pairs: list[tuple[Path, Path]] = []
    flags: list[bool] = []

    def image(name: str, n: str, lineno: int) -> Path:
        try:
            k = int(n)
        except ValueError:
            raise ValueError(f"{pairs_path}:{lineno}: image number {n!r} is not an integer") from None
        return root / name / f"{name}_{k:04d}.{ext}"

    lines = pairs_path.read_text().splitlines()
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or (lineno == 1 and len(parts) == 2):  # header "10 300" (or "10\t300")
            continue
        if len(parts) == 3:
            pairs.append((image(parts[0], parts[1], lineno), image(parts[0], parts[2], lineno)))
            flags.append(True)
        elif len(parts) == 4:
            pairs.append((image(parts[0], parts[1], lineno), image(parts[2], parts[3], lineno)))
            flags.append(False)
        else:
            raise ValueError(f"{pairs_path}:{lineno}: expected 'name n1 n2' or 'name1 n1 name2 n2', got {line!r}")
    if not pairs:
        raise ValueError(f"{pairs_path}: no pairs found")
    return pairs, np.asarray(flags, dtype=bool)


def align_photo(image: np.ndarray, detector: Any, size: int = 112, fallback_crop: float = 0.6) -> tuple[np.ndarray, bool]:
    """Detect the most central confident face of an ``(H, W, 3)`` uint8 RGB photo and align it to the ArcFace
    template. LFW photos are centred on the labelled person, so among detections we take the one whose
    box centre is nearest the image centre (weighted by score), as insightface's LFW preparation did.
    With no detection: the central ``fallback_crop`` of the photo resized to ``size`` (returned flag False).
    """
    import cv2

    from gandiff.face.align import align_face

    h, w = image.shape[:2]
    dets = detector.detect(image)
    if dets:
        def rank(d: Any) -> float:
            x0, y0, x1, y1 = np.asarray(d.box, dtype=np.float64)[:4]
            off = np.hypot((x0 + x1) / 2 - w / 2, (y0 + y1) / 2 - h / 2) / max(h, w)
            return float(d.score) - off
        best = max(dets, key=rank)
        return align_face(image, np.asarray(best.landmarks, dtype=np.float32), size=size), True
    c = int(min(h, w) * fallback_crop)
    y0, x0 = (h - c) // 2, (w - c) // 2
    return cv2.resize(image[y0: y0 + c, x0: x0 + c], (size, size), interpolation=cv2.INTER_AREA), False


def load_pair_images(pairs: Sequence[tuple[Path, Path]], detector: Any, size: int = 112,
                     progress: Callable[..., Any] | None = None) -> tuple[np.ndarray, int]:
    """Read, detect and align every image of ``pairs`` -> ``(2P, size, size, 3)`` uint8 RGB (pairs interleaved)
    and the number of images where no face was found (centre-cropped instead)."""
    from PIL import Image

    paths = [p for pair in pairs for p in pair]
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    cache: dict[Path, np.ndarray] = {}
    missed = 0
    it = progress(range(len(paths)), total=len(paths), desc="aligning pairs") if progress else range(len(paths))
    for i in it:
        p = paths[i]
        if p not in cache:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: image named by the pairs file is missing")
            with Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"))
            cache[p], found = align_photo(rgb, detector, size=size)
            missed += int(not found)
        out[i] = cache[p]
    if missed:
        log.warning("%d of %d images had no detected face: centre crops were used", missed, len(cache))
    return out, missed

