"""Config schema of the ``benchmark`` group: what the evaluate stage measures, and against what."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from gandiff.schema import require, require_choice, require_range


@dataclass
class BenchmarkConfig:
    # name -> path of an insightface verification .bin (lfw.bin, cfp_fp.bin, ...); empty in the demo
    verification: dict[str, str] = field(default_factory=dict)
    # Shorthand for the standard sets: ``root`` holds ``<name>.bin`` for each of ``names``
    # (faces_webface_112x112/, faces_emore/ ...). Joined with ``verification``.
    root: Any = MISSING  # each benchmark/*.yaml sets it (null, or ??? where the user must)
    names: list[str] = field(default_factory=list)
    ijb: Any = None  # {root: <folder with meta/ and loose_crop/>, target: IJBC | IJBB} or None
    lfw_pairs: Any = None  # {pairs: <pairs.txt>, root: <lfw image folder>, ext: jpg} or None (raw photos, detected)
    reference_distribution: Any = None  # path of a reference score histogram (.json) or None
    num_folds: int = 10
    far_target: float = 1e-3  # VAL@FAR of the 10-fold protocol
    flip: bool = True  # flip fusion for the trained recognizer (insightface test mode)
    # Score distributions: every pair of a kind up to max_pairs, else max_pairs uniform samples of it.
    max_pairs: int = 2_000_000
    max_images: Any = None  # embed at most this many images of a dataset (seeded subset); None = all
    histogram_bins: int = 400
    # Fairness: identity attributes that define groups, and the global FMR that fixes the threshold. A group
    # (and the pooled scores) with fewer than ceil(1 / fairness_fmr) non-mated pairs cannot resolve that FMR:
    # its numbers are reported "not measurable" (gandiff/evaluation/fairness.py).
    group_attributes: list[str] = field(default_factory=lambda: ["gender", "age_bin", "race"])
    fairness_fmr: float = 1e-3
    # Where tau goes among equal-TMR thresholds: max_tmr (ISO/IEC 19795-1 ROC point, the highest such score) or
    # nonmated_score (the FDR authors' convention, bob.measure.far_threshold: on the lowest admissible
    # non-mated score). Rates differ by about one pair.
    fairness_threshold: str = "max_tmr"
    # One-sided Clopper-Pearson confidence of the bound that replaces a zero error rate in IR, SER and the Gini.
    fairness_confidence: float = 0.95
    # Which datasets' distributions to measure (the exported one always; GAN variations for the
    # GAN-only vs diffusion comparison) and with which embedders.
    gan_variations: bool = True
    embedders: list[str] = field(default_factory=lambda: ["face", "recognizer"])
    # Every generated image (before selection) also measured with these embedders, named in
    # gandiff/evaluation/independent.py (sface, dlib: needs gandiff[dlib], skipped with one line without it);
    # each row says whether it took part in training (dreambooth.identity_loss); the exported images are checked
    # by MTCNN, a detector curation did not use. []: neither is measured (the default: a second detection and
    # embedding pass over every generated image; dlib is an optional extra). Images stream 256 at a time, only
    # embeddings are kept.
    independent_embedders: list[str] = field(default_factory=list)
    # Each prompt option's measured effect on every generated image against the images its family left alone
    # (gandiff/evaluation/prompt_effects_report.py; statistics for the miniature bank's words).
    prompt_effects: bool = False
    batch_size: int = 64  # speed only

    def __post_init__(self) -> None:
        require(self.num_folds >= 2, "benchmark.num_folds", self.num_folds, "must be >= 2")
        require_range("benchmark.far_target", self.far_target, 0.0, 1.0)
        require(0.0 < self.fairness_fmr <= 1.0, "benchmark.fairness_fmr", self.fairness_fmr,
                "must be in (0, 1]: no finite number of pairs resolves an FMR of 0")
        require_choice("benchmark.fairness_threshold", self.fairness_threshold, ("max_tmr", "nonmated_score"))
        require(0.0 < self.fairness_confidence < 1.0, "benchmark.fairness_confidence", self.fairness_confidence,
                "must be in (0, 1)")
        require(self.max_pairs >= 100, "benchmark.max_pairs", self.max_pairs, "must be >= 100")
        require(self.max_images is None or int(self.max_images) >= 2, "benchmark.max_images", self.max_images,
                "must be null (all) or >= 2")
        require(self.histogram_bins >= 10, "benchmark.histogram_bins", self.histogram_bins, "must be >= 10")
        require(self.batch_size >= 1, "benchmark.batch_size", self.batch_size, "must be >= 1")
        for e in self.embedders:
            require_choice("benchmark.embedders[]", e, ("face", "recognizer"))
        for e in self.independent_embedders:
            require_choice("benchmark.independent_embedders[]", e, ("sface", "dlib"))
        require(not self.names or self.root is not None, "benchmark.names", list(self.names),
                "needs benchmark.root (the folder holding <name>.bin)")
        if self.ijb is not None:
            ok = hasattr(self.ijb, "get") and self.ijb.get("root") and str(self.ijb.get("target", "")).upper() in (
                "IJBB", "IJBC")
            require(bool(ok), "benchmark.ijb", self.ijb, "must be {root: <folder with meta/ and loose_crop/>, "
                                                           "target: IJBC or IJBB} or null")
        if self.lfw_pairs is not None:
            ok = hasattr(self.lfw_pairs, "get") and self.lfw_pairs.get("pairs") and self.lfw_pairs.get("root")
            require(bool(ok), "benchmark.lfw_pairs", self.lfw_pairs,
                    "must be {pairs: <pairs.txt>, root: <lfw folder>} or null")

    def bin_paths(self) -> dict[str, str]:
        """Every configured ``.bin``: ``names`` under ``root``, then ``verification`` (which wins on a clash)."""
        out = {n: f"{self.root}/{n}.bin" for n in self.names}
        out.update(dict(self.verification))
        return out
