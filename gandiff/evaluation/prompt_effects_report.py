"""Prompt effects: does each option of the run's prompt bank take effect on the run's own generated images?

For every family and option, the images whose prompt drew that option are set against the images of the same
run to which the family contributed nothing (its neutral), with the option's statistic of
``gandiff.diffusion.prompt_effects`` (``OPTION_EFFECTS``): counts, both means, the effect (signed so that
> 0 means the word moved the image its way), Cohen's d and a one-sided Welch t-test. Every generated image is
measured (before selection), placed by the landmarks the curate stage detected; where it found none, pixel
statistics use the canonical landmarks scaled to the image and landmark statistics (head turn, framing) leave the
image out. Ages are the curate stage's attribute-classifier estimates.

Item ``prompts-effects`` (``benchmark.prompt_effects``), section "Prompt effects". Design:
docs/design.md#prompt-effects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.artifacts import read_json, read_table
from gandiff.evaluation.context import EvalContext
from gandiff.evaluation.document import Report
from gandiff.evaluation.registry import Evaluator, ReportView, Section, register

log = logging.getLogger(__name__)

KEY = "prompts-effects"
SECTION = "prompt_effects"
CHOICE_PREFIX = "choice_"  # the generate manifest's per-family columns ("" = the family did not contribute)
# Statistics that are the landmarks themselves: without a detection there is nothing to measure.
LANDMARK_STATISTICS = ("yaw", "eye_distance")
ALPHA = 0.05  # "took effect": effect > 0 at one-sided p < ALPHA (per option, no multiplicity correction)


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


# --------------------------------------------------------------------------------------------- inputs


def generated_run(curate_dir: Path) -> tuple[Path | None, dict[str, Any], str | None]:
    """(the generate folder the curate stage scored, its stage.json record, None) — or (None, {}, why not).

    Found the way ``gandiff.pipeline.upstream_records`` follows a record's inputs: ``<run>/generate/<key>``."""
    rec_path = curate_dir / "stage.json"
    if not rec_path.is_file():
        return None, {}, f"{rec_path} is missing: which generate folder the curate stage scored is unknown"
    key = (read_json(rec_path).get("inputs", {}).get("generate") or {}).get("key")
    if not key:
        return None, {}, f"{rec_path}: no generate input recorded"
    gen = curate_dir.parent.parent / "generate" / str(key)
    if not (gen / "images.parquet").is_file():
        return None, {}, f"{gen / 'images.parquet'}: not found (the generate folder curate scored is gone)"
    gen_rec = read_json(gen / "stage.json") if (gen / "stage.json").is_file() else {}
    return gen, gen_rec, None


def bank_options(manifest: Sequence[Mapping[str, Any]], generate_config: Mapping[str, Any]
                 ) -> list[tuple[str, list[str]]]:
    """(family, options) in the bank's order: families as the manifest's ``choice_`` columns stand (the recorded
    config is key-sorted), options as the generate stage's recorded ``prompts.families`` lists them, then any
    the manifest holds that the record does not."""
    families = ((generate_config.get("prompts") or {}).get("families")) or {}
    columns = [c[len(CHOICE_PREFIX):] for c in (manifest[0] if manifest else {}) if c.startswith(CHOICE_PREFIX)]
    out: dict[str, list[str]] = {}
    for f in [*columns, *(str(f) for f in families if str(f) not in columns)]:
        opts = out[f] = [str(o) for o in (families.get(f) or {}).get("options", [])]
        for r in manifest:
            if r.get(CHOICE_PREFIX + f) and r[CHOICE_PREFIX + f] not in opts:
                opts.append(str(r[CHOICE_PREFIX + f]))
    return list(out.items())


# --------------------------------------------------------------------------------------------- measuring


def image_statistics(image: np.ndarray, landmarks: np.ndarray | None, age: float | None,
                     statistics: Sequence[str]) -> tuple[dict[str, float], bool]:
    """Each of ``statistics`` of one (H, W, 3) RGB image, and whether the canonical frame was used.

    ``landmarks``: (5, 2) as detected, or None (pixel statistics then use ``CANONICAL_LANDMARKS`` scaled from
    64x64 to the image; landmark statistics are nan). ``age``: the classifier's estimate or None (nan)."""
    from gandiff.diffusion.prompt_effects import CANONICAL_LANDMARKS, STATISTICS

    h, w = image.shape[:2]
    frame = landmarks if landmarks is not None else CANONICAL_LANDMARKS * np.array([w / 64.0, h / 64.0], np.float32)
    out = {}
    for s in statistics:
        if s == "age":
            out[s] = float("nan") if age is None else float(age)
        elif s in LANDMARK_STATISTICS and landmarks is None:
            out[s] = float("nan")
        else:
            out[s] = float(STATISTICS[s](image, frame))
    return out, landmarks is None


