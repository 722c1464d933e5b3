"""Tile layout and split regions."""

import numpy as np
import pytest
from astropy.wcs import WCS
from conftest import sky_header

from radiodet.errors import ConfigError
from radiodet.tiling import SkyBox, axis_starts, layout_tiles

SDC1_REGIONS = {"train": [{"x_max": 620, "y_max": 752}], "val": [{"x_max": 620, "y_min": 752}],
                "test": [{"x_min": 640}]}


@pytest.mark.parametrize("length, size, overlap, expected", [
    (1041, 205, 0, [0, 167, 334, 502, 669, 836]),
    (620, 205, 0, [0, 138, 277, 415]),
    (205, 205, 0, [0]),
    (204, 205, 0, []),
    (3500, 256, 0, [int(round(v)) for v in np.linspace(0, 3500 - 256, 14)]),
    (500, 100, 50, [int(round(v)) for v in np.linspace(0, 400, 9)]),
])
def test_axis_starts_cover_the_region(length, size, overlap, expected):
    starts = axis_starts(length, size, overlap)
    assert starts == expected
    if starts:
        assert starts[0] == 0 and starts[-1] + size == length
        assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))


def test_sdc1_split_tiles_never_cross_the_test_boundary():
    tiles = layout_tiles((957, 1041), 205, regions=SDC1_REGIONS)
    by_split = {s: [t for t in tiles if t.split == s] for s in ("train", "val", "test")}
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [16, 4, 10]
    assert all(t.x1 <= 620 for t in by_split["train"] + by_split["val"])
    assert all(t.x0 >= 640 for t in by_split["test"])
    assert all(t.y1 <= 752 for t in by_split["train"]) and all(t.y0 >= 752 for t in by_split["val"])
    # every pixel of each region is covered
    covered = np.zeros((957, 1041), dtype=int)
    for t in tiles:
        covered[t.y0:t.y1, t.x0:t.x1] = 1
    assert covered[:, :620].all() and covered[:, 640:].all() and not covered[:, 620:640].any()


def test_overlapping_regions_of_different_splits_are_an_error():
    with pytest.raises(ConfigError, match="overlap"):
        layout_tiles((500, 500), 100, regions={"train": [{"x_max": 300}], "test": [{"x_min": 250}]})


def test_no_regions_means_everything_is_train():
    tiles = layout_tiles((300, 300), 100)
    assert len(tiles) == 9 and {t.split for t in tiles} == {"train"}


def test_sky_box_wrapping_through_ra_zero():
    box = SkyBox(359.9, 0.1, -31, -29)
    assert box.contains([359.95, 0.05, 0.2, 359.8], [-30] * 4).tolist() == [True, True, False, False]
    wcs = WCS(sky_header(600, 600, ra0=0.0, dec0=-30.0, cdelt=2 / 3600))
    tiles = layout_tiles((600, 600), 100, regions={"test": [{"ra_min": 0.0, "ra_max": 0.2, "dec_min": -31,
                                                             "dec_max": -29}],
                                                   "train": [{"ra_min": 359.8, "ra_max": 359.99, "dec_min": -31,
                                                              "dec_max": -29}]}, wcs=wcs)
    # east (RA > 0) is at small x in a north-up, east-left image
    assert {t.split for t in tiles} == {"train", "test"}
    assert max(t.x1 for t in tiles if t.split == "test") <= min(t.x0 for t in tiles if t.split == "train")


def test_bad_region_keys():
    with pytest.raises(ConfigError, match="pixel keys"):
        layout_tiles((300, 300), 100, regions={"train": [{"x_min": 0, "ra_min": 1}]})
    with pytest.raises(ConfigError, match="unknown split"):
        layout_tiles((300, 300), 100, regions={"holdout": [{}]})
