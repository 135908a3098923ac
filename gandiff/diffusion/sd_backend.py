"""Stable Diffusion + DreamBooth: the first diffusion backend (:mod:`gandiff.diffusion.backend`).

Any ``StableDiffusionPipeline``-compatible base (:mod:`gandiff.diffusion.components`), DreamBooth with
prior preservation as LoRA per identity (many identities per batch) or a full fine-tune
(:mod:`gandiff.diffusion.dreambooth`), adapters in diffusers' ``load_lora_weights`` format, and batched
generation where each sample goes through its own identity's LoRA (:mod:`gandiff.diffusion.generate`).
Prior-preservation class images are made once per class prompt under the stage folder's ``class_images/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.artifacts import atomic_write_json, save_image
from gandiff.diffusion.backend import Adapter, RenderSpec, Sampler, SavedAdapter, TrainIdentity
from gandiff.pipeline import StageError

log = logging.getLogger(__name__)


def open_base(base: str, dtype: str, device: str, root: str | Path, variant: str | None = None) -> Any:
    """The base model's components (once per process); a load failure becomes one clear StageError."""
    from gandiff.diffusion.components import load_components

    try:
        return load_components(base, dtype, device, cache_dir=Path(root).resolve(), variant=variant)
    except (OSError, ValueError) as e:  # FileNotFoundError is an OSError; offline hub ids raise OSError too
        raise StageError(f"dreambooth.base={base!r} could not be loaded: {e}") from e


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "class"


@dataclasses.dataclass
class SDTrainedGroup:
    """A trained group: the LoRA adapters still attached (or a full fine-tune's weights) and what it trained on."""

    losses: np.ndarray  # (steps, K)
    result: Any  # gandiff.diffusion.dreambooth.GroupResult
    data: list[Any]  # IdentityData, in group order
    class_prompts: list[str]  # per identity ("" without prior preservation)
    validation: dict[str, list[Any]]  # identity id -> its validation images (PIL)


