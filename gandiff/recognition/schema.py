"""Config schemas of the ``recognizer`` and ``trainer`` groups.

``recognizer`` says what is trained (backbone, embedding, margin head); ``trainer`` says how (optimiser,
schedule, precision, devices, data augmentation, validation). The defaults are a GPU recipe after insightface
arcface_torch's IResNet-50 (WebFace/MS1M-scale data): SGD 0.1 for a global batch of 512-1024 (scale it with
batch_size x devices), momentum 0.9, weight decay 5e-4, polynomial decay with power 2, gradient norm clipped
at 5, bf16 autocast, ArcFace s=64 m=0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gandiff.schema import require, require_choice, require_range

BACKBONES = ("iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200", "iresnet50_se", "mobilefacenet",
             "mobilefacenet_small")
HEADS = ("arcface", "cosface", "combined", "adaface")


@dataclass
class RecognizerConfig:
    backbone: str = "iresnet50"  # one of BACKBONES; insightface arcface_torch parameter names
    embedding_size: int = 512
    dropout: float = 0.0  # before the embedding layer (arcface_torch: 0 for IResNet)
    fp16: bool = False  # arcface_torch's flag: trunk under fp16 autocast on CUDA, embedding layer in fp32
    head: str = "arcface"  # arcface | cosface | combined | adaface
    scale: float = 64.0  # s: logit scale
    margin: float = 0.5  # m: arcface angular margin (0.5), cosface additive margin (0.35-0.4), adaface m (0.4)
    # combined: cos(m1*theta + m2) - m3, insightface's convention (ArcFace = 1,0.5,0; CosFace = 1,0,0.35)
    combined_margins: list[float] = field(default_factory=lambda: [1.0, 0.3, 0.2])
    easy_margin: bool = False  # arcface: apply the margin only where cos > 0 (else insightface's linear fallback)
    subcenters: int = 1  # sub-center ArcFace (Deng et al., ECCV 2020): K centres per class, max over them
    adaface_h: float = 0.333  # AdaFace: how far the norm statistics move the margin
    adaface_t_alpha: float = 0.01  # AdaFace: EMA rate of the batch norm statistics

    def __post_init__(self) -> None:
        require_choice("recognizer.backbone", self.backbone, BACKBONES)
        require(self.embedding_size >= 2, "recognizer.embedding_size", self.embedding_size, "must be >= 2")
        require_range("recognizer.dropout", self.dropout, 0.0, 0.99)
        require_choice("recognizer.head", self.head, HEADS)
        require(self.scale > 0, "recognizer.scale", self.scale, "must be > 0")
        require_range("recognizer.margin", self.margin, 0.0, 1.5)
        require(len(self.combined_margins) == 3, "recognizer.combined_margins", list(self.combined_margins),
                "must be [m1, m2, m3], e.g. [1.0, 0.3, 0.2]")
        m1, m2, m3 = self.combined_margins
        require(m1 > 0 and 0 <= m2 < 3.14159 and 0 <= m3 < 1, "recognizer.combined_margins",
                list(self.combined_margins), "needs m1 > 0, 0 <= m2 < pi, 0 <= m3 < 1")
        require(self.subcenters >= 1, "recognizer.subcenters", self.subcenters, "must be >= 1 (3 in the paper)")
        require(self.subcenters == 1 or self.head in ("arcface", "cosface", "combined"), "recognizer.subcenters",
                self.subcenters, f"sub-centres work with arcface, cosface or combined, not {self.head!r}")
        require(self.adaface_h > 0, "recognizer.adaface_h", self.adaface_h, "must be > 0")
        require_range("recognizer.adaface_t_alpha", self.adaface_t_alpha, 0.0, 1.0)


@dataclass
class AugmentConfig:
    """Training-time augmentation of aligned 112x112 faces (applied on uint8 tensors in the workers)."""

    flip: bool = True  # horizontal flip with p=0.5 (arcface_torch's only augmentation)
    crop_jitter: int = 0  # pixels: pad by this much (edge values) and crop back at a random offset
    color_jitter: float = 0.0  # strength of brightness/contrast/saturation jitter (0 = off, 0.2-0.4 typical)
    random_erasing: float = 0.0  # probability of erasing one rectangle (occlusion robustness)
    random_erasing_scale: list[float] = field(default_factory=lambda: [0.02, 0.2])  # area fraction range
    random_erasing_ratio: list[float] = field(default_factory=lambda: [0.3, 3.3])  # aspect ratio range
    random_erasing_fill: int = 0  # uint8 value of the erased box (128 ~ 0 after (x - 127.5) / 127.5)
    # AdaFace's Augmenter (mk-minchul/AdaFace dataset/augmenter.py), each applied with its own probability:
    crop_prob: float = 0.0  # keep a random rectangle (RandomResizedCrop params, scale 0.2-1) in place, black outside
    low_res_prob: float = 0.0  # down-scale by U(0.2, 1) and back, random cv2 interpolations
    photometric_prob: float = 0.0  # ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5)
    randaugment: bool = False  # RandAugment (Cubuk et al., 2020)
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9

    def __post_init__(self) -> None:
        require(self.crop_jitter >= 0, "trainer.augment.crop_jitter", self.crop_jitter, "must be >= 0 pixels")
        require_range("trainer.augment.color_jitter", self.color_jitter, 0.0, 1.0)
        require_range("trainer.augment.random_erasing", self.random_erasing, 0.0, 1.0)
        lo, hi = (list(self.random_erasing_scale) + [None, None])[:2]
        require(len(self.random_erasing_scale) == 2 and 0 < lo <= hi < 1, "trainer.augment.random_erasing_scale",
                list(self.random_erasing_scale), "must be [min, max] area fractions with 0 < min <= max < 1")
        lo, hi = (list(self.random_erasing_ratio) + [None, None])[:2]
        require(len(self.random_erasing_ratio) == 2 and 0 < lo <= hi, "trainer.augment.random_erasing_ratio",
                list(self.random_erasing_ratio), "must be [min, max] aspect ratios with 0 < min <= max")
        require_range("trainer.augment.random_erasing_fill", self.random_erasing_fill, 0, 255)
        for k in ("crop_prob", "low_res_prob", "photometric_prob"):
            require_range(f"trainer.augment.{k}", getattr(self, k), 0.0, 1.0)
        require(self.randaugment_ops >= 1, "trainer.augment.randaugment_ops", self.randaugment_ops, "must be >= 1")
        require_range("trainer.augment.randaugment_magnitude", self.randaugment_magnitude, 0, 30)


@dataclass
class TrainerConfig:
    max_epochs: int = 20
    max_steps: int = -1  # > 0: stop after this many optimiser steps (wins over max_epochs)
    batch_size: int = 128  # per device
    optimizer: str = "sgd"  # sgd | adamw
    learning_rate: float = 0.1
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0  # linear warm-up from 0 (fractions of an epoch allowed)
    schedule: str = "poly"  # poly | cosine | constant | step, after warm-up, per step
    poly_power: float = 2.0  # arcface_torch's PolyScheduler
    lr_milestones: list[float] = field(default_factory=list)  # step: 0-based epochs from which lr *= lr_gamma
    lr_gamma: float = 0.1  # step: the factor at each milestone
    bn_weight_decay: bool = True  # false: BatchNorm parameters get no weight decay (SOTA-FR separate_bn_param)
    gradient_clip_val: float = 5.0  # max gradient norm (arcface_torch: 5); 0 = off
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"  # auto | ddp | ... (Lightning strategies)
    num_nodes: int = 1
    precision: str = "bf16-mixed"  # 32-true | bf16-mixed | 16-mixed (the CPU demo: 32-true)
    num_workers: int = 8
    compile: bool = False  # torch.compile the backbone (GPU)
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Validation during training.
    val_every_n_epochs: int = 1
    val_batch_size: int = 256
    val_bins: dict[str, str] = field(default_factory=dict)  # name -> insightface verification .bin
    heldout: str = "images"  # images | identities | none: held-out verification pairs from the dataset
    heldout_fraction: float = 0.1  # of each identity's images (images) or of the identities (identities)
    heldout_pairs: int = 2000  # at most this many pairs, half mated, half non-mated
    # Run control.
    log_every_n_steps: int = 50
    nan_check_every: int = 50  # steps between checks of the loss for NaN/inf (each check syncs the GPU)
    checkpoint_every_n_steps: int = 2000  # 0: a checkpoint at the end of every epoch only
    on_empty: str = "skip"  # the dataset has < 2 identities: skip (record why) | error
    data: str = "export"  # export: the export stage's dataset | a path to any export (folder, .rec, shards)

    def __post_init__(self) -> None:
        require(self.max_epochs >= 1, "trainer.max_epochs", self.max_epochs, "must be >= 1")
        require(self.max_steps == -1 or self.max_steps >= 1, "trainer.max_steps", self.max_steps,
                "must be -1 (use max_epochs) or >= 1")
        require(self.batch_size >= 2, "trainer.batch_size", self.batch_size, "must be >= 2")
        require_choice("trainer.optimizer", self.optimizer, ("sgd", "adamw"))
        require_choice("trainer.schedule", self.schedule, ("poly", "cosine", "constant", "step"))
        require(all(m >= 0 for m in self.lr_milestones) and list(self.lr_milestones) == sorted(self.lr_milestones),
                "trainer.lr_milestones", list(self.lr_milestones), "must be increasing epochs >= 0, e.g. [11, 19, 23]")
        require(self.schedule != "step" or bool(self.lr_milestones), "trainer.lr_milestones",
                list(self.lr_milestones), "schedule=step needs milestones, e.g. [11, 19, 23]")
        require(0 < self.lr_gamma <= 1, "trainer.lr_gamma", self.lr_gamma, "must be in (0, 1]")
        require(self.learning_rate > 0, "trainer.learning_rate", self.learning_rate, "must be > 0")
        require_range("trainer.momentum", self.momentum, 0.0, 1.0)
        require(self.weight_decay >= 0, "trainer.weight_decay", self.weight_decay, "must be >= 0")
        require(self.warmup_epochs >= 0, "trainer.warmup_epochs", self.warmup_epochs, "must be >= 0")
        require(self.poly_power > 0, "trainer.poly_power", self.poly_power, "must be > 0")
        require(self.gradient_clip_val >= 0, "trainer.gradient_clip_val", self.gradient_clip_val, "must be >= 0")
        require_choice("trainer.precision", self.precision,
                       ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true"))
        require(self.num_workers >= 0, "trainer.num_workers", self.num_workers, "must be >= 0")
        require(self.num_nodes >= 1, "trainer.num_nodes", self.num_nodes, "must be >= 1")
        require(self.val_every_n_epochs >= 1, "trainer.val_every_n_epochs", self.val_every_n_epochs, "must be >= 1")
        require(self.val_batch_size >= 1, "trainer.val_batch_size", self.val_batch_size, "must be >= 1")
        require_choice("trainer.heldout", self.heldout, ("images", "identities", "none"))
        require_range("trainer.heldout_fraction", self.heldout_fraction, 0.0, 0.9)
        require(self.heldout_pairs >= 20, "trainer.heldout_pairs", self.heldout_pairs, "must be >= 20")
        require(self.log_every_n_steps >= 1, "trainer.log_every_n_steps", self.log_every_n_steps, "must be >= 1")
        require(self.nan_check_every >= 1, "trainer.nan_check_every", self.nan_check_every, "must be >= 1")
        require(self.checkpoint_every_n_steps >= 0, "trainer.checkpoint_every_n_steps",
                self.checkpoint_every_n_steps, "must be >= 0")
        require_choice("trainer.on_empty", self.on_empty, ("skip", "error"))
        require(bool(self.data), "trainer.data", self.data, "must be 'export' or a path to an exported dataset")
