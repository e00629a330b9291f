"""Decode any image a user has into an RGB ``PIL.Image``, or fail with one clear line.

Every failure (missing, empty, truncated, corrupt, not an image, too many pixels) raises
``ImageError`` naming the file, so a batch can record it and go on with the other images.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

# File name endings searched for in folders (lower case). Decoding never trusts the ending: the
# file's own header decides, so a misnamed PNG still loads and a text file named .jpg is refused.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".webp",
    ".bmp",
    ".dib",
    ".gif",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
)

# Pillow's own default limit (about 89.5 million pixels, a 1 GB RGB bitmap at 4 bytes/pixel);
# a larger image is refused before it is decoded, so a tiny crafted file cannot exhaust memory.
DEFAULT_MAX_PIXELS = 89_478_485

# What a user can do about an image refused for its size (from the command line too, where
# there is no max_pixels to raise).
_TOO_LARGE_ADVICE = "if you trust the file, downscale it and try again"

# Pillow's pixel limit (Image.MAX_IMAGE_PIXELS) and warnings.catch_warnings are process-wide
# state: one thread at a time changes them, and puts them back.
_PILLOW_STATE_LOCK = threading.Lock()

# Transparent pixels are shown on white by browsers and viewers; compositing on the same
# background keeps the colour the user sees (dropping alpha would expose arbitrary colours).
BACKGROUND = (255, 255, 255)


def is_image_file(path: str | os.PathLike) -> bool:
    """Return True when ``path``'s name ends like an image file and it is not hidden."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def describe(source: object) -> str:
    """Return how ``source`` is named in messages and results: its path, or its kind."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.width}x{source.height} {source.mode}>"
    if isinstance(source, np.ndarray):
        return f"<array {'x'.join(map(str, source.shape))} {source.dtype}>"
    return f"<{type(source).__name__}>"


def load_image(
    source: str | os.PathLike | bytes | Image.Image | np.ndarray,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Return ``source`` as an RGB image with its EXIF orientation applied.

    ``source``: a file path, the bytes of a file, a PIL image or an array (H, W), (H, W, 1),
    (H, W, 3) or (H, W, 4); uint8 as is, uint16 scaled from 0..65535, floats taken as 0..1.
    Grayscale, palette, CMYK, 16-bit and float images are converted to RGB; transparency is
    composited on white; an animated GIF/WebP gives its first frame. Raises ``ImageError``.
    """
    if isinstance(source, np.ndarray):
        return array_to_image(source)
    if isinstance(source, Image.Image):
        return _finish(source, describe(source), max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("<0 bytes>: empty data, not an image")
        return _decode(io.BytesIO(bytes(source)), describe(source), max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.path.expanduser(os.fspath(source)))
        try:
            status = path.stat()
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file") from None
        except OSError as error:  # a name too long, a loop of links, no permission
            reason = error.strerror or error
            raise ImageError(f"{str(path)[:200]}: cannot read ({reason})") from None
        except ValueError:  # a NUL byte, which no file name can hold
            raise ImageError(f"{str(path)[:200]!r}: not a file name (it holds a NUL byte)") \
                from None
        if stat.S_ISDIR(status.st_mode):
            raise ImageError(f"{path}: is a folder, not an image file")
        size = status.st_size
        if size == 0:
            raise ImageError(f"{path}: empty file (0 bytes), not an image")
        try:
            with open(path, "rb") as file:
                return _decode(file, str(path), max_pixels)
        except PermissionError:
            raise ImageError(f"{path}: permission denied") from None
    raise ImageError(
        f"cannot read an image from a {type(source).__name__}; pass a path, bytes, a PIL image "
        "or a numpy array"
    )


@contextmanager
def naming(source: object) -> Iterator[None]:
    """Put ``source``'s name in front of an ``ImageError`` raised inside, unless it is there
    (preprocessing errors know the image, not the file it came from)."""
    try:
        yield
    except ImageError as error:
        name = describe(source)
        if str(error).startswith(name):
            raise
        raise ImageError(f"{name}: {error}") from None


@contextmanager
def _pillow_pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Hold Pillow's own pixel limit at ``max_pixels`` (None: none) and silence its warning."""
    with _PILLOW_STATE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def open_image(
    file: str | os.PathLike | BinaryIO, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Return ``Image.open(file)`` (header read, pixels not decoded) under our pixel limit.

    Pillow refuses an image over twice its own limit (``Image.MAX_IMAGE_PIXELS``) while opening
    it, before a caller can apply another: for this call Pillow's limit is ``max_pixels``
    (None: no limit), so that limit decides. Pillow's ``DecompressionBombWarning`` (two lines
    on stderr) is silenced for this call only, as this package refuses such images itself
    with one clear line; other warnings pass as usual. Raises ``DecompressionBombError`` for
    an image over twice ``max_pixels``.
    """
    with _pillow_pixel_limit(max_pixels):
        return Image.open(file)


def _decode(file: BinaryIO, name: str, max_pixels: int | None) -> Image.Image:
    """Return the first frame of the image in ``file``, decoded, oriented and in RGB."""
    try:
        image = open_image(file, max_pixels)
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not an image file Pillow can read (corrupt or another format)"
        ) from None
    except Image.DecompressionBombError:  # over twice max_pixels: Pillow gives no size
        raise ImageError(
            f"{name}: over twice the limit of {max_pixels or 0:,} pixels (a possible "
            f"decompression bomb); {_TOO_LARGE_ADVICE}"
        ) from None
    except Exception as error:  # Pillow's plugins raise many types on bad headers
        raise ImageError(f"{name}: corrupt image header ({_first_line(error)})") from None
    # The caller closes the file; a loaded image keeps its pixels after that.
    return _finish(image, name, max_pixels)


def _finish(image: Image.Image, name: str, max_pixels: int | None) -> Image.Image:
    """Return an opened image decoded (first frame), oriented by its EXIF tag and in RGB."""
    if max_pixels is not None and image.width * image.height > max_pixels:
        raise ImageError(
            f"{name}: {image.width}x{image.height} pixels is over the limit of {max_pixels:,} "
            f"(a possible decompression bomb); {_TOO_LARGE_ADVICE}"
        )
    try:
        # Decode now: truncated or damaged data fails here. Some decoders (GIF, ICO, ICNS)
        # check Pillow's limit again while decoding; an image our limit accepts but Pillow's
        # would not is decoded under ours (one at a time: the limit is process-wide).
        if _over_pillows_limit(image.width * image.height):
            with _pillow_pixel_limit(max_pixels):
                image.load()
        else:
            image.load()
    except Exception as error:  # decoders raise OSError, ValueError, EOFError, ...
        raise ImageError(f"{name}: corrupt or truncated image ({_first_line(error)})") from None
    try:
        oriented = ImageOps.exif_transpose(image) or image
    except Exception:  # a damaged EXIF block should not lose a readable photo
        oriented = image
    return to_rgb(oriented, name)


def _over_pillows_limit(pixels: int) -> bool:
    with _PILLOW_STATE_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and pixels > limit


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """Return ``image`` in RGB mode: 16-bit and float scaled to 8 bits, alpha composited on white.

    Pillow's own ``convert("RGB")`` clips 16-bit values at 255 (a 16-bit photo turns white), so
    those modes go through numpy instead.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        return array_to_image(_wide_array(image))
    if mode == "P":
        # A palette may carry transparency (GIF, PNG): go through RGBA so it is honoured.
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "La":  # premultiplied; Pillow converts it to RGBA only by way of LA
        image, mode = image.convert("LA"), "LA"
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError:  # e.g. LAB or multi-channel float TIFFs
        raise ImageError(
            f"{name}: colour mode {mode} cannot be converted to RGB; save it as 8-bit RGB"
        ) from None


def _wide_array(image: Image.Image) -> np.ndarray:
    """Return a 16-bit or float single-channel image as floats in 0..1."""
    array = np.asarray(image)
    if image.mode == "F":
        array = array.astype(np.float32)
        # Float images are 0..1 by convention; 0..255 data is recognised by its range.
        return array / 255.0 if np.nanmax(array, initial=0.0) > 1.0 else array
    array = array.astype(np.float32)
    # "I;16" is 16-bit data (0..65535). "I" (32-bit) comes from 16/32-bit TIFFs or from code
    # that converted an 8-bit image: values above 255 mean a 16-bit range, else an 8-bit one.
    if image.mode == "I" and np.max(array, initial=0.0) <= 255:
        return np.clip(array, 0, 255) / 255.0
    return np.clip(array, 0, 65535) / 65535.0


def array_to_image(array: np.ndarray) -> Image.Image:
    """Return an RGB image from an (H, W), (H, W, 1|3|4) uint8, uint16, bool or float array."""
    array = np.asarray(array)
    shape = "x".join(map(str, array.shape))
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageError(
            f"array of shape {shape} is not an image; expected (H, W), (H, W, 1), (H, W, 3) "
            "or (H, W, 4)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"array of shape {shape} has no pixels")
    if array.dtype == np.uint8:
        data = array
    elif array.dtype == np.bool_:
        data = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        data = np.round(array.astype(np.float32) / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageError(f"array of shape {shape} contains NaN or infinite values")
        data = np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ImageError(
            f"array of dtype {array.dtype} is not supported; use uint8 (0..255), uint16 "
            "(0..65535) or float (0..1)"
        )
    data = np.ascontiguousarray(data)
    if data.ndim == 2:
        return Image.fromarray(data).convert("RGB")
    if data.shape[-1] == 4:
        return to_rgb(Image.fromarray(data))
    return Image.fromarray(data)
