"""FITS cutouts: WCS, beam keywords, NaN regions, bad images, views."""

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from conftest import SDC1_IMAGE, gaussian_image, sky_header, write_image
from PIL import Image

from radiodet import cutouts, images
from radiodet.cutouts import CutoutConfig, make_cutouts
from radiodet.errors import ImageError
from radiodet.images import robust_rms
from radiodet.schema import read_parquet_metadata, read_units
from radiodet.views import ViewConfig, field_interval, write_views

REGIONS = {"train": [{"x_max": 620, "y_max": 752}], "val": [{"x_max": 620, "y_min": 752}], "test": [{"x_min": 640}]}


def _cut(tmp_path, image, **kwargs):
    config = kwargs.pop("config", CutoutConfig(size=205))
    manifest = make_cutouts(image, tmp_path / "fits", tmp_path / "manifest.parquet", tmp_path / "sample.npy",
                            field="f", config=config, **kwargs)
    written = pd.read_parquet(tmp_path / "manifest.parquet")
    assert written.equals(manifest.to_pandas())  # the returned table is the file's
    return written


def test_sdc1_4d_cutouts_carry_the_parent_wcs_beam_and_pixels(tmp_path):
    manifest = _cut(tmp_path, SDC1_IMAGE, regions=REGIONS)
    assert len(manifest) == 30 and set(manifest["split"]) == {"train", "val", "test"}
    parent_header = fits.getheader(SDC1_IMAGE)
    parent_wcs = WCS(parent_header).celestial
    parent = fits.getdata(SDC1_IMAGE)[0, 0]
    rng = np.random.default_rng(0)
    for row in manifest.sample(5, random_state=1).itertuples():
        with fits.open(tmp_path / row.file) as hdul:
            header, data = hdul[0].header, hdul[0].data
        assert data.shape == (205, 205) and header["NAXIS"] == 2
        np.testing.assert_array_equal(data, parent[row.y0:row.y1, row.x0:row.x1])
        assert header["BMAJ"] == pytest.approx(parent_header["BMAJ"]) and header["BUNIT"] == "JY/BEAM"
        assert header["FREQ"] == pytest.approx(5.6e8)
        assert (header["CUTX0"], header["CUTY0"]) == (row.x0, row.y0)
        x, y = rng.uniform(-0.5, 204.5, 20), rng.uniform(-0.5, 204.5, 20)
        ra_c, dec_c = WCS(header).pixel_to_world_values(x, y)
        ra_p, dec_p = parent_wcs.pixel_to_world_values(x + row.x0, y + row.y0)
        np.testing.assert_allclose(ra_c, ra_p, atol=1e-10)
        np.testing.assert_allclose(dec_c, dec_p, atol=1e-10)
    # RA 359.x: the field sits west of RA 0 and the manifest folds RA into [0, 360)
    assert manifest["ra_center"].between(359.5, 360).all()
    assert read_units(tmp_path / "manifest.parquet")["ra_center"] == "deg"
    meta = read_parquet_metadata(tmp_path / "manifest.parquet")
    assert meta["shape"] == [957, 1041] and meta["beam_arcsec"][0] == pytest.approx(1.5)


