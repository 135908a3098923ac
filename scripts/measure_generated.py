"""Measure a run's generated images with embedders of your choice, independently of the run's own evaluation.

    python scripts/measure_generated.py experiments/demo                    # dlib (needs gandiff[dlib]) and SFace
    python scripts/measure_generated.py /tmp/a/demo /tmp/b/demo --embedders sface --json out.json

For each run folder (``<paths.run_dir>``: it holds ``identities/<key>/`` and ``generate/<key>/``): YuNet (at 160 px,
the demo's detector size for 64x64 images) keeps the best-scoring face in every generated image (before any selection)
and in each identity's GAN anchor and variations; each embedder embeds them (its own alignment: ArcFace crop for
SFace, dlib's chip for dlib). Printed per embedder: own-anchor vs other-anchor cosine (means and d'), the
generated-vs-generated mated scores (intra-class variation) against the GAN variations' own mated scores.
Issue 18 asks for these with an embedder that took no part in training (``dreambooth.identity_loss`` trains with
SFace: measure with dlib). The evaluate stage measures the same (gandiff/evaluation/independent.py, the report's
"Generated images, independent embedders"); this script is for run folders made before it, or other embedders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _only_folder(parent: Path, what: str) -> Path:
    folders = sorted(p for p in parent.glob("*") if p.is_dir())
    if len(folders) != 1:
        raise SystemExit(f"{parent}: expected one {what} folder, found {len(folders)} "
                         "(point at a run folder that ran each stage once)")
    return folders[0]


def build_embedder(name: str) -> Any:
    from gandiff.evaluation import independent as I

    if name not in I.EMBEDDERS:
        raise SystemExit(f"--embedders: {name!r}: must be one of {', '.join(I.EMBEDDERS)}")
    reason = I.unavailable(name)
    if reason:
        raise SystemExit(f"--embedders: {reason}")
    return I.build_embedder(name)


def measure(run: Path, detector: Any, embedders: dict[str, Any]) -> dict[str, Any]:
    """gandiff.evaluation.independent.measure_generated over the run folder's one identities and generate folder."""
    from gandiff.evaluation.independent import MeasureError, measure_generated

    identities = _only_folder(run / "identities", "identities")
    generate = _only_folder(run / "generate", "generate")
    try:
        return {"run": str(run), **measure_generated(identities, generate, detector, embedders)}
    except MeasureError as e:
        raise SystemExit(f"{run}: {e}") from None


def _fmt(v: float | None, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    from gandiff.evaluation.independent import build_script_detector

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (paths.run_dir)")
    p.add_argument("--embedders", default="dlib,sface", help="comma list of sface, dlib")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    detector = build_script_detector()
    embedders = {n: build_embedder(n) for n in args.embedders.split(",")}
    results = [measure(r, detector, embedders) for r in args.runs]
    print(f"{'run':<40} {'embedder':<8} {'faces':>6} {'own':>7} {'other':>7} {'d_prime':>8} "
          f"{'gen mated':>15} {'GAN mated':>15}")
    for r in results:
        for n, m in r["embedders"].items():
            gen, gan = m["generated_mated"], m["gan_mated"]
            print(f"{r['run']:<40} {n:<8} {r['face_rate']:>6.3f} {_fmt(m['own_anchor']):>7} {_fmt(m['other_anchor']):>7} "
                  f"{_fmt(m['d_prime'], 3):>8} {_fmt(gen['mean']):>7}±{_fmt(gen['std'])} "
                  f"{_fmt(gan['mean']):>7}±{_fmt(gan['std'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
