"""Face detection, FLOAT's crop rule, crop extraction, preview and paste-back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from float_core.media.face import (
    CropBox,
    FaceDetection,
    NoFaceError,
    PasteBack,
    crop_box_for_face,
    crop_portrait,
    detect_faces,
    draw_crop_preview,
    extract_crop,
)
from float_core.media.image import load_image

EXAMPLE = Path(__file__).parents[1] / "examples" / "portrait_astronaut.png"
# The astronaut's face: dlib 68-landmark extent x 179..272, brows y 87, chin y 178.
FACE_CENTER = (225.0, 121.0)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image(EXAMPLE)


def _fixed(*boxes: tuple[float, float, float, float]):
    """A detector that returns the given boxes (for deterministic crop tests)."""

    def detect(image: np.ndarray) -> list[FaceDetection]:
        return [FaceDetection(b, 0.99) for b in boxes]

    return detect


# ----------------------------------------------------------------------------- crop rule


def test_crop_rule_exact_numbers() -> None:
    # w = 100, h = 120 -> half side int(1.6 * 60) = 96, side 192; centre (150, 160).
    assert crop_box_for_face((100, 100, 200, 220)) == CropBox(x0=54, y0=64, size=192)
    # Wider than tall; fractional centre (50.5, 30.25) floors to (50, 30); int(1.6 * 40.5) = 64.
    assert crop_box_for_face((10, 10, 91, 50.5)) == CropBox(x0=-14, y0=-34, size=128)


@pytest.mark.parametrize("box", [(0, 0, 0, 10), (5, 5, 1, 9), (0, 0, 1)])
def test_crop_rule_rejects_bad_boxes(box: tuple) -> None:
    with pytest.raises(ValueError, match="box"):
        crop_box_for_face(box)


def test_extract_crop_pads_with_zeros_and_keeps_pixels() -> None:
    img = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    crop = extract_crop(img, CropBox(x0=-2, y0=-1, size=4), size=4)  # no resize at size 4
    np.testing.assert_array_equal(crop[:1], 0)
    np.testing.assert_array_equal(crop[:, :2], 0)
    np.testing.assert_array_equal(crop[1:, 2:], img[0:3, 0:2])


def test_crop_portrait_with_fixed_detector(astronaut: np.ndarray) -> None:
    res = crop_portrait(astronaut, detector=_fixed((100, 100, 200, 220)))
    assert res.box == CropBox(54, 64, 192) and res.num_faces == 1 and res.message is None
    assert res.image.shape == (512, 512, 3) and res.image.dtype == np.uint8
    # The 512 crop, shrunk back to 192, reproduces the source square (bicubic round trip).
    back = np.asarray(Image.fromarray(res.image).resize((192, 192), Image.Resampling.BOX)).astype(int)
    assert np.abs(back - astronaut[64:256, 54:246].astype(int)).mean() < 4


def test_crop_portrait_largest_of_several_and_says_so(astronaut: np.ndarray) -> None:
    res = crop_portrait(astronaut, detector=_fixed((0, 0, 10, 10), (100, 100, 200, 220), (300, 300, 320, 330)))
    assert res.box == CropBox(54, 64, 192)
    assert res.num_faces == 3 and "3 faces" in (res.message or "") and "largest" in (res.message or "")


def test_crop_off_resizes_whole_photo(astronaut: np.ndarray) -> None:
    res = crop_portrait(astronaut[:300], crop=False, size=256)
    assert res.box is None and res.num_faces == 0 and res.image.shape == (256, 256, 3)


def test_no_face_is_a_clear_error() -> None:
    flat = np.full((200, 300, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="no face found .* turn cropping off"):
        crop_portrait(flat, detector=_fixed())


# ----------------------------------------------------------------------------- real detector


def test_detects_astronaut_face(astronaut: np.ndarray) -> None:
    faces = detect_faces(astronaut)
    assert len(faces) == 1 and faces[0].score > 0.9
    x1, y1, x2, y2 = faces[0].box
    # SFD-like box: centre on the face, height about brow-to-chin plus forehead.
    assert abs((x1 + x2) / 2 - FACE_CENTER[0]) < 8 and abs((y1 + y2) / 2 - FACE_CENTER[1]) < 10
    assert 100 < y2 - y1 < 130 and 80 < x2 - x1 < 110
    res = crop_portrait(astronaut)
    assert res.box is not None and res.box.x0 < x1 and res.box.x1 > x2 and res.num_faces == 1


def test_no_face_on_real_detector() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError):
        crop_portrait(noise)


def test_two_faces_uses_largest(astronaut: np.ndarray) -> None:
    face = astronaut[30:230, 130:320]
    canvas = np.full((400, 700, 3), 128, np.uint8)
    canvas[20:220, 20:210] = face
    canvas[50:350, 300:585] = np.asarray(Image.fromarray(face).resize((285, 300)))
    res = crop_portrait(canvas)
    assert res.num_faces == 2 and res.message is not None
    assert res.box is not None and 300 < res.box.x0 + res.box.size / 2 < 585  # the larger, right face


def test_large_photo_detected_on_downscaled_copy_without_losing_precision(astronaut: np.ndarray) -> None:
    small = detect_faces(astronaut)[0].box
    big = np.kron(astronaut, np.ones((3, 3, 1), np.uint8))  # 1536 px, above the 1024 detection side
    box = detect_faces(big)[0].box
    face = small[3] - small[1]
    assert all(abs(b / 3 - s) < 0.05 * face for b, s in zip(box, small))


# ----------------------------------------------------------------------------- preview


def test_draw_crop_preview_outlines_box() -> None:
    img = np.zeros((100, 120, 3), np.uint8)
    out = draw_crop_preview(img, CropBox(10, 20, 50))
    assert out is not img and img.max() == 0
    assert tuple(out[20, 30]) == (0, 255, 0) and tuple(out[45, 10]) == (0, 255, 0)
    assert out[45, 35].max() == 0  # inside untouched
    # A box partly outside the image is clipped, not an error.
    assert draw_crop_preview(img, CropBox(-20, -20, 60)).shape == img.shape
    np.testing.assert_array_equal(draw_crop_preview(img, None), img)


# ----------------------------------------------------------------------------- paste-back


def test_paste_back_geometry_and_seam() -> None:
    rng = np.random.default_rng(1)
    original = rng.integers(0, 255, (101, 151, 3), dtype=np.uint8)  # odd size -> 100 x 150
    box = CropBox(x0=40, y0=20, size=64)
    paste = PasteBack(original, box, size=64, feather=6)  # size 64: no resampling
    frame = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out = paste(frame)
    assert out.shape == (100, 150, 3) and paste.output_size == (150, 100)
    mask = np.zeros((100, 150), bool)
    mask[20:84, 40:104] = True
    np.testing.assert_array_equal(out[~mask], original[:100, :150][~mask])  # untouched outside
    np.testing.assert_array_equal(out[26:78, 46:98], frame[6:58, 6:58])  # exact beyond the feather
    # Inside the feather ring the result lies between background and frame.
    ring = out[20:84, 40:104].astype(int)
    lo = np.minimum(original[20:84, 40:104], frame).astype(int)
    hi = np.maximum(original[20:84, 40:104], frame).astype(int)
    assert ((ring >= lo - 1) & (ring <= hi + 1)).all()
    # The outermost pixel row is mostly background, a smooth ramp not a step.
    assert np.abs(out[20, 50:90].astype(int) - original[20, 50:90].astype(int)).mean() < np.abs(
        frame[0, 10:50].astype(int) - original[20, 50:90].astype(int)
    ).mean() / 4


def test_paste_back_resizes_and_clips_box_outside_image() -> None:
    original = np.zeros((60, 80, 3), np.uint8)
    box = CropBox(x0=-16, y0=-16, size=64)  # top-left part falls outside the image
    paste = PasteBack(original, box, size=32, feather=4)
    out = paste(np.full((32, 32, 3), 200, np.uint8))
    np.testing.assert_array_equal(out[0:44, 0:44], 200)  # enlarged 32 -> 64, exact for a flat frame
    np.testing.assert_array_equal(out[50:, 50:], 0)
    with pytest.raises(ValueError, match=r"\(32, 32, 3\) uint8"):
        paste(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="does not overlap"):
        PasteBack(original, CropBox(200, 200, 10))
