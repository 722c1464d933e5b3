"""A field cut by several jobs: the gathered parts equal one job's cutouts, manifest, sample and views."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SDC1_IMAGE, gaussian_image, sky_header, write_image

from radiodet.cutouts import CutoutConfig, make_cutouts
from radiodet.errors import ImageError
from radiodet.images import image_shape
from radiodet.parts import gather_cutouts, gather_views, planned_parts
from radiodet.schema import read_parquet_metadata
from radiodet.tiling import count_parts, rows_of_part
from radiodet.views import ViewConfig, write_views

REGIONS = {"train": [{"x_max": 620, "y_max": 752}], "val": [{"x_max": 620, "y_min": 752}], "test": [{"x_min": 640}]}


def _files(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def _one_job(tmp_path, image, config, **kwargs):
    out = tmp_path / "one"
    make_cutouts(image, out / "fits", out / "manifest.parquet", out / "sample.npy", field="f", config=config,
                 **kwargs)
    return out


def _in_parts(tmp_path, image, config, parts, **kwargs):
    out = tmp_path / "gathered"
    part_dirs = [tmp_path / "parts" / f"{k:03d}" for k in range(parts)]
    for k, d in enumerate(part_dirs):
        make_cutouts(image, d / "fits", d / "manifest.parquet", d / "sample.npy", field="f", config=config,
                     part=k, parts=parts, **kwargs)
    gather_cutouts([d / "manifest.parquet" for d in part_dirs], [d / "sample.npy" for d in part_dirs],
                   out / "fits", out / "manifest.parquet", out / "sample.npy")
    return out, part_dirs


def _assert_same_cutouts(one: Path, gathered: Path) -> None:
    assert _files(gathered / "fits") == _files(one / "fits")
    pd.testing.assert_frame_equal(pd.read_parquet(gathered / "manifest.parquet"),
                                  pd.read_parquet(one / "manifest.parquet"))
    assert read_parquet_metadata(gathered / "manifest.parquet") == read_parquet_metadata(one / "manifest.parquet")
    # byte for byte, as make bench compares them
    assert (gathered / "manifest.parquet").read_bytes() == (one / "manifest.parquet").read_bytes()
    np.testing.assert_array_equal(np.load(gathered / "sample.npy"), np.load(one / "sample.npy"))


def test_rows_are_dealt_to_parts_in_order_each_once():
    for n_rows in (1, 5, 8, 160):
        for parts in (1, 2, 3, 8, 11):
            dealt = [i for k in range(parts) for i in rows_of_part(n_rows, k, parts)]
            assert dealt == list(range(n_rows))
            sizes = [len(rows_of_part(n_rows, k, parts)) for k in range(parts)]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="part 3 of 3"):
        rows_of_part(10, 3, 3)


def test_the_full_sdc1_field_is_cut_by_eight_jobs_and_the_demo_by_one():
    # 32768 px / 205 px: 160 x 160 = 25,600 cutouts, 3,200 per job
    assert count_parts((32768, 32768), 205, max_per_job=3200) == 8
    assert count_parts((32768, 32768), 205, max_per_job=25_600) == 1
    assert count_parts((32768, 32768), 205, max_per_job=1) == 160  # at most one part per row of cutouts
    assert image_shape(SDC1_IMAGE) == (957, 1041)
    cutouts = {"size": 205, "min_overlap": 0, "layout": "cover", "max_per_job": 3200}
    assert planned_parts(SDC1_IMAGE, cutouts) == 1
    assert planned_parts(SDC1_IMAGE, {**cutouts, "max_per_job": 4}) == 5  # 5 rows x 6 columns
    assert planned_parts("not/there.fits", cutouts) == 1  # made by an earlier rule: one job
    assert planned_parts(None, cutouts, shape=(32768, 32768)) == 8


@pytest.mark.parametrize("parts", [2, 5])
def test_the_sdc1_image_cut_in_parts_gathers_to_one_jobs_output(tmp_path, parts):
    """The real 4-D SDC1 cube (Jy/beam, ~1e-6), with the three split regions and the guard band."""
    config = CutoutConfig(size=205)
    one = _one_job(tmp_path, SDC1_IMAGE, config, regions=REGIONS)
    gathered, part_dirs = _in_parts(tmp_path, SDC1_IMAGE, config, parts, regions=REGIONS)
    _assert_same_cutouts(one, gathered)
    assert sum(len(pd.read_parquet(d / "manifest.parquet")) for d in part_dirs) == 30
    # the gathered files are the parts' own (hard links), not copies
    name = next((gathered / "fits").iterdir()).name
    assert any((d / "fits" / name).exists() and (d / "fits" / name).samefile(gathered / "fits" / name)
               for d in part_dirs)

    views = ViewConfig(formats=("png", "npy"))
    write_views(one / "manifest.parquet", one / "sample.npy", one / "views", views)
    for d in part_dirs:
        write_views(d / "manifest.parquet", gathered / "sample.npy", d / "views", views)
    assert gather_views([d / "views" for d in part_dirs], gathered / "views") == 30
    assert _files(gathered / "views") == _files(one / "views")


def test_parts_with_nan_tiles_overlap_and_an_empty_part_gather_to_one_jobs_output(tmp_path):
    """Overlapping tiles (the sample must take each row once), a NaN corner dropping tiles, more parts than rows."""
    rng = np.random.default_rng(3)
    sources = [(rng.uniform(0, 700), rng.uniform(0, 500), rng.uniform(2e-5, 2e-3)) for _ in range(60)]
    data = gaussian_image(700, 500, sources, noise=1e-6, seed=4).astype(np.float32)
    data[:260, :300] = np.nan
    image = write_image(tmp_path / "f.fits", data, sky_header(700, 500, ra0=359.99))
    config = CutoutConfig(size=128, min_overlap=40, max_nan_fraction=0.3, pixel_sample_size=5000)
    one = _one_job(tmp_path, image, config)
    rows = len(set(pd.read_parquet(one / "manifest.parquet")["y0"]))
    gathered, part_dirs = _in_parts(tmp_path, image, config, rows + 1)
    _assert_same_cutouts(one, gathered)
    assert read_parquet_metadata(one / "manifest.parquet")["tiles_dropped_nan"] > 0
    assert any(pd.read_parquet(d / "manifest.parquet").empty for d in part_dirs)


def test_a_field_nan_in_every_part_is_an_error_naming_the_image(tmp_path):
    image = write_image(tmp_path / "nan.fits", np.full((300, 300), np.nan, np.float32), sky_header(300, 300))
    with pytest.raises(ImageError, match="nan.fits.*no cutout in any of the 2 parts"):
        _in_parts(tmp_path, image, CutoutConfig(size=100), 2)
    assert not (tmp_path / "gathered" / "manifest.parquet").exists()
    assert not (tmp_path / "gathered" / "fits").exists()


def test_parts_given_out_of_order_are_refused(tmp_path):
    config = CutoutConfig(size=205)
    part_dirs = [tmp_path / f"{k}" for k in range(2)]
    for k, d in enumerate(part_dirs):
        make_cutouts(SDC1_IMAGE, d / "fits", d / "manifest.parquet", d / "sample.npy", field="f", config=config,
                     part=k, parts=2)
    with pytest.raises(ValueError, match="expected part 0 of 2, the manifest says \\[1, 2\\]"):
        gather_cutouts([d / "manifest.parquet" for d in part_dirs[::-1]], [d / "sample.npy" for d in part_dirs],
                       tmp_path / "out" / "fits", tmp_path / "out" / "manifest.parquet", tmp_path / "out" / "s.npy")
    assert not (tmp_path / "out" / "fits").exists()


def test_gathered_files_are_hard_links_and_copies_where_links_fail(tmp_path, monkeypatch):
    """link_files: missing directories made, an existing destination refused, copies once a link fails."""
    import errno
    import os

    from radiodet import atomic

    sources = []
    for k in range(3):
        path = tmp_path / "src" / f"{k}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes([k]) * 100)
        sources.append(path)
    linked = [tmp_path / "out" / "a" / f"{k}.bin" for k in range(3)]
    assert atomic.link_files(zip(sources, linked)) == 3
    assert all(d.stat().st_ino == s.stat().st_ino for s, d in zip(sources, linked))
    with pytest.raises(FileExistsError):
        atomic.link_files([(sources[0], linked[0])])
    with pytest.raises(FileNotFoundError):
        atomic.link_files([(tmp_path / "src" / "missing.bin", tmp_path / "out" / "missing.bin")])

    calls = []

    def no_links(source, destination):
        calls.append(source)
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(atomic.os, "link", no_links)
    copied = [tmp_path / "out" / "b" / f"{k}.bin" for k in range(3)]
    assert atomic.link_files(zip(sources, copied)) == 3
    assert len(calls) == 1  # one failed link, then copies
    assert [d.read_bytes() for d in copied] == [s.read_bytes() for s in sources]
    assert all(d.stat().st_ino != s.stat().st_ino for s, d in zip(sources, copied))
    with pytest.raises(FileExistsError):
        atomic.link_files([(sources[0], copied[0])])


def test_a_gathered_manifest_of_many_pages_is_the_one_job_s_byte_for_byte(tmp_path):
    """Parts of thousands of cutouts: Parquet pages (1 MB) must not break where the parts do."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from radiodet.manifest import MANIFEST_COLUMNS
    from radiodet.schema import write_parquet

    rng = np.random.default_rng(0)
    n = 5000  # 2.4 MB of footprint text: three pages
    ids = [f"f_x{i % 100 * 205:05d}_y{i // 100 * 205:05d}" for i in range(n)]
    numbers = {name: rng.integers(0, 30000, n) for name, (kind, _, _) in MANIFEST_COLUMNS.items()
               if pa.types.is_integer(kind)}
    floats = {name: rng.normal(size=n) for name, (kind, _, _) in MANIFEST_COLUMNS.items() if pa.types.is_floating(kind)}
    text = {"cutout_id": ids, "field": ["f"] * n, "split": ["train"] * n, "file": [f"fits/{i}.fits" for i in ids],
            "footprint": [", ".join(f"{v:.9f}" for v in rng.uniform(0, 360, 34)) for _ in range(n)]}
    columns = {**text, **numbers, **floats}
    whole = pa.table({name: columns[name] for name in MANIFEST_COLUMNS})
    metadata = {"field": "f", "image": "f.fits", "tiles_dropped_nan": 0}
    write_parquet(whole, tmp_path / "one.parquet", columns=MANIFEST_COLUMNS, metadata=metadata)
    parts = []
    for k, rows in enumerate((slice(0, 1700), slice(1700, 3100), slice(3100, n))):
        d = tmp_path / f"{k:03d}"
        (d / "fits").mkdir(parents=True)
        for name in ids[rows]:
            (d / "fits" / f"{name}.fits").write_bytes(b"")
        write_parquet(whole.slice(rows.start, rows.stop - rows.start), d / "manifest.parquet",
                      columns=MANIFEST_COLUMNS, metadata={**metadata, "part": [k, 3]})
        np.save(d / "sample.npy", np.zeros(3, np.float32))
        parts.append(d)
    gather_cutouts([d / "manifest.parquet" for d in parts], [d / "sample.npy" for d in parts],
                   tmp_path / "gathered" / "fits", tmp_path / "gathered" / "manifest.parquet", tmp_path / "sample.npy")
    row_group = pq.read_metadata(tmp_path / "one.parquet").row_group(0)
    footprint = row_group.column(list(MANIFEST_COLUMNS).index("footprint"))
    assert footprint.path_in_schema == "footprint" and footprint.total_uncompressed_size > 2_000_000
    assert (tmp_path / "gathered" / "manifest.parquet").read_bytes() == (tmp_path / "one.parquet").read_bytes()
