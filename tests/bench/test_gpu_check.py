"""scripts/gpu_check.py runs on CPU with --small, so it cannot rot between GPU sessions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_small_runs_every_section(tmp_path, capsys):
    mod = _load()
    out = tmp_path / "gpu_check.json"
    assert mod.main(["--small", "--device", "cpu", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["rows"]
    names = " ".join(r["name"] for r in rows)
    for section in ("dreambooth K=1", "dreambooth K=2", "generate batch", "train", "embed", "all-pairs"):
        assert section in names
    for r in rows:  # every figure measured, positive, with its same-run reference
        assert r["value"] > 0 and r["reference"] and r["reference"] > 0 and r["ratio"] > 0
    printed = capsys.readouterr().out
    assert "## gpu_check" in printed
    # The ONNX-on-GPU row needs CUDA: on CPU it is skipped, with the reason printed, and is not a failure.
    assert data["meta"]["skipped"] == ["onnx_embed"] and "insightface ONNX" not in names
    assert "[onnx_embed: skipped: no CUDA (device=cpu)" in printed


def test_onnx_vs_torch_runs_the_same_function_both_ways(tmp_path):
    """The onnx_embed row's code on CPU: the ONNX export on onnxruntime with IO binding (input and output
    bound to torch tensors) gives the torch module's embeddings, and both rates are measured."""
    mod = _load()
    res = mod.onnx_vs_torch("mobilefacenet_small", 128, 3, "cpu", 2, tmp_path)
    assert res["provider"] == "CPUExecutionProvider"
    assert res["max_abs"] > 0 and res["max_abs_diff"] <= 1e-3 * res["max_abs"] + 1e-5
    assert res["ort_rate"] > 0 and res["torch_rate"] > 0 and res["comparison"].rounds == 2


def test_iobinding_runner_writes_the_bound_output(tmp_path):
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from gandiff.face.sface_torch import IResNetFaceModule

    mod = _load()
    module = IResNetFaceModule("mobilefacenet_small", None, 128)
    payload = mod.export_face_onnx(module, tmp_path / "m.onnx")
    session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 112, 112) * 255
    run, out = mod.iobinding_runner(session, x, 128)
    assert run() is out and out.shape == (2, 128)
    first = out.clone()
    x2 = torch.rand(2, 3, 112, 112) * 255
    run2, out2 = mod.iobinding_runner(session, x2, 128)
    run2()
    with torch.no_grad():
        ref = module(x2)
    torch.testing.assert_close(out2, ref, atol=1e-4, rtol=1e-3)
    assert not torch.equal(first, out2)


def test_onnx_embed_section_skips_on_cpu():
    mod = _load()
    with pytest.raises(mod.Skipped, match="no CUDA"):
        mod.check_onnx_embed(True, "cpu", "float32")
