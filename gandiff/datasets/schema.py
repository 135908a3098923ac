"""Config schema of the ``export`` group: which formats, which pixels, where."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gandiff.schema import require, require_choice

EXPORT_FORMATS = ("imagefolder", "recordio", "webdataset")


@dataclass
class ExportConfig:
    formats: list[str] = field(default_factory=lambda: list(EXPORT_FORMATS))
    image_size: int = 112  # aligned crops: a multiple of 112 or 128 (the ArcFace template rule)
    aligned: bool = True  # false: the whole generated image instead of the aligned crop
    include_originals: bool = False  # also export the whole generated images beside the crops
    image_format: str = "png"  # png (lossless: exact round trip) | jpg (as the public insightface sets)
    jpeg_quality: int = 95
    shard_size: int = 1000  # images per WebDataset tar
    # Also copy the finished dataset here (e.g. a shared datasets folder). A non-empty folder made under
    # other settings is refused.
    publish_dir: Any = None

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in EXPORT_FORMATS]
        require(not bad, "export.formats", list(self.formats), f"each must be one of {', '.join(EXPORT_FORMATS)}")
        require(len(set(self.formats)) == len(self.formats), "export.formats", list(self.formats), "has duplicates")
        require(self.image_size >= 16 and (self.image_size % 112 == 0 or self.image_size % 128 == 0),
                "export.image_size", self.image_size, "must be a multiple of 112 or 128 (ArcFace template sizes)")
        require_choice("export.image_format", self.image_format, ("png", "jpg"))
        require(1 <= self.jpeg_quality <= 100, "export.jpeg_quality", self.jpeg_quality, "must be in [1, 100]")
        require(self.shard_size >= 1, "export.shard_size", self.shard_size, "must be >= 1")
        require(self.publish_dir is None or (isinstance(self.publish_dir, str) and self.publish_dir != ""),
                "export.publish_dir", self.publish_dir, "must be null or a folder path")