class StableDiffusionBackend:
    """DreamBooth on a Stable Diffusion base; ``settings`` is the typed ``dreambooth`` group."""

    def __init__(self, settings: Any, seed: int, cache_dir: Path, face_detector: Callable[[], Any] | None = None):
        self.settings = settings
        self.seed = seed  # the run seed: class and validation images draw from it
        self.cache_dir = Path(cache_dir)
        self.face_detector = face_detector
        self.comps: Any = None
        self.dtype = ""
        self._classes: dict[str, Any] = {}  # class noun -> ClassData, made once per process
        self._identity_models: tuple[Any, Any] | None = None
        self._attached: tuple[Any, Any] | None = None  # (unet_lora, text_lora) while a LoRA group is loaded

    # ---------------------------------------------------------------------------------------- loading

    def load(self, dtype: str, device: str) -> None:
        s = self.settings
        self.comps = open_base(s.base, dtype, device, self.cache_dir, s.variant)
        self.dtype = str(self.comps.dtype).removeprefix("torch.")

    def _check_resolution(self, key: str, resolution: int) -> None:
        factor = self.comps.vae_scale_factor
        if resolution % factor:
            raise StageError(f"{key}={resolution}: must be a multiple of the VAE factor {factor}")

    # ---------------------------------------------------------------------------------------- training

    def training_group_size(self) -> int:
        return 1 if self.settings.mode == "full" else self.settings.identities_per_batch

    @contextlib.contextmanager
    def train_group(self, identities: Sequence[TrainIdentity], work_dir: Path) -> Iterator[SDTrainedGroup]:
        """Train the group; inside the context its LoRA adapters stay attached for ``save_adapter``."""
        import torch

        from gandiff.diffusion import dreambooth as db

        s, comps = self.settings, self.comps
        res = s.resolution
        self._check_resolution("dreambooth.resolution", res)
        if s.identity_loss > 0 and self._identity_models is None:
            self._identity_models = self._build_identity_models()
        # Prior preservation: one set of class images per class prompt, shared by every identity.
        if s.prior_weight > 0:
            for noun in sorted({i.noun for i in identities} - set(self._classes)):
                self._classes[noun] = self._class_data(noun, work_dir)
        classes = self._classes if s.prior_weight > 0 else {}
        data = []
        for ident in identities:
            images = torch.stack([db.load_image_tensor(f, res) for f in ident.images])
            mean, std = db.encode_latents(comps, images)
            class_key = ident.noun if classes else ""
            data.append(db.IdentityData(ident.id, ident.seed, mean, std, ident.prompt, class_key))
            if self._identity_models is not None:
                data[-1].crop_theta, data[-1].anchor_embedding = identity_targets(
                    list(ident.images), res, *self._identity_models
                )
        embedder = self._identity_models[1] if self._identity_models is not None else None
        result = db.train_group(comps, data, classes, s, identity_embedder=embedder)
        try:
            trained = SDTrainedGroup(
                result.losses, result, data, [classes[d.class_key].prompt if d.class_key else "" for d in data],
                self._validation_images(data, result),
            )
            yield trained
        finally:
            for lora in (result.unet_lora, result.text_lora):
                if lora is not None:
                    lora.detach()

    def save_adapter(self, trained: SDTrainedGroup, index: int, folder: Path) -> SavedAdapter:
        """LoRA: ``pytorch_lora_weights.safetensors`` (diffusers' format); full: only the modules trained."""
        from gandiff.diffusion.multi_lora import save_adapter, save_safetensors

        s, result = self.settings, trained.result
        d = trained.data[index]
        extra: list[Path] = []
        if s.mode == "lora":
            weights = save_adapter(folder, index, result.unet_lora, result.text_lora)
        else:
            for n, state in result.full_state.items():
                save_safetensors(folder / f"{n}.safetensors", state, {"format": "pt"})
            weights = folder / "unet.safetensors"
            if "text_encoder" in result.full_state:
                extra.append(folder / "text_encoder.safetensors")
        for j, img in enumerate(trained.validation.get(d.id, [])):
            extra.append(save_image(folder / f"validation_{j:02d}.png", img))
        return SavedAdapter(weights, tuple(extra), s.mode, trained.class_prompts[index],
                            s.rank if s.mode == "lora" else 0, s.steps)

    def _validation_images(self, data: list[Any], result: Any) -> dict[str, list[Any]]:
        """``dreambooth.validation_images`` per identity, rendered with the instance prompt (LoRA only)."""
        from gandiff.diffusion.generate import render_batch
        from gandiff.diffusion.prompts import item_seed

        n = self.settings.validation_images
        out: dict[str, list[Any]] = {}
        if n <= 0 or result.unet_lora is None:
            return out
        specs = [RenderSpec(d.prompt, "", item_seed(self.seed, "validation", d.id, j), i)
                 for i, d in enumerate(data) for j in range(n)]
        imgs = render_batch(self.comps, specs, "ddim", 25, 7.5, self.settings.resolution,
                            result.unet_lora, result.text_lora)
        for spec, img in zip(specs, imgs):
            out.setdefault(data[spec.adapter].id, []).append(img)
        return out

    def _class_data(self, noun: str, work_dir: Path) -> Any:
        """The class prompt's images (generated by the base model where not on disk already), as latents."""
        import torch

        from gandiff.diffusion import dreambooth as db
        from gandiff.diffusion.generate import render_batch
        from gandiff.diffusion.prompts import item_seed

        s = self.settings
        prompt = s.class_prompt.replace("{noun}", noun)
        folder = work_dir / "class_images" / slug(prompt)
        files = [folder / f"{i:04d}.png" for i in range(s.num_class_images)]
        todo = [i for i, f in enumerate(files) if not _readable(f)]
        if todo:
            log.info("dreambooth: %d class images for %r", len(todo), prompt)
            atomic_write_json(folder / "prompt.json", {"prompt": prompt, "steps": s.class_image_steps,
                                                       "guidance": s.class_image_guidance})
        for start in range(0, len(todo), s.class_batch_size):
            part = todo[start : start + s.class_batch_size]
            specs = [RenderSpec(prompt, "", item_seed(self.seed, "class", prompt, i)) for i in part]
            imgs = render_batch(
                self.comps, specs, "ddim", s.class_image_steps, s.class_image_guidance, s.resolution
            )
            for i, img in zip(part, imgs):
                save_image(files[i], img)
        images = torch.stack([db.load_image_tensor(f, s.resolution) for f in files])
        mean, std = db.encode_latents(self.comps, images)
        return db.ClassData(prompt, mean, std)

    def _build_identity_models(self) -> tuple[Any, Any]:
        """The identity loss's face detector and frozen embedder (``dreambooth.identity_embedder``)."""
        import torch
        from hydra.utils import instantiate

        if self.face_detector is None:
            raise StageError("dreambooth.identity_loss > 0: this run gives the backend no face detector")
        detector = self.face_detector()
        node = self.settings.identity_embedder
        try:
            embedder = instantiate(node)
        except Exception as e:  # noqa: BLE001  (Hydra wraps the target's own error)
            raise StageError(f"dreambooth.identity_embedder could not be built: {e}") from e
        if not isinstance(embedder, torch.nn.Module):
            raise StageError(f"dreambooth.identity_embedder={node['_target_']}: gives a "
                             f"{type(embedder).__name__}, not a torch.nn.Module (the loss needs gradients)")
        return detector, embedder.to(self.comps.device).eval().requires_grad_(False)

    # ---------------------------------------------------------------------------------------- rendering

    def render_group_size(self, modes: set[str], requested: int) -> int:
        # A full fine-tune replaces the base weights: its identities render one at a time.
        return 1 if "full" in modes else requested

    @contextlib.contextmanager
    def adapters(self, group: Sequence[Adapter]) -> Iterator[None]:
        """The group's LoRA adapters attached (slot i = group[i]), or, for a full fine-tune (one identity per
        group), its trained weights loaded in place of the base weights (restored on exit)."""
        modes = {a.mode for a in group}
        if len(modes) != 1 or (modes == {"full"} and len(group) != 1):
            raise StageError(f"generate: group {[a.id for a in group]} mixes DreamBooth modes {sorted(modes)}")
        if modes == {"full"}:
            with self._full_weights(group[0].path.parent):
                yield
            return
        from gandiff.diffusion.generate import attach_adapters

        unet_lora, text_lora = attach_adapters(self.comps, [str(a.path) for a in group])
        self._attached = (unet_lora, text_lora)
        try:
            yield
        finally:
            self._attached = None
            for m in (unet_lora, text_lora):
                if m is not None:
                    m.detach()

    @contextlib.contextmanager
    def _full_weights(self, folder: Path) -> Iterator[None]:
        from safetensors.torch import load_file

        mods = {"unet": self.comps.unet, "text_encoder": self.comps.text_encoder}
        backup = {}
        try:
            for name, module in mods.items():
                if (folder / f"{name}.safetensors").exists():
                    backup[name] = {k: v.detach().clone() for k, v in module.state_dict().items()}
                    module.load_state_dict(load_file(folder / f"{name}.safetensors"))
            yield
        finally:
            for name, state in backup.items():
                mods[name].load_state_dict(state)

    def render(self, specs: Sequence[RenderSpec], sampler: Sampler) -> list[Any]:
        from gandiff.diffusion.generate import render_batch

        self._check_resolution("generation.resolution", sampler.resolution)
        loras = self._attached or (None, None)
        if loras[0] is None:  # the base model, or a full fine-tune loaded in its place: no adapter slots
            specs = [dataclasses.replace(sp, adapter=-1) for sp in specs]
        return render_batch(self.comps, specs, sampler.scheduler, sampler.steps, sampler.guidance,
                            sampler.resolution, *loras)


