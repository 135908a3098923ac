"""The "Prompt effects" item and report section over a tiny fake run in the real formats: the generate stage's
manifest and PNGs, the curate stage's per-image records (landmarks where a face was found, age estimates), each
folder's stage.json. The eye-darkness and age rows are checked against numbers computed here by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gandiff.artifacts import ItemStore, atomic_write_json, save_image, write_table
from gandiff.config import compose
from gandiff.diffusion.prompt_effects import CANONICAL_LANDMARKS
from gandiff.pipeline import StageContext

BANK = {"age": {"weight": 0.3, "options": ["young", "old"]},
        "accessories": {"weight": 0.5, "options": ["wearing sunglasses", "wearing a scarf"]},
        "lighting": {"weight": 0.3, "options": ["dark photo", "bright photo"]},
        "pose": {"weight": 0.3, "options": ["looking left"]}}
N = 20  # readable images; one more is a truncated file
OLD = {0: 70.0, 2: 72.0, 4: 68.0, 6: 75.0}


def _luma(c):
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def skin(i):
    return np.round(np.array([180.0, 140.0, 120.0]) * (0.9 + 0.01 * i)).astype(np.uint8)


def shades(i):
    return np.array([20 + i, 20 + i, 25 + i], np.uint8)


def choices(i):
    return {"age": "old" if i in OLD else "",
            "accessories": "wearing sunglasses" if i < 6 else ("wearing a scarf" if i in (6, 7) else ""),
            "lighting": "dark photo" if 8 <= i < 14 else "",
            "pose": "looking left" if 14 <= i < 18 else ""}


def image(i):
    """64x64: one flat colour (darker for "dark photo"), dark patches over both eyes for "wearing sunglasses"."""
    c = skin(i) if not choices(i)["lighting"] else np.round(skin(i) * 0.4).astype(np.uint8)
    img = np.broadcast_to(c, (64, 64, 3)).copy()
    if choices(i)["accessories"] == "wearing sunglasses":
        img[28:39, 16:30] = shades(i)  # covers the EYES boxes (and their bilinear neighbours) of the canonical face
        img[28:39, 36:50] = shades(i)
    return img


def landmarks(i):
    """Detected (even images): the canonical face, nose moved right for "looking left" (yaw > 0); odd: no face."""
    if i % 2:
        return None
    lm = CANONICAL_LANDMARKS.astype(np.float64).copy()
    lm[2, 0] += 5.0 + 0.5 * i if choices(i)["pose"] else 0.05 * i
    return [round(float(v), 2) for v in lm.reshape(-1)]


def make_run(root, gan_only=False, empty=False):
    """``<root>/generate/g1`` and ``<root>/curate/c1`` as the two stages leave them; returns the curate folder."""
    gen, cur = root / "generate" / "g1", root / "curate" / "c1"
    rows, scores = [], []
    for i in range(0 if empty else N + 1):
        image_id = f"id_000000_{i:04d}"
        rel = f"images/id_000000/{image_id}.png"
        if i < N:
            save_image(gen / rel, image(i))
        else:
            (gen / rel).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        ch = {} if gan_only else {f"choice_{f}": v for f, v in choices(i if i < N else 0).items()}
        if i == N:
            ch = {k: "" for k in ch}
        rows.append({"image_id": image_id, "id": "id_000000", "prompt": "", **ch, "seed": i, "path": rel,
                     **({"source": "gan"} if gan_only else {})})
        lm = landmarks(i) if i < N else None
        scores.append({"id": "id_000000", "image_id": image_id, "path": rel,
                       "status": "ok" if lm else ("no_face" if i < N else "unreadable"), "landmarks": lm,
                       "age": (OLD.get(i, 30.0 + 0.5 * i) if lm else None)})
    gen.mkdir(parents=True, exist_ok=True)
    write_table(gen / "images.parquet", rows)
    inputs = {"identities": {"key": "i1"}} if gan_only else {"dreambooth": {"key": "d1"}}
    atomic_write_json(gen / "stage.json", {"stage": "generate", "inputs": inputs,
                                           "config": {} if gan_only else {"prompts": {"families": BANK}}})
    cur.mkdir(parents=True, exist_ok=True)
    write_table(cur / "scores.parquet", scores)
    atomic_write_json(cur / "stage.json", {"stage": "curate", "inputs": {"generate": {"key": "g1"},
                                                                         "identities": {"key": "i1"}}})
    return cur


def context(tmp_path, curate, overrides=(), on=True):
    cfg = compose(["paths.root=" + str(tmp_path / "runs"), "logger=none", "device=cpu",
                   f"benchmark.prompt_effects={str(on).lower()}", *overrides])
    out = tmp_path / "evaluate"
    ctx = StageContext(name="evaluate", cfg=cfg, run_dir=tmp_path, dir=out, key="k", inputs={"curate": curate},
                       shard_index=0, shard_count=1, items=ItemStore(out))
    return ctx


def measure(ctx):
    from gandiff.evaluation.context import EvalContext
    from gandiff.evaluation.prompt_effects_report import KEY, measure_prompt_effects

    row, files = measure_prompt_effects(EvalContext(ctx), KEY)
    assert files == []
    return row


def cohen(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return (a.mean() - b.mean()) / pooled


def test_each_option_is_measured_against_its_familys_neutral(tmp_path):
    row = measure(context(tmp_path, make_run(tmp_path / "run")))
    assert row["status"] == "ok" and row["num_images"] == N and row["unreadable"] == 1
    assert row["landmarks"] == {"detected": N // 2, "canonical": N // 2} and row["age_estimates"] == N // 2
    fx = {(e["family"], e["option"]): e for e in row["effects"]}
    assert list(fx) == [(f, o) for f, spec in BANK.items() for o in spec["options"]]  # the bank's order

    # sunglasses: flat patches over the eyes, so eye darkness is 1 - luma(colour) / 255 exactly
    sun = fx[("accessories", "wearing sunglasses")]
    a = [1 - _luma(shades(i).astype(float)) / 255 for i in range(6)]
    b = [1 - _luma((skin(i) if not choices(i)["lighting"] else np.round(skin(i) * 0.4)).astype(float)) / 255
         for i in range(8, N)]
    assert (sun["statistic"], sun["sign"], sun["n_option"], sun["n_neutral"]) == ("eye_darkness", 1, 6, 12)
    assert sun["option_mean"] == pytest.approx(np.mean(a), abs=1e-6)
    assert sun["neutral_mean"] == pytest.approx(np.mean(b), abs=1e-6)
    assert sun["effect"] == pytest.approx(np.mean(a) - np.mean(b), abs=1e-6) and sun["effect"] > 0.3
    assert sun["cohens_d"] == pytest.approx(cohen(a, b), rel=1e-4) and sun["took_effect"] is True
    assert (sun["canonical_option"], sun["canonical_neutral"]) == (3, 6)  # the odd images had no face

    # dark photo lowers the face's luma: sign -1, so a positive effect
    dark = fx[("lighting", "dark photo")]
    assert dark["statistic"] == "face_luma" and dark["sign"] == -1 and dark["n_option"] == 6
    assert dark["option_mean"] == pytest.approx(np.mean([_luma(np.round(skin(i) * 0.4)) / 255 for i in range(8, 14)]),
                                                abs=1e-6)
    assert dark["effect"] > 0 and dark["cohens_d"] > 0 and dark["took_effect"] is True

    # age: the curate stage's estimates; images without one are left out and said to be
    old = fx[("age", "old")]
    na = [30.0 + 0.5 * i for i in range(N) if i % 2 == 0 and i not in OLD]
    assert (old["n_option"], old["n_neutral"]) == (4, len(na)) and "left out: no age estimate" in old["note"]
    assert old["effect"] == pytest.approx(np.mean(list(OLD.values())) - np.mean(na))
    assert old["cohens_d"] == pytest.approx(cohen(list(OLD.values()), na)) and old["took_effect"] is True

    # head turn is the landmarks themselves: only detected faces count, no canonical frame
    left = fx[("pose", "looking left")]
    assert (left["n_option"], left["n_neutral"], left["canonical_option"]) == (2, 8, None)
    assert left["effect"] > 0.2 and left["took_effect"] is True

    scarf = fx[("accessories", "wearing a scarf")]
    assert scarf["statistic"] is None and scarf["effect"] is None and "no statistic" in scarf["note"]
    assert (scarf["n_option"], scarf["n_neutral"]) == (2, 12)
    for key in (("age", "young"), ("lighting", "bright photo")):
        assert fx[key]["n_option"] == 0 and fx[key]["effect"] is None and "not drawn" in fx[key]["note"]
    assert (row["options"], row["options_measured"], row["options_took_effect"]) == (7, 4, 4)


def test_a_word_that_does_nothing_is_not_reported_as_working(tmp_path):
    """Swap the sunglasses images' choices with neutral ones: the 'option' images are now plain faces."""
    from gandiff.artifacts import read_table

    cur = make_run(tmp_path / "run")
    gen = cur.parent.parent / "generate" / "g1"
    rows = read_table(gen / "images.parquet")
    for r in rows:
        r["choice_accessories"] = "wearing sunglasses" if r["choice_accessories"] == "" else ""
    write_table(gen / "images.parquet", rows)
    sun = next(e for e in measure(context(tmp_path, cur))["effects"] if e["option"] == "wearing sunglasses")
    assert sun["effect"] < 0 and sun["cohens_d"] < 0 and sun["took_effect"] is False


