"""Config schemas of the ``recognizer`` and ``trainer`` groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gandiff.schema import require, require_choice


@dataclass
class RecognizerConfig:
    backbone: str = "iresnet50"
    embedding_size: int = 512
    head: str = "arcface"
    margin: float = 0.5
    scale: float = 64.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        require(self.embedding_size >= 2, "recognizer.embedding_size", self.embedding_size, "must be >= 2")
        require(self.scale > 0, "recognizer.scale", self.scale, "must be > 0")


@dataclass
class TrainerConfig:
    max_epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    schedule: str = "poly"
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    num_workers: int = 2
    compile: bool = False

    def __post_init__(self) -> None:
        require(self.max_epochs >= 1, "trainer.max_epochs", self.max_epochs, "must be >= 1")
        require(self.batch_size >= 1, "trainer.batch_size", self.batch_size, "must be >= 1")
        require_choice("trainer.optimizer", self.optimizer, ("sgd", "adamw"))
        require_choice("trainer.schedule", self.schedule, ("poly", "cosine", "constant"))
        require(self.learning_rate > 0, "trainer.learning_rate", self.learning_rate, "must be > 0")
        require(self.num_workers >= 0, "trainer.num_workers", self.num_workers, "must be >= 0")
