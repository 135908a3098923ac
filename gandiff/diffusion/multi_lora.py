"""Multi-identity LoRA: K adapters in one model, each sample of a batch through its own adapter.

Every targeted Linear holds K identities' LoRA factors stacked, ``A: (K, r, in)``, ``B: (K, out, r)``, and a
per-sample index picks one: ``y[n] = x[n] @ W.T + scale * (x[n] @ A[idx[n]].T) @ B[idx[n]].T``. The base is
loaded once and batches are always full; gradients reach only each sample's own adapter, so identities never
mix. Each adapter exports to (and loads from) the ``pytorch_lora_weights.safetensors`` that diffusers'
``load_lora_weights`` reads.

Design: docs/design.md#multi-identity-lora.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

# The modules diffusers' DreamBooth LoRA script adapts (train_dreambooth_lora.py): the UNet's attention
# projections, and with --train_text_encoder CLIP's self-attention projections.
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
LORA_FILE = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY


class AdapterIndex:
    """The per-sample adapter index shared by every layer of one model; -1 means "base model only"."""

    def __init__(self) -> None:
        self.index: torch.Tensor | None = None  # (N,) long, on the model's device, -1 clamped to 0
        self.keep: torch.Tensor | None = (
            None  # (N, 1, 1) 0/1 mask of the -1 samples; None when there are none
        )


class MultiLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus K stacked LoRA adapters selected per sample."""

    def __init__(
        self,
        base: nn.Linear,
        num_adapters: int,
        rank: int,
        alpha: float,
        state: AdapterIndex,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.base = base
        dev = base.weight.device
        self.lora_A = nn.Parameter(torch.zeros(num_adapters, rank, base.in_features, device=dev, dtype=dtype))
        self.lora_B = nn.Parameter(
            torch.zeros(num_adapters, base.out_features, rank, device=dev, dtype=dtype)
        )
        self.scaling = alpha / rank
        self._state = state  # a plain attribute: shared, not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, ..., in)
        y = self.base(x)
        idx, keep = self._state.index, self._state.keep
        if idx is None:
            return y
        n = x.shape[0]
        if idx.shape[0] != n:
            # Classifier-free guidance runs [unconditional; conditional] as one batch of 2N: tile the index.
            if n % idx.shape[0]:
                raise ValueError(f"batch of {n} samples but {idx.shape[0]} adapter indices")
            reps = n // idx.shape[0]
            idx = idx.repeat(reps)
            keep = None if keep is None else keep.repeat(reps, 1, 1)
        a = self.lora_A[idx]  # (N, r, in)
        b = self.lora_B[idx]  # (N, out, r)
        h = torch.bmm(x.reshape(n, -1, x.shape[-1]).to(a.dtype), a.transpose(1, 2))  # (N, T, r)
        d = torch.bmm(h, b.transpose(1, 2)) * self.scaling  # (N, T, out)
        if keep is not None:
            d = d * keep
        return y + d.reshape(y.shape).to(y.dtype)


class MultiLoRA:
    """K LoRA adapters attached to the targeted Linear layers of one model (a UNet or a text encoder).

    ``names`` are the module paths in the model (``down_blocks.1.attentions.0...attn1.to_q``): the
    PEFT keys of the exported file. ``detach()`` puts the original Linear modules back.
    """

    def __init__(
        self,
        model: nn.Module,
        num_adapters: int,
        rank: int,
        alpha: float | None = None,
        targets: Sequence[str] = UNET_TARGETS,
        dtype: torch.dtype = torch.float32,
    ):
        if num_adapters < 1 or rank < 1:
            raise ValueError(f"num_adapters={num_adapters}, rank={rank}: both must be >= 1")
        self.model = model
        self.num_adapters = num_adapters
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.state = AdapterIndex()
        self.layers: dict[str, MultiLoRALinear] = {}
        self._parents: dict[str, tuple[nn.Module, str]] = {}
        for parent_name, parent in list(model.named_modules()):
            for child_name, child in list(parent.named_children()):
                name = f"{parent_name}.{child_name}" if parent_name else child_name
                if isinstance(child, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
                    layer = MultiLoRALinear(child, num_adapters, rank, self.alpha, self.state, dtype)
                    setattr(parent, child_name, layer)
                    self.layers[name] = layer
                    self._parents[name] = (parent, child_name)
        if not self.layers:
            raise ValueError(f"no nn.Linear named like {list(targets)} in {type(model).__name__}")

    # ---------------------------------------------------------------------------------------- use

    def set_index(self, index: torch.Tensor | Sequence[int] | None) -> None:
        """Route sample n through adapter ``index[n]`` (-1: base only) until the next call.

        The index stays set after forward, so that gradient checkpointing, which re-runs forward
        during backward, sees the same routing.
        """
        if index is None:
            self.state.index = self.state.keep = None
            return
        dev = next(iter(self.layers.values())).lora_A.device
        idx = torch.as_tensor(index, dtype=torch.long)
        if idx.device.type == "cpu":  # checked here, before the copy: no device sync per step
            if idx.ndim != 1 or int(idx.max()) >= self.num_adapters or int(idx.min()) < -1:
                raise ValueError(
                    f"adapter index {idx.tolist()}: must be 1-D with values in [-1, {self.num_adapters - 1}]"
                )
            has_base = bool((idx < 0).any())
        else:
            has_base = True  # unknown without a sync: always mask (a multiply)
        idx = idx.to(dev, non_blocking=True)
        self.state.index = idx.clamp(min=0)
        self.state.keep = (idx >= 0).to(torch.float32)[:, None, None] if has_base else None

    def parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)]

    def detach(self) -> None:
        """Put the original Linear modules back (the model is the base model again)."""
        for name, (parent, child_name) in self._parents.items():
            setattr(parent, child_name, self.layers[name].base)
        self.layers.clear()
        self._parents.clear()

    @torch.no_grad()
    def reset_adapter(self, k: int, seed: int) -> None:
        """Fresh adapter: A ~ N(0, 1/r), B = 0 (PEFT's ``init_lora_weights="gaussian"``, as diffusers'
        DreamBooth LoRA script), so training starts from the base model. The seed is the identity's own,
        so an adapter's start does not depend on which identities share its batch."""
        g = torch.Generator().manual_seed(seed)
        for name in sorted(self.layers):
            layer = self.layers[name]
            a = torch.randn(layer.lora_A.shape[1:], generator=g) / self.rank
            layer.lora_A[k].copy_(a)
            layer.lora_B[k].zero_()

    # ---------------------------------------------------------------------------------------- files

    def adapter_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Adapter k in PEFT naming (``<module>.lora_A.weight``: (r, in), ``.lora_B.weight``: (out, r)), fp32 CPU."""
        out = {}
        for name, layer in self.layers.items():
            out[f"{name}.lora_A.weight"] = (
                layer.lora_A[k].detach().to("cpu", torch.float32).contiguous().clone()
            )
            out[f"{name}.lora_B.weight"] = (
                layer.lora_B[k].detach().to("cpu", torch.float32).contiguous().clone()
            )
        return out

    @torch.no_grad()
    def load_adapter_state_dict(
        self, k: int, state: dict[str, torch.Tensor], source: str = "adapter"
    ) -> None:
        """Copy a PEFT-named adapter (as from :meth:`adapter_state_dict`) into slot k; every layer must be present."""
        want = {f"{n}.lora_{ab}.weight" for n in self.layers for ab in "AB"}
        missing, extra = sorted(want - set(state)), sorted(set(state) - want)
        if missing or extra:
            raise ValueError(
                f"{source}: LoRA keys do not match this model's targeted layers "
                f"(missing e.g. {missing[:2]}, unexpected e.g. {extra[:2]})"
            )
        for name, layer in self.layers.items():
            a, b = state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"]
            if a.shape != layer.lora_A.shape[1:] or b.shape != layer.lora_B.shape[1:]:
                raise ValueError(
                    f"{source}: {name} has rank {a.shape[0]}, this model's adapters rank {self.rank}"
                )
            layer.lora_A[k].copy_(a)
            layer.lora_B[k].copy_(b)

    def metadata(self) -> dict[str, Any]:
        """The ``LoraConfig`` diffusers builds when it loads the file (alpha/r is the scale)."""
        return {"r": self.rank, "lora_alpha": self.alpha, "target_modules": sorted(self.layers)}


@contextlib.contextmanager
def attached(
    model: nn.Module,
    num_adapters: int,
    rank: int,
    alpha: float | None = None,
    targets: Sequence[str] = UNET_TARGETS,
    dtype: torch.dtype = torch.float32,
) -> Iterator[MultiLoRA]:
    """Attach K adapters for the duration of a block; the model is the base model again afterwards."""
    lora = MultiLoRA(model, num_adapters, rank, alpha, targets, dtype)
    try:
        yield lora
    finally:
        lora.set_index(None)
        lora.detach()


def save_adapter(
    out_dir: str | os.PathLike, k: int, unet_lora: MultiLoRA, text_lora: MultiLoRA | None = None
) -> Path:
    """Write adapter k as ``<out_dir>/pytorch_lora_weights.safetensors`` (atomically), loadable by
    ``StableDiffusionPipeline.load_lora_weights(out_dir)``. Returns the file path.

    The layout is what diffusers' ``save_lora_weights`` writes (``unet.`` / ``text_encoder.`` key
    prefixes, the LoraConfig as JSON under ``lora_adapter_metadata``, ``format: pt``), written through
    :func:`save_safetensors` so that equal adapters give equal bytes (and equal fingerprints).
    """
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for prefix, lora in (("unet", unet_lora), ("text_encoder", text_lora)):
        if lora is None:
            continue
        tensors.update({f"{prefix}.{key}": v for key, v in lora.adapter_state_dict(k).items()})
        meta.update({f"{prefix}.{key}": v for key, v in lora.metadata().items()})
    header = {"format": "pt", METADATA_KEY: json.dumps(meta, indent=2, sort_keys=True)}
    return save_safetensors(Path(out_dir) / LORA_FILE, tensors, header)


def save_safetensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """``safetensors.torch.save_file`` with deterministic bytes, written atomically.

    The safetensors writer serialises its header from a hash map, so the order of the metadata keys
    (and thus the file's bytes and SHA-256) can change from run to run. The header is re-serialised
    here with sorted keys; tensor offsets are relative to the data section, so they are unchanged.
    """
    from safetensors.torch import save

    from gandiff.artifacts import atomic_write_bytes

    raw = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header to a multiple of 8 bytes
    return atomic_write_bytes(path, len(text).to_bytes(8, "little") + text + raw[8 + n :])


def read_adapter(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read a diffusers LoRA file: ``{"unet": {"state": {...}, "rank": r, "alpha": a}, "text_encoder": ...}``.

    Keys lose their ``unet.`` / ``text_encoder.`` prefix; alpha comes from the metadata header when
    present, else alpha = rank (scale 1: the convention diffusers applies to files without it).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: LoRA file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors handle)
    except Exception as e:  # safetensors raises its own error types for truncated headers
        raise ValueError(f"{path}: not a readable safetensors file ({e}); delete it to retrain") from e
    meta = json.loads(header[METADATA_KEY]) if METADATA_KEY in header else {}
    out: dict[str, dict[str, Any]] = {}
    for part in ("unet", "text_encoder"):
        state = {k[len(part) + 1 :]: v for k, v in tensors.items() if k.startswith(part + ".")}
        if not state:
            continue
        if not all(".lora_A." in k or ".lora_B." in k for k in state):
            raise ValueError(
                f"{path}: {part} keys are not PEFT-style (expected '<module>.lora_A.weight'), "
                f"e.g. {next(iter(state))!r}"
            )
        rank = next(v.shape[0] for k, v in state.items() if ".lora_A." in k)
        alpha = meta.get(f"{part}.lora_alpha", rank)
        out[part] = {"state": state, "rank": int(rank), "alpha": float(alpha)}
    if "unet" not in out:
        raise ValueError(f"{path}: no 'unet.*' LoRA weights inside")
    return out