def _astropy_bytes(image_path, row) -> bytes:
    """The cutout of manifest ``row`` as astropy writes it from the same header (cutout_header + RMSMAD)."""
    import io

    from radiodet.cutouts import cutout_header
    from radiodet.images import open_image
    from radiodet.tiling import Tile

    with open_image(image_path) as image:
        tile = Tile(x0=row.x0, y0=row.y0, x1=row.x1, y1=row.y1, split=row.split)
        header = cutout_header(image, tile, cutout_id=row.cutout_id, field=row.field)
        header["RMSMAD"] = (row.rms_mad, "1.4826 x median absolute deviation")
        buffer = io.BytesIO()
        fits.PrimaryHDU(image.read(row.y0, row.y1, row.x0, row.x1), header=header).writeto(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("layout", ["ours", "astropy's"])
def test_every_cutout_file_is_what_astropy_writes_from_its_header(tmp_path, monkeypatch, caplog, layout):
    # the writer lays out the cutout id and noise cards itself; where its layout disagreed with
    # astropy's on the first card (simulated), astropy formats them all and the files are the same
    if layout == "astropy's":
        monkeypatch.setattr(cutouts, "_simple_card", lambda key, value, comment: f"{key:8}= {value!r}".ljust(80))
    manifest = _cut(tmp_path, SDC1_IMAGE, regions=REGIONS)
    assert len(manifest) == 30
    for row in manifest.itertuples():
        assert (tmp_path / row.file).read_bytes() == _astropy_bytes(SDC1_IMAGE, row), row.file
    assert ("differs from astropy's" in caplog.text) == (layout == "astropy's")


@pytest.mark.parametrize("value", [1.2345678901234567e-06, 1e-06, 3.0000000000000004e-07, 0.0, -2.5e-05, 1e16, 1.5e300,
                                   123456789.12345679, "f_x00000_y00000", "it's", "a", "x" * 40])
def test_simple_cards_are_astropy_s_or_left_to_astropy(value):
    for comment in ("1.4826 x median absolute deviation", None, "y" * 70):
        card = cutouts._simple_card("RMSMAD", value, comment)
        if card is not None:
            assert card == fits.Card("RMSMAD", value, comment).image
        else:  # only where value and comment together pass the 80 columns (astropy then cuts the comment)
            assert comment is not None and 10 + len(repr(value)) + 3 + len(comment) > 80
    for value in (float("nan"), float("inf"), 3, True, "", "é"):
        assert cutouts._simple_card("RMSMAD", value, None) is None


def test_cutouts_read_the_image_in_bands_never_whole(tmp_path, monkeypatch):
    calls = []
    original = images.SkyImage.read

    def spy(self, y0, y1, x0=0, x1=None, **options):
        calls.append((y1 - y0, (x1 if x1 is not None else self.shape[1]) - x0))
        return original(self, y0, y1, x0, x1, **options)

    monkeypatch.setattr(images.SkyImage, "read", spy)
    _cut(tmp_path, SDC1_IMAGE, regions=REGIONS)
    assert calls and max(rows for rows, _ in calls) == 205


def test_nan_regions_are_measured_and_mostly_nan_cutouts_dropped(tmp_path):
    data = gaussian_image(300, 200, [], noise=1.0)
    data[:, :100] = np.nan          # first column of tiles: all NaN
    data[:100, 100:160] = np.nan    # second tile: 60 % NaN
    data[:100, 200:210] = np.nan    # third tile: 10 % NaN
    image = write_image(tmp_path / "nan.fits", data, sky_header(300, 200))
    manifest = _cut(tmp_path, image, config=CutoutConfig(size=100, max_nan_fraction=0.5))
    assert sorted(zip(manifest["x0"], manifest["y0"])) == [(100, 100), (200, 0), (200, 100)]
    row = manifest[(manifest["x0"] == 200) & (manifest["y0"] == 0)].iloc[0]
    assert row["nan_fraction"] == pytest.approx(0.1)
    assert row["rms_mad"] == pytest.approx(1.0, rel=0.1)
    assert np.isfinite(np.load(tmp_path / "sample.npy")).all()


def test_all_nan_image_is_an_error_and_leaves_nothing(tmp_path):
    image = write_image(tmp_path / "allnan.fits", np.full((100, 100), np.nan), sky_header(100, 100))
    with pytest.raises(ImageError, match="all-NaN"):
        _cut(tmp_path, image, config=CutoutConfig(size=50))
    assert not (tmp_path / "fits").exists() and not (tmp_path / "manifest.parquet").exists()
    assert not list(tmp_path.glob(".fits.*"))


def test_truncated_fits_is_an_error_naming_the_file(tmp_path):
    good = write_image(tmp_path / "good.fits", np.zeros((100, 100)), sky_header(100, 100))
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(good.read_bytes()[:2880 + 5000])
    with pytest.raises(ImageError, match="truncated") as err:
        _cut(tmp_path, truncated, config=CutoutConfig(size=50))
    assert str(truncated) in str(err.value)


def test_image_without_celestial_wcs_is_an_error(tmp_path):
    path = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.zeros((50, 50), np.float32)).writeto(path)
    with pytest.raises(ImageError, match="no celestial WCS"):
        _cut(tmp_path, path, config=CutoutConfig(size=50))


def test_robust_rms_ignores_nan_and_outliers():
    values = np.random.default_rng(3).normal(0, 2.0, 100_000)
    values[:500] = 1e3
    values[500:1000] = np.nan
    rms, median = robust_rms(values)
    assert rms == pytest.approx(2.0, rel=0.03) and median == pytest.approx(0.0, abs=0.05)


def _reference_rms(values):
    finite = values[np.isfinite(values)].astype(np.float64)
    median = np.median(finite)
    return images.MAD_TO_SIGMA * float(np.median(np.abs(finite - median))), float(median)