def test_stage_metrics_and_report_section(tmp_path):
    from gandiff.evaluation.report import build_report
    from gandiff.evaluation.stage import EvaluateStage

    ctx = context(tmp_path, make_run(tmp_path / "run"), ["benchmark.embedders=[recognizer]"])
    stage = EvaluateStage()
    keys = [k for k in stage.items(ctx) if k.startswith("prompts-")]
    assert keys == ["prompts-effects"]
    stage.process(ctx, keys)
    counts = stage.merge(ctx, keys)
    m = json.loads((ctx.dir / "metrics.json").read_text())  # the numbers the README / docs quote
    r = m["items"]["prompts-effects"]
    assert counts["skipped"] == 0 and r["status"] == "ok" and r["dataset"] == "run/generate/g1"
    md = build_report("t", {}, ctx.dir).to_markdown()
    section = md.split("## Prompt effects")[1].split("\n## ")[0]
    sun = next(e for e in r["effects"] if e["option"] == "wearing sunglasses")
    assert (f"| accessories | wearing sunglasses | eye_darkness | 6 | 12 | {sun['option_mean']:.4g} | "
            f"{sun['neutral_mean']:.4g} | {sun['effect']:.4g} | {sun['cohens_d']:.4g} |") in section
    assert "| wearing a scarf | no statistic | 2 | 12 |" in section
    assert "4 of the 4 options measured here took effect (7 options in the bank)" in section


