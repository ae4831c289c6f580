from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, generate_uid

from breastcls.data.readers import DataError, image_size, read_dicom, read_image, to_uint8

PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3
RNG = np.random.default_rng(0)
SLOPE, INTERCEPT, CENTER, WIDTH = 2.0, -100.0, 1000.0, 400.0


def _gray8(h: int = 12, w: int = 10) -> np.ndarray:
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def _save(path: Path, image: Image.Image, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def test_gray_png(tmp_path: Path) -> None:
    data = _gray8()
    out = read_image(_save(tmp_path / "g.png", Image.fromarray(data)))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, data)
    rgb = read_image(tmp_path / "g.png", "RGB")
    assert rgb.shape == (12, 10, 3)
    np.testing.assert_array_equal(rgb[..., 1], data)
    assert image_size(tmp_path / "g.png") == (12, 10)


def test_16bit_png_keeps_values(tmp_path: Path) -> None:
    data = RNG.integers(0, 65536, (9, 7), dtype=np.uint16)
    data[0, 0], data[0, 1] = 300, 65535
    path = _save(tmp_path / "g16.PNG", Image.fromarray(data))
    out = read_image(path)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, data)
    rgb = read_image(path, "RGB")
    assert rgb.dtype == np.uint16 and rgb.shape == (9, 7, 3)
    np.testing.assert_array_equal(rgb[..., 2], data)


def test_rgb_png_as_rgb_and_l(tmp_path: Path) -> None:
    data = RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    image = Image.fromarray(data)
    path = _save(tmp_path / "c.png", image)
    np.testing.assert_array_equal(read_image(path, "RGB"), data)
    np.testing.assert_array_equal(read_image(path, "L"), np.asarray(image.convert("L")))


def test_palette_one_bit_and_rgba_png(tmp_path: Path) -> None:
    rgb = Image.fromarray(RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    path = _save(tmp_path / "p.png", palette)
    expected = palette.convert("RGB")
    np.testing.assert_array_equal(read_image(path, "RGB"), np.asarray(expected))
    np.testing.assert_array_equal(read_image(path, "L"), np.asarray(expected.convert("L")))

    bits = _gray8() > 127
    out = read_image(_save(tmp_path / "b.png", Image.fromarray(bits)))
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 255}
    np.testing.assert_array_equal(out == 255, bits)

    rgba = RNG.integers(0, 256, (8, 6, 4), dtype=np.uint8)
    out = read_image(_save(tmp_path / "a.png", Image.fromarray(rgba, "RGBA")), "RGB")
    np.testing.assert_array_equal(out, rgba[..., :3])


def test_jpeg_and_tiff(tmp_path: Path) -> None:
    data = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))
    jpg = read_image(_save(tmp_path / "x.JPG", Image.fromarray(data), quality=95))
    assert jpg.dtype == np.uint8 and jpg.shape == data.shape
    assert np.abs(jpg.astype(int) - data).max() < 12
    assert read_image(tmp_path / "x.JPG", "RGB").shape == (16, 32, 3)
    tif = read_image(_save(tmp_path / "x.tiff", Image.fromarray(data)))
    np.testing.assert_array_equal(tif, data)


def _dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
           syntax: str = ExplicitVRLittleEndian, pixel_data: bytes | None = None,
           window: bool = True) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = photometric
    ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
    if window:
        ds.WindowCenter, ds.WindowWidth = CENTER, WIDTH
    ds.PixelData = pixels.astype(np.uint16).tobytes() if pixel_data is None else pixel_data
    if pixel_data is not None:
        ds["PixelData"].VR = "OB"
    if PYDICOM_3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def _pixels() -> np.ndarray:
    pixels = RNG.integers(0, 4096, (6, 5), dtype=np.uint16)
    pixels[0, :3] = [0, 4095, 550]  # 550 * 2 - 100 = the window center
    return pixels


def test_dicom_rescale_exact(tmp_path: Path) -> None:
    pixels = _pixels()
    path = _dicom(tmp_path / "a.dcm", pixels)
    out = read_dicom(path, voi="none")
    assert out.dtype == np.float32 and out.shape == pixels.shape
    np.testing.assert_array_equal(out, SLOPE * pixels.astype(np.float32) + INTERCEPT)
    assert image_size(path) == (6, 5)
    np.testing.assert_array_equal(read_image(path, voi="none"), out)
    assert read_image(path, "RGB").shape == (6, 5, 3)


