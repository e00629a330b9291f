"""Image loading: every common format and mode becomes the right RGB image; bad files fail alone.

Real pixels throughout: the photos bundled in scikit-image's wheel, re-encoded in each format.
Lossless formats must decode to exactly the source pixels; lossy JPEG/WebP to within the
codec's error (stated per test).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from mlx_inception.data.images import is_image_file, load_image
from mlx_inception.errors import ImageError

skimage_data = pytest.importorskip("skimage.data")
SKIMAGE = os.path.dirname(skimage_data.__file__)


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    with Image.open(os.path.join(SKIMAGE, "chelsea.png")) as image:
        return image.convert("RGB")


def save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options",
    [
        ("cat.png", {}),
        ("cat.bmp", {}),
        ("cat.tiff", {}),
        ("cat.tif", {"compression": "tiff_lzw"}),
        ("cat.webp", {"lossless": True}),
        ("cat.ppm", {}),
    ],
)
def test_lossless_formats_decode_to_exactly_the_source_pixels(tmp_path, chelsea, name, options):
    image = load_image(save(chelsea, tmp_path / name, **options))
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), np.asarray(chelsea))


@pytest.mark.parametrize(
    "name, options", [("cat.jpg", {"quality": 95}), ("cat.webp", {"quality": 95})]
)
def test_lossy_formats_decode_close_to_the_source(tmp_path, chelsea, name, options):
    # Quality 95 codecs: a mean absolute error of about 1 grey level on this photo.
    image = load_image(save(chelsea, tmp_path / name, **options))
    assert image.mode == "RGB" and image.size == chelsea.size
    assert np.abs(pixels(image) - pixels(chelsea)).mean() < 3


def test_animated_gif_gives_its_first_frame(tmp_path, chelsea):
    frames = [chelsea.quantize(64), chelsea.rotate(180).quantize(64)]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as gif:
        assert gif.n_frames == 2
        first = gif.convert("RGB")
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.asarray(first))
    np.testing.assert_array_equal(np.asarray(first), np.asarray(frames[0].convert("RGB")))


def test_the_bundled_gif_loads(tmp_path):
    image = load_image(os.path.join(SKIMAGE, "no_time_for_that_tiny.gif"))
    assert image.mode == "RGB" and image.size == (14, 25)


def test_file_contents_decide_the_format_not_the_name(tmp_path, chelsea):
    image = load_image(save(chelsea, tmp_path / "actually_a_png.jpg", format="PNG"))
    np.testing.assert_array_equal(np.asarray(image), np.asarray(chelsea))


def test_bytes_and_pil_images_and_paths_give_the_same_image(tmp_path, chelsea):
    path = save(chelsea, tmp_path / "cat.png")
    from_path = np.asarray(load_image(path))
    np.testing.assert_array_equal(np.asarray(load_image(path.read_bytes())), from_path)
    np.testing.assert_array_equal(np.asarray(load_image(str(path))), from_path)
    np.testing.assert_array_equal(np.asarray(load_image(chelsea)), from_path)


# --- EXIF orientation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation, transpose",
    [
        (3, Image.Transpose.ROTATE_180),
        (6, Image.Transpose.ROTATE_270),
        (8, Image.Transpose.ROTATE_90),
        (2, Image.Transpose.FLIP_LEFT_RIGHT),
    ],
)
def test_exif_orientation_is_applied(tmp_path, chelsea, orientation, transpose):
    # A camera stores the sensor's pixels and an orientation tag; viewers rotate by the tag.
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(chelsea, tmp_path / "camera.png", exif=exif)
    image = load_image(path)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(chelsea.transpose(transpose)))


def test_exif_orientation_is_applied_to_jpeg_photos(tmp_path, chelsea):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image = load_image(save(chelsea, tmp_path / "phone.jpg", exif=exif, quality=95))
    assert image.size == (chelsea.height, chelsea.width)
    expected = pixels(chelsea.transpose(Image.Transpose.ROTATE_270))
    assert np.abs(pixels(image) - expected).mean() < 3  # JPEG quality 95


def test_exif_orientation_is_applied_to_pil_images_passed_in(tmp_path, chelsea):
    exif = Image.Exif()
    exif[0x0112] = 3
    with Image.open(save(chelsea, tmp_path / "camera.png", exif=exif)) as opened:
        image = load_image(opened)
    np.testing.assert_array_equal(
        np.asarray(image), np.asarray(chelsea.transpose(Image.Transpose.ROTATE_180))
    )


# --- colour modes ---------------------------------------------------------------------------


def test_grayscale_becomes_three_equal_channels():
    image = load_image(os.path.join(SKIMAGE, "coins.png"))
    with Image.open(os.path.join(SKIMAGE, "coins.png")) as gray:
        gray_pixels = np.asarray(gray)
    array = np.asarray(image)
    assert image.mode == "RGB"
    for channel in range(3):
        np.testing.assert_array_equal(array[..., channel], gray_pixels)


def test_palette_png_becomes_its_palette_colours(tmp_path, chelsea):
    quantized = chelsea.quantize(256)
    image = load_image(save(quantized, tmp_path / "palette.png"))
    np.testing.assert_array_equal(np.asarray(image), np.asarray(quantized.convert("RGB")))


def test_transparent_pixels_are_composited_on_white_and_opaque_ones_kept(tmp_path, chelsea):
    # The photo with its left half made fully transparent (its colours still stored there).
    rgba = np.dstack([np.asarray(chelsea), np.full((chelsea.height, chelsea.width), 255, np.uint8)])
    rgba[:, :200, 3] = 0
    image = np.asarray(load_image(save(Image.fromarray(rgba), tmp_path / "cutout.png")))
    assert (image[:, :200] == 255).all()
    np.testing.assert_array_equal(image[:, 200:], np.asarray(chelsea)[:, 200:])


def test_half_transparent_pixels_are_blended_with_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 128  # black at about half opacity -> about mid grey on white
    image = np.asarray(load_image(Image.fromarray(rgba)))
    assert np.all(np.abs(image.astype(int) - 127) <= 1)


def test_palette_transparency_is_honoured(tmp_path):
    palette_image = Image.new("P", (8, 8), 0)
    palette_image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette_image.paste(1, (0, 0, 4, 8))  # left half red, right half index 0 = transparent black
    path = save(palette_image, tmp_path / "logo.gif", transparency=0)
    image = np.asarray(load_image(path))
    assert (image[:, :4] == (255, 0, 0)).all()
    assert (image[:, 4:] == 255).all()


def test_cmyk_converts_back_to_the_rgb_it_came_from(tmp_path, chelsea):
    # Pillow's RGB -> CMYK is exact (K = 0), so a lossless CMYK TIFF must come back unchanged.
    image = load_image(save(chelsea.convert("CMYK"), tmp_path / "print.tiff"))
    np.testing.assert_array_equal(np.asarray(image), np.asarray(chelsea))


def test_cmyk_jpeg_converts_close_to_the_source(tmp_path, chelsea):
    path = save(chelsea.convert("CMYK"), tmp_path / "print.jpg", quality=95)
    with Image.open(path) as opened:
        assert opened.mode == "CMYK"
    image = load_image(path)
    assert np.abs(pixels(image) - pixels(chelsea)).mean() < 4  # JPEG quality 95, 4 channels


@pytest.mark.parametrize("name", ["depth.png", "depth.tiff"])
def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, name):
    # 16-bit values 0, 257 * 128 and 65535 are 8-bit 0, 128 and 255; a plain convert("RGB")
    # would clip everything above 255 to white.
    values = np.array([[0, 257 * 128, 65535, 1000]], dtype=np.uint16).repeat(3, axis=0)
    path = tmp_path / name
    Image.fromarray(values).save(path)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")
    image = np.asarray(load_image(path))
    np.testing.assert_array_equal(image[0, :, 0], [0, 128, 255, round(1000 / 257)])
    assert (image[..., 0] == image[..., 2]).all()


def test_16_bit_grayscale_photo_matches_its_8_bit_version(tmp_path):
    with Image.open(os.path.join(SKIMAGE, "camera.png")) as camera:
        eight_bit = np.asarray(camera)
    path = tmp_path / "camera16.png"
    Image.fromarray(eight_bit.astype(np.uint16) * 257).save(path)
    np.testing.assert_array_equal(np.asarray(load_image(path))[..., 1], eight_bit)


def test_32_bit_integer_images_keep_8_bit_values_and_scale_16_bit_ones():
    gray = np.asarray(skimage_data.camera())
    as_int32 = Image.fromarray(gray.astype(np.int32))  # what Image.convert("I") gives
    assert as_int32.mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(as_int32))[..., 0], gray)
    wide = Image.fromarray(gray.astype(np.int32) * 257)
    np.testing.assert_array_equal(np.asarray(load_image(wide))[..., 0], gray)


def test_one_bit_images_become_black_and_white(tmp_path):
    bits = Image.new("1", (8, 8), 0)
    bits.paste(1, (0, 0, 8, 4))
    image = np.asarray(load_image(save(bits, tmp_path / "scan.png")))
    assert (image[:4] == 255).all() and (image[4:] == 0).all()


# --- arrays ---------------------------------------------------------------------------------


def test_uint8_arrays_are_taken_as_rgb_pixels(chelsea):
    array = np.asarray(chelsea)
    np.testing.assert_array_equal(np.asarray(load_image(array)), array)


def test_float_arrays_are_taken_as_0_to_1():
    array = np.asarray(skimage_data.chelsea())
    image = load_image(array.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(np.asarray(image), array)


def test_uint16_and_grayscale_and_rgba_arrays_convert():
    gray = skimage_data.camera()
    np.testing.assert_array_equal(np.asarray(load_image(gray))[..., 0], gray)
    np.testing.assert_array_equal(
        np.asarray(load_image(gray.astype(np.uint16) * 257))[..., 2], gray
    )
    rgba = np.dstack([skimage_data.chelsea(), np.full((300, 451), 255, np.uint8)])
    np.testing.assert_array_equal(np.asarray(load_image(rgba)), skimage_data.chelsea())


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 4, 2), np.uint8), "shape 4x4x2 is not an image"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape 2x4x4x3 is not an image"),
        (np.zeros((0, 4, 3), np.uint8), "has no pixels"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
        (np.zeros((4, 4), np.int64), "dtype int64 is not supported"),
    ],
)
def test_arrays_that_are_not_images_are_refused(array, message):
    with pytest.raises(ImageError, match=message):
        load_image(array)


# --- bad files ------------------------------------------------------------------------------


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(ImageError) as error:
        load_image(tmp_path / "nope.jpg")
    assert one_line(error) == f"{tmp_path / 'nope.jpg'}: no such file"


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file") as error:
        load_image(tmp_path / "empty.jpg")
    one_line(error)


def test_folder_is_refused(tmp_path):
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_text_file_named_like_an_image_is_refused(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture\n")
    with pytest.raises(ImageError, match="not an image file") as error:
        load_image(tmp_path / "notes.jpg")
    one_line(error)


@pytest.mark.parametrize("name", ["cut.jpg", "cut.png", "cut.webp", "cut.gif", "cut.tiff"])
def test_truncated_files_are_refused(tmp_path, chelsea, name):
    whole = io.BytesIO()
    image = chelsea.quantize(64) if name.endswith(".gif") else chelsea
    image.save(whole, format=Image.registered_extensions()["." + name.split(".")[1]])
    data = whole.getvalue()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as error:
        load_image(tmp_path / name)
    assert one_line(error).startswith(f"{tmp_path / name}: ")


def test_corrupt_jpeg_header_is_refused(tmp_path, chelsea):
    buffer = io.BytesIO()
    chelsea.save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    data[2:200] = os.urandom(198)  # overwrite the quantisation and Huffman tables
    (tmp_path / "corrupt.jpg").write_bytes(bytes(data))
    with pytest.raises(ImageError) as error:
        load_image(tmp_path / "corrupt.jpg")
    one_line(error)


def png_with_size(width: int, height: int) -> bytes:
    """A tiny valid PNG header claiming ``width`` x ``height`` pixels: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_with_size(20_000, 20_000))  # 400 megapixels
    with pytest.raises(ImageError, match="decompression bomb") as error:
        load_image(tmp_path / "bomb.png")
    one_line(error)


