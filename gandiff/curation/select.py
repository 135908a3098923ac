"""Selection: which scored images make the dataset. Pure functions over the scores table; no model runs.

Everything reads only the measurements ``score.py`` made, so a sweep over thresholds, caps or balance re-runs
in seconds. Steps, each rejection counted under its reason: (1) image filters (faces, detector score, size,
similarity to the own anchor / centroid / other anchors, quality, crop coverage, pose, leakage); (2) per
identity: below ``min_images`` dropped, above ``max_images`` capped with spread over the prompt families;
(3) demographic balance back to the identity stage's target; (4) labels 0..C-1 in sorted identity-id order. The rules are the
typed curation settings themselves (``CurationConfig``, gandiff/curation/schema.py, where each one's meaning is;
a stage passes ``ctx.settings.curation``): a new selection setting is one field there, read here by name.

Design: docs/design.md#selection.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gandiff.curation.schema import CurationConfig
from gandiff.schema import plain

log = logging.getLogger(__name__)

FAMILY_PREFIX = "fam_"  # scores columns holding the prompt-family option each image was generated with
# Image rejection reasons, in the order they are checked (the first failing one is the image's reason).
REASONS = ("unreadable", "no_face", "multiple_faces", "det_score", "face_size", "anchor_similarity",
           "centroid_similarity", "other_similarity", "quality", "coverage", "pose", "leaked")


# The curation settings selection does not read: curate's detector size and the leakage audit's (the export
# stage runs the audit and passes its verdict in). Every other field of ``CurationConfig`` is a selection setting.
NOT_SELECTION = ("detect_size", "leakage_gallery", "leakage_fmr", "leakage_threshold", "drop_leaked")
# Shown as floats in the card's thresholds table, as cards have always shown them (kept so that a card's bytes do
# not change): the face-size threshold is typed int and the centroid one Any in the schema.
_SHOWN_AS_FLOAT = ("min_face_size", "min_centroid_similarity")


def selection_settings(rules: CurationConfig) -> dict[str, Any]:
    """The settings selection reads, name -> plain value in schema order (the dataset card's thresholds)."""
    out = {k: v for k, v in plain(rules).items() if k not in NOT_SELECTION}
    for k in _SHOWN_AS_FLOAT:
        if out.get(k) is not None:
            out[k] = float(out[k])
    return out


@dataclass
class Selection:
    images: list[dict[str, Any]]  # selected score rows, each with "label", sorted by (label, image_id)
    identities: list[str]  # label -> identity id
    dropped: dict[str, str]  # identity id -> why it was dropped
    image_reasons: dict[str, str]  # image_id -> first failing reason (rejected images only)
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.images


def image_reasons(row: dict[str, Any], rules: CurationConfig, leaked: bool = False) -> list[str]:
    """Every rule an image fails (empty list: it passes)."""
    if row.get("status") == "unreadable":
        return ["unreadable"]
    if row.get("status") != "ok" or not row.get("n_faces"):
        return ["no_face"]
    out = []

    def low(key: str, threshold: float | None) -> bool:
        v = row.get(key)
        return threshold is not None and (v is None or (isinstance(v, float) and math.isnan(v)) or v < threshold)

    if row["n_faces"] > rules.max_faces:
        out.append("multiple_faces")
    if low("det_score", rules.min_det_score):
        out.append("det_score")
    if low("face_size", rules.min_face_size):
        out.append("face_size")
    if low("anchor_sim", rules.min_anchor_similarity):
        out.append("anchor_similarity")
    if rules.min_centroid_similarity is not None and row.get("centroid_sim") is not None \
            and row["centroid_sim"] < rules.min_centroid_similarity:
        out.append("centroid_similarity")  # None: the identity had a single face, no centroid to compare to
    if row.get("other_sim") is not None and row["other_sim"] > rules.max_other_similarity:
        out.append("other_similarity")
    if low("quality", rules.min_quality):
        out.append("quality")
    if rules.min_coverage > 0 and row.get("coverage") is not None and row["coverage"] < rules.min_coverage:
        out.append("coverage")  # None: a scores table from before curate measured it (revision 2)
    if row.get("yaw") is not None and abs(row["yaw"]) > rules.max_abs_yaw:
        out.append("pose")
    if leaked:
        out.append("leaked")
    return out


def family_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({k for r in rows[:1] for k in r if k.startswith(FAMILY_PREFIX)})


def cap_with_spread(rows: list[dict[str, Any]], k: int, families: Sequence[str]) -> list[dict[str, Any]]:
    """Keep ``k`` of ``rows``, greedily preferring prompt-family options seen least so far.

    Each step takes the image whose options are rarest among those already kept (sum over families of
    ``1 / (1 + times kept)``; "" — the family left out of the prompt — counts as an option too), ties
    broken by higher anchor similarity, then image id. Deterministic. O(k * n * families).
    """
    if len(rows) <= k:
        return list(rows)
    seen: list[Counter] = [Counter() for _ in families]
    left = sorted(rows, key=lambda r: (-(r.get("anchor_sim") or 0.0), r["image_id"]))
    kept = []
    for _ in range(k):
        best_i, best = 0, -1.0
        for i, r in enumerate(left):
            gain = sum(1.0 / (1 + seen[j][r.get(f) or ""]) for j, f in enumerate(families))
            if gain > best + 1e-12:
                best_i, best = i, gain
        r = left.pop(best_i)
        for j, f in enumerate(families):
            seen[j][r.get(f) or ""] += 1
        kept.append(r)
    return sorted(kept, key=lambda r: r["image_id"])


def _cell(attrs: dict[str, Any], keys: Sequence[str]) -> tuple:
    return tuple("unknown" if attrs.get(k) is None else str(attrs.get(k)) for k in keys)


def balance_identities(survivors: dict[str, list[dict[str, Any]]], identity_attrs: dict[str, dict[str, Any]],
                       attributes: Sequence[str], tolerance: float = 0.0) -> tuple[set[str], dict[str, Any]]:
    """Identities to drop so that the survivors' demographic shares match the identity stage's.

    ``survivors``: identity id -> its selected rows; ``identity_attrs``: *every* identity the identity
    stage produced -> its attributes (their distribution is the target). Attributes that are None for every
    identity (e.g. race with the age/gender classifier) are left out. The target shares are taken over
    the cells that still have survivors (a cell emptied entirely cannot be restored by dropping others; it
    is reported). With n = min over cells of ``available / share``, each cell keeps
    ``floor(n * share * (1 + tolerance))``: the identities with the most selected images, then the highest
    mean anchor similarity.
    """
    keys = [a for a in attributes if any(v.get(a) is not None for v in identity_attrs.values())]
    info: dict[str, Any] = {"attributes": keys, "cells": {}, "missing_cells": []}
    if not keys or not survivors:
        return set(), info
    target = Counter(_cell(a, keys) for a in identity_attrs.values())
    by_cell: dict[tuple, list[str]] = defaultdict(list)
    for ident in survivors:
        by_cell[_cell(identity_attrs.get(ident, {}), keys)].append(ident)
    info["missing_cells"] = ["/".join(c) for c in sorted(target) if c not in by_cell]
    total = sum(target[c] for c in by_cell)
    share = {c: target[c] / total if total else 1.0 / len(by_cell) for c in by_cell}
    n = min(len(ids) / share[c] if share[c] > 0 else math.inf for c, ids in by_cell.items())
    drop: set[str] = set()
    for c in sorted(by_cell):
        ids = by_cell[c]
        keep = min(len(ids), max(1, math.floor(n * share[c] * (1.0 + tolerance) + 1e-9)))
        ranked = sorted(ids, key=lambda i: (-len(survivors[i]),
                                            -sum(r.get("anchor_sim") or 0.0 for r in survivors[i]) / len(survivors[i]),
                                            i))
        drop.update(ranked[keep:])
        info["cells"]["/".join(c)] = {"target_share": round(share[c], 4), "available": len(ids), "kept": keep}
    return drop, info


def select(scores: Sequence[dict[str, Any]], identity_attrs: dict[str, dict[str, Any]], rules: CurationConfig,
           leaked_images: set[str] | frozenset = frozenset(), leaked_identities: set[str] | frozenset = frozenset()
           ) -> Selection:
    """Apply ``rules`` (the curation settings) to the scores table (one dict per generated image). Pure;
    deterministic."""
    reasons_first: Counter = Counter()
    reasons_any: Counter = Counter()
    image_reason: dict[str, str] = {}
    passed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    scored_ids = sorted({r["id"] for r in scores})
    for r in scores:
        fails = image_reasons(r, rules, leaked=r["image_id"] in leaked_images)
        if fails:
            reasons_first[fails[0]] += 1
            reasons_any.update(fails)
            image_reason[r["image_id"]] = fails[0]
        else:
            passed[r["id"]].append(r)

    dropped: dict[str, str] = {}
    for ident in scored_ids:
        n = len(passed.get(ident, []))
        if ident in leaked_identities:
            dropped[ident] = "leaked"
        elif n == 0:
            dropped[ident] = "no_usable_image"
        elif n < rules.min_images:
            dropped[ident] = f"too_few_images ({n} < {rules.min_images})"
    survivors = {i: rows for i, rows in passed.items() if i not in dropped}

    families = family_columns(list(scores))
    capped = 0
    for ident, rows in survivors.items():
        if len(rows) > rules.max_images:
            capped += len(rows) - rules.max_images
            survivors[ident] = cap_with_spread(rows, rules.max_images, families)

    balance_info: dict[str, Any] = {}
    if rules.balance:
        drop, balance_info = balance_identities(survivors, identity_attrs, rules.balance_attributes,
                                                rules.balance_tolerance)
        for ident in sorted(drop):
            dropped[ident] = "balance"
            del survivors[ident]

    identities = sorted(survivors)
    images = []
    for label, ident in enumerate(identities):
        for r in sorted(survivors[ident], key=lambda r: r["image_id"]):
            images.append({**r, "label": label})

    why = Counter(v.split(" ")[0] for v in dropped.values())
    counts = {
        "images_scored": len(scores),
        "images_passed_filters": sum(len(v) for v in passed.values()),
        "images_capped": capped,
        "images_selected": len(images),
        "identities_total": len(identity_attrs) or len(scored_ids),
        "identities_scored": len(scored_ids),
        "identities_selected": len(identities),
        "identities_dropped": dict(sorted(why.items())),
        "rejected_first_reason": {k: reasons_first[k] for k in REASONS if reasons_first[k]},
        "rejected_any_reason": {k: reasons_any[k] for k in REASONS if reasons_any[k]},
        "balance": balance_info,
    }
    return Selection(images=images, identities=identities, dropped=dropped, image_reasons=image_reason, counts=counts)


def settings_tag(rules: CurationConfig, leakage: str = "") -> str:
    """A short human-readable name for a selection setting (the folder key is a hash; this says what it is)."""
    parts = [f"det{rules.min_det_score:g}", f"size{rules.min_face_size:g}", f"anchor{rules.min_anchor_similarity:g}",
             f"other{rules.max_other_similarity:g}", f"n{rules.min_images}-{rules.max_images}"]
    if rules.min_centroid_similarity is not None:
        parts.append(f"centroid{rules.min_centroid_similarity:g}")
    if rules.min_quality > 0:
        parts.append(f"q{rules.min_quality:g}")
    if rules.min_coverage > 0:
        parts.append(f"cov{rules.min_coverage:g}")
    if rules.max_abs_yaw < 90:
        parts.append(f"yaw{rules.max_abs_yaw:g}")
    if rules.max_faces != 1:
        parts.append(f"faces{rules.max_faces}")
    if rules.balance:
        parts.append("bal-" + "+".join(rules.balance_attributes) + (f"~{rules.balance_tolerance:g}"
                                                                     if rules.balance_tolerance else ""))
    if leakage:
        parts.append(leakage)
    return "_".join(parts)


def explain_empty(sel: Selection) -> str:
    """One line saying why nothing was selected (for logs and the dataset card)."""
    c = sel.counts
    if not c["images_scored"]:
        return "no generated images were scored"
    top = ", ".join(f"{k}: {v}" for k, v in sorted(c["rejected_first_reason"].items(), key=lambda kv: -kv[1]))
    ids = ", ".join(f"{k}: {v}" for k, v in c["identities_dropped"].items())
    return (f"0 of {c['images_scored']} images selected; images rejected by ({top or 'none'}); "
            f"identities dropped ({ids or 'none'})")