def test_dicom_window(tmp_path: Path) -> None:
    pixels = _pixels()
    auto = read_dicom(_dicom(tmp_path / "w.dcm", pixels))
    assert auto.min() >= 0.0 and auto.max() <= 1.0
    assert auto[0, 2] == pytest.approx(0.5, abs=1 / (WIDTH - 1))
    assert auto[0, 0] == 0.0 and auto[0, 1] == 1.0  # far outside the window: clipped
    hu = SLOPE * pixels.astype(np.float64) + INTERCEPT
    expected = np.clip((hu - (CENTER - 0.5)) / (WIDTH - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(auto, expected, atol=1e-6)
    given = read_dicom(tmp_path / "w.dcm", voi="window", window=(CENTER, 2 * WIDTH))
    assert given[0, 2] == pytest.approx(0.5, abs=1 / (2 * WIDTH - 1))
    assert not np.allclose(given, auto)
    with pytest.raises(ValueError, match="window"):
        read_dicom(tmp_path / "w.dcm", voi="window")


def test_dicom_monochrome1_inverted(tmp_path: Path) -> None:
    pixels = _pixels()
    mono2 = _dicom(tmp_path / "m2.dcm", pixels)
    mono1 = _dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1")
    np.testing.assert_allclose(read_dicom(mono1), 1.0 - read_dicom(mono2), atol=1e-6)
    lo, hi = INTERCEPT, SLOPE * 4095 + INTERCEPT
    np.testing.assert_allclose(read_dicom(mono1, voi="none"),
                               lo + hi - read_dicom(mono2, voi="none"))


def test_dicom_without_suffix_is_sniffed(tmp_path: Path) -> None:
    pixels = _pixels()
    path = _dicom(tmp_path / "IM0001", pixels, window=False)
    np.testing.assert_array_equal(read_image(path), SLOPE * pixels.astype(np.float32) + INTERCEPT)


def test_dicom_undecodable_names_what_to_install(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "j2k.dcm", _pixels(), syntax=JPEG2000,
                  pixel_data=encapsulate([b"\xff\x4f\xff\x51 not a codestream" * 4]))
    with pytest.raises(DataError, match="pylibjpeg") as err:
        read_image(path)
    assert "j2k.dcm" in str(err.value) and "JPEG 2000" in str(err.value)


def test_dicom_without_pixels(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "np.dcm", _pixels())
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(DataError, match=r"np\.dcm.*no pixel data"):
        read_image(path)


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.png.*not found"):
        read_image(tmp_path / "missing.png")

    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64), dtype=np.uint8)).save(buffer, "PNG")
    (tmp_path / "half.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DataError, match=r"half\.png"):
        read_image(tmp_path / "half.png")

    (tmp_path / "noise.png").write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"noise\.png"):
        read_image(tmp_path / "noise.png")
    with pytest.raises(DataError, match=r"noise\.png"):
        image_size(tmp_path / "noise.png")

    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png.*empty"):
        read_image(tmp_path / "empty.png")

    (tmp_path / "scan.xyz").write_bytes(b"data")
    with pytest.raises(DataError, match=r"scan\.xyz.*\.png.*\.dcm"):
        read_image(tmp_path / "scan.xyz")

    (tmp_path / "bad.dcm").write_bytes(b"not dicom at all" * 20)
    with pytest.raises(DataError, match=r"bad\.dcm"):
        read_image(tmp_path / "bad.dcm")


def test_to_uint8() -> None:
    u16 = np.array([[100, 300], [1100, 100]], dtype=np.uint16)
    out = to_uint8(u16)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 51], [255, 0]])
    floats = np.array([-1.0, 0.0, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(floats), [0, 128, 255])
    u8 = _gray8()
    assert to_uint8(u8) is u8
    np.testing.assert_array_equal(to_uint8(np.full((3, 3), 7.5)), np.zeros((3, 3), np.uint8))


def test_array_rows_read_as_stored(tmp_path):
    stack = np.arange(2 * 4 * 5, dtype=np.uint16).reshape(2, 4, 5)
    np.save(tmp_path / "gray.npy", stack)
    np.savez(tmp_path / "set.npz", rgb=np.full((3, 4, 5, 3), 7, np.uint8),
             mask=np.ones((1, 4, 5), bool))
    assert np.array_equal(read_image(f"{tmp_path / 'gray.npy'}::1"), stack[1])
    assert read_image(f"{tmp_path / 'set.npz'}::rgb::2", "RGB").shape == (4, 5, 3)
    assert read_image(f"{tmp_path / 'set.npz'}::mask::0").max() == 255
    assert image_size(f"{tmp_path / 'set.npz'}::rgb::0") == (4, 5)


@pytest.mark.parametrize(("name", "message"), [
    ("gray.npy::5", "outside the array's 2 rows"), ("set.npz::nope::0", "no array 'nope'"),
    ("gray.npy::x", "not an integer"), ("set.npz::0", "<file>.npz::<key>::<row>"),
    ("missing.npy::0", "file not found")])
def test_bad_array_rows_name_the_file(tmp_path, name, message):
    np.save(tmp_path / "gray.npy", np.zeros((2, 4, 4), np.uint8))
    np.savez(tmp_path / "set.npz", rgb=np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=re.escape(message)):
        read_image(f"{tmp_path / name}")
