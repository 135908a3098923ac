"""The identities stage builds its models from the typed settings (``ctx.settings``), as it did from the DictConfig."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff.config import compose, validate


def _record_instantiate(monkeypatch):
    """hydra.utils.instantiate replaced by a recorder: (target, kwargs) per call, a placeholder object back."""
    import hydra.utils

    calls = []

    def fake(spec, **kwargs):
        calls.append((spec["_target_"], kwargs))
        return object()

    monkeypatch.setattr(hydra.utils, "instantiate", fake)
    return calls


@pytest.mark.parametrize("detect_size, input_size", [("64", [64, 64]), ("null", None)])
def test_analyzer_takes_detect_size_and_models_from_the_settings(monkeypatch, detect_size, input_size):
    from gandiff.identity.stage import build_analyzer

    settings = validate(compose(["logger=none", f"identity.detect_size={detect_size}"]))
    calls = _record_instantiate(monkeypatch)
    analyzer = build_analyzer(settings, "cpu")
    (det, det_kw), (emb, emb_kw), (cls, cls_kw) = calls
    assert (det, emb, cls) == (settings.face.detector["_target_"], settings.face.embedder["_target_"],
                               settings.attributes.classifier["_target_"])
    assert det_kw.get("input_size") == input_size and det_kw["device"] == "cpu"
    if input_size is not None:
        assert all(type(v) is int for v in det_kw["input_size"])
    assert emb_kw == {"device": "cpu"} and cls_kw == {"device": "cpu"}
    assert analyzer.classifier is not None


def test_analyzer_without_a_classifier(monkeypatch):
    from gandiff.identity.stage import build_analyzer

    settings = validate(compose(["logger=none", "attributes.classifier=null"]))
    calls = _record_instantiate(monkeypatch)
    analyzer = build_analyzer(settings, "cpu")
    assert len(calls) == 2 and analyzer.classifier is None


def test_source_from_the_settings_renders_as_from_the_dictconfig():
    from gandiff.identity.stage import build_source

    cfg = compose(["logger=none"])
    typed, untyped = build_source(validate(cfg), "cpu"), build_source(cfg, "cpu")
    w = typed.to_w(typed.sample(np.array([3, 11], np.int64)), 1.0)
    assert type(typed) is type(untyped)
    assert np.array_equal(typed.render(w), untyped.render(w))
