"""Stable Diffusion components: loaded once per process, or built tiny from config for tests.

Everything downstream (DreamBooth, generation) takes a :class:`Components`: tokenizer, CLIP text encoder, VAE,
UNet and the base model's scheduler config. ``load_components`` reads any ``StableDiffusionPipeline``-compatible
model (SD 1.5, SD 2.1, a local folder, fp16-variant folders, a hub id) through ``diffusers``' own loader, so the
demo's base (``gandiff/assets/miniature_sd``, a trained folder that ships in the package) and real weights take
the same path. ``builtin:tiny-sd`` (random weights, 64x64, for tests; it renders noise) is built from code into
a cache folder on first use; ``build_sd15_random_components`` builds SD 1.5-sized random modules in memory.
One module: one loading path; the builders write the folders ``load_components`` reads, so test models
and real weights cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gandiff.devices import torch_device as resolve_device  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# SD 1.x's noise schedule (the scheduler/scheduler_config.json of runwayml/stable-diffusion-v1-5).
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

CLIP_BOS, CLIP_EOS = 49406, 49407  # <|startoftext|>, <|endoftext|> in CLIP's 49408-token vocabulary


@dataclasses.dataclass
class Components:
    """The parts of a Stable Diffusion model, on one device and dtype, all frozen (``requires_grad=False``)."""

    tokenizer: Any  # transformers.CLIPTokenizer
    text_encoder: Any  # transformers.CLIPTextModel
    vae: Any  # diffusers.AutoencoderKL
    unet: Any  # diffusers.UNet2DConditionModel
    scheduler_config: dict[str, Any]
    source: str
    device: torch.device
    dtype: torch.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def pipeline(self, scheduler: Any = None) -> Any:
        """A ``StableDiffusionPipeline`` over these modules (no copies); ``scheduler`` defaults to the base's."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=scheduler or DDIMScheduler.from_config(self.scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids padded / truncated to the tokenizer's 77, on the CPU: (N, 77) int64."""
        return self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """CLIP last hidden states, as SD 1.x conditions on them: (N, 77, D)."""
        return self.text_encoder(self.tokenize(prompts).to(self.device))[0]


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Half precision on CPU is slow and partly unsupported: fall back to float32 there, with a warning."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: must be one of {', '.join(DTYPES)}")
    if device.type == "cpu" and dtype != "float32":
        log.warning("dtype=%s on CPU: using float32 instead", dtype)
        return torch.float32
    return DTYPES[dtype]


# --------------------------------------------------------------------------------------------- loading

_CACHE: dict[tuple[str, str, str], Components] = {}

BUILTIN: dict[str, Callable[[Path, int], Path]] = {}  # filled below: name -> builder(out_dir, seed)


def resolve_base(base: str, cache_dir: str | os.PathLike | None) -> str:
    """``builtin:<name>`` -> its cache folder (built on first use); any other value is returned as is."""
    if not base:
        raise ValueError(
            "dreambooth.base is empty: set a diffusers folder, a hub id "
            "(stable-diffusion-v1-5/stable-diffusion-v1-5) or builtin:tiny-sd"
        )
    if not base.startswith("builtin:"):
        return base
    name = base.removeprefix("builtin:")
    if name not in BUILTIN:
        raise ValueError(
            f"dreambooth.base={base!r}: unknown built-in model; choose one of "
            + ", ".join(f"builtin:{n}" for n in BUILTIN)
        )
    root = Path(cache_dir or os.environ.get("GANDIFF_CACHE", Path.home() / ".cache" / "gandiff")) / "models"
    folder = root / name
    if not (folder / "model_index.json").exists():
        # Built in a temporary folder and renamed: concurrent shards never see a half-written model.
        tmp = root / f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        BUILTIN[name](tmp, 0)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("built %s into %s", base, folder)
    return str(folder)


def load_components(
    base: str,
    dtype: str = "float32",
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    variant: str | None = None,
) -> Components:
    """Load (once per process) a Stable Diffusion model from a diffusers folder, a hub id or ``builtin:<name>``.

    ``variant`` (``dreambooth.variant``) picks ``<weights>.<variant>.safetensors`` files, as
    ``from_pretrained(variant=...)`` does; ``None`` takes the full files, or for a local folder that has
    only one variant's files (hub folders downloaded with ``variant="fp16"``), that variant (logged).
    Modules are frozen and in eval mode; training code attaches its adapters (and unfreezes what it
    trains) on top and detaches them afterwards, so the cached modules stay the base model.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    path = resolve_base(base, cache_dir)
    if not Path(path).exists() and (Path(path).is_absolute() or path.startswith((".", "~"))):
        raise FileNotFoundError(f"dreambooth.base={base!r}: folder {path} does not exist")
    if Path(path).is_dir() and not (Path(path) / "model_index.json").exists():
        raise FileNotFoundError(
            f"dreambooth.base={base!r}: {path} is not a diffusers folder "
            "(no model_index.json); save one with StableDiffusionPipeline.save_pretrained"
        )
    if Path(path).is_dir():
        variant = folder_variant(Path(path), variant, base)
    key = (str(Path(path).resolve()) if Path(path).exists() else path, str(dt), str(dev), str(variant))
    if key in _CACHE:
        return _CACHE[key]
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    pipe = StableDiffusionPipeline.from_pretrained(
        path, dtype=dt, variant=variant, safety_checker=None, requires_safety_checker=False
    )
    comps = _finish(
        pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.unet, dict(pipe.scheduler.config), base, dev, dt
    )
    _CACHE[key] = comps
    return comps


