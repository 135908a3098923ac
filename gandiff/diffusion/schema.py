"""Config schemas of the ``dreambooth``, ``prompts`` and ``generation`` groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gandiff.schema import require, require_choice


@dataclass
class DreamBoothConfig:
    base: str = ""  # diffusers folder or hub id of the base model
    mode: str = "lora"  # lora | full
    rank: int = 4
    steps: int = 800
    learning_rate: float = 1e-4
    identities_per_batch: int = 8
    instance_token: str = "sks"
    class_noun: str = "person"
    prior_weight: float = 1.0
    num_class_images: int = 200
    resolution: int = 512
    dtype: str = "float32"
    device: str = "auto"

    def __post_init__(self) -> None:
        require_choice("dreambooth.mode", self.mode, ("lora", "full"))
        require(self.rank >= 1, "dreambooth.rank", self.rank, "must be >= 1")
        require(self.steps >= 1, "dreambooth.steps", self.steps, "must be >= 1")
        require(self.learning_rate > 0, "dreambooth.learning_rate", self.learning_rate, "must be > 0")
        require(self.identities_per_batch >= 1, "dreambooth.identities_per_batch", self.identities_per_batch,
                "must be >= 1")
        require(self.prior_weight >= 0, "dreambooth.prior_weight", self.prior_weight, "must be >= 0")
        require(self.num_class_images >= 0, "dreambooth.num_class_images", self.num_class_images, "must be >= 0")
        require(self.resolution >= 8 and self.resolution % 8 == 0, "dreambooth.resolution", self.resolution,
                "must be a positive multiple of 8")
        require_choice("dreambooth.dtype", self.dtype, ("float32", "float16", "bfloat16"))


@dataclass
class PromptsConfig:
    template: str = "a photo of {token} {noun}, {choices}"
    negative: str = ""
    # family name -> {weight: float, options: [str, ...]}; see conf/prompts/*.yaml
    families: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require("{token}" in self.template, "prompts.template", self.template, "must contain {token}")


@dataclass
class GenerationConfig:
    images_per_identity: int = 50
    steps: int = 30
    guidance: float = 7.5
    scheduler: str = "ddim"
    resolution: int = 512
    batch_size: int = 8
    dtype: str = "float32"
    device: str = "auto"

    def __post_init__(self) -> None:
        require(self.images_per_identity >= 1, "generation.images_per_identity", self.images_per_identity,
                "must be >= 1")
        require(self.steps >= 1, "generation.steps", self.steps, "must be >= 1")
        require(self.guidance >= 0, "generation.guidance", self.guidance, "must be >= 0")
        require(self.batch_size >= 1, "generation.batch_size", self.batch_size, "must be >= 1")
        require(self.resolution >= 8 and self.resolution % 8 == 0, "generation.resolution", self.resolution,
                "must be a positive multiple of 8")
        require_choice("generation.dtype", self.dtype, ("float32", "float16", "bfloat16"))