def one_sided_p(option: np.ndarray, neutral: np.ndarray) -> float | None:
    """Welch's t-test that the (signed) option values exceed the neutral ones; None with fewer than 2 of either."""
    from scipy.stats import ttest_ind

    if len(option) < 2 or len(neutral) < 2 or (np.ptp(option) == 0 and np.ptp(neutral) == 0):
        return None
    return _finite(ttest_ind(option, neutral, equal_var=False, alternative="greater").pvalue)


def effect_rows(bank: Sequence[tuple[str, Sequence[str]]], choices: Mapping[str, Sequence[str]],
                values: Mapping[str, np.ndarray], canonical: np.ndarray) -> list[dict[str, Any]]:
    """One row per (family, option): the option's images against the family's neutral images.

    ``choices[family]``: (N,) the option each image drew ("" = none); ``values[statistic]``: (N,) per image
    (nan = not measurable); ``canonical``: (N,) bool, measured in the canonical frame."""
    from gandiff.diffusion.prompt_effects import OPTION_EFFECTS, cohens_d

    rows = []
    for family, options in bank:
        drawn = np.asarray(choices.get(family, []), dtype=object)
        neutral = drawn == ""
        for option in options:
            chosen = drawn == option
            row: dict[str, Any] = {"family": family, "option": option, "statistic": None, "sign": None,
                                   "n_option": int(chosen.sum()), "n_neutral": int(neutral.sum()),
                                   "option_mean": None, "neutral_mean": None, "effect": None, "cohens_d": None,
                                   "p_value": None, "took_effect": None, "canonical_option": None,
                                   "canonical_neutral": None, "note": ""}
            rows.append(row)
            if option not in OPTION_EFFECTS:
                row["note"] = "no statistic (not in gandiff.diffusion.prompt_effects.OPTION_EFFECTS)"
                continue
            stat, sign = OPTION_EFFECTS[option]
            v = values[stat]
            a_ok, b_ok = chosen & np.isfinite(v), neutral & np.isfinite(v)
            row.update(statistic=stat, sign=sign, n_option=int(a_ok.sum()), n_neutral=int(b_ok.sum()))
            if stat not in ("age", *LANDMARK_STATISTICS):
                row.update(canonical_option=int((a_ok & canonical).sum()),
                           canonical_neutral=int((b_ok & canonical).sum()))
            left_out = int(chosen.sum() + neutral.sum() - a_ok.sum() - b_ok.sum())
            why = "no age estimate" if stat == "age" else "no detected landmarks"
            notes = [f"{left_out} image(s) left out: {why}"] if left_out else []
            if not chosen.any():
                notes.append("not drawn in this run")
            if not neutral.any():
                notes.append(f"no neutral: family {family!r} contributed to every image")
            row["note"] = "; ".join(notes)
            if not (a_ok.any() and b_ok.any()):
                continue
            a, b = v[a_ok], v[b_ok]
            om, nm = float(a.mean()), float(b.mean())
            p = one_sided_p(sign * a, sign * b)
            effect = sign * (om - nm)
            row.update(option_mean=om, neutral_mean=nm, effect=effect,
                       cohens_d=_finite(sign * cohens_d(a, b)), p_value=p,
                       took_effect=None if p is None else bool(effect > 0 and p < ALPHA))
    return rows