# The modules Components loads (the safety checker is never loaded) and their weight files, full or variant
# (diffusers' naming: ``diffusion_pytorch_model.fp16.safetensors``, shards ``....fp16-00001-of-00002.safetensors``).
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder")
_WEIGHT_FILE = re.compile(r"^[A-Za-z0-9_]+(?:\.(?P<variant>[A-Za-z0-9_]+))?(?:-\d+-of-\d+)?\.(?:safetensors|bin)$")


def weight_variants(folder: Path) -> set[str | None]:
    """The weight-file variants in one component folder: ``None`` for full files, ``"fp16"`` ..."""
    found: set[str | None] = set()
    for f in folder.iterdir() if folder.is_dir() else ():
        m = _WEIGHT_FILE.match(f.name)
        if m:
            found.add(m.group("variant"))
    return found


def folder_variant(path: Path, variant: str | None, base: str) -> str | None:
    """The variant to load a local diffusers folder with: the configured one, checked, or the one it holds.

    A folder holding neither full weight files nor the configured variant's is one line naming the
    component folder and the key to set.
    """
    per = {name: weight_variants(path / name) for name in WEIGHT_COMPONENTS}
    missing = [name for name, v in per.items() if not v]
    if missing:
        raise FileNotFoundError(
            f"dreambooth.base={base!r}: {path / missing[0]} has no weight files (*.safetensors / *.bin); "
            f"a Stable Diffusion folder needs {', '.join(WEIGHT_COMPONENTS)} with weights"
        )
    if variant is not None:
        lacking = [name for name, v in per.items() if variant not in v]
        if lacking:
            have = sorted(str(v) if v else "full" for v in per[lacking[0]])
            raise FileNotFoundError(
                f"dreambooth.variant={variant!r}: {path / lacking[0]} has no *.{variant}.safetensors files "
                f"(it has: {', '.join(have)}); set dreambooth.variant to one of those (full: null)"
            )
        return variant
    if all(None in v for v in per.values()):
        return None
    common = set.intersection(*per.values()) - {None}
    if len(common) == 1:
        chosen = common.pop()
        log.info("dreambooth.base=%s: only %s variant files; loading variant=%s", path, chosen, chosen)
        return chosen
    lacking = next(name for name, v in per.items() if None not in v)
    have = sorted(str(v) for v in per[lacking] if v)
    raise FileNotFoundError(
        f"dreambooth.base={base!r}: {path / lacking} has no full weight files, only variants "
        f"{', '.join(have)}; set dreambooth.variant (e.g. dreambooth.variant={have[0]})"
    )


def _finish(
    tokenizer: Any,
    text_encoder: Any,
    vae: Any,
    unet: Any,
    scheduler_config: dict[str, Any],
    source: str,
    device: torch.device,
    dtype: torch.dtype,
) -> Components:
    from diffusers.models.attention_processor import AttnProcessor2_0

    for m in (text_encoder, vae, unet):
        m.to(device=device) if m.dtype == dtype else m.to(device=device, dtype=dtype)
        m.eval().requires_grad_(False)
    unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA (flash / memory-efficient kernels on GPU)
    vae.set_attn_processor(AttnProcessor2_0())
    if device.type == "cuda":
        unet.to(memory_format=torch.channels_last)
    return Components(tokenizer, text_encoder, vae, unet, scheduler_config, source, device, dtype)


# --------------------------------------------------------------------------------------------- tokenizer


