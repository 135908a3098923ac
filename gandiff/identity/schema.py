"""Config schema of the ``identity`` group (see conf/identity/*.yaml and gandiff/identity/stage.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gandiff.identity.demographics import VOCABULARY, TargetError, parse_target
from gandiff.schema import ConfigError, require, require_choice, require_target


@dataclass
class EditsConfig:
    """Latent edits that make the variations (DreamBooth training images) of each identity."""

    # InterFaceGAN directions learned from the labels of the sampled latents: gender, age, yaw.
    directions: list[str] = field(default_factory=lambda: ["gender", "age", "yaw"])
    file: Any = None  # .npz of directions to use instead of learning them (a previous run's directions.npz)
    strength: list[float] = field(default_factory=lambda: [0.5, 1.5])  # |step| range, in stds of the projection
    perturbation: float = 0.3  # random offset, in per-dimension stds of the latents (clipped at 2 std)
    attempts: int = 3  # candidates rendered per wanted variation (later rounds use gentler edits)
    samples: int = 200  # labelled latents to learn directions from (selection candidates + extra seeds)
    min_samples: int = 20  # fewer labelled latents than this: the direction is skipped

    def __post_init__(self) -> None:
        for d in self.directions:
            require_choice("identity.edits.directions[]", d, ("gender", "age", "yaw"))
        require(len(self.strength) == 2 and 0 <= self.strength[0] <= self.strength[1], "identity.edits.strength",
                list(self.strength), "must be [lo, hi] with 0 <= lo <= hi")
        require(self.perturbation >= 0, "identity.edits.perturbation", self.perturbation, "must be >= 0")
        require(self.attempts >= 1, "identity.edits.attempts", self.attempts, "must be >= 1")
        require(self.samples >= 0, "identity.edits.samples", self.samples, "must be >= 0")
        require(self.min_samples >= 2, "identity.edits.min_samples", self.min_samples, "must be >= 2")


@dataclass
class IdentityConfig:
    source: Any = None  # {_target_: ...}: a GAN or other identity source (gandiff.identity.sources protocol)
    # native: our StyleGAN code; nvlabs: run an official NVlabs checkout (``nvlabs_path``) on source.checkpoint.
    impl: str = "native"
    nvlabs_path: Any = None
    num: int = 8  # identities to keep
    truncation: float = 1.0  # psi
    first_seed: int = 0  # candidate seeds are first_seed + seed * 1_000_000 + 0, 1, 2, ...
    # Demographic target: null, "uniform", equal-share factors "gender*age_bin:20-29/30-39", marginals
    # {gender: {female: 0.5, male: 0.5}} or joints {"gender|age_bin": {"female|20-29": 1, ...}}; shares or
    # counts (gandiff.identity.demographics). A mapping given on the command line replaces a string target
    # but merges into a mapping one: see conf/identity/dcgan.yaml. Default: equal numbers of women and men.
    target: Any = "gender"
    max_attempts: int = 2000  # seeds drawn at most before a cell that cannot be filled is an error
    batch_size: int = 32  # speed only
    # Detector input size for generated images (None: the face config's own). Small sources (64 px) need
    # the face upscaled to the scale the detector expects, not letterboxed into 640 px: 160 for the default
    # 64x64 DCGAN (99.5% of its samples give one face at 160x160, 93% at 640x640).
    detect_size: Any = 160
    min_det_score: float = 0.6
    min_face_size: int = 24  # shorter side of the face box, source pixels
    max_similarity: float = 0.4  # to every identity already kept (embedder scale)
    variations: int = 4  # images per identity for DreamBooth (besides the anchor)
    # To the identity's anchor; 0.363 is SFace's same-identity threshold (face.match_threshold).
    min_variation_similarity: float = 0.363
    edits: EditsConfig = field(default_factory=EditsConfig)

    def __post_init__(self) -> None:
        require_target("identity.source", self.source)
        require_choice("identity.impl", self.impl, ("native", "nvlabs"))
        require(self.impl != "nvlabs" or bool(self.nvlabs_path), "identity.nvlabs_path", self.nvlabs_path,
                "must name an NVlabs stylegan3 checkout when identity.impl=nvlabs")
        require(self.num >= 1, "identity.num", self.num, "must be >= 1")
        require(0.0 < self.truncation <= 2.0, "identity.truncation", self.truncation, "must be in (0, 2]")
        require(self.first_seed >= 0, "identity.first_seed", self.first_seed, "must be >= 0")
        # The target's structure (attribute names, values, shares) is checked here; whether the configured
        # classifier estimates those attributes only when the stage runs.
        try:
            parse_target(self.target, self.num, provided=tuple(VOCABULARY))
        except TargetError as e:
            raise ConfigError(str(e)) from None
        require(self.max_attempts >= self.num, "identity.max_attempts", self.max_attempts,
                f"must be >= identity.num ({self.num})")
        require(self.batch_size >= 1, "identity.batch_size", self.batch_size, "must be >= 1")
        require(self.detect_size is None or (isinstance(self.detect_size, int) and self.detect_size >= 32
                                              and self.detect_size % 32 == 0),
                "identity.detect_size", self.detect_size, "must be null or a multiple of 32 (>= 32)")
        require(0.0 <= self.min_det_score <= 1.0, "identity.min_det_score", self.min_det_score, "must be in [0, 1]")
        require(self.min_face_size >= 0, "identity.min_face_size", self.min_face_size, "must be >= 0")
        require(-1.0 <= self.max_similarity <= 1.0, "identity.max_similarity", self.max_similarity, "must be in [-1, 1]")
        require(self.variations >= 0, "identity.variations", self.variations, "must be >= 0")
        require(-1.0 <= self.min_variation_similarity <= 1.0, "identity.min_variation_similarity",
                self.min_variation_similarity, "must be in [-1, 1]")
