"""DreamBooth (Ruiz et al., CVPR 2023) for many identities at once: LoRA per identity, or a full fine-tune.

DreamBooth binds a rare token to a subject ("a photo of sks person") and keeps the class prior with prior
preservation (Ruiz et al. eq. 2, as diffusers' ``train_dreambooth_lora.py`` computes it). Here K identities
share one batch, each sample through its own LoRA (:mod:`gandiff.diffusion.multi_lora`), and the loss is the
sum of each identity's own loss, so each adapter gets exactly the gradient it would get alone. Every random
draw of a step is seeded by (identity seed, step) on the CPU: an identity's training does not depend on its
batch mates, the device, or a resume. Design: docs/design.md#dreambooth.
One module: one method, as diffusers keeps each in one file: the step batches, the loss and the
LightningModule change together (a new loss term touches all three).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gandiff.diffusion.components import Components
from gandiff.diffusion.multi_lora import TEXT_TARGETS, UNET_TARGETS, MultiLoRA
from gandiff.diffusion.prompts import item_seed
from gandiff.diffusion.backend import final_loss  # noqa: F401 - re-exported
from gandiff.diffusion.schema import LR_SCHEDULERS, DreamBoothConfig, dreambooth_learning_rate

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- caches


def load_image_tensor(path: str | Path, resolution: int) -> torch.Tensor:
    """An RGB image as SD expects it: centre square crop, resized to ``resolution``, in [-1, 1]. (3, H, W)."""
    try:
        img = Image.open(path).convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
    return x / 127.5 - 1.0


@torch.no_grad()
def encode_latents(
    comps: Components, images: torch.Tensor, batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior of each image and of its mirror image: mean and std, (N, 2, C, h, w) each, float32 CPU.

    The posterior (not one sample of it) is cached, and each step samples from it, as diffusers'
    ``--cache_latents`` does; both orientations are encoded because flipping a latent is not the same
    as encoding the flipped image.
    """
    both = torch.stack([images, images.flip(-1)], 1).flatten(0, 1)  # (2N, 3, H, W)
    means, stds = [], []
    for chunk in both.split(batch_size):
        dist = comps.vae.encode(chunk.to(comps.device, comps.vae.dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    mean, std = torch.cat(means), torch.cat(stds)
    return mean.unflatten(0, (-1, 2)), std.unflatten(0, (-1, 2))


@dataclasses.dataclass
class IdentityData:
    """What one identity trains on. Latents are VAE posteriors (N, 2, C, h, w): [image, mirrored image]."""

    id: str
    seed: int
    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    prompt: str  # the instance prompt, e.g. "a photo of sks woman"
    class_key: str  # which ClassData holds its prior images ("" without prior preservation)
    # Identity loss only (dreambooth.identity_loss > 0): per training image and orientation, the affine_grid
    # matrix that cuts its 112x112 ArcFace crop from the decoded image, (N, 2, 2, 3); the identity's anchor
    # embedding in the loss embedder's space, (D,) unit length.
    crop_theta: torch.Tensor | None = None
    anchor_embedding: torch.Tensor | None = None


@dataclasses.dataclass
class ClassData:
    """The shared prior-preservation images of one class prompt, as VAE posteriors (M, 2, C, h, w)."""

    prompt: str
    latent_mean: torch.Tensor
    latent_std: torch.Tensor


class StepBatches(torch.utils.data.Dataset):
    """Item ``s`` is the whole batch of training step ``s``: for each identity, one instance sample and
    (with prior preservation) one class sample, laid out ``[instance_0..K-1, prior_0..K-1]``.

    Tensors are built on the CPU from per-(identity, step) generators; text conditioning is the
    cached embedding (frozen text encoder) or the token ids (text encoder trained).
    """

    def __init__(
        self,
        identities: Sequence[IdentityData],
        classes: dict[str, ClassData],
        steps: int,
        flip: float,
        prior_weight: float,
        scaling_factor: float,
        num_train_timesteps: int,
        text: dict[str, torch.Tensor],
        identity_max_timestep: int | None = None,
        batch_size: int = 1,
    ):
        self.ids = list(identities)
        self.batch_size = int(batch_size)  # samples per identity per step (diffusers' --train_batch_size)
        # Identity loss on (identity_max_timestep set): every identity carries crop matrices and an anchor.
        self.identity_rows = identity_max_timestep
        self.identity_dim = 0
        if identity_max_timestep is not None:
            missing = [d.id for d in self.ids if d.crop_theta is None or d.anchor_embedding is None]
            if missing:
                raise ValueError(f"identity loss: identities {missing} have no crop_theta / anchor_embedding")
            self.identity_dim = int(self.ids[0].anchor_embedding.shape[0])
        self.classes = classes
        self.steps = steps
        self.flip = flip
        self.prior = prior_weight > 0
        self.prior_weight = prior_weight
        self.scale = scaling_factor
        self.T = num_train_timesteps
        self.text = text  # prompt -> (77, D) embedding or (77,) token ids

    def __len__(self) -> int:
        return self.steps

    def _draw(self, mean: torch.Tensor, std: torch.Tensor, g: torch.Generator) -> tuple[Any, ...]:
        j = int(torch.randint(mean.shape[0], (1,), generator=g))
        f = int(torch.rand((), generator=g) < self.flip)
        z = (mean[j, f] + std[j, f] * torch.randn(mean.shape[2:], generator=g)) * self.scale  # (C, h, w)
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(self.T, (), generator=g)
        return z, noise, t, (j, f)

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        # Layout with B = batch_size: B blocks of K instance rows ([id_0..id_K-1] each), then B blocks of K
        # class rows; row n belongs to identity n % K. Each identity draws its B instance samples, then its
        # B class samples, from its own generator (B = 1: exactly the one-sample layout).
        k, b = len(self.ids), self.batch_size
        inst_of, prior_of = [], []
        for d in self.ids:
            g = torch.Generator().manual_seed(item_seed(d.seed, step))
            inst_of.append([(*self._draw(d.latent_mean, d.latent_std, g), self.text[d.prompt]) for _ in range(b)])
            if self.prior:
                c = self.classes[d.class_key]
                prior_of.append([(*self._draw(c.latent_mean, c.latent_std, g), self.text[c.prompt])
                                 for _ in range(b)])
        inst = [inst_of[i][j] for j in range(b) for i in range(k)]
        prior = [prior_of[i][j] for j in range(b) for i in range(k)] if self.prior else []
        rows = inst + prior
        # An identity's loss is the mean over its own B samples of each kind (weights 1/B, prior_weight/B).
        weights = [1.0 / b] * len(inst) + [self.prior_weight / b] * len(prior)
        out = {
            "latents": torch.stack([r[0] for r in rows]),  # (N, C, h, w), N = BK or 2BK
            "noise": torch.stack([r[1] for r in rows]),
            "timesteps": torch.stack([r[2] for r in rows]).long(),  # (N,)
            "text": torch.stack([r[4] for r in rows]),  # (N, 77, D) or (N, 77)
            "weights": torch.tensor(weights),  # (N,): 1/B for instance samples, prior_weight/B for class samples
        }
        if self.identity_rows is not None:
            # The identity loss acts on instance samples only (the anchor is the identity's, not the class's),
            # at timesteps below identity_max_timestep: there the predicted x0 is a face, not a blur.
            rows_id = [n for n, r in enumerate(inst) if int(r[2]) < self.identity_rows]
            d_of = [self.ids[n % k] for n in range(len(inst))]
            out["id_rows"] = torch.tensor(rows_id, dtype=torch.long)  # (M,) rows of the batch, M <= BK
            out["id_theta"] = torch.stack([d_of[n].crop_theta[inst[n][3]] for n in rows_id]) \
                if rows_id else torch.zeros(0, 2, 3)  # (M, 2, 3)
            out["id_anchor"] = torch.stack([d_of[n].anchor_embedding for n in rows_id]) \
                if rows_id else torch.zeros(0, self.identity_dim)  # (M, D)
        return out


# --------------------------------------------------------------------------------------------- loss


@dataclasses.dataclass
class IdentityTerm:
    """The identity loss of ``dreambooth.identity_loss``: weight * (1 - cos(E(crop(D(x0_hat))), anchor)).

    ``x0_hat`` is the clean latent the UNet's prediction implies (DDPM: x0 = (z_t - sqrt(1-a) eps) / sqrt(a)),
    ``D`` the frozen VAE decoder, ``crop`` the fixed ArcFace-template affine crop of that training image
    (``F.grid_sample``), ``E`` a frozen differentiable face embedder (``gandiff.face.sface_torch``) taking
    ``(M, 3, 112, 112)`` RGB 0..255. Gradients reach the trained weights through all of it. The idea is
    ID-Booth's identity term (Tomasevic et al., FG 2025) and Arc2Face's identity loss on the denoised estimate;
    the embedder here must not be the one that later measures the generated identities.
    A plain holder, not a Module: Lightning must not move, train or count these frozen networks.
    """

    vae: Any
    embedder: Any
    weight: float
    max_timestep: int
    scaling_factor: float
    crop_size: int = 112


def mirror_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """The five landmarks (left eye, right eye, nose, left mouth, right mouth) of the mirrored image, (5, 2).

    Pixel centres sit at integer coordinates (OpenCV's convention), so x maps to ``width - 1 - x``; the
    left and right points swap, keeping the "as seen in the image" order the template expects.
    """
    p = np.asarray(landmarks, np.float64).reshape(5, 2).copy()
    p[:, 0] = width - 1 - p[:, 0]
    return p[[1, 0, 2, 4, 3]]


def crop_theta(landmarks: np.ndarray, height: int, width: int, size: int = 112) -> np.ndarray:
    """The ``F.affine_grid`` matrix (2, 3) that cuts the ArcFace crop of ``align_face(image, landmarks, size)``.

    ``align_face`` warps with M (image pixels -> crop pixels, pixel centres at integers). grid_sample
    wants, for each output location in normalised coordinates (align_corners=False: pixel i of n at
    (2i + 1) / n - 1), the normalised source location: theta = N_image . M^-1 . N_crop^-1.
    """
    from gandiff.face.align import alignment_matrix

    m = np.vstack([alignment_matrix(landmarks, size), [0.0, 0.0, 1.0]])  # (3, 3) image -> crop
    from_crop = np.array([[size / 2, 0, (size - 1) / 2], [0, size / 2, (size - 1) / 2], [0, 0, 1.0]])
    to_image = np.array([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1.0]])
    return (to_image @ np.linalg.inv(m) @ from_crop)[:2].astype(np.float32)


def identity_loss(term: IdentityTerm, x0_latent: torch.Tensor, theta: torch.Tensor,
                  anchor: torch.Tensor) -> torch.Tensor:
    """(M,) ``1 - cos`` between the embedding of each decoded, cropped x0 estimate and its identity's anchor.

    ``x0_latent`` (M, C, h, w) scaled latents; ``theta`` (M, 2, 3) affine_grid matrices (crop -> image, in
    normalised coordinates, align_corners=False); ``anchor`` (M, D) unit rows.
    """
    vae_dt = next(term.vae.parameters()).dtype
    img = term.vae.decode((x0_latent / term.scaling_factor).to(vae_dt)).sample.float()  # (M, 3, H, W) in ~[-1, 1]
    img = (img + 1.0) * 127.5  # the embedder's convention: RGB 0..255
    grid = F.affine_grid(theta.float(), [img.shape[0], 3, term.crop_size, term.crop_size], align_corners=False)
    crop = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (M, 3, 112, 112)
    emb_dt = next(iter(term.embedder.buffers()), crop).dtype
    emb = F.normalize(term.embedder(crop.to(emb_dt)).float(), dim=1)  # (M, D)
    return 1.0 - (emb * anchor.float()).sum(1)


def dreambooth_loss(
    unet: torch.nn.Module,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    batch: dict[str, torch.Tensor],
    num_identities: int,
    unet_lora: MultiLoRA | None = None,
    text_encoder: torch.nn.Module | None = None,
    text_lora: MultiLoRA | None = None,
    identity: IdentityTerm | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed DreamBooth loss of K identities, and each identity's own loss (K,).

    Each identity's loss is its instance MSE plus prior_weight times its prior MSE (means over its own
    samples), so the sum's gradient with respect to adapter k is exactly identity k's gradient alone.
    With ``identity`` (and the batch's ``id_rows``), each listed instance sample adds
    ``identity.weight * (1 - cos)`` (:func:`identity_loss`) to its identity's loss.
    """
    z0, noise, t = batch["latents"], batch["noise"], batch["timesteps"]  # (N, C, h, w), same, (N,)
    w = batch["weights"]
    a = alphas_cumprod.to(z0.device)[t].float()[:, None, None, None]
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise  # forward diffusion q(z_t | z_0) (DDPM add_noise)
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":  # SD 2.x 768: v = sqrt(a) eps - sqrt(1-a) z0
        target = a.sqrt() * noise - (1 - a).sqrt() * z0
    else:
        raise ValueError(f"scheduler prediction_type={prediction_type!r}: expected epsilon or v_prediction")
    # Routing: sample n -> adapter route[n], from StepBatches' layout [instance_0..K-1, prior_0..K-1].
    # Built on the CPU: reading an index back from the device would sync every step.
    route = torch.arange(num_identities).repeat(z0.shape[0] // num_identities)  # (N,)
    if text_lora is not None:
        text_lora.set_index(route)
    cond = text_encoder(batch["text"])[0] if batch["text"].dtype == torch.long else batch["text"]
    if unet_lora is not None:
        unet_lora.set_index(route)
    dt = next(unet.parameters()).dtype
    pred = unet(zt.to(dt), t, cond.to(dt)).sample
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))  # (N,)
    rows = batch.get("id_rows")
    if identity is not None and identity.weight > 0 and rows is not None and rows.numel():
        sa, sb = a[rows].sqrt(), (1 - a[rows]).sqrt()
        p, zr = pred[rows].float(), zt[rows].float()
        # The clean latent implied by the prediction (DDPM posterior mean's x0 term; v: x0 = sqrt(a) z_t - sqrt(1-a) v).
        x0 = (zr - sb * p) / sa if prediction_type == "epsilon" else sa * zr - sb * p
        term = identity_loss(identity, x0, batch["id_theta"], batch["id_anchor"])  # (M,)
        per_sample = per_sample.index_add(0, rows, identity.weight * term)
    # Each identity has B instance samples (weight 1/B each) and B class samples (prior_weight/B) per step,
    # so its DreamBooth loss is the weighted sum of its own samples' MSEs (identity terms included).
    idx = route.to(per_sample.device, non_blocking=True)
    per_identity = torch.zeros(num_identities, device=idx.device).index_add_(0, idx, per_sample * w)  # (K,)
    return per_identity.sum(), per_identity.detach()


def clip_grad_norm_per_adapter(params: Sequence[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip each adapter's gradient (slice k of every stacked (K, ...) parameter) to ``max_norm`` on its own.

    Clipping the global norm would let one identity's large gradient shrink every other identity's
    step; per-adapter clipping is what each identity would get if trained alone. Returns norms (K,).
    """
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.flatten(1).float().pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (K,)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype).view(-1, *([1] * (g.ndim - 1))))
    return norms