@pytest.mark.parametrize("shape", [(205, 205), (204, 205), (60, 60), (1,), (2,)])
def test_robust_rms_equals_numpy_medians_on_the_real_sdc1_image(shape):
    # the selection must give np.median's values exactly (odd and even counts), in Jy/beam (~1e-6)
    parent = fits.getdata(SDC1_IMAGE)[0, 0].astype(np.float32)
    rng = np.random.default_rng(17)
    size = int(np.prod(shape))
    for _ in range(20):
        flat = parent.ravel()
        start = int(rng.integers(0, flat.size - size))
        values = flat[start:start + size].reshape(shape).copy()
        if size > 100:
            values.ravel()[rng.integers(0, size, size // 50)] = np.nan
        before = values.copy()
        assert robust_rms(values) == _reference_rms(values)
        np.testing.assert_array_equal(values, before)  # the caller's array is left alone
        assert robust_rms(values.astype(">f4")) == _reference_rms(values)  # as a FITS file stores them
    assert abs(robust_rms(values)[0]) < 1e-3  # real units: noise of micro-Jy/beam, not a unit-amplitude fixture


def test_robust_rms_is_exact_with_regular_outliers_and_ties():
    # every 20th value is huge (a pixel order that would mislead a subsample), for odd and even counts
    for size in (42_025, 42_024):
        values = np.random.default_rng(5).normal(0.0, 3.8e-7, size).astype(np.float32)
        values[::20] = 1.0
        values[1::20] = 1.0
        assert robust_rms(values) == _reference_rms(values)
    ties = np.zeros(42_025, np.float32)
    ties[:100] = 1e-6
    assert robust_rms(ties) == (0.0, 0.0)


def test_views_share_one_field_interval_and_keep_fits_row_order(tmp_path):
    # a bright source at pixel (x=20, y=5) of the first tile, a faint field elsewhere
    data = gaussian_image(200, 100, [(20, 5, 50.0), (150, 60, 5.0)], noise=1.0)
    image = write_image(tmp_path / "img.fits", data, sky_header(200, 100))
    _cut(tmp_path, image, config=CutoutConfig(size=100))
    config = ViewConfig(interval="percentile", percentiles=(1.0, 99.0), stretch="linear")
    write_views(tmp_path / "manifest.parquet", tmp_path / "sample.npy", tmp_path / "views", config)
    vmin, vmax = field_interval(np.load(tmp_path / "sample.npy"), config)
    left = np.load(tmp_path / "views" / "f_x00000_y00000.npy")
    right = np.load(tmp_path / "views" / "f_x00100_y00000.npy")
    # the same data value maps to the same grey in both cutouts
    for view, raw in ((left, data[:, :100]), (right, data[:, 100:])):
        expected = np.clip((raw - vmin) / (vmax - vmin), 0, 1)
        np.testing.assert_allclose(view, expected, atol=1e-5)
    png = np.asarray(Image.open(tmp_path / "views" / "f_x00000_y00000.png"))
    assert png.dtype == np.uint8 and png.shape == (100, 100)
    # row 0 of the PNG is FITS row 0 (unflipped): the source at y=5 is in PNG row 5
    np.testing.assert_array_equal(png, np.round(left * 255).astype(np.uint8))
    assert png[5, 20] == 255 and png[94, 20] < 255
    assert (tmp_path / "views" / "scaling.json").exists()


def test_the_png_compression_level_changes_the_files_not_the_decoded_pixels(tmp_path):
    """The real SDC1 cube (Jy/beam): level 0 (the default) and 6 decode to the same pixels."""
    _cut(tmp_path, SDC1_IMAGE)
    sizes = {}
    for level in (0, 6):
        write_views(tmp_path / "manifest.parquet", tmp_path / "sample.npy", tmp_path / f"views{level}",
                    ViewConfig(formats=("png",), png_compress_level=level))
        sizes[level] = sum(p.stat().st_size for p in (tmp_path / f"views{level}").glob("*.png"))
    assert ViewConfig().png_compress_level == 0
    pngs = sorted(p.name for p in (tmp_path / "views0").glob("*.png"))
    assert len(pngs) == 30 and sizes[6] < 0.9 * sizes[0]
    for name in pngs:
        stored, packed = (np.asarray(Image.open(tmp_path / f"views{level}" / name)) for level in (0, 6))
        assert stored.std() > 0
        np.testing.assert_array_equal(stored, packed)


def test_the_stored_png_is_a_valid_greyscale_png_of_the_array_unflipped(tmp_path):
    from radiodet.views import write_png

    pixels = np.arange(7 * 300, dtype=np.uint32).reshape(7, 300).astype(np.uint8)  # not square, every value
    pixels[0, 0], pixels[6, 299] = 255, 0
    write_png(tmp_path / "a.png", pixels, 0)
    with Image.open(tmp_path / "a.png") as image:
        image.verify()  # chunk CRCs and structure
    with Image.open(tmp_path / "a.png") as image:
        assert image.mode == "L" and image.size == (300, 7)
        np.testing.assert_array_equal(np.asarray(image), pixels)
    write_png(tmp_path / "b.png", pixels, 6)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), pixels)


