"""``gandiff inspect DATASET``: the card's statistics for any supported dataset, plus contact sheets.

Works on gandiff exports and on the same formats made elsewhere (a CASIA-WebFace ``.rec``, an imagefolder
tree, WebDataset shards). Contact sheets (one PNG per identity, its first images side by side) are the
quickest way to catch the two classic mistakes: swapped colour channels (blue faces) and wrong labels (a
sheet mixing people). The mean RGB of a sample of images is printed for the same reason: skin-tone faces
have mean R > mean B; the reverse usually means BGR was stored as RGB.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def contact_sheet(images: list[np.ndarray], columns: int = 8, tile: int = 112) -> np.ndarray:
    """(rows * tile, columns * tile, 3) uint8 RGB grid of ``images`` (each resized to ``tile``)."""
    import cv2

    n = max(len(images), 1)
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    sheet = np.zeros((rows * tile, cols * tile, 3), dtype=np.uint8)
    for k, img in enumerate(images):
        if img.shape[:2] != (tile, tile):
            img = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
        r, c = divmod(k, cols)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = img
    return sheet


def inspect_dataset(path: str, format: str | None = None, sheets_dir: str | None = None, max_identities: int = 16,
                    per_identity: int = 8, sample: int = 256) -> dict[str, Any]:
    """Statistics (as in the dataset card) and contact sheets; returns the statistics."""
    from gandiff.artifacts import save_image
    from gandiff.datasets.card import dataset_statistics
    from gandiff.datasets.readers import open_dataset

    ds = open_dataset(path, format=format)
    n = len(ds)
    metas = [ds.metadata(i) for i in range(n)] if ds.format != "recordio" else None
    stats = dataset_statistics(ds.labels, ds.identities, ds.identity_attributes, metas)
    stats["format"] = ds.format
    stats["path"] = str(ds.path)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(n, size=min(sample, n), replace=False)) if n else np.zeros(0, np.int64)
    shapes: dict[str, int] = {}
    means = []
    for i in idx.tolist():
        img = ds[i].image
        shapes[f"{img.shape[1]}x{img.shape[0]}"] = shapes.get(f"{img.shape[1]}x{img.shape[0]}", 0) + 1
        means.append(img.reshape(-1, 3).mean(0))
    stats["image_sizes"] = shapes
    if means:
        m = np.mean(means, 0)
        stats["mean_rgb"] = [round(float(v), 1) for v in m]
        if m[2] > m[0] + 5:
            log.warning("mean blue (%.1f) > mean red (%.1f) over %d images: faces stored as BGR? check the sheets",
                        m[2], m[0], len(means))
    if sheets_dir:
        out = Path(sheets_dir)
        first: dict[int, list[int]] = {}
        for i, lab in enumerate(ds.labels.tolist()):
            if lab < max_identities and len(first.setdefault(lab, [])) < per_identity:
                first[lab].append(i)
        for lab, ids in sorted(first.items()):
            name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in ds.identities[lab])
            save_image(out / f"{lab:06d}_{name}.png", contact_sheet([ds[i].image for i in ids]))
        stats["contact_sheets"] = {"dir": str(out), "identities": len(first)}
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="gandiff inspect",
        description="Statistics and contact sheets for a face dataset: a gandiff export folder, insightface "
                    "RecordIO (train.rec/.idx), an imagefolder tree (with or without metadata.csv) or "
                    "WebDataset .tar shards.",
        epilog="examples:\n  gandiff inspect experiments/demo/export/<key>\n"
               "  gandiff inspect /data/faces_webface_112x112 --sheets /tmp/casia_sheets --max-identities 32\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--format", choices=("recordio", "imagefolder", "webdataset"), default=None,
                        help="which format of a gandiff export to read (default: the first present)")
    parser.add_argument("--sheets", default=None, help="folder for contact sheets (default: <dataset>_sheets next "
                                                       "to a folder dataset; 'none' to skip)")
    parser.add_argument("--max-identities", type=int, default=16)
    parser.add_argument("--per-identity", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = parser.parse_args(argv)
    from gandiff.datasets.card import statistics_markdown
    from gandiff.datasets.readers import EmptyDatasetError
    from gandiff.errors import UserError
    from gandiff.log import setup_logging

    setup_logging()
    sheets = args.sheets
    if sheets is None:
        sheets = str(Path(args.dataset).resolve()).rstrip("/") + "_sheets"
    elif sheets == "none":
        sheets = None
    try:
        stats = inspect_dataset(args.dataset, args.format, sheets, args.max_identities, args.per_identity)
    except (FileNotFoundError, ValueError, EmptyDatasetError, UserError) as e:
        print(f"gandiff inspect: {e}")
        raise SystemExit(2) from None
    if args.json:
        print(json.dumps(stats, indent=1, sort_keys=True))
        return
    print(f"{stats['path']} ({stats['format']})")
    print(statistics_markdown(stats))
    print(f"- image sizes (sample): {stats['image_sizes']}")
    if "mean_rgb" in stats:
        print(f"- mean RGB (sample): {stats['mean_rgb']}")
    if "contact_sheets" in stats:
        print(f"- contact sheets: {stats['contact_sheets']['dir']} ({stats['contact_sheets']['identities']} identities)")


if __name__ == "__main__":
    main()
