"""The prompt bank: deterministic per image, families spread as configured, product mode, config checks."""

from __future__ import annotations

import pytest

from gandiff.diffusion.prompts import parse_families, render, sample_prompts

BANK = {
    "always": {"weight": 1.0, "options": ["wearing glasses", "wearing a hat"]},
    "never": {"weight": 0.0, "options": ["in a park"]},
    "half": {"weight": 0.5, "options": ["smiling", "serious", "sad"]},
}


def _sample(count=400, seed=0, identity="id_000001", **kw):
    return sample_prompts(
        "a photo of {token} {noun}, {choices}",
        "blurry",
        parse_families(BANK),
        "sks",
        "woman",
        count,
        seed,
        identity,
        **kw,
    )


def test_sampling_is_deterministic_per_image_and_spreads_as_configured():
    a, b = _sample(), _sample()
    assert a == b
    assert _sample(count=10) == a[:10]  # image i does not depend on how many images there are
    assert [p.seed for p in _sample(identity="id_000002")] != [p.seed for p in a]
    assert all(p.choices["always"] in BANK["always"]["options"] for p in a)
    assert all(p.choices["never"] == "" for p in a)
    share = sum(1 for p in a if p.choices["half"]) / len(a)
    assert 0.42 < share < 0.58  # binomial(400, 0.5): 4 sigma
    used = {p.choices["half"] for p in a if p.choices["half"]}
    assert used == set(BANK["half"]["options"])
    p = a[0]
    assert p.prompt.startswith("a photo of sks woman, ") and p.negative == "blurry"
    assert p.choices["always"] in p.prompt


def test_product_mode_walks_every_combination():
    ps = _sample(count=7, mode="product", product_families=["always", "half"])
    combos = [(p.choices["always"], p.choices["half"]) for p in ps]
    assert len(set(combos[:6])) == 6 and combos[6] == combos[0]  # 2 x 3 combinations, then again
    assert all(p.choices["never"] == "" for p in ps)
    with pytest.raises(ValueError, match="not in the bank"):
        _sample(mode="product", product_families=["hats"])


def test_render_leaves_no_dangling_commas():
    assert render("a photo of {token} {noun}, {choices}", "sks", "man", ["", ""]) == "a photo of sks man"
    assert (
        render("{choices}, a photo of {token} {noun}", "sks", "man", ["", "smiling"])
        == "smiling, a photo of sks man"
    )
    assert (
        render("a photo of {token} {noun}, {choices}", "sks", "man", ["a", "", "b"])
        == "a photo of sks man, a, b"
    )


def test_bad_banks_are_clear_config_errors(tmp_path):
    from gandiff.config import compose
    from gandiff.schema import ConfigError

    with pytest.raises(ValueError, match=r"half.weight=1.5: must be in \[0, 1\]"):
        parse_families({"half": {"weight": 1.5, "options": ["x"]}})
    with pytest.raises(ValueError, match="non-empty list"):
        parse_families({"pose": {"weight": 0.5, "options": "frontal"}})
    with pytest.raises(ConfigError, match="prompts.families.pose.weight"):
        compose([f"paths.root={tmp_path}", "prompts.families.pose.weight=2"])
    with pytest.raises(ConfigError, match="dreambooth.flip=1.5"):
        compose([f"paths.root={tmp_path}", "dreambooth.flip=1.5"])
    with pytest.raises(ConfigError, match="generation.scheduler='k_lms'"):
        compose([f"paths.root={tmp_path}", "generation.scheduler=k_lms"])


def test_shipped_banks_compose(tmp_path):
    from gandiff.config import compose

    for bank in ("gandiff", "neutral"):
        cfg = compose([f"paths.root={tmp_path}", f"prompts={bank}"])
        fams = parse_families(cfg.prompts.families)
        assert fams and ("accessories" in [f.name for f in fams]) == (bank == "gandiff")