# --------------------------------------------------------------------------------------------- module


@dataclasses.dataclass
class GroupNetworks:
    """The networks one group trains, already on their device with their adapters attached."""

    unet: torch.nn.Module
    num_identities: int  # K
    trainable: Sequence[torch.nn.Parameter]  # what the optimizer steps: the adapters' (K, ...) stacks, or whole modules
    unet_lora: MultiLoRA | None = None  # None: a full fine-tune
    text_encoder: torch.nn.Module | None = None  # set when the text encoder trains (batches carry token ids)
    text_lora: MultiLoRA | None = None


class DreamBoothModule(L.LightningModule):
    """DreamBooth over a group of identities: multi-identity LoRA (``nets.unet_lora`` set) or a full fine-tune.

    The networks are injected; the module owns the loss, the optimizer and the schedule, set by ``settings``
    (the typed ``dreambooth`` group: learning rate by mode when null, schedule, warm-up, steps, weight decay,
    clipping, optimizer, gradient checkpointing). ``losses`` collects each step's per-identity loss (K,).
    """

    def __init__(
        self,
        nets: GroupNetworks,
        alphas_cumprod: torch.Tensor,
        prediction_type: str,
        settings: DreamBoothConfig,
        identity: IdentityTerm | None = None,
    ):
        super().__init__()
        self.identity = identity
        self.unet = nets.unet
        self.text_encoder = nets.text_encoder
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.prediction_type = prediction_type
        self.num_identities = nets.num_identities
        self.trainable = list(nets.trainable)
        self.unet_lora, self.text_lora = nets.unet_lora, nets.text_lora
        self.settings = settings
        self.lr = dreambooth_learning_rate(settings.mode, settings.learning_rate)
        self.losses: list[torch.Tensor] = []
        if settings.gradient_checkpointing:
            nets.unet.enable_gradient_checkpointing()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, per_identity = dreambooth_loss(
            self.unet,
            self.alphas_cumprod,
            self.prediction_type,
            batch,
            self.num_identities,
            self.unet_lora,
            self.text_encoder,
            self.text_lora,
            self.identity,
        )
        self.losses.append(per_identity)  # kept on device: no sync per step
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        s = self.settings
        if s.optimizer == "adamw8bit":
            try:
                import bitsandbytes as bnb
            except ImportError as e:
                raise ImportError(
                    "dreambooth.optimizer=adamw8bit needs bitsandbytes (pip install 'gandiff[gpu]')"
                ) from e
            opt = bnb.optim.AdamW8bit(self.trainable, lr=self.lr, weight_decay=s.weight_decay)
        else:
            # AdamW is elementwise: adapter k's slice of a stacked parameter updates as if alone.
            opt = torch.optim.AdamW(
                self.trainable, lr=self.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=s.weight_decay,
                **({"fused": True} if s.optimizer == "adamw_fused" else {}),
            )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(s.lr_scheduler, s.lr_warmup_steps, s.steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        max_norm = self.settings.max_grad_norm
        if max_norm <= 0:
            return
        if self.unet_lora is None:  # full fine-tune: one identity, the ordinary global norm
            torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
        else:
            clip_grad_norm_per_adapter(self.trainable, max_norm)

    def loss_curve(self) -> np.ndarray:
        """(steps, K) per-identity losses."""
        return (
            torch.stack(self.losses).float().cpu().numpy()
            if self.losses
            else np.zeros((0, self.num_identities))
        )


def lr_lambda(kind: str, warmup: int, total: int) -> Any:
    """The LR multiplier at optimiser step ``step`` of ``diffusers.optimization.get_scheduler(kind,
    num_warmup_steps=warmup, num_training_steps=total)``, formula for formula (the scheduler steps after each
    optimiser step, as in diffusers' scripts): ``constant`` is 1 throughout (no warm-up, whatever ``warmup``);
    the others warm up as ``s / W``, then stay at 1 / decay linearly to 0 / follow half a cosine to 0."""
    if kind not in LR_SCHEDULERS:
        raise ValueError(f"dreambooth.lr_scheduler={kind!r}: must be one of {', '.join(LR_SCHEDULERS)}")

    def f(step: int) -> float:
        if kind == "constant":
            return 1.0
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if kind == "constant_with_warmup":
            return 1.0
        if kind == "linear":
            return max(0.0, float(total - step) / float(max(1, total - warmup)))
        progress = float(step - warmup) / float(max(1, total - warmup))  # cosine, num_cycles 0.5
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))

    return f