def test_views_written_by_several_processes_equal_one_process_byte_for_byte(tmp_path, monkeypatch):
    import radiodet.views as views

    data = gaussian_image(640, 320, [(20, 5, 50.0), (450, 260, 5.0)], noise=1.0)
    image = write_image(tmp_path / "img.fits", data, sky_header(640, 320))
    _cut(tmp_path, image, config=CutoutConfig(size=40))  # 128 cutouts
    monkeypatch.setattr(views, "_CHUNK", 10)  # 13 tasks over 2 processes
    config = ViewConfig()
    assert write_views(tmp_path / "manifest.parquet", tmp_path / "sample.npy", tmp_path / "one", config) == 128
    assert write_views(tmp_path / "manifest.parquet", tmp_path / "sample.npy", tmp_path / "two", config,
                       workers=2) == 128
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len(names) == 2 * 128 + 1 and names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def _write_cube(path, cube):
    """A 4-D FITS cube (1, planes, ny, nx) with the 4-D SDC1-like sky header."""
    planes, ny, nx = cube.shape[1:]
    header = sky_header(nx, ny, four_d=True)
    header["NAXIS3"] = planes
    hdu = fits.PrimaryHDU(data=cube)
    for key, value in header.items():
        if not key.startswith("NAXIS") and key not in ("SIMPLE", "BITPIX"):
            hdu.header[key] = value
    hdu.writeto(path)
    return path


def test_band_reads_match_the_memory_map_for_every_plane_of_a_cube(tmp_path):
    from radiodet.images import open_image

    cube = np.random.default_rng(4).normal(size=(1, 3, 40, 50)).astype(np.float32)
    path = _write_cube(tmp_path / "cube.fits", cube)
    for plane in range(3):
        with open_image(path, plane=(0, plane)) as image:
            np.testing.assert_array_equal(image.read(5, 30, 7, 44), cube[0, plane, 5:30, 7:44])
            np.testing.assert_array_equal(image.values_at([7, 43], [5, 29]), cube[0, plane, [5, 29], [7, 43]])


def test_views_hold_the_cutout_fits_pixels_as_np_save_writes_them(tmp_path):
    """Real SDC1 cube (Jy/beam): each view, made from the parent's rows, is the scaled cutout FITS data."""
    import io

    from radiodet.views import scale

    manifest = _cut(tmp_path, SDC1_IMAGE, regions=REGIONS)
    config = ViewConfig()
    assert write_views(tmp_path / "manifest.parquet", tmp_path / "sample.npy", tmp_path / "views", config,
                       image_path=SDC1_IMAGE) == len(manifest) == 30
    vmin, vmax = field_interval(np.load(tmp_path / "sample.npy"), config)
    for row in manifest.itertuples():
        expected = scale(fits.getdata(tmp_path / row.file).astype(np.float32), vmin, vmax, config)
        buffer = io.BytesIO()
        np.save(buffer, expected)
        assert (tmp_path / "views" / f"{row.cutout_id}.npy").read_bytes() == buffer.getvalue(), row.cutout_id
        png = np.asarray(Image.open(tmp_path / "views" / f"{row.cutout_id}.png"))
        np.testing.assert_array_equal(png, np.round(expected * 255).astype(np.uint8))
    assert expected.std() > 0


