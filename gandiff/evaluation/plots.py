"""The report's figures: score histograms, ROC / DET curves, per-group bars and sample grids, as PNG bytes.

Every function returns PNG bytes with no timestamp in the metadata, so the same inputs give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")



def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (no timestamps in the metadata: same figure, same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return buf.getvalue()


def plot_score_histograms(series: Sequence[tuple[str, np.ndarray, np.ndarray]], reference: Any = None,
                          title: str = "Score distributions", bins: int = 100) -> bytes:
    """Densities of mated (solid) and non-mated (dashed) cosine scores per series; the reference
    (a ``ScoreHistogram``) in grey, filled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    edges = np.linspace(-1, 1, bins + 1)
    if reference is not None:
        w = np.diff(reference.edges)
        for counts, hatch in ((reference.mated, None), (reference.nonmated, "//")):
            if counts.sum():
                ax.stairs(counts / counts.sum() / w, reference.edges, fill=True, alpha=0.25, color="grey",
                          hatch=hatch)
        ax.plot([], [], color="grey", lw=6, alpha=0.4, label=f"reference: {reference.metadata.get('dataset', '')}"[:60])
    for k, (label, mated, nonmated) in enumerate(series):
        c = COLOURS[k % len(COLOURS)]
        for scores, style, kind in ((mated, "-", "mated"), (nonmated, "--", "non-mated")):
            if len(scores):
                d, _ = np.histogram(np.clip(scores, -1, 1), bins=edges, density=True)
                ax.stairs(d, edges, color=c, linestyle=style, label=f"{label} {kind}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    return figure_png(fig)


def plot_roc_det(series: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str = "") -> bytes:
    """ROC (TMR vs FMR, log FMR) and DET (FNMR vs FMR, log-log) curves, one line per series."""
    from gandiff.evaluation.distributions import roc

    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for k, (label, mated, nonmated) in enumerate(series):
        if not len(mated) or not len(nonmated):
            continue
        fmr, tmr, _ = roc(mated, nonmated)
        floor = 0.5 / len(nonmated)  # a zero rate drawn at half a pair, so it stays on the log axis
        c = COLOURS[k % len(COLOURS)]
        a1.plot(np.maximum(fmr, floor), tmr, color=c, label=label)
        a2.plot(np.maximum(fmr, floor), np.maximum(1 - tmr, 0.5 / len(mated)), color=c, label=label)
    a1.set_xscale("log")
    a1.set_xlabel("FMR")
    a1.set_ylabel("TMR (1 - FNMR)")
    a1.set_title(f"ROC {title}".strip())
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("FMR")
    a2.set_ylabel("FNMR")
    a2.set_title(f"DET {title}".strip())
    for a in (a1, a2):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    return figure_png(fig)


def plot_group_bars(values: dict[str, dict[str, float]], title: str, ylabel: str) -> bytes:
    """Grouped bars: ``values[series][group]`` (e.g. FMR and FNMR per gender)."""
    plt = _pyplot()
    groups = sorted({g for v in values.values() for g in v})
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) + 2), 3.2))
    width = 0.8 / max(1, len(values))
    for k, (name, v) in enumerate(values.items()):
        xs = np.arange(len(groups)) + k * width
        ax.bar(xs, [v.get(g, np.nan) for g in groups], width=width, color=COLOURS[k % len(COLOURS)], label=name)
    ax.set_xticks(np.arange(len(groups)) + width * (len(values) - 1) / 2, groups, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return figure_png(fig)


def image_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], cell: int = 96) -> bytes:
    """One PNG: a row per entry (label on the left), images resized to ``cell`` px squares."""
    from PIL import Image, ImageDraw

    ncols = max((len(ims) for _, ims in rows), default=0)
    label_w = 150
    canvas = Image.new("RGB", (label_w + ncols * (cell + 4), max(1, len(rows)) * (cell + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, ims) in enumerate(rows):
        y = r * (cell + 4)
        draw.text((4, y + cell // 2 - 6), label[:24], fill="black")
        for c, im in enumerate(ims):
            tile = Image.fromarray(np.asarray(im, dtype=np.uint8)).convert("RGB").resize((cell, cell))
            canvas.paste(tile, (label_w + c * (cell + 4), y))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def load_scores(evaluate_dir: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(mated, non-mated) scores of an evaluate item (``scores/<key>.npz``), or None when it wrote none."""
    p = evaluate_dir / "scores" / f"{key}.npz"
    if not p.is_file():
        return None
    with np.load(p) as z:
        if "mated" in z:
            return z["mated"], z["nonmated"]
        s, y = z["scores"], z["issame"] if "issame" in z else z["labels"].astype(bool)
        return s[y], s[~y]