def identity_targets(files: list[Path], resolution: int, detector: Any, embedder: Any) -> tuple[Any, Any]:
    """Crop matrices of an identity's training images (N, 2, 2, 3: image, mirror) and its anchor embedding (D,).

    Each image's crop is placed from its own five landmarks (the anchor's where the detector finds no
    face); the anchor embedding is the embedder's on ``align_face(anchor)``, the reference alignment.
    """
    import torch

    from gandiff.diffusion.dreambooth import crop_theta, load_image_tensor, mirror_landmarks
    from gandiff.face.align import align_face

    # The images as DreamBooth sees them (square, at the training resolution), as uint8 RGB.
    images = [((load_image_tensor(f, resolution) + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
              for f in files]
    dets = [max(d, key=lambda f: f.area) if d else None for d in (detector.detect(im) for im in images)]
    if dets[0] is None:
        raise StageError(f"{files[0]}: no face found in the anchor, so the identity loss has no crop to place "
                         "(set dreambooth.identity_loss=0 or check face.detector)")
    thetas = []
    for f, d in zip(files, dets):
        if d is None:
            log.warning("dreambooth: no face in %s; its identity-loss crop uses the anchor's landmarks", f)
        lm = np.asarray((d or dets[0]).landmarks, np.float64).reshape(5, 2)
        thetas.append([crop_theta(lm, resolution, resolution),
                       crop_theta(mirror_landmarks(lm, resolution), resolution, resolution)])
    crop = align_face(images[0], dets[0].landmarks)  # (112, 112, 3)
    device = next(iter(embedder.buffers())).device
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float().to(device)
        anchor = torch.nn.functional.normalize(embedder(x).float(), dim=1)[0].cpu()
    return torch.from_numpy(np.asarray(thetas, np.float32)), anchor


def _readable(path: Path) -> bool:
    """A finished PNG (atomic writes mean a file is whole unless damaged later): PIL can decode it."""
    if not path.exists():
        return False
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return True
    except (OSError, ValueError):
        return False
