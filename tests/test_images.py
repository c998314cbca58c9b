from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vlalign.data.images import ImageError, load_image, load_mask_png


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_rgb_png_round_trip(tmp_path):
    pixels = _noise(13, 17)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.mode == "RGB" and image.size == (17, 13)
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_mask_png(tmp_path / "nope.png")


def test_garbage_file_is_image_error(tmp_path):
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageError, match=r"garbage\.jpg.*cannot be decoded"):
        load_image(path)
    assert issubclass(ImageError, ValueError)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_raises_instead_of_grey(tmp_path, fmt):
    buffer = io.BytesIO()
    Image.fromarray(_noise(64, 64)).save(buffer, format=fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) * 2 // 3])  # the header survives, the pixel data stops part-way
    with pytest.raises(ImageError, match=rf"cut\.{fmt.lower()}.*cannot be decoded"):
        load_image(path)


def test_pixel_limit_checked_from_header_before_decoding(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(_noise(40, 50)).save(buffer, format="PNG")
    path = tmp_path / "big.png"
    path.write_bytes(buffer.getvalue()[:200])  # undecodable body: only a header check can give the size error
    with pytest.raises(ImageError, match=r"big\.png is 50x40 = 2000 pixels.*limit of 1000"):
        load_image(path, max_pixels=1000)
    Image.fromarray(_noise(40, 50)).save(path)
    assert load_image(path, max_pixels=2000).size == (50, 40)


def test_pil_decompression_bomb_becomes_image_error(tmp_path, monkeypatch):
    Image.fromarray(_noise(20, 20)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # PIL refuses above 2 * 50 pixels
    with pytest.raises(ImageError, match=r"bomb\.png.*decompression-bomb"):
        load_image(tmp_path / "bomb.png")


def _save(tmp_path, image: Image.Image, name: str) -> str:
    path = tmp_path / name
    image.save(path)
    return path


def test_grey_and_alpha_modes(tmp_path):
    grey = np.array([[0, 100], [200, 255]], np.uint8)
    out = np.asarray(load_image(_save(tmp_path, Image.fromarray(grey, "L"), "l.png")))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))

    la = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(np.full((2, 2), 7, np.uint8))])
    out = np.asarray(load_image(_save(tmp_path, la, "la.png")))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))  # alpha dropped, not composited

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, 0, 3] = 0  # fully transparent: compositing on black would give (0, 0, 0)
    out = np.asarray(load_image(_save(tmp_path, Image.fromarray(rgba, "RGBA"), "rgba.png")))
    np.testing.assert_array_equal(out, np.broadcast_to(np.array([10, 20, 30], np.uint8), (2, 2, 3)))


def test_palette_and_bilevel_modes(tmp_path):
    palette_image = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    palette_image.putpalette([5, 6, 7, 200, 0, 0, 0, 0, 250] + [0] * (256 * 3 - 9))
    out = np.asarray(load_image(_save(tmp_path, palette_image, "p.png")))
    np.testing.assert_array_equal(out[0, 0], [5, 6, 7])
    np.testing.assert_array_equal(out[0, 1], [200, 0, 0])
    np.testing.assert_array_equal(out[1, 0], [0, 0, 250])

    bilevel = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    out = np.asarray(load_image(_save(tmp_path, bilevel, "one.png")))
    np.testing.assert_array_equal(out[..., 0], [[0, 255], [255, 0]])


@pytest.mark.parametrize("mode,name", [("I;16", "g16.png"), ("I", "g32.tiff")])
def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path, mode, name):
    values = np.array([[0, 257], [32896, 65535]], np.uint16)
    image = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values.astype(np.int32), "I")
    path = _save(tmp_path, image, name)
    assert Image.open(path).mode == mode
    out = np.asarray(load_image(path))
    np.testing.assert_array_equal(out[..., 0], [[0, 1], [128, 255]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_cmyk_to_rgb(tmp_path):
    cmyk = np.zeros((2, 3, 4), np.uint8)
    cmyk[0, 0] = (255, 0, 0, 0)  # pure cyan
    out = np.asarray(load_image(_save(tmp_path, Image.fromarray(cmyk, "CMYK"), "c.tiff")))
    np.testing.assert_array_equal(out[0, 0], [0, 255, 255])
    np.testing.assert_array_equal(out[1, 2], [255, 255, 255])


def test_float_mode_is_refused_with_mode_named(tmp_path):
    path = _save(tmp_path, Image.fromarray(np.zeros((2, 2), np.float32), "F"), "f.tiff")
    with pytest.raises(ImageError, match=r"f\.tiff has mode 'F'"):
        load_image(path)


def test_exif_transpose_is_opt_in(tmp_path):
    image = Image.fromarray(_noise(10, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rot.jpg"
    image.save(path, exif=exif.tobytes())
    assert load_image(path).size == (30, 10)
    assert load_image(path, exif_transpose=True).size == (10, 30)


def test_mask_png_palette_index_grey_and_colour(tmp_path):
    indices = np.array([[0, 2, 0], [1, 0, 0]], np.uint8)
    palette_mask = Image.fromarray(indices, "P")
    palette_mask.putpalette([255, 255, 255] + [128, 0, 0] * 255)  # index 0 has a nonzero colour
    out = load_mask_png(_save(tmp_path, palette_mask, "p.png"))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 1, 0], [1, 0, 0]])

    out = load_mask_png(_save(tmp_path, Image.fromarray(indices * 100, "L"), "l.png"))
    np.testing.assert_array_equal(out, [[0, 1, 0], [1, 0, 0]])

    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha must not count as foreground
    rgba[1, 2, 1] = 9
    out = load_mask_png(_save(tmp_path, Image.fromarray(rgba, "RGBA"), "c.png"))
    np.testing.assert_array_equal(out, [[0, 0, 0], [0, 0, 1]])


def test_mask_png_corrupt(tmp_path):
    path = tmp_path / "m.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ImageError, match=r"mask .*m\.png.*cannot be decoded"):
        load_mask_png(path)
