"""One prepared check of every GPU path, with random weights at real sizes (no download).

    python scripts/gpu_check.py                      # on a GPU machine: SD 1.5 / IResNet-50 sizes (< 8 min on an H100)
    python scripts/gpu_check.py --small              # on CPU: tiny sizes, same code paths (the test suite runs this)
    python scripts/gpu_check.py --only dreambooth,generate --json out.json

Sections (each reports its figure, the plain reference in the same run, peak memory, and the FLOP floor:
the FLOPs of the work counted with torch.utils.flop_counter on the model actually run, over the device's
dense peak):

- dreambooth: seconds per identity for 800 LoRA steps (instance + prior image per identity) at K = 1, 8, 16
  identities per batch (K = 1 is one identity at a time). Goal on an H100: <= 20 s per identity.
- generate: images/s at batch 8 and 32, 30 DDIM steps with classifier-free guidance, 512x512, every sample
  through its own identity's LoRA; the reference renders one identity at a time. Goal: >= 8 images/s.
- train: IResNet-50 at 112x112, bf16, ArcFace, the real data loader over a RecordIO written on the fly;
  plain PyTorch loop vs the LightningModule. Goal: >= 5,000 images/s end to end.
- embed: IResNet-50 inference images/s (the evaluation / curation embedder path), batched.
- pairs: all-pairs mated / non-mated scores/s of the blocked distribution code vs one row at a time.
- onnx_embed: the insightface ONNX embedder path (an IResNet-50 exported to ONNX, as ``w600k_r50.onnx`` is)
  on onnxruntime-gpu with IO binding (input and output bound on the device, no host copies) vs the torch
  IResNet-50 (``IResNetFaceModule``) on the same batch, float32 (TF32) both, images/s interleaved. Needs CUDA
  and onnxruntime-gpu's CUDAExecutionProvider; on CPU the section is skipped with the reason printed.

A section that fails prints its error in the table and the others still run.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "bench"))

from harness import Row, count_flops, peak_flops, peak_memory_gb, print_table, reset_peak_memory, write_json  # noqa: E402

SECTIONS = ("dreambooth", "generate", "train", "embed", "pairs", "onnx_embed")


def _load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _floor(flops: float, device: str, dtype: str) -> float | None:
    peak = peak_flops(device, dtype)
    return flops / peak if peak else None


def unet_forward_flops(comps: Any, resolution: int, batch: int = 1) -> int:
    """FLOPs of one UNet forward on ``batch`` latents at ``resolution`` pixels (text length 77)."""
    import torch

    unet = comps.unet
    lat = resolution // 8
    x = torch.zeros(batch, unet.config.in_channels, lat, lat, device=comps.device, dtype=comps.dtype)
    ctx = torch.zeros(batch, 77, unet.config.cross_attention_dim, device=comps.device, dtype=comps.dtype)
    t = torch.full((batch,), 500, device=comps.device)
    with torch.no_grad():
        return count_flops(lambda: unet(x, t, encoder_hidden_states=ctx))


def check_dreambooth(small: bool, device: str, dtype: str) -> list[Row]:
    from gandiff.diffusion.bench import bench_dreambooth, components_for

    comps = components_for("tiny" if small else "sd15", device, dtype)
    res, ks, steps = (64, (1, 2), 2) if small else (512, (1, 8, 16), 10)
    fwd = unet_forward_flops(comps, res)
    rows = []
    reset_peak_memory(device)
    out = bench_dreambooth(comps, ks=ks, steps=steps, warmup=1 if small else 3, resolution=res, rank=16,
                           gradient_checkpointing=False)
    ref = out[0]["s_per_identity_800_steps"]
    for r in out:
        # Per identity and step: the instance and the prior image, forward + backward (~3x forward).
        floor = _floor(800 * 2 * 3 * fwd, device, dtype)
        rows.append(Row(f"dreambooth K={r['K']} (batch {r['batch']}, {res}px)", r["s_per_identity_800_steps"],
                        "s/identity (800 steps)", reference=ref, floor_seconds=floor, lower_is_better=True,
                        measured_seconds=r["s_per_identity_800_steps"], peak_mem_gb=peak_memory_gb(device)))
    return rows


def check_generate(small: bool, device: str, dtype: str) -> list[Row]:
    from gandiff.diffusion.bench import bench_generate, components_for

    comps = components_for("tiny" if small else "sd15", device, dtype)
    res, steps = (64, 3) if small else (512, 30)
    fwd = unet_forward_flops(comps, res)
    rows = []
    for batch in ((4,) if small else (8, 32)):
        reset_peak_memory(device)
        out = bench_generate(comps, identities=batch // 2 if small else 16, images_per_identity=2 if small else 4,
                             batch_size=batch, steps=steps, guidance=7.5, resolution=res, rank=16)
        ref, mixed = out[0]["images_per_s"], out[1]["images_per_s"]
        floor = _floor(steps * 2 * fwd, device, dtype)  # classifier-free guidance: two UNet passes a step
        rows.append(Row(f"generate batch {batch} ({res}px, {steps} steps, CFG)", mixed, "images/s",
                        reference=ref, floor_seconds=floor, measured_seconds=1.0 / mixed,
                        peak_mem_gb=peak_memory_gb(device)))
    return rows


def _iresnet_flops(backbone: str, device: str) -> int:
    import torch

    from gandiff.recognition.backbones import build_backbone

    model = build_backbone(backbone, 512 if backbone.startswith("iresnet") else 128).to(device).eval()
    x = torch.zeros(1, 3, 112, 112, device=device)
    with torch.no_grad():
        return count_flops(lambda: model(x))


def check_train(small: bool, device: str, dtype: str) -> list[Row]:
    bench = _load_script("train")
    backbone = "mobilefacenet_small" if small else "iresnet50"
    fwd = _iresnet_flops(backbone, device)
    rows = []
    for compile_ in ((False,) if small else (False, True)):
        reset_peak_memory(device)
        out = bench.bench_train(backbone=backbone, batch_size=16 if small else 256, steps=3 if small else 60,
                                device=device, precision="bf16-mixed" if device.startswith("cuda") else "32-true",
                                num_workers=0 if small else 12, warmup=1 if small else 5,
                                num_classes=20 if small else 1000, per_class=4 if small else 8, compile=compile_)
        lit = out["lightning_images_per_s"]
        rows.append(Row(f"train {backbone} (Lightning{' + compile' if compile_ else ''})", lit, "images/s",
                        reference=out["plain_images_per_s"], floor_seconds=_floor(3 * fwd, device, dtype),
                        measured_seconds=1.0 / lit, peak_mem_gb=peak_memory_gb(device),
                        extra={"loader_images_per_s": out["loader_images_per_s"]}))
    return rows


def check_embed(small: bool, device: str, dtype: str) -> list[Row]:
    import torch

    from gandiff.recognition.backbones import build_backbone

    backbone = "mobilefacenet_small" if small else "iresnet50"
    model = build_backbone(backbone, 512 if backbone.startswith("iresnet") else 128).to(device).eval()
    amp = device.startswith("cuda")
    if amp:
        model = model.to(memory_format=torch.channels_last)
    fwd = _iresnet_flops(backbone, device)
    batch, n = (8, 32) if small else (512, 8192)
    x = torch.randn(batch, 3, 112, 112, device=device)

    def run(b: int, total: int) -> float:
        xb = x[:b]
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
            model(xb)
            if amp:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(total // b):
                model(xb)
            if amp:
                torch.cuda.synchronize()
        return (total // b) * b / (time.perf_counter() - t0)

    reset_peak_memory(device)
    batched = run(batch, n)
    one = run(1, 16 if small else 256)
    return [Row(f"embed {backbone} batch {batch}", batched, "images/s", reference=one,
                floor_seconds=_floor(fwd, device, dtype), measured_seconds=1.0 / batched,
                peak_mem_gb=peak_memory_gb(device))]


def check_pairs(small: bool, device: str, dtype: str) -> list[Row]:
    import numpy as np

    from gandiff.evaluation.distributions import all_pair_scores

    bench = _load_script("evaluate")
    n, dim = (600, 128) if small else (20000, 512)
    rng = np.random.default_rng(0)
    y = rng.integers(0, n // 10, n)
    e = rng.standard_normal((n, dim), dtype=np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    pairs = n * (n - 1) // 2
    t0 = time.perf_counter()
    all_pair_scores(e, y)
    blocked = pairs / (time.perf_counter() - t0)
    sub = min(n, 600 if small else 4000)
    t0 = time.perf_counter()
    bench.rowwise_pairs(e[:sub], y[:sub])
    rowwise = sub * (sub - 1) // 2 / (time.perf_counter() - t0)
    return [Row(f"all-pairs scores N={n} D={dim} (host CPU)", blocked, "pairs/s", reference=rowwise,
                measured_seconds=1.0 / blocked)]


class Skipped(Exception):
    """A section that cannot run on this machine (printed with its reason; not a failure)."""


def export_face_onnx(module: Any, path: str | Path) -> bytes:
    """``module`` (N, 3, 112, 112) -> (N, dim) as an ONNX graph with a dynamic batch (what an insightface
    pack's recognizer is); returns the file's bytes."""
    from gandiff.recognition.checkpoints import export_onnx

    return export_onnx(module, path).read_bytes()


def iobinding_runner(session: Any, x: Any, dim: int) -> tuple[Any, Any]:
    """(run, out): ``run()`` runs ``session`` on the torch tensor ``x`` (float32, contiguous) with the input
    and the output bound to ``x``'s device (IO binding: no host round trip), writing into the torch tensor
    ``out``."""
    import numpy as np
    import torch

    x = x.contiguous().float()
    out = torch.empty(x.shape[0], dim, device=x.device, dtype=torch.float32)
    kind, index = ("cuda", x.device.index or 0) if x.device.type == "cuda" else ("cpu", 0)
    binding = session.io_binding()
    binding.bind_input(session.get_inputs()[0].name, kind, index, np.float32, tuple(x.shape), x.data_ptr())
    binding.bind_output(session.get_outputs()[0].name, kind, index, np.float32, tuple(out.shape),
                        out.data_ptr())

    def run() -> Any:
        if kind == "cuda":
            binding.synchronize_inputs()
        session.run_with_iobinding(binding)
        if kind == "cuda":
            binding.synchronize_outputs()
        return out

    run.bound_input = x  # the binding holds only x's pointer: x must live as long as run does
    return run, out


def onnx_vs_torch(arch: str, embedding_size: int, batch: int, device: str, rounds: int, workdir: str | Path,
                  providers: list[Any] | None = None) -> dict[str, Any]:
    """The ONNX export of ``IResNetFaceModule(arch)`` on onnxruntime (IO binding) against the torch module,
    interleaved on one random batch of 0..255 RGB crops: rates, the ratio's spread and the outputs' largest
    difference (the same function both ways)."""
    import onnxruntime as ort
    import torch

    from gandiff.face.sface_torch import IResNetFaceModule
    from harness import compare, interleave

    torch.manual_seed(0)
    module = IResNetFaceModule(arch, None, embedding_size)
    with torch.no_grad():  # random BatchNorm statistics, so the export is not a near-constant function
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    payload = export_face_onnx(module, Path(workdir) / f"{arch}.onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = providers or ["CPUExecutionProvider"]
    session = ort.InferenceSession(payload, sess_options=options, providers=providers)
    module = module.to(device).eval()
    x = torch.rand(batch, 3, 112, 112, generator=torch.Generator().manual_seed(1)).mul_(255).to(device)
    run, out = iobinding_runner(session, x, embedding_size)

    def torch_run() -> Any:
        with torch.no_grad():
            return module(x)

    ref = torch_run()
    run()
    diff = float((out - ref).abs().max())
    scale = float(ref.abs().max())
    t = interleave({"torch": torch_run, "onnxruntime": run}, rounds, device=device)
    c = compare("onnx embed", t, "onnxruntime", "torch", batch, "images/s")
    return {"ort_rate": c.gandiff_rate, "torch_rate": c.reference_rate, "comparison": c, "max_abs_diff": diff,
            "max_abs": scale, "provider": session.get_providers()[0]}


def check_onnx_embed(small: bool, device: str, dtype: str) -> list[Row]:
    import tempfile

    import onnxruntime as ort

    from harness import ROUNDS, format_ratio

    if not device.startswith("cuda"):
        raise Skipped(f"no CUDA (device={device}): the row compares onnxruntime-gpu with torch on the GPU")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (available: "
                           f"{', '.join(ort.get_available_providers())}): pip uninstall -y onnxruntime && "
                           "pip install onnxruntime-gpu (the gpu extra)")
    index = int(device.split(":")[1]) if ":" in device else 0
    arch, dim, batch = ("iresnet18", 512, 32) if small else ("iresnet50", 512, 256)
    reset_peak_memory(device)
    providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    with tempfile.TemporaryDirectory() as tmp:
        res = onnx_vs_torch(arch, dim, batch, device, ROUNDS, tmp, providers=providers)
    if res["provider"] != "CUDAExecutionProvider":
        raise RuntimeError(f"onnxruntime fell back to {res['provider']}: the CUDA provider did not load")
    fwd = _iresnet_flops(arch, device)
    c = res["comparison"]
    return [Row(f"embed insightface ONNX {arch} batch {batch} (onnxruntime CUDA, IO binding) vs torch",
                res["ort_rate"], "images/s", reference=res["torch_rate"],
                floor_seconds=_floor(fwd, device, "tf32"), measured_seconds=1.0 / res["ort_rate"],
                peak_mem_gb=peak_memory_gb(device),
                extra={"speed_up": format_ratio(c), "max_abs_diff": res["max_abs_diff"],
                       "max_abs": res["max_abs"]})]


CHECKS = {"dreambooth": check_dreambooth, "generate": check_generate, "train": check_train,
          "embed": check_embed, "pairs": check_pairs, "onnx_embed": check_onnx_embed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="tiny sizes on CPU (what the test suite runs)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    p.add_argument("--json", default=None, help="also write the table here")
    args = p.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "cpu"
    print(f"gpu_check on {name} ({device}, {dtype}), torch {torch.__version__}, small={args.small}")
    rows: list[Row] = []
    failed = 0
    skipped: list[str] = []
    for section in args.only.split(","):
        t0 = time.perf_counter()
        try:
            rows += CHECKS[section](args.small, device, dtype)
        except Skipped as e:
            skipped.append(section)
            print(f"[{section}: skipped: {e}]", flush=True)
        except Exception as e:  # one broken path must not hide the others' numbers
            failed += 1
            traceback.print_exc()
            rows.append(Row(f"{section}: FAILED {type(e).__name__}: {e}"[:120], float("nan"), "-"))
        print(f"[{section}: {time.perf_counter() - t0:.1f} s]", flush=True)
    print_table(f"gpu_check ({name})", rows)
    if skipped:
        print(f"skipped (see above for why): {', '.join(skipped)}")
    if args.json:
        write_json(args.json, "gpu_check", rows, {"device": name, "dtype": dtype, "small": args.small,
                                                  "skipped": skipped})
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
