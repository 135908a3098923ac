"""The dreambooth stage end to end on the fake identities: outputs, diffusers-loadable files, resume."""

from __future__ import annotations

import json

import pytest
import torch
from .conftest import compose_run

from gandiff.artifacts import read_json, read_table
from gandiff.pipeline import run_stage


@pytest.fixture(scope="module")
def dreambooth_run(tmp_path_factory, tiny_base):
    root = tmp_path_factory.mktemp("run")
    cfg = compose_run(root, tiny_base, "dreambooth.train_text_encoder=true")
    run_stage(cfg, "identities")
    summary = run_stage(cfg, "dreambooth")
    return cfg, summary


def test_dreambooth_stage_outputs(dreambooth_run):
    _, summary = dreambooth_run
    assert summary["status"] == "done" and summary["identities"] == 4
    out = __import__("pathlib").Path(summary["dir"])
    rows = read_table(out / "adapters.parquet")
    assert [r["id"] for r in rows] == ["id_000000", "id_000001", "id_000002", "id_000003"]
    # Demographic class nouns: gender female -> woman, male -> man, missing -> person.
    assert [r["noun"] for r in rows] == ["woman", "man", "person", "woman"]
    assert rows[0]["instance_prompt"] == "a photo of sks woman"
    assert {r["class_prompt"] for r in rows} == {
        "a photo of a woman",
        "a photo of a man",
        "a photo of a person",
    }
    # Class images once per class prompt, shared.
    assert sorted(p.name for p in (out / "class_images").iterdir()) == [
        "a-photo-of-a-man",
        "a-photo-of-a-person",
        "a-photo-of-a-woman",
    ]
    assert len(list((out / "class_images" / "a-photo-of-a-woman").glob("*.png"))) == 2
    curve = read_json(out / "adapters/id_000000/loss.json")["loss"]
    assert len(curve) == 3 and all(c > 0 for c in curve)
    # Identities 0-2 trained together, 3 alone (fixed groups of identities_per_batch).
    assert rows[0]["group"] == "id_000000,id_000001,id_000002" and rows[3]["group"] == "id_000003"


def test_adapter_loads_in_diffusers(dreambooth_run, tiny_base):
    """The written file is what diffusers' load_lora_weights reads; it changes the UNet and the text encoder."""
    from diffusers import StableDiffusionPipeline

    _, summary = dreambooth_run
    folder = __import__("pathlib").Path(summary["dir"]) / "adapters/id_000001"
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_base), safety_checker=None)
    x, t, e = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 77, 32)
    ids = pipe.tokenizer(
        "a photo of sks man", padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        before, emb_before = pipe.unet(x, t, e).sample, pipe.text_encoder(ids)[0]
        pipe.load_lora_weights(str(folder))
        after, emb_after = pipe.unet(x, t, e).sample, pipe.text_encoder(ids)[0]
    assert 0 < (after - before).abs().max() < 1.0
    assert 0 < (emb_after - emb_before).abs().max() < 1.0


def test_truncated_adapter_is_retrained(dreambooth_run):
    cfg, summary = dreambooth_run
    out = __import__("pathlib").Path(summary["dir"])
    lora = out / "adapters/id_000003/pytorch_lora_weights.safetensors"
    good = lora.read_bytes()
    lora.write_bytes(good[: len(good) // 2])
    (out / "stage.json").unlink()  # as if the run had been killed before finishing
    again = run_stage(cfg, "dreambooth")
    assert again["status"] == "done"
    # Retrained from scratch with the same per-identity seeds: the same bytes again.
    assert lora.read_bytes() == good
    assert json.loads((out / "stage.json").read_text())["timings"]["made_here"] == 1


def test_full_fine_tune_saves_the_unet_and_generates(tmp_path, tiny_base, tiny):
    """mode=full: one identity at a time, only the trained UNet saved, the cached base left untouched."""
    from safetensors.torch import load_file

    before = {k: v.clone() for k, v in tiny.unet.state_dict().items()}
    cfg = compose_run(
        tmp_path,
        tiny_base,
        "identity.num=1",
        "dreambooth.mode=full",
        "dreambooth.steps=2",
        "dreambooth.prior_weight=0",
        "dreambooth.learning_rate=1e-3",
        "generation.images_per_identity=2",
    )
    run_stage(cfg, "identities")
    summary = run_stage(cfg, "dreambooth")
    out = __import__("pathlib").Path(summary["dir"])
    row = read_table(out / "adapters.parquet")[0]
    assert row["mode"] == "full" and row["path"] == "adapters/id_000000/unet.safetensors"
    trained = load_file(out / row["path"])
    assert set(trained) == set(before) and not (out / "adapters/id_000000/text_encoder.safetensors").exists()
    assert any(not torch.equal(trained[k], before[k]) for k in before)
    assert all(torch.equal(v, before[k]) for k, v in tiny.unet.state_dict().items())  # base restored
    gen = run_stage(cfg, "generate")
    assert gen["images"] == 2
    assert all(torch.equal(v, before[k]) for k, v in tiny.unet.state_dict().items())


def test_missing_base_is_one_clear_stage_error(tmp_path):
    from gandiff.pipeline import StageError

    cfg = compose_run(tmp_path, tmp_path / "no-such-model")
    run_stage(cfg, "identities")
    with pytest.raises(StageError, match="dreambooth.base=.*no-such-model.*does not exist"):
        run_stage(cfg, "dreambooth")
