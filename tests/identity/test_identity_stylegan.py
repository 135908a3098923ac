"""Native StyleGAN2/3: NVlabs-layout pickles and safetensors load back to identical images; unsafe pickles
are refused before anything runs; the resampling ops agree with scipy and with their plain definitions."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from .nvlabs_layout import EVIL_SRC, TINY_SG2, TINY_SG3_R, TINY_SG3_T, nvlabs_pickle_bytes, tiny_generator

from gandiff.identity.filters import conv2d_resample, fir_filter, upfirdn2d
from gandiff.identity.stylegan import StyleGANSource, generate_images, load_generator, save_generator
from gandiff.identity.stylegan_pickle import UnsafePickleError, load_nvlabs_pickle

ARCHS = [("stylegan2", TINY_SG2), ("stylegan3", TINY_SG3_T), ("stylegan3", TINY_SG3_R)]
IDS = ["sg2", "sg3-t", "sg3-r"]


@pytest.mark.parametrize("arch,kwargs", ARCHS, ids=IDS)
def test_nvlabs_pickle_and_safetensors_reload_identically(tmp_path, arch, kwargs):
    G = tiny_generator(arch, kwargs)
    marker = tmp_path / "executed.txt"
    pkl = tmp_path / "network-snapshot.pkl"
    pkl.write_bytes(nvlabs_pickle_bytes(G, module_src=EVIL_SRC.format(marker=str(marker))))

    seeds = [0, 1, 2, 3]
    ref = generate_images(G, seeds, truncation=0.7)
    G_pkl = load_generator(pkl)
    assert not marker.exists(), "the pickled module source was executed"
    assert G_pkl.arch == arch
    assert torch.equal(torch.from_numpy(generate_images(G_pkl, seeds, truncation=0.7)), torch.from_numpy(ref))
    for k, v in G.state_dict().items():
        assert torch.equal(v, G_pkl.state_dict()[k]), k

    weights, config = save_generator(G_pkl, tmp_path / "g")
    G_st = load_generator(weights)
    assert np.array_equal(generate_images(G_st, seeds, truncation=0.7), ref)
    # Truncation actually changes the result (w_avg is non-zero), so the comparison above is not vacuous.
    assert not np.array_equal(generate_images(G_st, seeds, truncation=1.0), ref)


def test_source_protocol_and_noise_modes(tmp_path):
    G = tiny_generator("stylegan2", TINY_SG2)
    save_generator(G, tmp_path / "g")
    src = StyleGANSource(str(tmp_path / "g.safetensors"), noise_mode="const")
    z = src.sample([5, 6])
    assert z.shape == (2, 8) and np.array_equal(z[0], np.random.RandomState(5).randn(8).astype(np.float32))
    w = src.to_w(z, truncation=0.5)
    img = src.render(w)
    assert img.shape == (2, 16, 16, 3) and img.dtype == np.uint8
    assert np.array_equal(img, generate_images(G, [5, 6], truncation=0.5))
    none = StyleGANSource(str(tmp_path / "g.safetensors"), noise_mode="none").render(w)
    assert not np.array_equal(none, img)  # noise strengths are 0.3: const noise shows
    cut = StyleGANSource(str(tmp_path / "g.safetensors"), truncation_cutoff=2)
    assert cut.to_w(z, 0.5).shape == (2, G.num_ws * 8)
    with pytest.raises(ValueError, match="noise_mode"):
        StyleGANSource(str(tmp_path / "g.safetensors"), noise_mode="fresh")


class _RunsCode:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("where", ["top", "inside-state"])
def test_pickle_that_runs_code_is_refused(tmp_path, where):
    marker = tmp_path / "pwned"
    payload = _RunsCode(os.system, f"touch {marker}")
    if where == "top":
        data = pickle.dumps({"G_ema": payload})
    else:
        G = tiny_generator("stylegan2", TINY_SG2)
        data = nvlabs_pickle_bytes(G, extra={"augment_pipe": payload})
    p = tmp_path / "evil.pkl"
    p.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=r"refuses to load global '(posix|os)\.system'"):
        load_generator(p)
    assert not marker.exists()


def test_other_unsafe_globals_are_named(tmp_path):
    p = tmp_path / "eval.pkl"
    p.write_bytes(pickle.dumps({"G_ema": _RunsCode(eval, "1+1")}))
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_nvlabs_pickle(p)
    p.write_bytes(pickle.dumps({"G_ema": np.array([object()], dtype=object)}))
    with pytest.raises(UnsafePickleError, match="object"):
        load_nvlabs_pickle(p)


def test_bad_checkpoints_give_clear_errors(tmp_path):
    p = tmp_path / "list.pkl"
    p.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="hold a dict with 'G_ema'"):
        load_generator(p)
    p.write_bytes(pickle.dumps({"G": 1}))
    with pytest.raises(ValueError, match="no 'G_ema'"):
        load_generator(p)
    with pytest.raises(FileNotFoundError, match="json"):
        load_generator(tmp_path / "missing.safetensors")


# ------------------------------------------------------------------------------------------- reference ops


def test_upfirdn2d_matches_scipy_upfirdn():
    import scipy.signal

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 7, 9))
    taps = np.array([0.1, 0.5, 0.3, -0.2, 0.05])  # asymmetric: catches a flipped filter
    for up, down in [(1, 1), (2, 1), (1, 2), (2, 2), (3, 2)]:
        ref = scipy.signal.upfirdn(taps, x[0, 0], up=up, down=down, axis=1)
        ref = scipy.signal.upfirdn(taps, ref, up=up, down=down, axis=0)
        k = len(taps) - 1
        out = upfirdn2d(torch.from_numpy(x), torch.from_numpy(taps), up=up, down=down, padding=[k, k, k, k],
                        ).numpy()[0, 0]
        np.testing.assert_allclose(out[:ref.shape[0], :ref.shape[1]], ref, atol=1e-12)
        # The 2-D (outer product) filter gives the same as the separable one.
        out2 = upfirdn2d(torch.from_numpy(x), torch.from_numpy(np.outer(taps, taps)), up=up, down=down,
                         padding=[k, k, k, k]).numpy()[0, 0]
        np.testing.assert_allclose(out2, out, atol=1e-12)


@pytest.mark.parametrize("flip_weight", [True, False])
def test_upsampling_conv_equals_upsample_then_conv(flip_weight):
    """The fast transposed-conv path equals the generic path: FIR-upsample, then a padded convolution."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    f = fir_filter([1, 3, 3, 1]).double()
    fast = conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=flip_weight)
    p0, p1 = 1 + (4 + 1) // 2, 1 + (4 - 2) // 2
    y = upfirdn2d(x, f, up=2, padding=[p0, p1, p0, p1], gain=4)
    ref = F.conv2d(y, w if flip_weight else w.flip([2, 3]))
    assert fast.shape == (2, 4, 10, 10)
    torch.testing.assert_close(fast, ref)