@pytest.mark.parametrize("stretch", ["linear", "sqrt", "asinh", "log"])
def test_in_place_scaling_equals_the_scaling_into_new_arrays(stretch):
    """SDC1-scale values (Jy/beam, ~1e-6 noise) with NaN and infinities: the reused arrays give the same bits."""
    from radiodet.views import _stretch, scale

    rng = np.random.default_rng(11)
    data = (rng.normal(0, 1e-6, size=(205, 205)) + rng.exponential(2e-6, size=(205, 205))).astype(np.float32)
    data[3, :50], data[7, 7], data[9, 9], data[100, 100] = np.nan, np.inf, -np.inf, 3.0e-3
    config = dataclasses.replace(ViewConfig(), stretch=stretch)
    vmin, vmax = -2.5e-6, 4.0e-5
    expected = scale(data, vmin, vmax, config)
    out = np.full(data.shape, 7.0, dtype=np.float32)  # stale values of an earlier cutout
    got = scale(data[:, :], vmin, vmax, config, out=out, stretch=_stretch(config))
    assert got is out and got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    # the clipped pixels (+inf, 3 mJy/beam) reach the top: 1, or 1 - 1 ulp where the CPU's float32 arcsinh
    # rounds the other way from astropy's float64 arcsinh(1 / a) (asinh on a CPU without AVX-512)
    top = got[100, 100]
    assert got[7, 7] == top == got.max() and 1 - top <= np.finfo(np.float32).epsneg and top <= 1
    assert got[9, 9] == 0 and 0 < np.count_nonzero(got == 0) and got.std() > 0
    big_endian = scale(data.astype(">f4"), vmin, vmax, config, out=np.empty_like(out))  # a band as the file stores it
    np.testing.assert_array_equal(big_endian.view(np.uint32), expected.view(np.uint32))
    with pytest.raises(TypeError, match="float32"):
        scale(data.astype(np.float64), vmin, vmax, config, out=out)


def test_band_reads_into_a_reused_buffer_equal_fresh_reads(tmp_path):
    """Big-endian float32 rows swapped in place: the same values as a fresh read, band after band."""
    from radiodet.images import BandBuffer, open_image

    data = np.random.default_rng(5).normal(0, 1e-6, size=(90, 70)).astype(np.float32)
    data[4, 4] = np.nan
    path = write_image(tmp_path / "img.fits", data, sky_header(70, 90))
    buffer = BandBuffer()
    with open_image(path) as image:
        for y0, y1, x0, x1 in ((0, 40, 0, 70), (40, 80, 10, 60), (80, 90, 0, 70), (0, 90, 0, 70)):
            fresh = image.read(y0, y1, x0, x1)
            reused = image.read(y0, y1, x0, x1, buffer=buffer)
            assert reused.dtype == np.float32 and reused.dtype.isnative
            np.testing.assert_array_equal(reused, fresh)
            np.testing.assert_array_equal(reused, data[y0:y1, x0:x1])
            stored = image.read(y0, y1, x0, x1, buffer=buffer, native=False)  # as the file stores them
            assert stored.dtype == np.dtype(">f4")
            np.testing.assert_array_equal(stored.view(np.uint32).byteswap(), fresh.view(np.uint32))


def test_reads_dropped_behind_leave_the_page_cache(tmp_path):
    """The rows read drop-behind are the rows read the ordinary way, and leave the page cache once read."""
    import os

    from conftest import resident_pages

    from radiodet.images import BandBuffer, open_image

    data = np.random.default_rng(6).normal(0, 1e-6, size=(400, 500)).astype(np.float32)
    path = write_image(tmp_path / "img.fits", data, sky_header(500, 400))
    with open(path, "rb") as handle:  # on the disk, out of the cache: its pages then come from reads
        os.fsync(handle.fileno())
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    buffer = BandBuffer()
    with open_image(path) as image:
        image.read(0, 400)  # an ordinary read: the rows stay in the cache
        cached = resident_pages(path)
        if cached < 150:
            pytest.skip("this file system keeps no page cache of its files (or mincore cannot see it)")
        for y0 in range(0, 400, 100):
            np.testing.assert_array_equal(image.read(y0, y0 + 100, buffer=buffer, drop_behind=True),
                                          data[y0:y0 + 100])
        # only pages a band covers in part stay (the header's, those a band boundary crosses)
        assert resident_pages(path) < cached / 4, cached