@pytest.mark.parametrize("case", ["gan_source", "gan_record", "no_images"])
def test_skips_in_one_line(tmp_path, case):
    from gandiff.evaluation.report import build_report
    from gandiff.evaluation.stage import EvaluateStage

    cur = make_run(tmp_path / "run", gan_only=case == "gan_record", empty=case == "no_images")
    ctx = context(tmp_path, cur, ["generation.source=gan"] if case == "gan_source" else [])
    row = measure(ctx)
    assert row["status"] == "skipped"
    assert ("no images" if case == "no_images" else "GAN-only") in row["reason"]
    stage = EvaluateStage()
    stage.process(ctx, ["prompts-effects"])
    stage.merge(ctx, ["prompts-effects"])
    section = build_report("t", {}, ctx.dir).to_markdown().split("## Prompt effects")[1].split("\n## ")[0]
    assert section.strip().splitlines() == [f"Not measured: {ctx.portable(row['reason'])}."]


def test_not_configured_adds_no_item_and_no_section(tmp_path):
    from gandiff.evaluation.report import build_report
    from gandiff.evaluation.stage import EvaluateStage

    ctx = context(tmp_path, make_run(tmp_path / "run"), ["benchmark.embedders=[recognizer]"], on=False)
    stage = EvaluateStage()
    assert "prompts-effects" not in stage.items(ctx)
    stage.process(ctx, [])
    stage.merge(ctx, [])
    assert "Prompt effects" not in build_report("t", {}, ctx.dir).to_markdown()
