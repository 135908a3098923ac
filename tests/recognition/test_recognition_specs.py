"""The backbone / head specs the train stage builds from ``ctx.settings.recognizer``: they are saved in the
checkpoint's hyper-parameters, so their keys, order and value types are part of what a run writes."""

from __future__ import annotations

import pytest

from gandiff.config import compose, validate

BACKBONE_KEYS = ["name", "embedding_size", "dropout", "fp16"]
HEAD_KEYS = ["name", "num_classes", "embedding_size", "scale", "margin", "combined_margins", "easy_margin",
             "subcenters", "adaface_h", "adaface_t_alpha"]


def _types(spec):
    return {k: (type(v), [type(x) for x in v] if isinstance(v, list) else None) for k, v in spec.items()}


@pytest.mark.parametrize("overrides", [
    [],
    # integers on the command line for float fields, and a combined head: the spec still holds floats
    ["recognizer.head=combined", "recognizer.scale=64", "recognizer.margin=0", "recognizer.combined_margins=[1,0,0.35]",
     "recognizer.embedding_size=64", "recognizer.backbone=iresnet18", "recognizer.dropout=0"],
])
def test_specs_hold_the_settings_with_the_builders_keys_and_plain_types(overrides):
    from gandiff.recognition.backbones import build_backbone
    from gandiff.recognition.heads import build_head
    from gandiff.recognition.stage import builder_spec

    r = validate(compose(["logger=none", *overrides])).recognizer
    backbone = builder_spec(r, build_backbone, name=r.backbone)
    head = builder_spec(r, build_head, name=r.head, num_classes=7)
    assert list(backbone) == BACKBONE_KEYS and list(head) == HEAD_KEYS
    # what the stage wrote field by field (each value cast) before it read the typed settings
    assert backbone == {"name": str(r.backbone), "embedding_size": int(r.embedding_size), "dropout": float(r.dropout),
                        "fp16": bool(r.fp16)}
    expected_head = {"name": str(r.head), "num_classes": 7, "embedding_size": int(r.embedding_size),
                     "scale": float(r.scale), "margin": float(r.margin),
                     "combined_margins": [float(m) for m in r.combined_margins], "easy_margin": bool(r.easy_margin),
                     "subcenters": int(r.subcenters), "adaface_h": float(r.adaface_h),
                     "adaface_t_alpha": float(r.adaface_t_alpha)}
    assert head == expected_head and _types(head) == _types(expected_head)
    assert _types(backbone) == {"name": (str, None), "embedding_size": (int, None), "dropout": (float, None),
                                "fp16": (bool, None)}
    # the spec owns its list: nothing done to the saved hyper-parameters reaches the cached settings
    assert head["combined_margins"] is not r.combined_margins
    assert tuple(build_head(**head).weight.shape) == (7 * r.subcenters, r.embedding_size)


def test_given_values_win_over_settings_fields():
    from gandiff.recognition.heads import build_head
    from gandiff.recognition.stage import builder_spec

    r = validate(compose(["logger=none"])).recognizer
    spec = builder_spec(r, build_head, name="cosface", num_classes=3, embedding_size=16)
    assert (spec["name"], spec["num_classes"], spec["embedding_size"]) == ("cosface", 3, 16)
    assert list(spec) == ["name", "num_classes", "embedding_size", *HEAD_KEYS[3:]]
