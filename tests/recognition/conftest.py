"""Shared fixtures for the recognition tests: a small learnable synthetic face dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gandiff.recognition.datamodule import ArrayFaces


def pattern_faces(num_classes: int = 8, per_class: int = 12, seed: int = 0, noise: float = 20.0) -> ArrayFaces:
    """112x112 RGB images whose class is a fixed low-frequency colour pattern (a 4x4 grid of random
    colours, upsampled), seen through per-image noise, brightness change and a few pixels of shift:
    learnable in a few hundred steps on CPU, and not separable by the mean colour alone."""
    rng = np.random.default_rng(seed)
    grids = rng.integers(0, 256, size=(num_classes, 4, 4, 3)).astype(np.float32)
    images, labels = [], []
    for c in range(num_classes):
        base = np.kron(grids[c], np.ones((28, 28, 1), np.float32))  # (112, 112, 3)
        for _ in range(per_class):
            dy, dx = rng.integers(-4, 5, size=2)
            img = np.roll(base, (int(dy), int(dx)), axis=(0, 1)) * rng.uniform(0.8, 1.2)
            img = img + rng.normal(0, noise, img.shape)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(c)
    return ArrayFaces(np.stack(images), np.asarray(labels))


@pytest.fixture(scope="session")
def faces() -> ArrayFaces:
    return pattern_faces()


class TinyNet(torch.nn.Module):
    """A backbone small enough for many CPU training steps in a test: (B, 3, 112, 112) -> (B, D)."""

    def __init__(self, embedding_size: int = 32):
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=4, padding=2, bias=False), nn.BatchNorm2d(8), nn.PReLU(8),  # 28x28
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.PReLU(16),  # 14x14
            nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * 7 * 7, embedding_size), nn.BatchNorm1d(embedding_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def tiny_module(num_classes: int, embedding_size: int = 32, lr: float = 0.1, nan_check_every: int = 1,
                backbone: torch.nn.Module | None = None, **kwargs):
    from gandiff.recognition.heads import build_head
    from gandiff.recognition.module import RecognitionModule

    head_spec = {"name": "arcface", "num_classes": num_classes, "embedding_size": embedding_size, "scale": 16.0,
                 "margin": 0.2}
    return RecognitionModule(backbone or TinyNet(embedding_size), build_head(**head_spec), None, head_spec,
                             learning_rate=lr, warmup_epochs=0.5, nan_check_every=nan_check_every, **kwargs)