def test_views_read_the_plane_the_manifest_records(tmp_path):
    cube = np.random.default_rng(8).normal(size=(1, 3, 60, 80)).astype(np.float32)
    cube[0, 2] += 100.0  # plane 2 differs from plane 0 everywhere
    path = _write_cube(tmp_path / "cube.fits", cube)
    manifest = _cut(tmp_path, path, config=CutoutConfig(size=40), plane=(0, 2))
    assert read_parquet_metadata(tmp_path / "manifest.parquet")["plane"] == [0, 2]
    config = ViewConfig(interval="minmax", stretch="linear")
    write_views(tmp_path / "manifest.parquet", tmp_path / "sample.npy", tmp_path / "views", config)
    vmin, vmax = field_interval(np.load(tmp_path / "sample.npy"), config)
    for row in manifest.itertuples():
        view = np.load(tmp_path / "views" / f"{row.cutout_id}.npy")
        expected = np.clip((cube[0, 2, row.y0:row.y1, row.x0:row.x1] - vmin) / (vmax - vmin), 0, 1)
        np.testing.assert_allclose(view, expected, atol=1e-6)


def test_views_refuse_an_image_that_is_not_the_one_cut(tmp_path):
    from radiodet.errors import InputError

    data = gaussian_image(200, 100, [(20, 5, 50.0)], noise=1.0)
    image = write_image(tmp_path / "img.fits", data, sky_header(200, 100))
    other = write_image(tmp_path / "other.fits", data, sky_header(200, 100))
    _cut(tmp_path, image, config=CutoutConfig(size=100))
    with pytest.raises(InputError, match="other.fits"):
        write_views(tmp_path / "manifest.parquet", tmp_path / "sample.npy", tmp_path / "views", ViewConfig(),
                    image_path=other)
    write_image(image, gaussian_image(150, 100, [], noise=1.0), sky_header(150, 100))  # the image was replaced
    with pytest.raises(InputError, match="re-run the cutouts"):
        write_views(tmp_path / "manifest.parquet", tmp_path / "sample.npy", tmp_path / "views", ViewConfig())
    assert not (tmp_path / "views").exists()


def test_views_of_a_cube_need_the_plane_its_manifest_records(tmp_path):
    """A manifest written before the plane was recorded: fine for a 2-D image, an error for a cube."""
    import json

    import pyarrow.parquet as pq

    from radiodet.errors import InputError

    def drop_plane(manifest):
        table = pq.read_table(manifest)
        stamp = json.loads(table.schema.metadata[b"radiodet"])
        stamp.pop("plane")
        pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"radiodet": json.dumps(stamp)}),
                       manifest)

    flat = write_image(tmp_path / "flat.fits", gaussian_image(100, 100, [], noise=1.0), sky_header(100, 100))
    (tmp_path / "a").mkdir()
    _cut(tmp_path / "a", flat, config=CutoutConfig(size=50))
    drop_plane(tmp_path / "a" / "manifest.parquet")
    assert write_views(tmp_path / "a" / "manifest.parquet", tmp_path / "a" / "sample.npy", tmp_path / "a" / "views",
                       ViewConfig()) == 4
    (tmp_path / "b").mkdir()
    _cut(tmp_path / "b", SDC1_IMAGE, regions=REGIONS)
    drop_plane(tmp_path / "b" / "manifest.parquet")
    with pytest.raises(InputError, match="does not record which plane"):
        write_views(tmp_path / "b" / "manifest.parquet", tmp_path / "b" / "sample.npy", tmp_path / "b" / "views",
                    ViewConfig())


def test_the_gathering_jobs_import_neither_astropy_nor_pandas():
    # they link files and concatenate tables: astropy's import was a quarter of their time
    code = ("import sys, radiodet.parts; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'astropy', 'pandas'}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_the_cutout_and_view_jobs_do_not_import_pandas():
    # 16 jobs cut and view an SDC1 field; importing pandas took about 0.4 s of each
    code = ("import sys, radiodet.cutouts, radiodet.views; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pandas'))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_a_first_card_left_to_astropy_leaves_the_later_ones_to_the_fast_layout(caplog):
    # a cutout id too long for one card (astropy continues it) says nothing about the short ones after it
    header = fits.Header([(key, "x" if key in ("CUTID", "SPLIT") else 0.0, "c")
                          for key in cutouts._CutoutWriter.VARYING])
    writer = cutouts._CutoutWriter(header, (4, 4), files=None)
    long_id = "f" * 70
    expected = fits.Card("CUTID", long_id, "cutout id").image  # with CONTINUE cards
    assert writer.card_image("CUTID", long_id, "cutout id") == expected and len(expected) > 80
    assert "CUTID" not in writer._simple
    assert writer.card_image("CUTID", "f_x00001_y00002", "cutout id") == fits.Card("CUTID", "f_x00001_y00002",
                                                                                  "cutout id").image
    assert writer._simple["CUTID"] is True and "differs" not in caplog.text
