"""Catalogue readers, the schema, and errors that name the file and row."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import SDC1, SDC1_PYBDSF, SDC1_TRUTH

from radiodet import catalogues
from radiodet.catalogues import read_catalogue
from radiodet.catalogues.sdc1 import (
    EXPONENTIAL_TO_FWHM,
    LAS_TO_FWHM,
    SDC1_TRUTH_COLUMNS,
    east_of_north_to_sdc1_pa,
    sdc1_pa_to_east_of_north,
    sdc1_size_to_fwhm,
)
from radiodet.catalogues.tables import read_whitespace_table
from radiodet.errors import CatalogueError
from radiodet.ingest import ingest
from radiodet.schema import SOURCE_COLUMNS, read_parquet_metadata, read_units

CLASSES = {1, 2, 3}
TRUTH_LINE = ("31689603 -0.40618432 -29.59313011 -0.40642133 -29.59476662 2.0448e-07 0.00071948 "
              "30.05 23.47 100.947 1 1\n")


def test_truth_catalogue_reads_all_rows_with_ra_folded_into_0_360():
    df = read_catalogue(SDC1_TRUTH, "sdc1_truth")
    assert len(df) == 17731
    assert df["ra"].between(0, 360, inclusive="left").all()
    first = df.iloc[0]
    assert first["source_id"] == 31689603
    # -0.40642133 deg (centroid) is 359.59357867 deg
    assert first["ra"] == pytest.approx(360 - 0.40642133, abs=1e-9)
    assert first["ra_core"] == pytest.approx(360 - 0.40618432, abs=1e-9)
    assert first["orig_ra_cent"] == pytest.approx(-0.40642133)


def test_training_catalogue_skips_18_header_lines_and_keeps_pixel_columns():
    df = read_catalogue(SDC1 / "TrainingSet_B5_v2_ML.txt", "sdc1_training")
    assert len(df) == 30
    assert df.iloc[0]["source_id"] == 14022077
    assert df.iloc[0]["orig_x"] == pytest.approx(19765.491)
    assert set(df.columns) >= set(SOURCE_COLUMNS) | {"orig_selection", "orig_x", "orig_y"}


def test_size_conversions_are_the_official_scorers():
    from ska_sdc.common.utils import constants

    assert LAS_TO_FWHM == pytest.approx(constants.las_to_gauss)
    assert EXPONENTIAL_TO_FWHM == pytest.approx(constants.expo_to_gauss)
    np.testing.assert_allclose(sdc1_size_to_fwhm([10, 10, 10], [1, 2, 3]), [10 * 2.355 / 5, 10, 10 * 2**0.5])


@pytest.mark.parametrize("sdc1_pa, east_of_north", [(0, 90), (90, 0), (45, 45), (135, 135), (30, 60), (350, 100)])
def test_sdc1_pa_clockwise_from_west_to_east_of_north(sdc1_pa, east_of_north):
    # On a north-up, east-left image, west is +x: clockwise from west by 90
    # deg points south, the same axis as north (PA 0); 0 deg (along west) is
    # an east-west axis (PA 90).
    assert sdc1_pa_to_east_of_north(sdc1_pa) == pytest.approx(east_of_north)
    # written in [-90, 90), the SDC1 truth catalogues' range
    assert east_of_north_to_sdc1_pa(east_of_north) == pytest.approx(np.mod(sdc1_pa + 90, 180) - 90)


def test_ingest_writes_units_and_provenance(tmp_path):
    out = tmp_path / "sources.parquet"
    report = ingest(SDC1_TRUTH, "sdc1_truth", out, class_ids=CLASSES)
    assert report.rows_read == report.rows_written == 17731
    units = read_units(out)
    assert units["ra"] == "deg" and units["flux"] == "Jy" and units["major_fwhm"] == "arcsec"
    meta = read_parquet_metadata(out)
    assert meta["format"] == "sdc1_truth" and "east of north" in meta["pa_convention"]
    df = pd.read_parquet(out)
    assert list(df.columns[: len(SOURCE_COLUMNS)]) == list(SOURCE_COLUMNS)
    assert df["pa"].between(0, 180, inclusive="left").all()


def test_selection_zero_rows_are_counted_not_silently_dropped(tmp_path):
    lines = (SDC1 / "TrainingSet_B5_v2_ML.txt").read_text().splitlines(keepends=True)
    fields = lines[18].split()
    fields[12] = "0"  # SELECTION of the first data row
    lines[18] = " ".join(fields) + "\n"
    path = tmp_path / "training.txt"
    path.write_text("".join(lines))
    report = ingest(path, "sdc1_training", tmp_path / "out.parquet", class_ids=CLASSES)
    assert report.rows_read == 30 and report.rows_written == 29
    assert list(report.skipped.values()) == [1]


def test_every_number_is_read_correctly_rounded_whatever_the_spacing(tmp_path):
    """Single spaces (Arrow's reader) and runs of spaces, tabs or a header (pandas') give the same, exact values.

    17-digit values such as the truth file's 57.111000000000004 are where a
    parser that is not correctly rounded goes one unit in the last place off.
    """
    lines = SDC1_TRUTH.read_text().splitlines()[:2000]
    exact = np.array([[float(v) for v in line.split()] for line in lines])
    single = tmp_path / "single.cat"
    single.write_text("\n".join(lines) + "\n")
    spaced = tmp_path / "spaced.cat"
    spaced.write_text("".join("  " + line.replace(" ", " \t  ", 3) + "  \n" for line in lines))
    header = SDC1 / "TrainingSet_B5_v2_ML.txt"
    with_header = tmp_path / "header.cat"
    with_header.write_text("".join(header.read_text().splitlines(keepends=True)[:18]) + "\n".join(lines) + "\n")
    names = list(SDC1_TRUTH_COLUMNS)
    for path, skip in [(single, 0), (spaced, 0), (with_header, 18)]:
        table = read_whitespace_table(path, names, skip_lines=skip)
        assert table.columns.tolist() == names and (table.dtypes == np.float64).all()
        np.testing.assert_array_equal(table.to_numpy(), exact, err_msg=str(path))


def _write_truth(tmp_path, lines):
    path = tmp_path / "bad.cat"
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("mutate, message, row", [
    (lambda f: f.__setitem__(5, "abc"), "column 'flux' is not a number: 'abc'", 3),
    (lambda f: f.__setitem__(5, "nan"), "NaN value in column(s) flux", 3),
    (lambda f: f.__setitem__(4, "-95.0"), "dec outside [-90, 90]", 3),
    (lambda f: f.__setitem__(11, "7"), "class label(s) [7] not in the configured classes", 3),
    (lambda f: f.__setitem__(10, "4"), "size class not one of", 3),
    (lambda f: f.pop(), "expected 12 columns", 3),
])
def test_bad_rows_give_errors_naming_file_and_line(tmp_path, mutate, message, row):
    fields = TRUTH_LINE.split()
    mutate(fields)
    path = _write_truth(tmp_path, [TRUTH_LINE.replace("31689603", "1"), TRUTH_LINE.replace("31689603", "2"),
                                   " ".join(fields) + "\n", TRUTH_LINE.replace("31689603", "4")])
    out = tmp_path / "out.parquet"
    with pytest.raises(CatalogueError) as err:
        ingest(path, "sdc1_truth", out, class_ids=CLASSES)
    assert str(path) in str(err.value) and message in str(err.value)
    assert err.value.row == row
    assert not out.exists() and not list(tmp_path.glob(".out.parquet*"))


def test_duplicate_ids_are_an_error_with_both_lines(tmp_path):
    path = _write_truth(tmp_path, [TRUTH_LINE, TRUTH_LINE.replace("31689603", "5"), TRUTH_LINE])
    with pytest.raises(CatalogueError, match=r"duplicate source id 31689603 on rows 1, 3"):
        ingest(path, "sdc1_truth", tmp_path / "out.parquet", class_ids=CLASSES)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(CatalogueError, match="unknown catalogue format 'votable'"):
        read_catalogue(SDC1_TRUTH, "votable")
    with pytest.raises(CatalogueError, match="not found"):
        read_catalogue(tmp_path / "nope.cat", "sdc1_truth")


def test_pybdsf_source_list_units():
    df = read_catalogue(SDC1_PYBDSF, "pybdsf_srl")
    assert len(df) == 1963
    assert df["ra"].between(359.55, 359.77).all()  # the image footprint, west of RA 0
    # DC_Maj is in degrees in the .srl: a resolved source is arcseconds wide
    assert 0 < df["major_fwhm"].median() < 5
    assert (df["peak_flux"] > 0).all() and "orig_S_Code" in df


def test_ingest_report_is_json_serialisable(tmp_path):
    report = ingest(SDC1 / "TrainingSet_B5_v2_ML.txt", "sdc1_training", tmp_path / "o.parquet", class_ids=CLASSES)
    assert json.loads(json.dumps(report.as_dict()))["rows_written"] == 30
    assert catalogues.formats()["sdc1_training"].header_lines == 18


def test_categorical_string_columns_are_written_as_their_strings(tmp_path):
    """write_parquet decodes categoricals typed as strings in Arrow; the file is the one object strings give."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from radiodet.schema import write_parquet

    ids = np.array(["f_x00205_y00000", "f_x00000_y00000", None, "f_x00000_y00205"], dtype=object)
    columns = {"source_id": (pa.int64(), "", "id"), "cutout_id": (pa.string(), "", "cutout"),
               "snr": (pa.float64(), "", "snr")}
    frame = pd.DataFrame({"source_id": np.arange(4, dtype=np.int64), "cutout_id": ids,
                          "snr": [1.5, np.nan, 3.0, 4.0], "keep": [True, False, True, True]})
    write_parquet(frame, tmp_path / "object.parquet", columns=columns, metadata={"k": 1})
    write_parquet(frame.astype({"cutout_id": "category"}), tmp_path / "coded.parquet", columns=columns,
                  metadata={"k": 1})
    plain, coded = pq.read_table(tmp_path / "object.parquet"), pq.read_table(tmp_path / "coded.parquet")
    assert coded.schema.field("cutout_id").type == pa.string()
    assert coded.schema.field("keep").type == pa.bool_() and read_units(tmp_path / "coded.parquet")["snr"] == ""
    assert coded.equals(plain) and coded.column("cutout_id").to_pylist() == list(ids)
    assert read_parquet_metadata(tmp_path / "coded.parquet")["k"] == 1
