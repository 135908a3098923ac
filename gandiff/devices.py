"""Where models run: one rule for ``device: auto`` (and for asking for CUDA where there is none)."""

from __future__ import annotations


def torch_device(device: str = "auto") -> "torch.device":  # noqa: F821 - torch is imported lazily
    """``auto`` -> the first CUDA device when there is one, else the CPU; ``cuda[:N]`` without a GPU is an error
    that says so (instead of a deep CUDA initialisation failure later)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available on this machine; use device=cpu or auto")
    return dev
