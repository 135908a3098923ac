"""One DreamBooth optimiser step over the shipped miniature model: ``dreambooth.optimizer=adamw_fused`` vs ``adamw``.

    python scripts/bench/optimizer_step.py            # CPU, the miniature UNet + text encoder (7.4M parameters)
    python scripts/bench/optimizer_step.py --device cuda

A full fine-tune (``dreambooth.mode=full``, the demo) steps every parameter of the UNet and the text encoder each
step; torch's AdamW loops over the tensors one by one unless told ``fused=True`` (one kernel over all of them).
Both start from the same weights and gradients and run interleaved (``scripts/bench/harness.py``); the largest
difference between their weights after the timed steps is printed: the same update up to float rounding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROUNDS, compare, interleave, pinned_threads, print_comparisons, write_comparisons  # noqa: E402


def parameters(device: str) -> list[torch.Tensor]:
    """The shapes of the shipped miniature model's UNet and text encoder (what demo DreamBooth trains)."""
    from safetensors import safe_open

    root = REPO / "gandiff" / "assets" / "miniature_sd"
    out = []
    for part in ("unet", "text_encoder"):
        f = next((root / part).glob("*.safetensors"))
        with safe_open(str(f), "pt") as st:
            out += [st.get_tensor(k).float() for k in st.keys()]
    return [t.to(device) for t in out if t.is_floating_point()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=5, help="optimiser steps per timed call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    base = parameters(a.device)
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(t.shape, generator=g).to(a.device) * 1e-3 for t in base]
    sides = {}
    for name, kw in (("adamw", {}), ("adamw_fused", {"fused": True})):
        ps = [torch.nn.Parameter(t.clone()) for t in base]
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
        opt = torch.optim.AdamW(ps, lr=5e-4, weight_decay=1e-2, **kw)
        sides[name] = (ps, opt)

    def run(name: str):
        def f() -> None:
            for _ in range(a.steps):
                sides[name][1].step()
        return f

    with pinned_threads(a.threads) as line:
        times = interleave({"adamw": run("adamw"), "adamw_fused": run("adamw_fused")}, rounds=a.rounds,
                           device=a.device)
    diff = max(float((x - y).abs().max()) for x, y in zip(sides["adamw"][0], sides["adamw_fused"][0]))
    n = sum(t.numel() for t in base)
    print(f"AdamW over the miniature UNet + text encoder: {len(base)} tensors, {n / 1e6:.2f}M parameters, "
          f"{a.device}; {line}")
    print(f"largest weight difference after the same steps (fused vs loop): {diff:.3g}")
    comp = compare("DreamBooth full fine-tune optimiser step (miniature)", times, "adamw_fused", "adamw",
                   work=a.steps, unit="steps/s", note=f"weights agree to {diff:.2g} after the same steps")
    print_comparisons("optimizer_step", [comp])
    write_comparisons(a.json, "optimizer_step", [comp])


if __name__ == "__main__":
    main()
