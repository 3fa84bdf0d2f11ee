"""load_image: formats, EXIF orientation, alpha, modes, arrays and the pixel limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from float_core.media.image import ImageError, load_image

# A 2x3 pattern with distinct colours so orientation errors are visible.
PATTERN = np.array(
    [[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[255, 255, 0], [0, 255, 255], [255, 0, 255]]],
    dtype=np.uint8,
)


def _big_pattern() -> np.ndarray:
    """PATTERN blown up 16x so lossy formats keep the block colours."""
    return np.kron(PATTERN, np.ones((16, 16, 1), dtype=np.uint8))


@pytest.mark.parametrize(
    ("ext", "kwargs", "tol"),
    [
        (".png", {}, 0),
        (".bmp", {}, 0),
        (".tiff", {}, 0),
        (".webp", {"lossless": True}, 0),
        (".jpg", {"quality": 95}, 12),
        (".gif", {}, 0),
    ],
)
def test_formats_roundtrip(tmp_path: Path, ext: str, kwargs: dict, tol: int) -> None:
    path = tmp_path / f"p{ext}"
    Image.fromarray(_big_pattern()).save(path, **kwargs)
    out = load_image(path)
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    # Compare block centres (JPEG blurs the block borders).
    centres = out[8::16, 8::16].astype(int)
    assert np.abs(centres - PATTERN.astype(int)).max() <= tol


def test_tiff_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "multi.tiff"
    first = Image.new("RGB", (8, 8), (10, 20, 30))
    first.save(path, save_all=True, append_images=[Image.new("RGB", (8, 8), (200, 200, 200))])
    assert Image.open(path).n_frames == 2
    assert tuple(load_image(path)[0, 0]) == (10, 20, 30)


def test_png_16bit_grey_scales_not_clips(tmp_path: Path) -> None:
    grey16 = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(grey16).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path)
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_palette_with_transparency_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 1  # palette entry 1 (blue) is transparent
    path = tmp_path / "pal.png"
    img.save(path, transparency=1)
    out = load_image(path)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)


def test_rgba_half_transparent_blends(tmp_path: Path) -> None:
    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 0, 255)
    rgba[0, 1] = (0, 0, 0, 128)  # 50% black over white -> ~127
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = load_image(path)
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert abs(int(out[0, 1, 0]) - 127) <= 1
    assert tuple(load_image(path, background=(0, 0, 0))[0, 1]) == (0, 0, 0)


def test_grey_and_cmyk_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (3, 2), 77).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png")[1, 2].tolist() == [77, 77, 77]
    Image.new("CMYK", (3, 2), (0, 255, 255, 0)).save(tmp_path / "c.tiff")  # pure red in CMYK
    assert load_image(tmp_path / "c.tiff")[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (1, PATTERN),
        (3, PATTERN[::-1, ::-1]),  # rotated 180
        (6, np.rot90(PATTERN, k=-1)),  # displayed rotated 90 degrees clockwise
        (8, np.rot90(PATTERN, k=1)),
    ],
)
def test_exif_orientation_applied(tmp_path: Path, orientation: int, expected: np.ndarray) -> None:
    img = Image.fromarray(PATTERN)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    img.save(path, exif=exif)
    np.testing.assert_array_equal(load_image(path), expected)


def test_pixel_limit(tmp_path: Path) -> None:
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="10000 px|0 MP|limit"):
        load_image(tmp_path / "big.png", max_pixels=9999)
    assert load_image(tmp_path / "big.png", max_pixels=10000).shape == (100, 100, 3)
    with pytest.raises(ImageError, match="limit"):
        load_image(np.zeros((100, 100, 3), np.uint8), max_pixels=9999)


def test_unreadable_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="not an image"):
        load_image(bad)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")
    truncated = tmp_path / "t.png"
    Image.fromarray(_big_pattern()).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ImageError):
        load_image(truncated)


def test_arrays_and_pil_inputs() -> None:
    np.testing.assert_array_equal(load_image(PATTERN), PATTERN)
    assert load_image(PATTERN) is not PATTERN  # always a copy the caller owns
    grey = np.full((2, 2), 9, np.uint8)
    assert load_image(grey).shape == (2, 2, 3)
    assert load_image(np.ones((2, 2, 3), np.float32))[0, 0].tolist() == [255] * 3
    assert load_image(np.full((1, 1, 3), 65535, np.uint16))[0, 0].tolist() == [255] * 3
    np.testing.assert_array_equal(load_image(Image.fromarray(PATTERN)), PATTERN)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        load_image(np.full((2, 2, 3), 3.0))
    with pytest.raises(ImageError, match="dtype"):
        load_image(np.zeros((2, 2, 3), np.int64))
    with pytest.raises(ImageError, match="expected a path"):
        load_image(42)  # type: ignore[arg-type]


def test_example_portrait_loads() -> None:
    path = Path(__file__).parents[1] / "examples" / "portrait_astronaut.png"
    assert load_image(path).shape == (512, 512, 3)