def measure_prompt_effects(ev: EvalContext, key: str) -> tuple[dict[str, Any], list[Path]]:
    """The ``prompts-effects`` item: every option's effect on this run's generated images (or why not)."""
    from gandiff.diffusion.generate_stage import generation_source
    from gandiff.diffusion.prompt_effects import OPTION_EFFECTS
    from gandiff.face.images import ImageReadError, read_image

    def skipped(reason: str) -> tuple[dict[str, Any], list[Path]]:
        log.info("%s: skipped: %s", key, reason)
        return {"key": key, "status": "skipped", "reason": reason}, []

    if generation_source(ev.ctx.cfg) == "gan":
        return skipped("GAN-only run (generation.source=gan): no image was generated from a prompt")
    if "curate" not in ev.ctx.inputs:
        return skipped("this evaluate run has no curate input (the generated images are found through it)")
    curate = ev.ctx.input_dir("curate")
    gen, gen_rec, why = generated_run(curate)
    if gen is None:
        return skipped(why)
    if gen_rec and "dreambooth" not in gen_rec.get("inputs", {}):
        return skipped(f"{gen}: a GAN-only generate stage (generation.source=gan): no prompts were used")
    manifest = read_table(gen / "images.parquet")
    if any(r.get("source") == "gan" for r in manifest):
        return skipped(f"{gen / 'images.parquet'}: copies of GAN images (generation.source=gan): no prompts")
    if not manifest:
        return skipped(f"{gen / 'images.parquet'}: the generate stage made no images")
    bank = [(f, opts) for f, opts in bank_options(manifest, gen_rec.get("config") or {}) if opts]
    if not bank:
        return skipped(f"{gen / 'images.parquet'}: the prompt bank has no families (every prompt is the template)")

    total = len(manifest)
    cap = ev.bench.max_images
    if cap is not None and total > int(cap):  # the same seeded-subset rule as the score distributions
        keep = np.sort(np.random.default_rng(ev.seed).choice(total, int(cap), replace=False))
        manifest = [manifest[i] for i in keep]
    scored = {str(r["image_id"]): r for r in read_table(curate / "scores.parquet")}
    stats = sorted({OPTION_EFFECTS[o][0] for _, opts in bank for o in opts if o in OPTION_EFFECTS})
    per_image: list[dict[str, float]] = []
    canonical: list[bool] = []
    measured: list[dict[str, Any]] = []
    unreadable = 0
    for r in ev.ctx.progress(manifest, total=len(manifest), desc="evaluate: prompt effects"):
        try:
            img = read_image(gen / r["path"])
        except ImageReadError as e:
            log.warning("%s: %s", key, e)
            unreadable += 1
            continue
        s = scored.get(str(r["image_id"])) or {}
        lm = s.get("landmarks") if s.get("status") == "ok" else None
        lm = None if lm is None or len(lm) != 10 else np.asarray(lm, np.float32).reshape(5, 2)
        age = s.get("age")
        vals, used_canonical = image_statistics(img, lm, None if age is None else float(age), stats)
        per_image.append(vals)
        canonical.append(used_canonical)
        measured.append(r)
    if not measured:
        return skipped(f"{gen}: none of the {len(manifest)} generated images could be read")
    choices = {f: [str(r.get(CHOICE_PREFIX + f) or "") for r in measured] for f, _ in bank}
    values = {s: np.array([v[s] for v in per_image], np.float64) for s in stats}
    rows = effect_rows(bank, choices, values, np.asarray(canonical, bool))
    with_stat = [x for x in rows if x["effect"] is not None]
    detected = len(measured) - int(np.sum(canonical))
    return {"key": key, "status": "ok", "dataset": str(gen), "num_images": len(measured), "generated": total,
            "sampled": len(manifest) < total, "unreadable": unreadable,
            "landmarks": {"detected": detected, "canonical": len(measured) - detected},
            "age_estimates": int(np.isfinite(values["age"]).sum()) if "age" in values else None,
            "alpha": ALPHA, "options": len(rows), "options_measured": len(with_stat),
            "options_took_effect": sum(bool(x["took_effect"]) for x in with_stat), "effects": rows}, []


# --------------------------------------------------------------------------------------------- report

COLUMNS = ("family", "option", "statistic", "n option", "n neutral", "option mean", "neutral mean", "effect",
           "Cohen's d", "p", "took effect", "canonical frame", "note")


def table_rows(effects: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in effects:
        frame = (None if e.get("canonical_option") is None
                 else f"{e['canonical_option']}/{e['n_option']} + {e['canonical_neutral']}/{e['n_neutral']}")
        took = e.get("took_effect")
        out.append({"family": e["family"], "option": e["option"], "statistic": e.get("statistic") or "no statistic",
                    "n option": e["n_option"], "n neutral": e["n_neutral"], "option mean": e.get("option_mean"),
                    "neutral mean": e.get("neutral_mean"), "effect": e.get("effect"), "Cohen's d": e.get("cohens_d"),
                    "p": e.get("p_value"), "took effect": None if took is None else ("yes" if took else "no"),
                    "canonical frame": frame, "note": e.get("note") or None})
    return out


def prompt_effects_section(rep: Report, view: ReportView) -> None:
    r = view.items.get(KEY)
    if r is None:  # not configured (benchmark.prompt_effects=false)
        return
    rep.heading("Prompt effects")
    if r.get("status") != "ok":
        rep.text(f"Not measured: {r.get('reason')}.")
        return
    lm = r.get("landmarks") or {}
    sampled = f" (a seeded subset of {r.get('generated')}, benchmark.max_images)" if r.get("sampled") else ""
    rep.text(
        f"Does each prompt option take effect? Every generated image of this run ({r.get('num_images')}"
        f"{sampled}, before selection) whose prompt drew the option, against the images to which that option's "
        "family contributed nothing, measured with the option's statistic (gandiff.diffusion.prompt_effects). "
        "effect = sign × (option mean − neutral mean), positive when the word moved the image its way; Cohen's d "
        f"signed alike; p: one-sided Welch t-test; took effect: effect > 0 at p < {r.get('alpha')}. "
        f"Landmarks: {lm.get('detected')} images as the curate stage detected them, {lm.get('canonical')} in the "
        "canonical frame (no face found; 'canonical frame' = such images among option + neutral; head turn and "
        "framing leave them out); age: the curate stage's attribute classifier.")
    rep.text(f"{r.get('options_took_effect')} of the {r.get('options_measured')} options measured here took effect "
             f"({r.get('options')} options in the bank).")
    rep.table(table_rows(r.get("effects") or []), COLUMNS)


register(Evaluator("prompts", lambda b: [KEY] if b.prompt_effects else [],
                   measure_prompt_effects, config="benchmark.prompt_effects", section=SECTION))
register(Section(SECTION, prompt_effects_section))
