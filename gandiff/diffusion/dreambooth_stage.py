"""The ``dreambooth`` stage: learn every identity, many identities per batch.

Reads ``identities/identities.parquet`` and ``images/<id>/*.png``. Writes under its folder:

    class_images/<class-slug>/0000.png ...     prior-preservation images, made once per class prompt
    adapters/<id>/pytorch_lora_weights.safetensors   (mode=lora; diffusers load_lora_weights format)
    adapters/<id>/unet.safetensors [text_encoder.safetensors]   (mode=full: only the modules trained)
    adapters/<id>/loss.json                    the per-step loss curve of that identity
    adapters/<id>/validation_00.png ...        optional (dreambooth.validation_images)
    adapters.parquet                           one row per identity: path, sha256, final loss, prompts

Work goes in groups of ``identities_per_batch`` identities: fixed chunks of this shard's identity list,
so a group always holds the same identities and trains the same batches. An item is recorded only
after its whole group has been saved; a group with any missing or damaged output (deleted or truncated
LoRA file: the item store re-checks sizes and hashes) is retrained from scratch, and since every random
draw is seeded per identity and step, it comes out as it would have the first time.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from gandiff.artifacts import atomic_write_json, read_table, save_image, select_shard, write_table
from gandiff.diffusion.schema import dreambooth_learning_rate
from gandiff.pipeline import Stage, StageContext, StageError

log = logging.getLogger(__name__)


def _plain(node: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def open_base(base: str, dtype: str, device: str, root: str, variant: str | None = None) -> Any:
    """The base model's components (once per process); a load failure becomes one clear StageError."""
    from gandiff.diffusion.components import load_components

    try:
        return load_components(base, dtype, device, cache_dir=Path(root).resolve(), variant=variant)
    except (OSError, ValueError) as e:  # FileNotFoundError is an OSError; offline hub ids raise OSError too
        raise StageError(f"dreambooth.base={base!r} could not be loaded: {e}") from e


def class_noun(gender: Any, class_nouns: dict[str, str], default: str) -> str:
    """The class noun of an identity from its demographic label (``female`` -> ``woman``), else ``default``."""
    return class_nouns.get(str(gender), default) if gender is not None else default


def read_identities(folder: Path) -> list[dict[str, Any]]:
    """Rows of ``identities.parquet`` with their training images (``images/<id>/*.png``, anchor first)."""
    rows = read_table(folder / "identities.parquet")
    for r in rows:
        if "id" not in r:
            raise StageError(f"{folder / 'identities.parquet'}: no 'id' column (columns: {sorted(r)})")
        d = folder / "images" / r["id"]
        files = sorted(d.glob("*.png"), key=lambda p: (p.stem != "anchor", p.name))
        if not files:
            raise StageError(f"{d}: identity {r['id']} has no training images (*.png)")
        r["_images"] = files
    return rows


def chunks(keys: list[str], size: int) -> list[list[str]]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "class"