# --------------------------------------------------------------------------------------------- training


@dataclasses.dataclass
class GroupResult:
    losses: np.ndarray  # (steps, K)
    unet_lora: MultiLoRA | None  # still attached: save the adapters, then detach
    text_lora: MultiLoRA | None
    full_state: dict[str, dict[str, torch.Tensor]] | None  # full fine-tune of one identity: module -> weights


def _precision(comps: Components) -> str:
    if comps.device.type != "cuda" or comps.dtype == torch.float32:
        return "32-true"
    return "bf16-mixed" if comps.dtype == torch.bfloat16 else "16-mixed"


def train_group(
    comps: Components,
    identities: Sequence[IdentityData],
    classes: dict[str, ClassData],
    settings: DreamBoothConfig,
    identity_embedder: torch.nn.Module | None = None,
) -> GroupResult:
    """Train one group of identities (LoRA: any K; full: K = 1) with a Lightning Trainer, as ``settings`` (the
    typed ``dreambooth`` group) says.

    In LoRA mode the adapters stay attached on return (the caller saves them and calls ``detach``).
    In full mode the trained weights are returned and the base weights restored.
    ``identity_embedder``: the frozen differentiable embedder of the identity loss (needed when
    ``settings.identity_loss > 0``; each identity then carries ``crop_theta`` and ``anchor_embedding``).
    """
    s = settings
    text_encoder_trained = s.train_text_encoder
    k = len(identities)
    if s.mode == "full" and k != 1:
        raise ValueError(f"full fine-tune trains one identity at a time, got {k}")
    identity = None
    if s.identity_loss > 0:
        if identity_embedder is None:
            raise ValueError("dreambooth.identity_loss > 0 needs an identity embedder")
        identity = IdentityTerm(comps.vae, identity_embedder, s.identity_loss, s.identity_max_timestep,
                                float(comps.vae.config.scaling_factor))
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler.from_config(comps.scheduler_config)
    # Text conditioning per prompt: cached embeddings, or token ids when the text encoder trains.
    prompts = sorted(
        {d.prompt for d in identities}
        | ({classes[d.class_key].prompt for d in identities} if s.prior_weight > 0 else set())
    )
    if text_encoder_trained:
        ids = comps.tokenize(prompts)
        text = dict(zip(prompts, ids))
    else:
        text = dict(zip(prompts, comps.encode_text(prompts).float().cpu()))
    data = StepBatches(
        identities,
        classes,
        s.steps,
        s.flip,
        s.prior_weight,
        comps.vae.config.scaling_factor,
        noise_sched.config.num_train_timesteps,
        text,
        s.identity_max_timestep if identity is not None else None,
        s.train_batch_size,
    )

    unet_lora = text_lora = None
    backup: dict[str, dict[str, torch.Tensor]] = {}
    if s.mode == "lora":
        unet_lora = MultiLoRA(comps.unet, k, s.rank, s.lora_alpha, UNET_TARGETS)
        if text_encoder_trained:
            text_lora = MultiLoRA(comps.text_encoder, k, s.rank, s.lora_alpha, TEXT_TARGETS)
        for i, d in enumerate(identities):
            unet_lora.reset_adapter(i, d.seed)
            if text_lora:
                text_lora.reset_adapter(i, d.seed + 1)
        trainable = unet_lora.parameters() + (text_lora.parameters() if text_lora else [])
    else:
        mods = {"unet": comps.unet, **({"text_encoder": comps.text_encoder} if text_encoder_trained else {})}
        backup = {
            n: {p: v.detach().to("cpu", copy=True) for p, v in m.state_dict().items()}
            for n, m in mods.items()
        }
        trainable = []
        for m in mods.values():
            # fp32 master weights: AdamW steps of ~1e-6 vanish in bf16 weights (mixed precision autocasts).
            m.float().requires_grad_(True)
            trainable += list(m.parameters())
    nets = GroupNetworks(comps.unet, k, trainable, unet_lora, comps.text_encoder if text_encoder_trained else None,
                         text_lora)
    module = DreamBoothModule(nets, noise_sched.alphas_cumprod, noise_sched.config.prediction_type, s, identity)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(
        logging.WARNING
    )  # one Trainer per group
    trainer = L.Trainer(
        accelerator="gpu" if comps.device.type == "cuda" else "cpu",
        devices=[comps.device.index or 0] if comps.device.type == "cuda" else 1,
        precision=_precision(comps),
        max_steps=s.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=0)
    comps.unet.train()  # as diffusers' script; SD has no dropout in the adapted layers, so no randomness
    if text_encoder_trained:
        comps.text_encoder.train()
    try:
        trainer.fit(module, loader)
        losses = module.loss_curve()
        if not np.isfinite(losses).all():
            raise FloatingPointError(
                f"DreamBooth loss became NaN/inf for {[d.id for d in identities]}: lower "
                "dreambooth.learning_rate or use dtype=bfloat16 instead of float16"
            )
    except BaseException:
        # The modules are cached for the process: leave them as the base model, whatever happened.
        for lora in (unet_lora, text_lora):
            if lora is not None:
                lora.detach()
        for n, state in backup.items():
            m = comps.unet if n == "unet" else comps.text_encoder
            m.to(comps.dtype).requires_grad_(False)
            m.load_state_dict(state)
        raise
    finally:
        if s.gradient_checkpointing:
            comps.unet.disable_gradient_checkpointing()
        comps.unet.eval()
        comps.text_encoder.eval()
    full_state = None
    if s.mode == "full":
        full_state = {}
        for n, m in (("unet", comps.unet), ("text_encoder", comps.text_encoder)):
            if n in backup:
                full_state[n] = {p: v.detach().to("cpu", copy=True) for p, v in m.state_dict().items()}
                m.to(comps.dtype).requires_grad_(False)
                m.load_state_dict(backup[n])
    return GroupResult(losses, unet_lora, text_lora, full_state)
