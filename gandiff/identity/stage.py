"""The ``identities`` stage: GAN identities meeting a demographic target, distinct, with variations.

``items``: the sequential selection (``gandiff.identity.sampling``: seeds until every demographic cell is
full, then the edit directions), made once per run into ``selection/`` by ``gandiff.identity.compute_once``
whichever shard gets there first; keys are ``id_000000 ...`` in draw order. ``process`` (sharded, resumable):
anchor, variations kept only if still the anchor's identity, ``images/<id>/`` and their embeddings. ``merge``
writes ``identities.parquet``, the latent / embedding arrays, ``directions.npz`` and ``summary.json``.

Design: docs/design.md#the-identities-stage.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.artifacts import (
    atomic_path,
    atomic_write_json,
    canonical_json,
    identity_id,
    read_json,
    save_image,
    write_table,
)
from gandiff.pipeline import Stage, StageContext, StageError
from gandiff.schema import plain

log = logging.getLogger(__name__)

SEED_STRIDE = 1_000_000  # candidate seeds of global seed s start at first_seed + s * SEED_STRIDE


def _device(settings: Any) -> str:
    from gandiff.identity.sources import resolve_device

    return resolve_device(settings.device)


def build_source(settings: Any, device: str) -> Any:
    """The configured identity source; ``identity.impl=nvlabs`` swaps in NVlabs' own generator code.

    ``settings``: the typed config (``ctx.settings``); the composed DictConfig, which has the same keys, works too.
    """
    from hydra.utils import instantiate

    idc = settings.identity
    if idc.impl == "nvlabs":
        from gandiff.identity.nvlabs import NVlabsStyleGANSource

        src = plain(idc.source)
        if "checkpoint" not in src:
            raise StageError("identity.impl=nvlabs needs identity.source.checkpoint (an NVlabs .pkl)")
        # str(): the schema types identity.nvlabs_path Any (null unless impl=nvlabs)
        return NVlabsStyleGANSource(checkpoint=src["checkpoint"], nvlabs_path=str(idc.nvlabs_path), device=device,
                                    noise_mode=src.get("noise_mode", "const"),
                                    truncation_cutoff=src.get("truncation_cutoff"))
    return instantiate(idc.source, device=device)


def build_analyzer(settings: Any, device: str) -> Any:
    """Detector + embedder + attribute classifier from the ``face`` / ``attributes`` groups (``settings``: the
    typed config), the detector at ``identity.detect_size`` when that is set."""
    from hydra.utils import instantiate

    from gandiff.face.analyzer import FaceAnalyzer

    face, classifier_spec, detect_size = settings.face, settings.attributes.classifier, settings.identity.detect_size
    extra = {"input_size": [detect_size] * 2} if detect_size else {}
    detector = instantiate(face.detector, device=device, **extra)
    embedder = instantiate(face.embedder, device=device)
    classifier = instantiate(classifier_spec, device=device) if classifier_spec else None
    return FaceAnalyzer(detector, embedder, classifier)


def provided_attributes(classifier: Any) -> tuple[str, ...]:
    """Which of gender / age_bin / race the classifier estimates (probed on one blank aligned face)."""
    if classifier is None:
        return ()
    probe = classifier.classify_aligned(np.full((1, 112, 112, 3), 128, np.uint8))[0]
    return tuple(a for a in ("gender", "age_bin", "race") if getattr(probe, a, None) is not None)


class IdentitiesStage(Stage):
    name = "identities"
    upstream = ()
    example = "gandiff identities identity.num=100 'identity.target={gender: {male: 0.5, female: 0.5}}'"
    config_keys = ("identity", "face", "attributes")
    ignore_keys = ("identity.batch_size", "identity.source.batch_size", "face.batch_size",
                   "face.detector.batch_size", "face.embedder.batch_size", "attributes.classifier.batch_size")

    def __init__(self) -> None:
        self._models: tuple[Any, Any] | None = None

    # ------------------------------------------------------------------------------------------ models

    def models(self, settings: Any) -> tuple[Any, Any]:
        """(source, analyzer), built once from the typed config."""
        if self._models is None:
            device = _device(settings)
            self._models = (build_source(settings, device), build_analyzer(settings, device))
        return self._models

    # ------------------------------------------------------------------------------------------ selection

    def _selection_dir(self, ctx: StageContext) -> Path:
        return ctx.dir / "selection"

    def items(self, ctx: StageContext) -> list[str]:
        from gandiff.identity.compute_once import compute_once

        sel = self._selection_dir(ctx)
        who = f"identities shard {ctx.shard_index}/{ctx.shard_count}"
        if compute_once(sel, "selection.json", lambda staging: self._select(ctx, staging), who=who):
            log.info("identities: selection made by %s -> %s", who, sel)
        else:
            log.info("identities: reusing the selection in %s", sel)
        n = len(read_json(sel / "selection.json")["rows"])
        return [identity_id(i) for i in range(n)]

    def _select(self, ctx: StageContext, out: Path) -> None:
        """Run the funnel and write the selection into ``out`` (a private staging folder: plain writes)."""
        from gandiff.identity.demographics import TargetError, TargetNotMetError, parse_target
        from gandiff.identity.distinct import similarity_summary
        from gandiff.identity.edits import learn_directions, load_directions, save_directions
        from gandiff.identity.sampling import QualityGate, label_latents, select_identities

        settings = ctx.settings
        idc, edits = settings.identity, settings.identity.edits
        source, analyzer = self.models(settings)
        try:
            target = parse_target(idc.target, idc.num, provided_attributes(analyzer.classifier))
        except TargetError as e:
            raise StageError(str(e)) from None
        log.info("identities: target %s over %s", {target.label(c): q for c, q in target.quotas.items()},
                 ", ".join(target.attributes) or "nothing")
        first = idc.first_seed + SEED_STRIDE * settings.seed
        bar = iter(ctx.progress(range(idc.num), total=idc.num, desc="identities: selecting"))
        shown = [0]

        def on_batch(drawn: int, kept: int) -> None:
            while shown[0] < kept:
                next(bar, None)
                shown[0] += 1

        gate = QualityGate(idc.min_det_score, idc.min_face_size)
        try:
            sel = select_identities(
                source, analyzer, target, num=idc.num, truncation=idc.truncation, first_seed=first,
                batch_size=idc.batch_size, max_attempts=idc.max_attempts,
                gate=gate, max_similarity=idc.max_similarity, on_batch=on_batch)
        except TargetNotMetError as e:
            raise StageError(str(e)) from None
        for _ in bar:  # finish the progress display
            pass

        # Edit directions: from a file, or learned on every quality-passing candidate's latent.
        latent_std = sel.pool_w.std(axis=0) if len(sel.pool_w) > 1 else np.ones(source.w_dim, np.float32)
        if edits.file:
            directions, std = load_directions(str(edits.file), source.w_dim)  # str(): the schema types it Any
            latent_std = std if std is not None else latent_std
        elif source.editable and edits.directions:
            pool_w, labels = sel.pool_w, sel.pool_labels
            extra = edits.samples - len(pool_w)
            if extra > 0:  # more labelled latents than the selection saw: seeds after the last one drawn
                more = np.arange(first + sel.funnel["drawn"], first + sel.funnel["drawn"] + extra, dtype=np.int64)
                w2, l2 = label_latents(source, analyzer, more, idc.truncation, gate, idc.batch_size)
                pool_w = np.concatenate([pool_w, w2])
                labels = {k: list(v) + l2[k] for k, v in labels.items()}
            latent_std = pool_w.std(axis=0) if len(pool_w) > 1 else latent_std
            directions = learn_directions(pool_w, {k: np.array(v, dtype=object) for k, v in labels.items()},
                                          edits.directions, min_samples=edits.min_samples, seed=settings.seed)
        else:
            directions = {}
        for d in directions.values():
            log.info("edit direction %s: %s, %d samples, score %.3f, scale %.3f", d.name, d.kind, d.samples,
                     d.score, d.scale)
        sims = similarity_summary(sel.embeddings, exact_max=max(sel.accept_max) if sel.accept_max else None)

        with open(out / "selection.npz", "wb") as f:
            np.savez(f, seeds=sel.seeds, z=sel.z, w=sel.w, embeddings=sel.embeddings,
                     latent_std=np.asarray(latent_std, np.float32))
        save_directions(out / "directions.npz", directions, latent_std, atomic=False)
        (out / "selection.json").write_text(canonical_json({
            "rows": sel.rows, "funnel": sel.funnel, "rejections": sel.rejections, "cells": sel.cells,
            "target_attributes": list(target.attributes), "first_seed": first, "similarity": sims,
            "directions": {n: {"kind": d.kind, "score": None if d.score != d.score else round(d.score, 4),
                               "scale": round(d.scale, 4), "samples": d.samples} for n, d in directions.items()},
        }), encoding="utf-8")

    # ------------------------------------------------------------------------------------------ per identity

    def process(self, ctx: StageContext, keys: list[str]) -> None:
        from gandiff.identity.edits import load_directions, propose_variations
        from gandiff.identity.sampling import QualityGate

        settings = ctx.settings
        idc, edits = settings.identity, settings.identity.edits
        source, analyzer = self.models(settings)
        sel_dir = self._selection_dir(ctx)
        record = read_json(sel_dir / "selection.json")
        with np.load(sel_dir / "selection.npz") as z:
            seeds, ws, anchors_emb, latent_std = z["seeds"], z["w"], z["embeddings"], z["latent_std"]
        directions = list(load_directions(sel_dir / "directions.npz", source.w_dim)[0].values())
        gate = QualityGate(idc.min_det_score, idc.min_face_size)
        # Variations: latent edits where the source has an editable latent space; otherwise the source's
        # own re-noising (``render_variations``, e.g. SDEdit for diffusion models); otherwise none.
        renoise = not source.editable and callable(getattr(source, "render_variations", None))
        K = idc.variations if source.editable or renoise else 0
        if idc.variations and not K:
            log.warning("identities: %s has no latent space to edit and no render_variations: anchors only "
                        "(identity.variations ignored)", source.name)
        strength = tuple(edits.strength)  # (lo, hi), checked by the schema
        for key in ctx.progress(keys, total=len(keys), desc="identities: rendering"):
            i = int(key.split("_")[1])
            folder = Path("images") / key
            anchor = source.render(ws[i:i + 1])[0]
            files = [folder / "anchor.png"]
            save_image(ctx.dir / files[0], anchor)
            embs = [anchors_emb[i]]
            kept_edits: list[dict] = []
            rng = np.random.default_rng([settings.seed, int(seeds[i])])
            shrink, attempts_made = 1.0, 0
            for _round in range(3):  # gentler edits each round until K variations are kept
                need = K - len(kept_edits)
                if need <= 0:
                    break
                count = need * edits.attempts
                if renoise:  # one noise seed per candidate, drawn from the identity's own generator
                    noise_seeds = rng.integers(0, 2**32, size=count, dtype=np.uint64).tolist()
                    images, meta = source.render_variations(ws[i], noise_seeds, shrink=shrink)
                else:
                    cand, meta = propose_variations(ws[i], directions, latent_std, count, strength,
                                                    edits.perturbation, rng, shrink=shrink)
                    images = source.render(cand)
                attempts_made += count
                records = analyzer.analyze_batch(list(images))
                for img, faces, m in zip(images, records, meta):
                    if len(kept_edits) >= K or gate.check(faces) is not None:
                        continue
                    sim = float(np.dot(faces[0].embedding, anchors_emb[i]))
                    if sim < idc.min_variation_similarity:
                        continue
                    name = folder / f"var_{len(kept_edits):02d}.png"
                    save_image(ctx.dir / name, img)
                    files.append(name)
                    embs.append(np.asarray(faces[0].embedding, np.float32))
                    kept_edits.append({**m, "similarity": round(sim, 4)})
                shrink *= 0.6
            if len(kept_edits) < K:
                log.warning("identities: %s kept %d of %d variations after %d attempts", key, len(kept_edits), K,
                            attempts_made)
            emb_path = folder / "embeddings.npy"
            with atomic_path(ctx.dir / emb_path) as tmp:
                np.save(tmp, np.stack(embs).astype(np.float32))
            row = {"id": key, "index": i, "truncation": idc.truncation, **record["rows"][i],
                   "num_variations": len(kept_edits), "variation_attempts": attempts_made,
                   "variation_edits": json.dumps([{k: v for k, v in e.items() if k != "similarity"} for e in kept_edits]),
                   "variation_similarity": [e["similarity"] for e in kept_edits],
                   "images": [p.as_posix() for p in files], "embeddings": emb_path.as_posix()}
            ctx.items.put(key, row, files + [emb_path])

    # ------------------------------------------------------------------------------------------ merge

    def merge(self, ctx: StageContext, keys: list[str]) -> dict[str, Any]:
        sel_dir = self._selection_dir(ctx)
        record = read_json(sel_dir / "selection.json")
        rows = ctx.items.rows(keys)
        table = []
        for r in rows:
            r = dict(r)
            for k in ("race_probs", "age_probs"):  # per-class dicts as JSON text: stable Parquet types
                r[k] = None if r.get(k) is None else json.dumps(r[k], sort_keys=True)
            r["anchor"] = r["images"][0]
            table.append(r)
        write_table(ctx.dir / "identities.parquet", table)
        with np.load(sel_dir / "selection.npz") as z:
            for name, arr in (("latents.npy", z["w"]), ("z.npy", z["z"]), ("embeddings.npy", z["embeddings"])):
                with atomic_path(ctx.dir / name) as tmp:
                    np.save(tmp, arr[: len(keys)])
        with atomic_path(ctx.dir / "directions.npz") as tmp:
            tmp.write_bytes((sel_dir / "directions.npz").read_bytes())
        variation_sims = [s for r in rows for s in r["variation_similarity"]]
        funnel = record["funnel"]
        summary = {
            "identities": len(rows), "cells": record["cells"], "funnel": funnel, "rejections": record["rejections"],
            "acceptance": {k: round(funnel[k] / funnel["drawn"], 4) if funnel.get("drawn") else None for k in funnel},
            "inter_identity_similarity": record["similarity"], "directions": record["directions"],
            "variations": {"kept": len(variation_sims), "wanted": ctx.settings.identity.variations * len(rows),
                           "min_similarity": min(variation_sims) if variation_sims else None,
                           "mean_similarity": float(np.mean(variation_sims)) if variation_sims else None},
        }
        atomic_write_json(ctx.dir / "summary.json", summary)
        return {
            "identities": len(rows), "images": sum(len(r["images"]) for r in rows),
            "variations": len(variation_sims), "seeds_drawn": funnel.get("drawn", 0),
            "cells_met": sum(c["achieved"] >= c["target"] for c in record["cells"]), "cells": len(record["cells"]),
            "max_inter_similarity": record["similarity"].get("max"),
            "min_variation_similarity": summary["variations"]["min_similarity"],
        }
