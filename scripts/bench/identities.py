"""Benchmark the identity funnel: identities/s and acceptance per funnel stage, vs a plain per-seed loop.

    .venv/bin/python scripts/bench/identities.py [--num 12 24] [--batch-size 32] [--rounds 5] [--device cpu]
    .venv/bin/python scripts/bench/identities.py --diffusers tiny|FOLDER|HUB_ID [--steps 10] [--num 16]

Both paths use the demo's models (DCGAN, YuNet at 160 px, SFace, age/gender), built once and shared,
and the same gate and similarity threshold; the plain loop renders and analyses one seed at a time and
compares each candidate to the kept identities one by one, as a first script would. The two run
interleaved after one warm-up call each (``scripts/bench/harness.py``), one comparison per ``--num``, and
must keep the same seeds (checked). The funnel renders, detects and classifies whole batches (its
bookkeeping, which the identities stage writes, covers every seed drawn) but embeds only the candidates
its walk reaches; where it is slower, the note under the table gives the measured cost of its last
batch's seeds past the last identity kept.

``--diffusers`` instead times the diffusers identity source: batched rendering with one generator per
sample (each seed's image independent of its batch) against the stock pipeline called one seed at a
time (the plain way to get per-seed images). ``tiny`` builds a random 32x32 DDPM folder to run offline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROUNDS, compare, interleave, print_comparisons, write_comparisons  # noqa: E402


def plain_loop(source, analyzer, gate, target, num: int, thr: float) -> list[int]:
    """The per-seed loop a first script would be: render and analyse one seed, compare with every kept
    identity one by one; returns the seeds kept (the last one + 1 were drawn)."""
    kept, seeds, counts, seed = [], [], {g: 0 for g in ("male", "female")}, 0
    quota = {c[0]: q for c, q in target.quotas.items()}
    while len(kept) < num:
        w = source.to_w(source.sample([seed]), 1.0)
        seed += 1
        faces = analyzer.analyze_batch([source.render(w)[0]])[0]
        if gate.check(faces) is not None:
            continue
        g = faces[0].attributes.gender
        if counts[g] >= quota[g]:
            continue
        e = faces[0].embedding
        if any(float(np.dot(e, k)) >= thr for k in kept):
            continue
        kept.append(e)
        seeds.append(seed - 1)
        counts[g] += 1
    return seeds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, nargs="+", default=[12, 24], help="identities to select (one comparison each)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--diffusers", default=None, help="time the diffusers source on this model ('tiny': built here)")
    ap.add_argument("--steps", type=int, default=10, help="sampling steps for --diffusers")
    ap.add_argument("--json", default=None, help="write the comparisons here (scripts/bench/all.py reads them)")
    args = ap.parse_args(argv)
    if args.diffusers:
        bench_diffusers(args.diffusers, args.num[0], args.batch_size, args.steps, args.device)
        return

    from gandiff.config import compose
    from gandiff.identity.demographics import parse_target
    from gandiff.identity.sampling import QualityGate, select_identities
    from gandiff.identity.stage import build_analyzer, build_source

    cfg = compose(["logger=none", f"device={args.device}"])
    source, analyzer = build_source(cfg, args.device), build_analyzer(cfg, args.device)
    gate = QualityGate(cfg.identity.min_det_score, cfg.identity.min_face_size)
    thr = float(cfg.identity.max_similarity)
    comps, funnels = [], {}
    for num in args.num:
        target = parse_target({"gender": "uniform"}, num, ("gender", "age_bin"))
        sel: dict = {}

        def funnel():
            sel["last"] = select_identities(source, analyzer, target, num, 1.0, 0, args.batch_size, 100_000, gate,
                                            thr)

        def plain():
            sel["plain_seeds"] = plain_loop(source, analyzer, gate, target, num, thr)

        t = interleave({"plain": plain, "funnel": funnel}, args.rounds, device=args.device)
        last, plain_seeds = sel["last"], sel["plain_seeds"]
        if last.seeds.tolist() != plain_seeds:
            raise SystemExit(f"{num} identities: the funnel kept seeds {last.seeds.tolist()}, the per-seed loop "
                             f"{plain_seeds}: not the same work, no comparison")
        c = compare(f"identities funnel, {num} identities", t, "funnel", "plain", num, "identities/s")
        c.gandiff = f"select_identities, batches of {args.batch_size}"
        c.reference = "per-seed loop"
        f, sec = last.funnel, last.seconds
        tail, tail_s = int(sec.get("past_last_kept", 0)), float(sec.get("past_last_kept_seconds", 0.0))
        if tail:
            per_run = statistics.median(c.gandiff_seconds)
            c.note = (("slower than the per-seed loop here: " if c.median < 1.0 else "")
                      + f"the per-seed loop stopped at seed {plain_seeds[-1]} ({plain_seeds[-1] + 1} drawn); the funnel "
                      f"drew {f['drawn']} (whole batches of {args.batch_size}: its funnel counts, cells' candidates and "
                      f"latent pool, which the identities stage writes, cover every seed drawn) and rendered, detected "
                      f"and classified the {tail} past the last identity kept (not embedding them): their share of the "
                      f"last run's measured render, detect and classify time is {tail_s:.2f} s of {per_run:.2f} s "
                      "(median run); without them "
                      f"{statistics.median(c.reference_seconds) / max(per_run - tail_s, 1e-9):.2f}x. A smaller "
                      "identity.batch_size draws fewer past the target and keeps the same identities "
                      "(tests/identity/test_identity_batching.py)")
        comps.append(c)
        funnels[num] = (last, plain_seeds[-1] + 1)

    print(f"identity funnel (target: gender uniform), device={args.device}, demo models (DCGAN, YuNet, SFace, "
          "age/gender)")
    print_comparisons("identities", comps)
    for num, (s, plain_seeds) in funnels.items():
        f = s.funnel
        sec = s.seconds
        print(f"\n{num} identities: funnel drew {f['drawn']} seeds, the per-seed loop {plain_seeds}; last funnel run "
              f"render {sec['render']:.2f} s, detect + classify {sec['analyze']:.2f} s, embed {sec.get('embed', 0):.2f} s "
              f"({int(sec.get('embedded', 0))} faces embedded of {f['quality']} past the gate)")
        print(f"{'funnel stage':<16}{'count':>7}{'of drawn':>10}{'of previous':>13}")
        prev = None
        for k, v in f.items():
            print(f"{k:<16}{v:>7}{v / f['drawn']:>10.1%}{(v / prev if prev else 1):>13.1%}")
            prev = v
        print("rejections:", ", ".join(f"{k}={v}" for k, v in sorted(s.rejections.items())))
    write_comparisons(args.json, "identities", comps)


def bench_diffusers(model: str, num: int, batch_size: int, steps: int, device: str) -> None:
    import tempfile

    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel

    from gandiff.identity.diffusers_source import DiffusersSource

    if model == "tiny":
        torch.manual_seed(0)
        model = tempfile.mkdtemp(prefix="tiny_ddpm_")
        unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                           block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"))
        DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(model)
    src = DiffusersSource(model, scheduler=None, steps=steps, device=device, batch_size=batch_size)
    pipe = DiffusionPipeline.from_pretrained(model).to(src.device)
    pipe.set_progress_bar_config(disable=True)
    seeds = list(range(num))

    def plain(seeds: list[int]) -> list:
        return [pipe(generator=torch.Generator().manual_seed(s), num_inference_steps=steps, output_type="np").images[0]
                for s in seeds]

    src.render(src.sample(seeds[:1]))  # warm-up
    plain(seeds[:1])
    t0 = time.perf_counter()
    ours = src.render(src.sample(seeds))
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = plain(seeds)
    slow = time.perf_counter() - t0
    diff = max(int(np.abs(o.astype(np.int16) - (r * 255).round().astype(np.int16)).max()) for o, r in zip(ours, ref))
    print(f"diffusers source {model}: {num} images, {steps} steps, {src.resolution}px, device={src.device}, "
          f"torch threads={torch.get_num_threads()}")
    print(f"{'path':<40}{'seconds':>9}{'images/s':>10}")
    print(f"{f'batched, per-sample generators (bs={batch_size})':<40}{fast:>9.2f}{num / fast:>10.2f}")
    print(f"{'stock pipeline, one seed per call':<40}{slow:>9.2f}{num / slow:>10.2f}")
    print(f"speed-up: {slow / fast:.2f}x; largest pixel difference between the two: {diff} (of 255)")


if __name__ == "__main__":
    main()
