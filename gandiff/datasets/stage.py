"""The ``export`` stage: select from the curate stage's scores, audit leakage, write the dataset and its card.

Config keys ``curation`` and ``export``: which images (``gandiff.curation.select``, arithmetic over
``scores.parquet``) and how they are stored; no model runs except to embed a photo-folder leakage gallery, so a
threshold sweep takes seconds per setting, each in its own ``export/<key>/`` (named in ``tag.txt``). Items:
``selection``, one per format in ``export.formats``, and ``card`` (``README.md``). An empty selection is an
outcome, not an error: the card says why and ``open_dataset`` raises ``EmptyDatasetError`` with the reason.

Design: docs/design.md#the-export-stage.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.artifacts import atomic_write_json, atomic_write_text, read_json, read_table, write_table
from gandiff.curation.select import Selection, explain_empty, select, selection_settings, settings_tag
from gandiff.datasets.readers import DATASET_JSON, IDENTITIES_CSV, write_identities_csv
from gandiff.datasets.sample import ExportItem, encode_image, image_ext
from gandiff.pipeline import Stage, StageContext, StageError
from gandiff.schema import plain

log = logging.getLogger(__name__)

MARKER = ".gandiff-export.json"  # in a published folder: which export made it
# Metadata columns carried into every format (attributes, scores, prompt families, pose).
META_KEYS = ("gender", "gender_prob", "age", "age_bin", "race", "det_score", "anchor_sim", "centroid_sim",
             "other_sim", "quality", "coverage", "yaw", "pitch", "roll", "prompt", "seed")
LOADERS = {
    "imagefolder": "datasets.load_dataset('imagefolder', data_dir='imagefolder')",
    "recordio": "arcface_torch MXFaceDataset(root_dir='recordio') / gandiff.datasets.readers.open_dataset",
    "webdataset": "webdataset.WebDataset('webdataset/shard-{000000..N}.tar').decode('rgb8')",
}


def claim_folder(path: Path, fingerprint: str, tag: str) -> None:
    """Refuse to write into a non-empty folder that another export (or anything else) made."""
    if path.exists() and any(path.iterdir()):
        marker = path / MARKER
        if not marker.exists():
            raise StageError(f"export.publish_dir={str(path)!r} is not empty and was not made by gandiff export: "
                             "choose an empty or new folder")
        rec = read_json(marker)
        if rec.get("fingerprint") != fingerprint:
            raise StageError(f"export.publish_dir={str(path)!r} holds another dataset (settings {rec.get('tag')!r}, "
                             f"key {rec.get('key')}), not this one ({tag!r}): choose another folder or delete it")
    path.mkdir(parents=True, exist_ok=True)


class ExportStage(Stage):
    name = "export"
    upstream = ("curate", "identities", "generate")
    example = "gandiff export 'export.formats=[recordio]'"
    config_keys = ("curation", "export")
    # export.publish_dir stays in the key: a finished stage is skipped before merge, so a new destination
    # must mean a new (cheap) run for the copy to happen.
    verify = "size"  # a .rec or tar shard can be gigabytes: re-hashing on every resume is not worth it

    def __init__(self) -> None:
        self._plan: dict[str, Any] | None = None

    # ------------------------------------------------------------------ selection (cached per process)

    def items(self, ctx: StageContext) -> list[str]:
        e = ctx.settings.export
        if e.publish_dir:  # refuse early, before any work
            claim_folder(Path(e.publish_dir), ctx.key, self.plan(ctx)["tag"])
        return ["selection", *e.formats, "card"]

    def plan(self, ctx: StageContext) -> dict[str, Any]:
        if self._plan is not None and self._plan["key"] == ctx.key:
            return self._plan
        cur = ctx.input_dir("curate")
        scores = read_table(cur / "scores.parquet")
        id_rows = read_table(ctx.input_dir("identities") / "identities.parquet")
        id_attrs = {r["id"]: {k: r.get(k) for k in ("gender", "age_bin", "race")} for r in id_rows}
        rules = ctx.settings.curation
        leakage = self._leakage(ctx, scores, id_rows)
        leaked_images = set(leakage["flagged_images"]) if leakage and leakage["dropped"] else set()
        leaked_ids = set(leakage["flagged"]) if leakage and leakage["dropped"] else set()
        sel = select(scores, id_attrs, rules, leaked_images, leaked_ids)
        tag = settings_tag(rules, leakage=("leak-drop" if leakage and leakage["dropped"] else
                                           "leak-audit" if leakage else ""))
        c = sel.counts
        if sel.empty:
            log.warning("export: %s. The dataset is empty: only the card and the selection table are written.",
                        explain_empty(sel))
        else:
            log.info("export [%s]: %d of %d images, %d of %d identities selected (dropped: %s)", tag,
                     c["images_selected"], c["images_scored"], c["identities_selected"], c["identities_scored"],
                     c["identities_dropped"] or "none")
        self._plan = {"key": ctx.key, "scores": scores, "id_attrs": id_attrs, "rules": rules, "sel": sel,
                      "tag": tag, "leakage": leakage}
        return self._plan

    def _leakage(self, ctx: StageContext, scores: list[dict[str, Any]], id_rows: list[dict[str, Any]]) -> dict | None:
        c = ctx.settings.curation
        if not c.leakage_gallery:
            return None
        from gandiff.curation.leakage import audit, embed_gallery_folder, load_gallery_npz, threshold_at_fmr

        g = Path(c.leakage_gallery)
        if g.is_dir():
            from hydra.utils import instantiate

            log.info("export: embedding the leakage gallery %s (precompute it once with "
                     "`python -m gandiff.curation.leakage embed` to skip this)", g)
            face = ctx.settings.face
            gallery = embed_gallery_folder(g, instantiate(face.detector), instantiate(face.embedder), face.batch_size)
        else:
            gallery = load_gallery_npz(g)
        if c.leakage_threshold is not None:  # typed Any in the schema (null or a number): a float here
            thr = {"threshold": float(c.leakage_threshold), "fmr_target": c.leakage_fmr, "resolvable": True,
                   "source": "curation.leakage_threshold"}
        else:
            thr = threshold_at_fmr(gallery, c.leakage_fmr)
        cur = ctx.input_dir("curate")
        emb = np.load(cur / "embeddings.npy", allow_pickle=False)
        rows_emb = emb[[r["embedding_row"] for r in scores]] if len(scores) else np.zeros((0, gallery.embeddings.shape[1]))
        anchors = np.load(ctx.input_dir("identities") / "embeddings.npy", allow_pickle=False).astype(np.float32)
        rep = audit([r["image_id"] for r in scores], [r["id"] for r in scores], rows_emb.astype(np.float32),
                    np.array([r["status"] == "ok" for r in scores], dtype=bool), [r["id"] for r in id_rows], anchors,
                    gallery, thr)
        out = {**rep.summary(), "gallery": str(g), "gallery_faces": len(gallery.ids),
               "gallery_counts": gallery.counts, "dropped": c.drop_leaked, "flagged_images": rep.flagged_images}
        log.info("export: leakage audit at threshold %.4f: %d images and %d identities flagged%s", out["threshold"],
                 out["images_flagged"], out["identities_flagged"], " (dropped)" if c.drop_leaked else "")
        return out

    # ------------------------------------------------------------------ writing

    def _items(self, ctx: StageContext, sel: Selection):
        """ExportItems in (label, image_id) order: the same bytes go into every format."""
        e = ctx.settings.export
        cur, gen = ctx.input_dir("curate"), ctx.input_dir("generate")
        size, fmt = e.image_size, e.image_format
        for r in sel.images:
            original = None
            if e.aligned:
                if size == 112 and fmt == "png":
                    image = (cur / r["crop"]).read_bytes()  # the scored crop itself: no re-encode
                else:
                    from gandiff.face.align import align_face
                    from gandiff.face.images import read_image

                    lm = np.asarray(r["landmarks"], dtype=np.float32).reshape(5, 2)
                    image = encode_image(align_face(read_image(gen / r["path"]), lm, size), fmt, e.jpeg_quality)
            else:
                image = (gen / r["path"]).read_bytes()
            if e.include_originals:
                original = (gen / r["path"]).read_bytes()
            meta = {k: r.get(k) for k in META_KEYS}
            meta.update({k: r[k] for k in r if k.startswith("fam_")})
            yield ExportItem(label=r["label"], identity=r["id"], image_id=r["image_id"], image=image,
                             ext=image_ext(image), metadata=meta, original=original,
                             original_ext=image_ext(original) if original else "png")

    def process(self, ctx: StageContext, keys: list[str]) -> None:
        p = self.plan(ctx)
        sel: Selection = p["sel"]
        for key in keys:
            if key == "selection":
                self._write_selection(ctx, p)
            elif key == "card":
                self._write_card(ctx, p)
            elif sel.empty:
                ctx.items.put(key, {"format": key, "empty": True}, [])
            else:
                self._write_format(ctx, key, sel)

    def _write_selection(self, ctx: StageContext, p: dict[str, Any]) -> None:
        sel: Selection = p["sel"]
        label_of = {r["image_id"]: r["label"] for r in sel.images}
        rows = []
        for r in p["scores"]:
            iid = r["image_id"]
            reason = sel.image_reasons.get(iid) or ("" if iid in label_of else
                                                    sel.dropped.get(r["id"], "capped").split(" ")[0])
            rows.append({"id": r["id"], "image_id": iid, "selected": iid in label_of,
                         "label": label_of.get(iid, -1), "reason": "" if iid in label_of else reason})
        files = [write_table(ctx.dir / "selection.parquet", rows),
                 atomic_write_text(ctx.dir / "tag.txt", p["tag"] + "\n"),
                 atomic_write_json(ctx.dir / DATASET_JSON, {
                     "tag": p["tag"], "images": len(sel.images), "classes": len(sel.identities),
                     "formats": [] if sel.empty else ctx.settings.export.formats, "empty": sel.empty,
                     "reason": explain_empty(sel) if sel.empty else "", "identities": sel.identities})]
        if p["leakage"] is not None:
            files.append(atomic_write_json(ctx.dir / "leakage.json", p["leakage"]))
        ctx.items.put("selection", {"tag": p["tag"], **{k: v for k, v in sel.counts.items() if k != "balance"}},
                      files)

    def _write_format(self, ctx: StageContext, fmt: str, sel: Selection) -> None:
        out, e = ctx.dir / fmt, ctx.settings.export
        if fmt == "imagefolder":
            from gandiff.datasets.imagefolder import write_imagefolder

            counts = write_imagefolder(out, self._items(ctx, sel), originals_dir=ctx.dir / "originals")
        elif fmt == "recordio":
            from itertools import groupby

            from gandiff.datasets.recordio import RecordIOWriter

            with RecordIOWriter(out, image_size=(e.image_size, e.image_size), image_format=e.image_format) as w:
                for label, group in groupby(self._items(ctx, sel), key=lambda it: it.label):
                    w.add_identity(label, (it.image for it in group))
                counts = w.close()
            attrs = {i: self.plan(ctx)["id_attrs"].get(i, {}) for i in sel.identities}
            write_identities_csv(out / IDENTITIES_CSV, sel.identities, attrs)
        else:
            from gandiff.datasets.webdataset import write_webdataset

            counts = write_webdataset(out, self._items(ctx, sel), shard_size=e.shard_size)
        files = sorted(p for p in out.rglob("*") if p.is_file())
        if fmt == "imagefolder" and e.include_originals:
            files += sorted(p for p in (ctx.dir / "originals").rglob("*") if p.is_file())
        log.info("export: %s: %d images of %d identities -> %s", fmt, counts["images"], counts["classes"], out)
        ctx.items.put(fmt, {"format": fmt, "images": counts["images"], "classes": counts["classes"]}, files)

    def _write_card(self, ctx: StageContext, p: dict[str, Any]) -> None:
        from gandiff.datasets.card import dataset_statistics, models_used, render_card

        sel: Selection = p["sel"]
        labels = np.array([r["label"] for r in sel.images], dtype=np.int64)
        meta = [{k: v for k, v in r.items() if k.startswith("fam_") or k in ("yaw", "pitch", "roll")}
                for r in sel.images]
        stats = dataset_statistics(labels, sel.identities, p["id_attrs"], meta)
        configs, fingerprints = self._lineage(ctx)
        configs["curation"], configs["export"] = plain(ctx.settings.curation), plain(ctx.settings.export)
        formats = {} if sel.empty else {f: {"path": f"{f}/", "load": LOADERS[f]} for f in ctx.settings.export.formats}
        text = render_card(
            title=f"gandiff synthetic faces: {ctx.settings.experiment_name}", tag=p["tag"], key=ctx.key, stats=stats,
            selection_counts=sel.counts, rules=selection_settings(p["rules"]), leakage=p["leakage"],
            formats=formats, models=models_used(configs), configs=configs, fingerprints=fingerprints,
            empty_reason=explain_empty(sel) if sel.empty else "")
        ctx.items.put("card", {"images": len(sel.images)}, [atomic_write_text(ctx.dir / "README.md", text)])

    def _lineage(self, ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
        """Each upstream stage's own config and fingerprint, from the stage.json files (dreambooth via generate)."""
        from gandiff.pipeline import upstream_records

        configs: dict[str, Any] = {}
        fps: dict[str, Any] = {"export": ctx.key}
        for rec in upstream_records(ctx.input_dir(u) for u in self.upstream):
            configs.update({k: v for k, v in rec.get("config", {}).items() if k != "seed"})
            configs["seed"] = rec.get("config", {}).get("seed")
            fps[rec["stage"]] = {"key": rec["key"], "outputs": rec.get("outputs")}
        return configs, fps

    def merge(self, ctx: StageContext, keys: list[str]) -> dict[str, Any]:
        p = self.plan(ctx)
        sel: Selection = p["sel"]
        pub = ctx.settings.export.publish_dir
        if pub and not sel.empty:
            dest = Path(pub)
            claim_folder(dest, ctx.key, p["tag"])
            atomic_write_json(dest / MARKER, {"fingerprint": ctx.key, "key": ctx.key, "tag": p["tag"]})
            for name in ("README.md", "tag.txt", DATASET_JSON, "selection.parquet", "leakage.json", "originals",
                         *ctx.settings.export.formats):
                src = ctx.dir / name
                if src.is_dir():
                    shutil.copytree(src, dest / name, dirs_exist_ok=True)
                elif src.exists():
                    shutil.copy2(src, dest / name)
            log.info("export: published to %s", dest)
        c = sel.counts
        return {"tag": p["tag"], "empty": sel.empty, "images": c["images_selected"],
                "identities": c["identities_selected"], "images_scored": c["images_scored"],
                "identities_dropped": sum(c["identities_dropped"].values()),
                "leakage_flagged_identities": p["leakage"]["identities_flagged"] if p["leakage"] else None,
                "formats": [] if sel.empty else ctx.settings.export.formats}


def summary_line(folder: Path) -> str:
    """One line about an export folder (for logs and the report)."""
    info = json.loads((folder / DATASET_JSON).read_text(encoding="utf-8"))
    if info.get("empty"):
        return f"{folder}: empty ({info.get('reason')})"
    return f"{folder}: {info['images']} images of {info['classes']} identities [{info['tag']}]"