@pytest.mark.parametrize("side", [10_000, 20_000], ids=["over-the-limit", "over-twice-it"])
def test_a_decompression_bomb_gives_one_line_of_advice_and_no_pillow_warning(tmp_path, side):
    # Pillow warns between its limit and twice it (100 megapixels here) and raises above (400):
    # either way the loader's own line is all a user sees, with advice that needs no Python.
    (tmp_path / "bomb.png").write_bytes(png_with_size(side, side))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError) as error:
            load_image(tmp_path / "bomb.png")
    assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []
    one_line(error)
    message = str(error.value)
    assert "decompression bomb" in message and "max_pixels" not in message
    assert message.endswith("if you trust the file, downscale it and try again")


def test_pixel_limit_is_adjustable(tmp_path, chelsea):
    path = save(chelsea, tmp_path / "cat.png")
    with pytest.raises(ImageError, match="451x300 pixels is over the limit of 100,000"):
        load_image(path, max_pixels=100_000)
    assert load_image(path, max_pixels=None).size == chelsea.size


# 195 megapixels: over twice Pillow's own limit (2 x 89,478,485), so Image.open itself refuses
# it unless our max_pixels is what Pillow applies.
LARGE_SIZE = (15_000, 13_000)


@pytest.fixture(scope="module")
def large_png(tmp_path_factory):
    """A real 15000x13000 1-bit PNG of 24 KB: its top-left 8x1 pixels white, the rest black."""
    width, height = LARGE_SIZE
    row_bytes = (width + 7) // 8  # 1 bit per pixel; each row starts with its filter byte (0)
    compressor = zlib.compressobj(9)
    rows = [compressor.compress(b"\0\xff" + b"\0" * (row_bytes - 1))]
    rows += [compressor.compress(b"\0" * (1 + row_bytes)) for _ in range(height - 1)]
    rows.append(compressor.flush())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    path = tmp_path_factory.mktemp("large") / "large.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", b"".join(rows))
        + chunk(b"IEND", b"")
    )
    yield path
    path.unlink()  # decoded it is about 0.8 GB; on disk 24 KB, but leave nothing behind