class DreamBoothStage(Stage):
    name = "dreambooth"
    upstream = ("identities",)
    config_keys = ("dreambooth",)
    # Nothing here only changes speed: identities_per_batch and class_batch_size change float rounding
    # (batched kernels), device and dtype change the numbers themselves.
    ignore_keys = ()

    def config_keys_for(self, cfg: Any) -> tuple[str, ...]:
        # The identity loss places its crops with the face detector, at the identity stage's detector size.
        if float(cfg.dreambooth.get("identity_loss", 0.0) or 0.0) > 0:
            return (*self.config_keys, "face.detector", "identity.detect_size")
        return self.config_keys

    def items(self, ctx: StageContext) -> list[str]:
        return [r["id"] for r in read_table(ctx.input_dir("identities") / "identities.parquet")]

    def process(self, ctx: StageContext, keys: list[str]) -> None:
        import torch

        from gandiff.diffusion import dreambooth as db
        from gandiff.diffusion.prompts import item_seed

        c = ctx.cfg.dreambooth
        seed = int(ctx.cfg.seed)
        rows = {r["id"]: r for r in read_identities(ctx.input_dir("identities"))}
        comps = open_base(c.base, c.dtype, c.device, ctx.cfg.paths.root, c.get("variant"))
        res = int(c.resolution)
        factor = comps.vae_scale_factor
        if res % factor:
            raise StageError(f"dreambooth.resolution={res}: must be a multiple of the VAE factor {factor}")

        class_nouns = _plain(c.class_nouns) or {}
        nouns = {k: class_noun(rows[k].get("gender"), class_nouns, c.class_noun) for k in rows}
        size = 1 if c.mode == "full" else int(c.identities_per_batch)
        mine = select_shard(list(rows), ctx.shard_index, ctx.shard_count)
        pending = set(keys)
        groups = [g for g in chunks(mine, size) if pending & set(g)]
        settings = db.TrainSettings(
            mode=c.mode,
            rank=int(c.rank),
            lora_alpha=c.lora_alpha,
            train_text_encoder=bool(c.train_text_encoder),
            steps=int(c.steps),
            learning_rate=dreambooth_learning_rate(str(c.mode), c.learning_rate),
            lr_scheduler=c.lr_scheduler,
            lr_warmup_steps=int(c.lr_warmup_steps),
            weight_decay=float(c.weight_decay),
            max_grad_norm=float(c.max_grad_norm),
            optimizer=c.optimizer,
            gradient_checkpointing=bool(c.gradient_checkpointing),
            prior_weight=float(c.prior_weight),
            flip=float(c.flip),
            batch_size=int(c.train_batch_size),
            identity_loss=float(c.identity_loss),
            identity_max_timestep=int(c.identity_max_timestep),
        )
        identity_models = self._identity_models(ctx, comps.device) if settings.identity_loss > 0 else None

        # Prior preservation: one set of class images per class prompt, shared by every identity.
        classes: dict[str, db.ClassData] = {}
        if settings.prior_weight > 0:
            needed = sorted({nouns[k] for g in groups for k in g})
            for noun in needed:
                prompt = c.class_prompt.replace("{noun}", noun)
                files = self._class_images(
                    ctx,
                    comps,
                    prompt,
                    int(c.num_class_images),
                    int(c.class_image_steps),
                    float(c.class_image_guidance),
                    res,
                    int(c.class_batch_size),
                    seed,
                )
                images = torch.stack([db.load_image_tensor(f, res) for f in files])
                mean, std = db.encode_latents(comps, images)
                classes[noun] = db.ClassData(prompt, mean, std)

        for group in ctx.progress(
            groups, total=len(groups), desc=f"dreambooth ({size} identities per batch)"
        ):
            data = []
            for k in group:
                images = torch.stack([db.load_image_tensor(f, res) for f in rows[k]["_images"]])
                mean, std = db.encode_latents(comps, images)
                prompt = c.instance_prompt.replace("{token}", c.instance_token).replace("{noun}", nouns[k])
                data.append(
                    db.IdentityData(
                        k, item_seed(seed, "dreambooth", k), mean, std, prompt, nouns[k] if classes else ""
                    )
                )
                if identity_models is not None:
                    data[-1].crop_theta, data[-1].anchor_embedding = identity_targets(
                        rows[k]["_images"], res, *identity_models
                    )
            result = db.train_group(
                comps,
                data,
                classes,
                settings,
                text_encoder_trained=settings.train_text_encoder,
                identity_embedder=identity_models[1] if identity_models is not None else None,
            )
            try:
                self._save_group(ctx, comps, group, data, result, nouns, classes, settings, c)
            finally:
                for lora in (result.unet_lora, result.text_lora):
                    if lora is not None:
                        lora.detach()

    def _identity_models(self, ctx: StageContext, device: Any) -> tuple[Any, Any]:
        """The identity loss's detector (``face.detector`` at ``identity.detect_size``) and frozen embedder."""
        import torch
        from hydra.utils import instantiate

        from gandiff.curation.stage import build_detector

        c = ctx.cfg.dreambooth
        detector = build_detector(ctx.cfg.face.detector, ctx.cfg.identity.get("detect_size"))
        try:
            embedder = instantiate(c.identity_embedder)
        except Exception as e:  # noqa: BLE001  (Hydra wraps the target's own error)
            raise StageError(f"dreambooth.identity_embedder could not be built: {e}") from e
        if not isinstance(embedder, torch.nn.Module):
            raise StageError(f"dreambooth.identity_embedder={c.identity_embedder._target_}: gives a "
                             f"{type(embedder).__name__}, not a torch.nn.Module (the loss needs gradients)")
        return detector, embedder.to(device).eval().requires_grad_(False)

    def _class_images(
        self,
        ctx: StageContext,
        comps: Any,
        prompt: str,
        n: int,
        steps: int,
        guidance: float,
        res: int,
        batch_size: int,
        seed: int,
    ) -> list[Path]:
        """The class prompt's images, generated by the base model where not on disk already."""
        from gandiff.diffusion.generate import RenderSpec, render_batch
        from gandiff.diffusion.prompts import item_seed

        folder = ctx.dir / "class_images" / slug(prompt)
        files = [folder / f"{i:04d}.png" for i in range(n)]
        todo = [i for i, f in enumerate(files) if not _readable(f)]
        if todo:
            log.info("dreambooth: %d class images for %r", len(todo), prompt)
            atomic_write_json(
                folder / "prompt.json", {"prompt": prompt, "steps": steps, "guidance": guidance}
            )
        for start in range(0, len(todo), batch_size):
            part = todo[start : start + batch_size]
            specs = [RenderSpec(prompt, "", item_seed(seed, "class", prompt, i)) for i in part]
            for i, img in zip(part, render_batch(comps, specs, "ddim", steps, guidance, res)):
                save_image(files[i], img)
        return files

    def _save_group(
        self,
        ctx: StageContext,
        comps: Any,
        group: list[str],
        data: list[Any],
        result: Any,
        nouns: dict[str, str],
        classes: dict[str, Any],
        settings: Any,
        c: Any,
    ) -> None:
        from gandiff.artifacts import file_sha256
        from gandiff.diffusion.dreambooth import final_loss
        from gandiff.diffusion.generate import RenderSpec, render_batch
        from gandiff.diffusion.multi_lora import save_adapter, save_safetensors
        from gandiff.diffusion.prompts import item_seed

        curves = result.losses  # (steps, K)
        validation: dict[str, list[Any]] = {}
        if int(c.validation_images) > 0 and result.unet_lora is not None:
            specs = [
                RenderSpec(d.prompt, "", item_seed(ctx.cfg.seed, "validation", d.id, j), i)
                for i, d in enumerate(data)
                for j in range(int(c.validation_images))
            ]
            imgs = render_batch(
                comps, specs, "ddim", 25, 7.5, int(c.resolution), result.unet_lora, result.text_lora
            )
            for s, img in zip(specs, imgs):
                validation.setdefault(data[s.adapter].id, []).append(img)
        for i, d in enumerate(data):
            out = ctx.dir / "adapters" / d.id
            if settings.mode == "lora":
                weights = save_adapter(out, i, result.unet_lora, result.text_lora)
            else:
                for n, state in result.full_state.items():
                    save_safetensors(out / f"{n}.safetensors", state, {"format": "pt"})
                weights = out / "unet.safetensors"
            curve = [round(float(x), 6) for x in curves[:, i]]
            atomic_write_json(out / "loss.json", {"id": d.id, "loss": curve})
            files = [weights, out / "loss.json"]
            if settings.mode == "full" and "text_encoder" in result.full_state:
                files.append(out / "text_encoder.safetensors")
            for j, img in enumerate(validation.get(d.id, [])):
                files.append(save_image(out / f"validation_{j:02d}.png", img))
            row = {
                "id": d.id,
                "mode": settings.mode,
                "path": weights.relative_to(ctx.dir).as_posix(),
                "sha256": file_sha256(weights),
                "final_loss": round(final_loss(curves[:, i]), 6),
                "token": c.instance_token,
                "noun": nouns[d.id],
                "instance_prompt": d.prompt,
                "class_prompt": classes[d.class_key].prompt if d.class_key else "",
                "rank": settings.rank if settings.mode == "lora" else 0,
                "steps": settings.steps,
                "group": ",".join(group),
                "train_images": int(d.latent_mean.shape[0]),
            }
            ctx.items.put(d.id, row, files)

    def merge(self, ctx: StageContext, keys: list[str]) -> dict[str, Any]:
        rows = ctx.items.rows(keys)
        write_table(ctx.dir / "adapters.parquet", rows)
        classes = sorted({r["class_prompt"] for r in rows if r["class_prompt"]})
        losses = [r["final_loss"] for r in rows]
        return {
            "identities": len(rows),
            "class_prompts": len(classes),
            "mean_final_loss": round(sum(losses) / max(1, len(losses)), 6),
        }


def identity_targets(files: list[Path], resolution: int, detector: Any, embedder: Any) -> tuple[Any, Any]:
    """Crop matrices of an identity's training images (N, 2, 2, 3: image, mirror) and its anchor embedding (D,).

    Each image's crop is placed from its own five landmarks (the anchor's where the detector finds no
    face); the anchor embedding is the embedder's on ``align_face(anchor)``, the reference alignment.
    """
    import numpy as np
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
