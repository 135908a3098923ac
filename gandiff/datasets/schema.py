"""Config schema of the ``export`` group."""

from __future__ import annotations

from dataclasses import dataclass, field

from gandiff.schema import require


EXPORT_FORMATS = ("imagefolder", "recordio", "webdataset")


@dataclass
class ExportConfig:
    formats: list[str] = field(default_factory=lambda: list(EXPORT_FORMATS))
    image_size: int = 112
    aligned: bool = True
    include_originals: bool = False
    shard_size: int = 1000  # images per WebDataset tar

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in EXPORT_FORMATS]
        require(not bad, "export.formats", list(self.formats), f"each must be one of {', '.join(EXPORT_FORMATS)}")
        require(self.image_size >= 16, "export.image_size", self.image_size, "must be >= 16")
        require(self.shard_size >= 1, "export.shard_size", self.shard_size, "must be >= 1")
