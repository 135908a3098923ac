"""Selection rules over a hand-made scores table (no model, no files)."""

from __future__ import annotations

import dataclasses

from gandiff.curation.schema import CurationConfig
from gandiff.curation.select import (
    NOT_SELECTION,
    balance_identities,
    cap_with_spread,
    select,
    selection_settings,
    settings_tag,
)

# The selection settings these cases are written against, stated here so that they do not move with the schema's
# defaults; each test overrides what it is about.
STATED = dict(min_det_score=0.6, min_face_size=24, min_anchor_similarity=0.3, min_centroid_similarity=None,
              max_other_similarity=0.5, min_quality=0.0, min_coverage=0.5, max_abs_yaw=90.0, max_faces=1, min_images=2, max_images=50,
              balance=True, balance_attributes=["gender", "race"], balance_tolerance=0.0)


def rules(**kw) -> CurationConfig:
    """The typed curation settings, as the export stage passes ``ctx.settings.curation`` to ``select``."""
    return CurationConfig(**{**STATED, **kw})


def row(ident, k, **kw):
    base = {"id": ident, "image_id": f"{ident}_{k:03d}", "status": "ok", "n_faces": 1, "det_score": 0.9,
            "face_size": 80.0, "anchor_sim": 0.6, "centroid_sim": 0.7, "other_sim": 0.1, "quality": 0.8, "yaw": 0.0,
            "fam_expression": "smiling"}
    return {**base, **kw}


def test_each_rule_rejects_with_its_reason():
    r = rules(min_images=1, max_images=10, balance=False, min_quality=0.5, max_abs_yaw=45)
    scores = [row("a", 0), row("a", 1, status="unreadable", n_faces=0), row("a", 2, status="no_face", n_faces=0),
              row("a", 3, n_faces=2), row("a", 4, det_score=0.3), row("a", 5, face_size=10.0),
              row("a", 6, anchor_sim=0.1), row("a", 7, other_sim=0.9), row("a", 8, quality=0.1), row("a", 9, yaw=-60.0),
              row("a", 10, det_score=0.3, anchor_sim=0.1), row("a", 11, coverage=0.45),
              row("a", 12, coverage=0.5), row("a", 13, coverage=None)]
    sel = select(scores, {"a": {}}, r)
    # coverage 0.5 passes min_coverage 0.5; None (a table from before curate measured it) is not checked
    assert [r["image_id"] for r in sel.images] == ["a_000", "a_012", "a_013"]
    assert sel.counts["rejected_first_reason"] == {"unreadable": 1, "no_face": 1, "multiple_faces": 1, "det_score": 2,
                                                   "face_size": 1, "anchor_similarity": 1, "other_similarity": 1,
                                                   "quality": 1, "coverage": 1, "pose": 1}
    assert not select([row("a", 0, coverage=0.45)], {"a": {}}, rules(min_images=1, balance=False,
                                                                      min_coverage=0.4)).empty
    assert sel.counts["rejected_any_reason"]["anchor_similarity"] == 2


def test_identities_short_of_min_images_are_dropped_and_labels_are_dense():
    r = rules(min_images=2, max_images=10, balance=False)
    scores = [row("c", 0), row("c", 1), row("b", 0), row("a", 0), row("a", 1), row("d", 0, status="no_face", n_faces=0)]
    sel = select(scores, {}, r)
    assert sel.identities == ["a", "c"]
    assert [(r["id"], r["label"]) for r in sel.images] == [("a", 0), ("a", 0), ("c", 1), ("c", 1)]
    assert sel.dropped == {"b": "too_few_images (1 < 2)", "d": "no_usable_image"}


def test_cap_prefers_spread_over_prompt_families():
    rows = [row("a", k, fam_expression="smiling", anchor_sim=0.9) for k in range(8)]
    rows += [row("a", 8, fam_expression="sad", anchor_sim=0.4), row("a", 9, fam_expression="angry", anchor_sim=0.35)]
    kept = cap_with_spread(rows, 4, ["fam_expression"])
    assert sorted(r["fam_expression"] for r in kept) == ["angry", "sad", "smiling", "smiling"]
    # among the "smiling" ones the most identity-consistent are kept (ties by image id)
    assert [r["image_id"] for r in kept if r["fam_expression"] == "smiling"] == ["a_000", "a_001"]


def test_balance_restores_the_identity_stage_distribution():
    attrs = {f"m{i}": {"gender": "male"} for i in range(4)} | {f"f{i}": {"gender": "female"} for i in range(4)}
    survivors = {i: [row(i, 0)] for i in ["m0", "m1", "m2", "m3", "f0", "f1"]}  # two women lost in curation
    drop, info = balance_identities(survivors, attrs, ["gender", "race"])
    assert info["attributes"] == ["gender"]  # race is None everywhere: left out
    assert len(drop) == 2 and all(d.startswith("m") for d in drop)
    drop, _ = balance_identities(survivors, attrs, ["gender"], tolerance=0.5)
    assert len(drop) == 1


def test_tag_names_the_settings():
    assert settings_tag(rules()) == "det0.6_size24_anchor0.3_other0.5_n2-50_cov0.5_bal-gender+race"
    assert "cov" not in settings_tag(rules(min_coverage=0.0))
    assert "anchor0.45" in settings_tag(rules(min_anchor_similarity=0.45), "leak-drop")


def test_centroid_rule_checks_only_identities_with_a_centroid():
    scores = [row("a", 0, centroid_sim=0.2), row("a", 1, centroid_sim=None), row("a", 2)]
    sel = select(scores, {}, rules(min_images=1, balance=False, min_centroid_similarity=0.5))
    assert sel.image_reasons == {"a_000": "centroid_similarity"}
    assert "centroid0.5" in settings_tag(rules(min_centroid_similarity=0.5))


def test_selection_reads_the_validated_config_as_the_dataclass_does():
    """``ctx.settings.curation`` (OmegaConf -> CurationConfig) and the dataclass built by hand select the same."""
    from omegaconf import OmegaConf

    overrides = {**STATED, "min_images": 1, "max_images": 2, "min_anchor_similarity": 0.5, "balance": False}
    typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(CurationConfig), overrides))
    assert isinstance(typed, CurationConfig)
    scores = [row("a", k, anchor_sim=0.4 + 0.05 * k, fam_expression=("sad" if k % 2 else "smiling")) for k in range(6)]
    by_hand, validated = select(scores, {}, rules(**overrides)), select(scores, {}, typed)
    assert by_hand.images == validated.images and by_hand.counts == validated.counts
    assert [r["image_id"] for r in validated.images] == ["a_004", "a_005"]
    assert settings_tag(typed) == settings_tag(rules(**overrides))


def test_every_curation_setting_but_curate_and_leakage_ones_is_a_selection_setting():
    shown = selection_settings(rules(min_face_size=30, min_centroid_similarity=0))
    fields = [f.name for f in dataclasses.fields(CurationConfig)]
    assert list(shown) == [f for f in fields if f not in NOT_SELECTION]  # a new schema field shows up by itself
    assert set(NOT_SELECTION) <= set(fields)
    assert shown["min_face_size"] == 30.0 and isinstance(shown["min_face_size"], float)  # as cards always showed
    assert shown["min_centroid_similarity"] == 0.0 and shown["balance_attributes"] == ["gender", "race"]