def test_an_image_over_pillows_own_limit_loads_with_max_pixels_none(large_png):
    pillows_limit = Image.MAX_IMAGE_PIXELS
    image = load_image(large_png, max_pixels=None)
    assert image.size == LARGE_SIZE and image.mode == "RGB"
    assert image.getpixel((0, 0)) == image.getpixel((7, 0)) == (255, 255, 255)
    assert image.getpixel((8, 0)) == image.getpixel((14_999, 12_999)) == (0, 0, 0)
    assert Image.MAX_IMAGE_PIXELS == pillows_limit  # Pillow's limit is put back


def test_our_max_pixels_not_pillows_limit_refuses_a_large_image_before_decoding(large_png):
    # 190 million is over Pillow's refusal threshold (178,956,970) and under the image's size.
    with pytest.raises(ImageError, match="15000x13000 pixels is over the limit of 190,000,000"):
        load_image(large_png, max_pixels=190_000_000)


def test_a_truncated_file_opened_by_the_caller_is_refused(tmp_path, chelsea):
    buffer = io.BytesIO()
    chelsea.save(buffer, format="PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[:5000])
    with Image.open(tmp_path / "cut.png") as lazy:  # Pillow decodes only on first use
        with pytest.raises(ImageError, match="corrupt or truncated"):
            load_image(lazy)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_damaged_exif_block_keeps_the_photo(tmp_path, chelsea):
    buffer = io.BytesIO()
    chelsea.save(buffer, format="JPEG", quality=95, exif=b"Exif\x00\x00MM\x00*garbage")
    image = load_image(buffer.getvalue())
    assert image.size == chelsea.size


@pytest.mark.parametrize(
    "mode", ["1", "L", "LA", "La", "P", "PA", "RGBX", "RGBa", "CMYK", "YCbCr", "HSV", "I", "F"]
)
def test_every_pillow_colour_mode_becomes_rgb(mode):
    gray = Image.fromarray(np.asarray(skimage_data.camera())[:8, :8])  # real grey levels
    # Pillow reaches some modes only by way of another one.
    by_way_of = {"RGBa": "RGBA", "La": "LA", "PA": "LA"}
    source = (
        gray.convert(by_way_of[mode]).convert(mode) if mode in by_way_of else gray.convert(mode)
    )
    image = load_image(source)
    assert image.mode == "RGB" and image.size == (8, 8)


def test_empty_bytes_are_refused():
    with pytest.raises(ImageError, match="empty data"):
        load_image(b"")


def test_unsupported_source_types_are_refused():
    with pytest.raises(ImageError, match="cannot read an image from a int"):
        load_image(42)


def test_image_file_names_are_recognised_by_ending_and_hidden_files_skipped():
    assert is_image_file("a/b/photo.JPG") and is_image_file("x.webp") and is_image_file("y.tif")
    assert not is_image_file("notes.txt")
    assert not is_image_file("._photo.jpg")  # a macOS resource fork, not an image
