"""Shared fixtures for the identity tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dcgan_weights():
    from gandiff.config import package_file

    return package_file("gan_face_generate/weights.tar")


def _tiny_unet(sample_size: int):
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=sample_size, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)


@pytest.fixture(scope="session")
def tiny_ddpm_folder(tmp_path_factory):
    """A random 16x16 pixel-space DDPM saved as a diffusers DDPMPipeline folder (the hub layout)."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_ddpm")
    DDPMPipeline(unet=_tiny_unet(16), scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_ldm_folder(tmp_path_factory):
    """A random LDM: 8x8x3 latents, a VQ autoencoder decoding them to 16x16, saved as an LDMPipeline folder."""
    import torch
    from diffusers import DDIMScheduler, LDMPipeline, VQModel

    torch.manual_seed(0)
    vq = VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                 latent_channels=3, norm_num_groups=4, num_vq_embeddings=32, sample_size=16)
    path = tmp_path_factory.mktemp("tiny_ldm")
    LDMPipeline(vqvae=vq, unet=_tiny_unet(8), scheduler=DDIMScheduler(num_train_timesteps=100)).save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny test models gain nothing from intra-op threads, and on a shared, loaded CPU the OpenMP workers
    wait for busy cores: a 16x16 convolution measured 35 ms with 2 threads vs 0.07 ms with 1."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
