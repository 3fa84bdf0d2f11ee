"""Portrait image loading: any Pillow-readable file or array to an RGB ``uint8`` array.

Everything downstream (face detection, cropping, paste-back) assumes a plain
(H, W, 3) ``uint8`` RGB array in the photo's *displayed* orientation, so this
module is the single place that deals with file formats, EXIF orientation,
transparency, high bit depths, exotic colour modes and decompression bombs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageError", "load_image"]

#: Refuse images with more pixels than this (100 MP, e.g. 12000 x 8300).
#: Pillow's own bomb error only triggers at ~179 MP; we check earlier, with a
#: message that says what to do, before any pixel data is decoded.
DEFAULT_MAX_PIXELS = 100_000_000

_WHITE = (255, 255, 255)


class ImageError(ValueError):
    """The portrait could not be read or is not acceptable (too big, bad array, ...)."""


def _register_heif() -> None:
    """Let Pillow read HEIC/HEIF when the optional ``pillow-heif`` plugin is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()  # idempotent


def _open(path: Path, max_pixels: int) -> Image.Image:
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    if path.suffix.lower() in {".heic", ".heif", ".avif"}:
        _register_heif()
    try:
        # We enforce our own pixel limit below, with a clearer message; silence
        # Pillow's warning but keep its hard error for truly absurd headers.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path.name}: {exc}. Downscale the photo before using it.") from exc
    except UnidentifiedImageError as exc:
        hint = " (install pillow-heif for HEIC photos)" if path.suffix.lower() in {".heic", ".heif"} else ""
        raise ImageError(f"{path.name} is not an image Pillow can read{hint}") from exc
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from exc
    _check_pixels(img.width, img.height, max_pixels)
    try:
        img.seek(0)  # multi-frame TIFF/GIF/WebP: the first frame is the portrait
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise ImageError(f"cannot decode image {path.name}: {exc}") from exc
    return img


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height / 1e6:.0f} MP, more than the limit of "
            f"{max_pixels / 1e6:.0f} MP; downscale it or raise max_pixels"
        )
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})")


def _high_bit_depth_to_8bit(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float grey images to 8 bits instead of clipping.

    ``Image.convert("L")`` on an ``I;16`` PNG clips everything above 255 to
    white; we map the full 16-bit range onto 0..255 instead. Float ("F") images
    are taken as 0..1 when their maximum is at most 1, else as 0..255.
    """
    arr = np.asarray(img)
    if img.mode == "F":
        scale = 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 1.0
        arr8 = np.clip(np.nan_to_num(arr) * scale, 0, 255).round()
    else:
        # I;16* always holds 16-bit data; mode "I" from a 16-bit PNG too. Values
        # beyond 16 bits (rare 32-bit TIFFs) are scaled by their own maximum.
        peak = max(int(arr.max(initial=0)), 65535)
        arr8 = np.clip(arr.astype(np.float64) * (255.0 / peak), 0, 255).round()
    return Image.fromarray(arr8.astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    if img.mode in {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}:
        img = _high_bit_depth_to_8bit(img)
    has_alpha = img.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        # Composite onto a flat background: a transparent cut-out portrait would
        # otherwise show whatever RGB values hide under alpha=0 (often black).
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        img = Image.alpha_composite(canvas, rgba)
    # Handles L, 1, P, CMYK, YCbCr, LAB, HSV and RGBA (after compositing).
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _from_array(arr: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(
            f"image array must be (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA; got shape {arr.shape}"
        )
    if arr.dtype == np.uint8:
        arr8 = arr
    elif arr.dtype == np.uint16:
        arr8 = (arr.astype(np.float32) * (255.0 / 65535.0)).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise ImageError("float image arrays must be finite and in [0, 1]; scale uint8 data by 1/255")
        arr8 = (arr * 255.0).round().astype(np.uint8)
    else:
        raise ImageError(f"unsupported image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")
    if arr8.shape[0] < 1 or arr8.shape[1] < 1:
        raise ImageError(f"image array has no pixels (shape {arr.shape})")
    if arr8.ndim == 2:
        return np.repeat(arr8[:, :, None], 3, axis=2)
    if arr8.shape[2] == 4:
        return _to_rgb(Image.fromarray(np.ascontiguousarray(arr8), mode="RGBA"), background)
    return np.ascontiguousarray(arr8).copy()


def load_image(
    src: str | Path | np.ndarray | Image.Image,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    background: tuple[int, int, int] = _WHITE,
) -> np.ndarray:
    """Load a portrait as an (H, W, 3) ``uint8`` RGB array, upright.

    Args:
        src: a file path (any format Pillow reads: JPEG, PNG incl. 16-bit,
            palette and alpha, WebP, BMP, TIFF (first frame), GIF; HEIC/HEIF
            with the optional ``pillow-heif``), a PIL image, or an array
            (H, W), (H, W, 1|3|4) of uint8, uint16 or float in [0, 1].
        max_pixels: refuse larger images (protects against decompression bombs).
        background: RGB colour transparent areas are composited onto.

    Returns:
        A new C-contiguous (H, W, 3) uint8 array; EXIF orientation applied,
        alpha composited, grey/CMYK/palette/16-bit converted to 8-bit RGB.

    Raises:
        ImageError: unreadable or missing file, bad array, or too many pixels.
    """
    if isinstance(src, np.ndarray):
        _check_pixels(src.shape[1] if src.ndim > 1 else 0, src.shape[0], max_pixels)
        return _from_array(src, background)
    if isinstance(src, Image.Image):
        _check_pixels(src.width, src.height, max_pixels)
        img = src
    elif isinstance(src, (str, Path)):
        img = _open(Path(src), max_pixels)
    else:
        raise ImageError(f"expected a path, PIL image or numpy array, got {type(src).__name__}")
    # exif_transpose returns a rotated copy (or the image itself when no tag);
    # rotations by 90 degrees swap width and height, so the pixel check above holds.
    img = ImageOps.exif_transpose(img) or img
    return _to_rgb(img, background)