def clip_tokenizer_files(bpe_gz: str | os.PathLike) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and merges from the BPE file OpenAI ships (``bpe_simple_vocab_16e6.txt.gz``).

    The 49408 tokens are, in order: the 256 byte symbols, the same with ``</w>``, the 48894 merges,
    then ``<|startoftext|>`` and ``<|endoftext|>`` (OpenAI CLIP ``simple_tokenizer.py``); this is
    the ``vocab.json`` / ``merges.txt`` pair of ``openai/clip-vit-large-patch14``.
    """
    with gzip.open(bpe_gz) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    byte_symbols = list(_bytes_to_unicode().values())
    vocab = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_clip_tokenizer(bpe_gz: str | os.PathLike | None = None) -> Any:
    """A real CLIP tokenizer (the vocabulary SD 1.x was trained with), made offline from open_clip's BPE file."""
    from transformers import CLIPTokenizer

    if bpe_gz is None:
        from gandiff.config import package_file

        bpe_gz = package_file("open_clip/bpe_simple_vocab_16e6.txt.gz")
    vocab, merges = clip_tokenizer_files(bpe_gz)
    # transformers 5 takes the vocabulary itself (vocab_file= is ignored); 77 is CLIP's context length.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


# --------------------------------------------------------------------------------------------- builders


def tiny_configs() -> dict[str, dict[str, Any]]:
    """Module configs of the tiny model: 64x64 images, 16x16x4 latents, a 32-wide CLIP text encoder.

    Shaped like diffusers' own test models (two UNet levels, one with cross-attention), small enough
    that a DreamBooth step at batch 12 takes a fraction of a second on one CPU core.
    """
    return {
        "unet": dict(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        ),
        "vae": dict(
            sample_size=64,
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 32, 64),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            norm_num_groups=16,
        ),
        "text_encoder": dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            projection_dim=32,
            hidden_act="quick_gelu",
            bos_token_id=CLIP_BOS,
            eos_token_id=CLIP_EOS,
            pad_token_id=CLIP_EOS,
        ),
    }


def sd15_configs() -> dict[str, dict[str, Any]]:
    """The module configs of Stable Diffusion 1.5 (``runwayml/stable-diffusion-v1-5``), written out."""
    return {
        "unet": dict(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
            norm_num_groups=32,
        ),
        "vae": dict(
            sample_size=512,
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=2,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            norm_num_groups=32,
            scaling_factor=0.18215,
        ),
        "text_encoder": dict(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            max_position_embeddings=77,
            projection_dim=768,
            hidden_act="quick_gelu",
            bos_token_id=CLIP_BOS,
            eos_token_id=CLIP_EOS,
            pad_token_id=CLIP_EOS,
        ),
    }


def _build_modules(
    configs: dict[str, dict[str, Any]], seed: int, device: torch.device | None = None
) -> tuple[Any, Any, Any]:
    """Modules with random weights; built directly on ``device`` (an SD 1.5 UNet initialises in seconds on a GPU)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    if device is not None and device.type == "cuda":
        torch.cuda.manual_seed(seed)
    with torch.device(device or "cpu"):
        unet = UNet2DConditionModel(**configs["unet"])
        vae = AutoencoderKL(**configs["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
    return unet, vae, text_encoder


def build_tiny_components(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tiny model with random weights and save it as a diffusers folder (``model_index.json`` ...).

    Load it back with :func:`load_components` or ``StableDiffusionPipeline.from_pretrained(out_dir)``.
    """
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    unet, vae, text_encoder = _build_modules(tiny_configs(), seed)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_clip_tokenizer(),
        unet=unet,
        scheduler=PNDMScheduler.from_config({**SD_SCHEDULE, "skip_prk_steps": True}),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = Path(out_dir)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "README.md").write_text(
        "# tiny-sd (gandiff)\n\nRandom weights built from code by `gandiff.diffusion.components.build_tiny_components`"
        f" (seed {seed}) for tests and the CPU demo: it renders noise. Tokenizer: OpenAI CLIP BPE (MIT).\n"
    )
    return out


BUILTIN["tiny-sd"] = build_tiny_components


def build_sd15_random_components(
    device: str = "cuda", dtype: str = "bfloat16", seed: int = 0, size: str = "sd15"
) -> Components:
    """SD 1.5-sized (``size="sd15"``) or tiny (``size="tiny"``) modules with random weights, in memory.

    For throughput checks without a download: the FLOPs and memory of the real model, not its images.
    """
    from diffusers import PNDMScheduler

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    configs = {"sd15": sd15_configs, "tiny": tiny_configs}[size]()
    unet, vae, text_encoder = _build_modules(configs, seed, dev)
    sched = dict(PNDMScheduler.from_config({**SD_SCHEDULE, "skip_prk_steps": True}).config)
    return _finish(build_clip_tokenizer(), text_encoder, vae, unet, sched, f"random:{size}", dev, dt)
