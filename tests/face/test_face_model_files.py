"""One weights-only loader for every torch model file (MTCNN, FairFace, torch embedders, the DCGAN, recognizer
checkpoints): a file that is not a plain-type torch file is one line naming the file and its config key."""

from __future__ import annotations

import pickle

import pytest
import torch

from gandiff.face.onnx_models import ModelFileError, load_torch_weights


class _Code:  # a global a weights-only unpickler must refuse
    pass


def test_a_state_dict_loads_and_a_code_pickle_or_junk_is_one_line(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3.0)}, good)
    assert torch.equal(load_torch_weights(good, "face.x", "thing")["w"], torch.arange(3.0))
    code = tmp_path / "code.pt"
    code.write_bytes(pickle.dumps(_Code()))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for bad in (code, junk):
        with pytest.raises(ModelFileError) as e:
            load_torch_weights(bad, "face.detector.onet_path", "MTCNN O-Net state dict")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"face.detector.onet_path={str(bad)!r}: not a weights-only torch file")
        assert msg.endswith("expected the MTCNN O-Net state dict")


def test_the_dcgan_source_names_its_config_key(tmp_path):
    from gandiff.identity.dcgan import DCGANSource

    junk = tmp_path / "weights.tar"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match=r"^identity\.source\.weights=.*not a weights-only torch file"):
        DCGANSource(str(junk))
