"""Config schemas of the ``dreambooth``, ``prompts`` and ``generation`` groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gandiff.schema import require, require_choice, require_range, require_target

DTYPES = ("float32", "float16", "bfloat16")
# diffusers.optimization.get_scheduler's names (and formulas: gandiff.diffusion.dreambooth.lr_lambda) for the
# schedules that need no more settings than lr_warmup_steps.
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
# dreambooth.learning_rate=null means the reference's rate for the mode: diffusers' train_dreambooth.py
# (full fine-tune, 5e-6) and its LoRA README's train_dreambooth_lora.py runs (1e-4).
DEFAULT_LEARNING_RATES = {"full": 5e-6, "lora": 1e-4}


def dreambooth_learning_rate(mode: str, learning_rate: float | None) -> float:
    """``dreambooth.learning_rate``, or the default of ``mode`` when it is null."""
    return float(DEFAULT_LEARNING_RATES[mode] if learning_rate is None else learning_rate)
OPTIMIZERS = ("adamw", "adamw_fused", "adamw8bit")
SCHEDULERS = ("ddim", "pndm", "ddpm", "euler", "euler_a", "dpmpp_2m", "unipc")


@dataclass
class DreamBoothConfig:
    # The diffusion backend (gandiff.diffusion.backend protocol): _target_ and its own arguments. The default is
    # Stable Diffusion + DreamBooth; an SDXL or identity-conditioned backend is a class and a YAML file.
    backend: Any = field(default_factory=lambda: {"_target_": "gandiff.diffusion.sd_backend.StableDiffusionBackend"})
    # A diffusers folder, a hub id (stable-diffusion-v1-5/stable-diffusion-v1-5) or builtin:tiny-sd (built on first
    # use under ${paths.root}/models; random weights, for tests and the CPU demo).
    base: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the mirror of runwayml/stable-diffusion-v1-5 (withdrawn)
    # Weight files to load: null = the full files (*.safetensors), or a local folder's only variant when it
    # has no full files (a hub download with variant="fp16" holds *.fp16.safetensors only); fp16 = those.
    variant: str | None = None
    mode: str = "lora"  # lora: one adapter per identity, many identities per batch | full: UNet fine-tune
    rank: int = 16
    lora_alpha: float | None = None  # None: = rank (scale 1, the diffusers convention)
    train_text_encoder: bool = False  # lora: LoRA on CLIP's attention too | full: fine-tune it too
    steps: int = 800
    learning_rate: float | None = None  # null: by mode, lora 1e-4, full 5e-6 (DEFAULT_LEARNING_RATES)
    # As diffusers' get_scheduler: constant (lr_warmup_steps is ignored, as there) | constant_with_warmup |
    # linear | cosine (the last three warm up linearly from 0 over lr_warmup_steps, lr * s / W at step s).
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0  # per identity (adapters are clipped one by one, so identities never mix)
    # adamw (torch's per-tensor loop, as diffusers' scripts) | adamw_fused (torch's fused kernel: the same update up
    # to float rounding, one kernel over every tensor; 3-4x faster steps on CPU for the miniature model's 7.4M
    # parameters, scripts/bench/optimizer_step.py) | adamw8bit (bitsandbytes, CUDA only)
    optimizer: str = "adamw"
    gradient_checkpointing: bool = False
    identities_per_batch: int = 16  # lora only; full fine-tunes train one identity at a time
    # Samples of each identity per step (diffusers' --train_batch_size; with prior preservation as many class
    # samples again). On small models a larger batch costs far less per sample than another step.
    train_batch_size: int = 1
    instance_token: str = "sks"
    class_noun: str = "person"
    # Demographic class nouns: the identity's `gender` label -> noun ({male: man, female: woman});
    # an identity whose label is missing or not listed gets class_noun.
    class_nouns: dict[str, str] = field(default_factory=dict)
    instance_prompt: str = "a photo of {token} {noun}"
    class_prompt: str = "a photo of a {noun}"
    prior_weight: float = 1.0  # 0 turns prior preservation off
    num_class_images: int = 200  # per class prompt, generated once and shared by all identities
    class_image_steps: int = 30
    class_image_guidance: float = 7.5
    class_batch_size: int = 16
    # Where gandiff departs from diffusers' train_dreambooth(_lora).py on purpose: a horizontal flip of each
    # training image with this probability (the scripts have none; a mirrored face is the same identity, and
    # 3-5 GAN images per identity are few); training images are centre-cropped to a square (the scripts crop
    # at random unless --center_crop: GAN faces are centred and a random crop can cut the face); LoRA weights
    # stay float32 under bf16 (the scripts upcast them under fp16 only: bf16's 8-bit mantissa loses the small
    # AdamW updates of a LoRA).
    flip: float = 0.5  # probability of a horizontal flip of each training image
    # Identity-aware DreamBooth (ID-Booth's identity term): add identity_loss * (1 - cos) between the
    # identity_embedder's embedding of the denoised prediction (x0 from the predicted noise, decoded by the
    # VAE, cut to the ArcFace crop placed by face.detector on each training image) and of the anchor.
    # 0: off. The embedder is a frozen differentiable torch module, (N, 3, 112, 112) RGB 0..255 -> (N, D):
    # gandiff.face.sface_torch.SFaceTorch (demo) or IResNetFaceModule (an arcface_torch .pth). Measure the
    # result with another embedder than this one (it would measure how well the model fools it).
    identity_loss: float = 0.0
    identity_max_timestep: int = 1000  # the term acts on samples with t below this (x0 is a face there)
    identity_embedder: Any = None  # a Hydra node (_target_ ...); needed when identity_loss > 0
    resolution: int = 512
    validation_images: int = 0  # per identity, rendered with the instance prompt after training
    dtype: str = "bfloat16"  # the models' weights (one of DTYPES); the CPU demo states float32
    device: str = "auto"

    def __post_init__(self) -> None:
        require(self.backend is not None, "dreambooth.backend", self.backend, "must be a mapping with a '_target_'")
        require_target("dreambooth.backend", self.backend)
        require_choice("dreambooth.mode", self.mode, ("lora", "full"))
        require(
            self.variant is None or (bool(self.variant) and self.variant.replace("_", "").isalnum()),
            "dreambooth.variant",
            self.variant,
            "must be null (full weight files) or a variant name such as fp16",
        )
        require(self.rank >= 1, "dreambooth.rank", self.rank, "must be >= 1")
        require(
            self.lora_alpha is None or self.lora_alpha > 0,
            "dreambooth.lora_alpha",
            self.lora_alpha,
            "must be > 0 or null (= rank)",
        )
        require(self.steps >= 1, "dreambooth.steps", self.steps, "must be >= 1")
        require(self.learning_rate is None or self.learning_rate > 0, "dreambooth.learning_rate", self.learning_rate,
                "must be > 0 or null (by mode: lora 1e-4, full 5e-6)")
        require_choice("dreambooth.lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        require(self.lr_warmup_steps >= 0, "dreambooth.lr_warmup_steps", self.lr_warmup_steps, "must be >= 0")
        require(self.weight_decay >= 0, "dreambooth.weight_decay", self.weight_decay, "must be >= 0")
        require(
            self.max_grad_norm >= 0, "dreambooth.max_grad_norm", self.max_grad_norm, "must be >= 0 (0: off)"
        )
        require_choice("dreambooth.optimizer", self.optimizer, OPTIMIZERS)
        require(
            self.identities_per_batch >= 1,
            "dreambooth.identities_per_batch",
            self.identities_per_batch,
            "must be >= 1",
        )
        require(self.train_batch_size >= 1, "dreambooth.train_batch_size", self.train_batch_size, "must be >= 1")
        require(
            bool(self.instance_token.strip()),
            "dreambooth.instance_token",
            self.instance_token,
            "must be a non-empty rare token, e.g. sks",
        )
        require(
            "{token}" in self.instance_prompt,
            "dreambooth.instance_prompt",
            self.instance_prompt,
            "must contain {token}",
        )
        require(
            "{token}" not in self.class_prompt,
            "dreambooth.class_prompt",
            self.class_prompt,
            "must not contain {token} (the class prompt describes the class, not the identity)",
        )
        require(self.prior_weight >= 0, "dreambooth.prior_weight", self.prior_weight, "must be >= 0")
        require(
            self.num_class_images >= 0, "dreambooth.num_class_images", self.num_class_images, "must be >= 0"
        )
        require(
            self.prior_weight == 0 or self.num_class_images >= 1,
            "dreambooth.num_class_images",
            self.num_class_images,
            "must be >= 1 when prior_weight > 0 (prior preservation needs class images)",
        )
        require(
            self.class_image_steps >= 1,
            "dreambooth.class_image_steps",
            self.class_image_steps,
            "must be >= 1",
        )
        require(
            self.class_batch_size >= 1, "dreambooth.class_batch_size", self.class_batch_size, "must be >= 1"
        )
        require_range("dreambooth.flip", self.flip, 0.0, 1.0)
        require(self.identity_loss >= 0, "dreambooth.identity_loss", self.identity_loss, "must be >= 0 (0: off)")
        require(self.identity_max_timestep >= 1, "dreambooth.identity_max_timestep", self.identity_max_timestep,
                "must be >= 1 (the term acts on timesteps below it)")
        require(self.identity_loss == 0 or (isinstance(self.identity_embedder, dict)
                                            and "_target_" in self.identity_embedder),
                "dreambooth.identity_embedder", self.identity_embedder,
                "must be a node with _target_ (e.g. gandiff.face.sface_torch.SFaceTorch) when identity_loss > 0")
        require(
            self.resolution >= 8 and self.resolution % 8 == 0,
            "dreambooth.resolution",
            self.resolution,
            "must be a positive multiple of 8",
        )
        require(
            self.validation_images >= 0,
            "dreambooth.validation_images",
            self.validation_images,
            "must be >= 0",
        )
        require_choice("dreambooth.dtype", self.dtype, DTYPES)


@dataclass
class PromptsConfig:
    template: str = "a photo of {token} {noun}, {choices}"
    # The GANDiffFace-like negative prompt (prompts=gandiff, the default); "" for a model trained without one.
    negative: str = ("cartoon, drawing, painting, illustration, blurry, deformed, disfigured, multiple people, "
                     "text, watermark")
    # family name -> {weight: float in [0, 1], options: [str, ...]}; see conf/prompts/*.yaml
    families: dict[str, Any] = field(default_factory=dict)
    mode: str = "sample"  # sample: random draws per image | product: every combination of product_families
    product_families: list[str] = field(default_factory=list)  # empty: all families

    def __post_init__(self) -> None:
        require("{token}" in self.template, "prompts.template", self.template, "must contain {token}")
        require_choice("prompts.mode", self.mode, ("sample", "product"))
        from gandiff.diffusion.prompts import parse_families
        from gandiff.schema import ConfigError

        try:
            names = [f.name for f in parse_families(self.families)]
        except ValueError as e:
            raise ConfigError(str(e)) from None
        unknown = [n for n in self.product_families if n not in names]
        require(not unknown, "prompts.product_families", self.product_families, f"{unknown} not in {names}")


@dataclass
class GenerationConfig:
    images_per_identity: int = 50
    steps: int = 30
    guidance: float = 7.5  # classifier-free guidance scale; <= 1 turns it off (half the UNet work)
    scheduler: str = "ddim"
    resolution: int = 512
    batch_size: int = 32  # images per UNet batch, mixed across identities (x2 with guidance)
    identities_per_group: int = 16  # a unit of work: resumed whole, so its batches are always the same
    dtype: str = "bfloat16"  # the models' weights (one of DTYPES); the CPU demo states float32
    device: str = "auto"
    # An image_id from images.parquet: re-render it (with the batch it was made in) next to the original
    # and report whether the pixels match; the stage makes nothing else.
    replay: str | None = None
    # diffusion: render with each identity's DreamBooth model | gan: take the identities' own GAN images
    # (the GAN-only baseline; the dreambooth stage is not needed)
    source: str = "diffusion"

    def __post_init__(self) -> None:
        require_choice("generation.source", self.source, ("diffusion", "gan"))
        require(
            self.images_per_identity >= 1,
            "generation.images_per_identity",
            self.images_per_identity,
            "must be >= 1",
        )
        require(self.steps >= 1, "generation.steps", self.steps, "must be >= 1")
        require(self.guidance >= 0, "generation.guidance", self.guidance, "must be >= 0")
        require_choice("generation.scheduler", self.scheduler, SCHEDULERS)
        require(self.batch_size >= 1, "generation.batch_size", self.batch_size, "must be >= 1")
        require(
            self.identities_per_group >= 1,
            "generation.identities_per_group",
            self.identities_per_group,
            "must be >= 1",
        )
        require(
            self.resolution >= 8 and self.resolution % 8 == 0,
            "generation.resolution",
            self.resolution,
            "must be a positive multiple of 8",
        )
        require_choice("generation.dtype", self.dtype, DTYPES)
