"""Benchmark the identity funnel: identities/s and acceptance per funnel stage, vs a plain per-seed loop.

    .venv/bin/python scripts/bench/identities.py [--num 24] [--batch-size 32] [--device cpu]

Both paths use the demo's models (DCGAN, YuNet at 160 px, SFace, age/gender) and the same gate and
similarity threshold; the plain loop renders and analyses one seed at a time and compares each
candidate to the kept identities one by one, as a first script would.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from gandiff.config import compose
    from gandiff.identity.demographics import parse_target
    from gandiff.identity.sampling import QualityGate, select_identities
    from gandiff.identity.stage import build_analyzer, build_source

    cfg = compose(["logger=none", f"device={args.device}"])
    source, analyzer = build_source(cfg, args.device), build_analyzer(cfg, args.device)
    gate = QualityGate(cfg.identity.min_det_score, cfg.identity.min_face_size)
    thr = float(cfg.identity.max_similarity)
    target = parse_target({"gender": "uniform"}, args.num, ("gender", "age_bin"))
    analyzer.analyze_batch(list(source.render(source.to_w(source.sample([0]), 1.0))))  # warm-up

    t0 = time.perf_counter()
    sel = select_identities(source, analyzer, target, args.num, 1.0, 0, args.batch_size, 100_000, gate, thr)
    fast = time.perf_counter() - t0

    t0 = time.perf_counter()
    kept, counts, seed = [], {g: 0 for g in ("male", "female")}, 0
    quota = {c[0]: q for c, q in target.quotas.items()}
    while len(kept) < args.num:
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
        counts[g] += 1
    plain = time.perf_counter() - t0

    f = sel.funnel
    print(f"identity funnel, {args.num} identities (target: gender uniform), device={args.device}")
    print(f"{'path':<28}{'seconds':>9}{'identities/s':>14}{'seeds/s':>10}")
    print(f"{'batched funnel (gandiff)':<28}{fast:>9.2f}{args.num / fast:>14.2f}{f['drawn'] / fast:>10.1f}")
    print(f"{'plain per-seed loop':<28}{plain:>9.2f}{args.num / plain:>14.2f}{seed / plain:>10.1f}")
    print(f"speed-up: {plain / fast:.2f}x   (render {sel.seconds['render']:.2f} s, analyse {sel.seconds['analyze']:.2f} s)")
    print(f"\n{'funnel stage':<16}{'count':>7}{'of drawn':>10}{'of previous':>13}")
    prev = None
    for k, v in f.items():
        print(f"{k:<16}{v:>7}{v / f['drawn']:>10.1%}{(v / prev if prev else 1):>13.1%}")
        prev = v
    print("rejections:", ", ".join(f"{k}={v}" for k, v in sorted(sel.rejections.items())))


if __name__ == "__main__":
    main()