def test_modulated_conv_is_per_sample_conv_with_modulated_weights():
    from gandiff.identity.stylegan2 import modulated_conv2d

    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    out = modulated_conv2d(x, weight, styles, padding=1)
    for i in range(3):
        wi = weight * styles[i].reshape(1, -1, 1, 1)
        wi = wi / (wi.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        torch.testing.assert_close(out[i:i + 1], F.conv2d(x[i:i + 1], wi, padding=1), rtol=1e-5, atol=1e-5)


def test_dcgan_source_loads_package_weights(dcgan_weights):
    from gandiff.identity.dcgan import DCGANSource

    src = DCGANSource(dcgan_weights)
    z = src.sample([3, 4])
    img = src.render(src.to_w(z, 0.5))
    assert img.shape == (2, 64, 64, 3) and img.dtype == np.uint8 and img.std() > 10
    assert np.array_equal(src.render(src.to_w(z, 0.5)), img)  # deterministic
    assert np.allclose(src.to_w(z, 0.5), 0.5 * z)


def test_image_folder_source(tmp_path):
    from PIL import Image

    from gandiff.identity.folder import ImageFolderSource

    for i in range(3):
        Image.fromarray(np.full((40, 60, 3), 80 * i, np.uint8)).save(tmp_path / f"{i}.png")
    src = ImageFolderSource(str(tmp_path), resolution=32)
    img = src.render(src.to_w(src.sample([0, 1, 2])))
    assert img.shape == (3, 32, 32, 3) and sorted(int(v) for v in img[:, 0, 0, 0]) == [0, 80, 160]
    with pytest.raises(IndexError, match="only 3 images"):
        src.sample([5])
