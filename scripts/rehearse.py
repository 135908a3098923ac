"""The rehearsal: every stage of experiment=gandiff_sd15 at real size, random weights, one command, a table.

    make rehearse                                     # = python scripts/rehearse.py
    python scripts/rehearse.py --size tiny            # the same path on tiny stand-ins (a minute or two)
    python scripts/rehearse.py --only-render          # just the StyleGAN renders (s/image, memory per image)
    python scripts/rehearse.py dreambooth.steps=4 generation.images_per_identity=4   # any override

1. Builds the stand-ins once (gandiff/rehearsal.py) into ``--models`` (SD 1.5 float32 and fp16-variant
   folders, StyleGAN3-R and StyleGAN2 FFHQ 1024 NVlabs pickles, buffalo_l, FairFace, verification .bin
   files, IJB-C). The fp16-variant folder is loaded too (``dreambooth.base`` accepts both).
2. Renders one 1024x1024 image with each StyleGAN stand-in (s/image, peak memory per image).
3. Runs the eight stages in this process, ``experiment=rehearse`` (conf/experiment/rehearse.yaml) pointed at
   the stand-ins, with the gates that random weights would close opened (SUBSTITUTIONS, printed).
4. Prints the table (wall time, peak RSS, peak GPU memory on CUDA, items, unit cost, FLOP floor on CUDA)
   and writes it as JSON beside the run (``<root>/rehearse/rehearsal.json``).

Random weights prove shapes, formats, memory and speed, not quality: the images are noise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "bench"))

log = logging.getLogger("rehearse")

STAGES = ("identities", "dreambooth", "generate", "curate", "export", "train", "evaluate", "report")

# Random weights find no faces and score every pair alike: each gate that would then empty a stage is
# opened, and why. The stages still do their full work on real-size tensors.
SUBSTITUTIONS = {
    "identity.target=null": "random FairFace labels cannot fill the race x gender cells",
    "identity.min_det_score=0.0": "the random SCRFD scores every anchor about 0.5",
    "identity.min_face_size=0": "its boxes are anchor-sized, not face-sized",
    "face.detector.score_threshold=0.0": "every anchor is a candidate ...",
    "+face.detector.max_faces=1": "... and the best box is the face (one per image, as curation wants)",
    "identity.max_similarity=1.0": "a random IResNet-50 maps different images to similar embeddings",
    "identity.min_variation_similarity=-1.0": "nor does it tell a variation from its anchor",
    "identity.edits.directions=[]": "learning InterFaceGAN directions renders edits.samples (200) more 1024^2 "
                                    "images; variations are latent perturbations",
    "curation.min_det_score=0.0": "as identity.min_det_score",
    "curation.min_face_size=0": "as identity.min_face_size",
    "curation.min_anchor_similarity=-1.0": "random embeddings: no identity consistency to measure",
    "curation.max_other_similarity=1.0": "nor confusion between identities",
    "curation.min_coverage=0.0": "with random weights the best box can be any detector anchor, often at the "
                                 "border: its crop lies partly off the image",
    "curation.balance=false": "random labels: nothing to balance",
}
CPU_OVERRIDES = ["device=cpu", "dreambooth.dtype=float32", "generation.dtype=float32", "trainer.precision=32-true",
                 "trainer.accelerator=cpu", "trainer.devices=1"]
TINY_OVERRIDES = ["dreambooth.resolution=64", "generation.resolution=64", "recognizer=demo",
                  "face.detector.input_size=[128,128]"]


@dataclass
class Line:
    """One row of the rehearsal table."""

    name: str
    seconds: float
    peak_rss_gb: float
    items: int | None = None
    unit: str = ""
    unit_cost: float | None = None  # seconds per unit (or units per second when the unit ends in /s)
    peak_gpu_gb: float | None = None
    floor_seconds: float | None = None  # FLOP floor of the same work on this GPU (CUDA only)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float | None = None  # this process's user + system CPU time (what a shared machine's wall hides)


# --------------------------------------------------------------------------------------------- memory


def reset_peaks(device: str) -> None:
    """Peak RSS back to the current RSS (Linux ``clear_refs`` 5), and the CUDA allocator's peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: the peak stays the process's
        pass
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_rss_gb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_gpu_gb(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


def _floor(flops: float | None, device: str, dtype: str) -> float | None:
    if not flops or not device.startswith("cuda"):
        return None
    from harness import peak_flops

    peak = peak_flops(device, dtype)
    return flops / peak if peak else None


# --------------------------------------------------------------------------------------------- pieces


def render_rows(paths: dict[str, Path], device: str, resolution_note: str, which: list[str]) -> list[Line]:
    """One image through each StyleGAN stand-in, loaded from its NVlabs pickle: s/image and memory per image."""
    import torch

    from gandiff.identity.stylegan import StyleGANSource

    rows = []
    for key, label in (("stylegan3", "StyleGAN3-R"), ("stylegan2", "StyleGAN2")):
        if key not in which:
            continue
        src = StyleGANSource(str(paths[key]), device=device, batch_size=1)
        w = src.to_w(src.sample([0]), 0.7)
        src.render(w) if device.startswith("cuda") else None  # CUDA: warm-up (kernels, allocator)
        reset_peaks(device)
        before = peak_rss_gb()
        t0, c0 = time.perf_counter(), cpu_seconds()
        img = src.render(w)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        flops = None
        if device.startswith("cuda"):
            from harness import count_flops

            ws = src.ws(w)
            with torch.inference_mode():
                flops = count_flops(lambda: src.G.synthesis(ws))
        rows.append(Line(f"{label} {img.shape[1]}px render (1 image)", dt, peak_rss_gb(), 1, "s/image", dt,
                         peak_gpu_gb(device), _floor(flops, device, "float32"),
                         note=f"{resolution_note}; RSS +{peak_rss_gb() - before:.2f} GB over the loaded model",
                         cpu_seconds=cpu_seconds() - c0))
        del src
    return rows


def variant_row(paths: dict[str, Path], device: str) -> Line:
    """The fp16-variant-only folder through dreambooth.base's loader (the variant detected)."""
    from gandiff.diffusion import components

    reset_peaks(device)
    t0, c0 = time.perf_counter(), cpu_seconds()
    comps = components.load_components(str(paths["sd15_fp16"]), "float32", device)
    dt = time.perf_counter() - t0
    n = sum(p.numel() for m in (comps.unet, comps.vae, comps.text_encoder) for p in m.parameters())
    line = Line("load SD 1.5 fp16-variant folder", dt, peak_rss_gb(), 1, "s/load", dt, peak_gpu_gb(device),
                note=f"variant detected: fp16; {n / 1e6:.0f}M parameters", cpu_seconds=cpu_seconds() - c0)
    components._CACHE.clear()
    del comps
    return line


# --------------------------------------------------------------------------------------------- stages


def stage_units(name: str, cfg: Any, counts: dict[str, Any], run_dir: Path) -> tuple[int | None, str, float]:
    """Items a stage did and the unit its cost is quoted in: (items, unit, work units)."""
    n_ids = int(cfg.identity.num)
    if name == "identities":
        return n_ids, "s/identity", n_ids
    if name == "dreambooth":
        steps = int(cfg.dreambooth.steps)
        return n_ids, "s/identity-step", n_ids * steps
    if name == "generate":
        n = n_ids * int(cfg.generation.images_per_identity)
        return n, "s/image", n
    if name in ("curate", "export"):
        n = next((int(v) for k, v in counts.items() if k in ("images", "scored", "exported", "num_images")
                  and isinstance(v, (int, float))), None)
        return n, "s/image", n or 0
    if name == "train":
        n = int(counts.get("steps") or 0) * int(cfg.trainer.batch_size)
        return n, "images/s", n
    if name == "evaluate":
        pairs = json.loads((Path(str(cfg.benchmark.root)).parent / "standins.json").read_text())["bin_pairs"]
        n = 2 * pairs * len(list(cfg.benchmark.names))
        return n, "s/bin image", n
    return 1, "s", 1


def stage_floor(name: str, cfg: Any, device: str, work: float) -> float | None:
    """FLOP floor (CUDA only) of a stage's dominant model work, with scripts/gpu_check.py's counting."""
    if not device.startswith("cuda") or not work:
        return None
    import gpu_check

    dtype = "bfloat16"
    if name in ("dreambooth", "generate"):
        from gandiff.diffusion.components import build_sd15_random_components

        comps = build_sd15_random_components(device=device, dtype=dtype)
        res = int(cfg.dreambooth.resolution if name == "dreambooth" else cfg.generation.resolution)
        fwd = gpu_check.unet_forward_flops(comps, res)
        per = 2 * 3 * fwd if name == "dreambooth" else int(cfg.generation.steps) * 2 * fwd
        return _floor(per * work, device, dtype)
    if name == "train":
        return _floor(3 * gpu_check._iresnet_flops("iresnet50", device) * work, device, dtype)
    return None


def run_stages(cfg: Any, stages: list[str], device: str) -> list[Line]:
    from gandiff.pipeline import run_stage

    rows = []
    for name in stages:
        reset_peaks(device)
        t0, c0 = time.perf_counter(), cpu_seconds()
        summary = run_stage(cfg, name)
        dt, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        counts = {k: v for k, v in summary.items() if k not in ("stage", "status", "dir")}
        if summary.get("status") == "up-to-date":
            log.warning("%s was already done in %s: its time is a rerun's (remove the folder to measure)", name,
                        summary.get("dir"))
        items, unit, work = stage_units(name, cfg, counts, Path(str(cfg.paths.run_dir)))
        cost = (work / dt if dt else None) if unit.endswith("/s") else (dt / work if work else None)
        rss, gpu = peak_rss_gb(), peak_gpu_gb(device)  # before stage_floor, which builds a model to count FLOPs
        floor = stage_floor(name, cfg, device, work)
        rows.append(Line(name, dt, rss, items, unit, cost, gpu, floor,
                         note=str(summary.get("status")),
                         extra={k: v for k, v in counts.items() if isinstance(v, (int, float, str))}, cpu_seconds=cpu))
        log.info("rehearse: %s done in %.1f s wall, %.1f s CPU, peak RSS %.2f GB, %s items, %s %s", name, dt, cpu,
                 rows[-1].peak_rss_gb, items, _f(cost), unit)
    return rows


# --------------------------------------------------------------------------------------------- table


def _f(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def table(rows: list[Line], cuda: bool) -> str:
    head = ["piece / stage", "wall s", "CPU s", "peak RSS GB"] + (["peak GPU GB"] if cuda else []) + ["items", "unit cost"]
    head += (["FLOP floor s", "x floor"] if cuda else []) + ["note"]
    body = []
    for r in rows:
        cells = [r.name, _f(r.seconds), _f(r.cpu_seconds), _f(r.peak_rss_gb)] + ([_f(r.peak_gpu_gb)] if cuda else [])
        cells += [_f(r.items), f"{_f(r.unit_cost)} {r.unit}".strip()]
        if cuda:
            cells += [_f(r.floor_seconds), _f(r.seconds / r.floor_seconds if r.floor_seconds else None)]
        body.append(cells + [r.note])
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--models", default=None, help="stand-in folder (default: <root>/rehearsal-standins[-tiny])")
    ap.add_argument("--root", default=os.environ.get("GANDIFF_ROOT", "experiments"), help="paths.root of the run")
    ap.add_argument("--size", choices=("real", "tiny"), default="real")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--gan", choices=("stylegan3", "stylegan2"), default=None,
                    help="the identity stage's source (default: stylegan3 on CUDA; stylegan2 on CPU, where one "
                         "StyleGAN3-R 1024^2 image costs ~300 CPU s and the stage renders 6; both render once above)")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma list (default: all eight)")
    ap.add_argument("--only-render", action="store_true", help="build, render the StyleGAN images, stop")
    ap.add_argument("--pieces", default="stylegan3,stylegan2,variant",
                    help="pieces before the stages: one image per StyleGAN stand-in, the fp16-variant load ('' = none)")
    ap.add_argument("--json", default=None, help="where the table goes as JSON (default: beside the run)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for experiment=rehearse")
    args = ap.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]  # checked before the (long, at real size) build
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        ap.error(f"--stages: unknown {unknown}; choose from {','.join(STAGES)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from gandiff import rehearsal
    from gandiff.devices import torch_device

    device = str(torch_device(args.device))
    cuda = device.startswith("cuda")
    args.gan = args.gan or ("stylegan3" if cuda else "stylegan2")
    root = Path(args.root).resolve()
    models = Path(args.models or root / ("rehearsal-standins" + ("" if args.size == "real" else "-tiny")))
    rows: list[Line] = []

    reset_peaks(device)
    t0, c0 = time.perf_counter(), cpu_seconds()
    paths = rehearsal.build_standins(models, size=args.size)
    rows.append(Line("build stand-ins", time.perf_counter() - t0, peak_rss_gb(), len(paths), note=str(models),
                     cpu_seconds=cpu_seconds() - c0))
    pieces = [k for k in args.pieces.split(",") if k]
    rows += render_rows(paths, device, "NVlabs pickle -> native generator", pieces)
    if "variant" in pieces:
        rows.append(variant_row(paths, device))
    if args.only_render:
        print(table(rows, cuda))
        return 0

    from gandiff.config import compose

    overrides = [
        "experiment=rehearse",
        f"paths.root={root}",
        f"identity.source.checkpoint={paths[args.gan]}",
        f"dreambooth.base={paths['sd15']}",
        f"face.pack_dir={paths['buffalo_l']}",
        f"attributes.classifier.checkpoint={paths['fairface']}",
        f"benchmark.root={paths['verification']}",
        f"benchmark.ijb={{root: {paths['ijbc']}, target: IJBC}}",
        *(CPU_OVERRIDES if not cuda else [f"device={device}"]),
        *(TINY_OVERRIDES if args.size == "tiny" else []),
        *SUBSTITUTIONS,
        *args.overrides,
    ]
    print(f"identity source: {paths[args.gan].name}")
    print("rehearsal substitutions (random weights find no faces):")
    for k, why in SUBSTITUTIONS.items():
        print(f"  {k:42s} {why}")
    cfg = compose(overrides)
    rows += run_stages(cfg, stages, device)

    text = table(rows, cuda)
    print(f"\nrehearsal ({args.size} size, {device}, {platform.node()}, torch threads "
          f"{__import__('torch').get_num_threads()}):\n{text}")
    out = Path(args.json or Path(str(cfg.paths.run_dir)) / "rehearsal.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"size": args.size, "device": device, "gan": args.gan, "overrides": overrides,
                               "substitutions": SUBSTITUTIONS, "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    print(f"table as JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
