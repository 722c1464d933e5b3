"""The survey registry, the generic table reader and the config schema built from them."""

import logging
import textwrap

import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.table import Table
from conftest import REPO

from radiodet import catalogues
from radiodet.catalogues import formats, read_catalogue, surveys, with_survey_defaults
from radiodet.configuration import load_schema, section_defaults, validate_config
from radiodet.errors import CatalogueError, ConfigError
from radiodet.ingest import ingest

HIPASS = REPO / "resources" / "hipass"
HIPASS_TABLE = yaml.safe_load((REPO / "config" / "hipass.yaml").read_text())["catalogue"]["table"]


def test_schema_enums_are_the_registry():
    schema = load_schema()
    assert schema["properties"]["adapter"]["enum"] == sorted(surveys())
    assert schema["properties"]["catalogue"]["properties"]["format"]["enum"] == sorted(formats())
    assert schema["properties"]["crosscheck"]["properties"]["format"]["enum"] == sorted(
        name for name, fmt in formats().items() if fmt.reference)
    # every survey's default format is registered, and the five surveys are there
    assert {"sdc1", "lotss", "mgcls", "mirabest", "generic"} <= set(surveys())
    for survey in surveys().values():
        assert survey.defaults["catalogue"]["format"] in formats()
    # the schema file itself hard-codes no list that could drift from the code
    text = (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert "enum: [sdc1" not in text and "enum: [sdc1_truth" not in text


TOY_MODULE = '''
import numpy as np
import pandas as pd

from radiodet.catalogues.registry import CatalogueFormat, Survey
from radiodet.catalogues.tables import read_whitespace_table, with_original_columns


def read_toy(path, options=None):
    raw = read_whitespace_table(path, ["ident", "ra_h", "dec", "jy"])
    out = pd.DataFrame({
        "source_id": raw["ident"].astype(np.int64), "ra": raw["ra_h"] * 15.0, "dec": raw["dec"],
        "ra_core": raw["ra_h"] * 15.0, "dec_core": raw["dec"], "flux": raw["jy"], "peak_flux": raw["jy"],
        "major_fwhm": 0.0, "minor_fwhm": 0.0, "pa": 0.0, "size_class": np.int8(2), "class_id": np.int16(1),
        "local_rms": np.nan})
    return with_original_columns(out, raw)


FORMATS = {"toy_list": CatalogueFormat(read_toy, "a toy list: id, RA in hours, Dec, flux")}
SURVEYS = {"toy": Survey("a toy survey", {"catalogue": {"format": "toy_list"}, "classes": {1: "blob"},
                                          "cutouts": {"size": 99}})}
'''


@pytest.fixture
def toy_survey(tmp_path):
    """A fifth survey as one module dropped into the package (on an extra package path)."""
    (tmp_path / "toy_survey.py").write_text(TOY_MODULE)
    catalogues.__path__.append(str(tmp_path))
    catalogues.refresh()
    yield tmp_path
    catalogues.__path__.remove(str(tmp_path))
    catalogues.refresh()


def test_a_fifth_survey_is_one_module_and_a_config(toy_survey, tmp_path):
    assert "toy" in surveys() and "toy_list" in formats()
    assert "toy" in load_schema()["properties"]["adapter"]["enum"]
    config = with_survey_defaults({"adapter": "toy", "survey": "t",
                                   "catalogue": {"path": "toy.txt"}, "fields": "f.tsv"})
    validate_config(config)
    assert config["cutouts"]["size"] == 99 and config["catalogue"]["format"] == "toy_list"
    assert config["filter"]["k"] == 3.0  # the schema's default fills the rest
    (tmp_path / "toy.txt").write_text("7 12.5 -30.0 0.002\n8 0.01 -30.5 0.003\n")
    report = ingest(tmp_path / "toy.txt", "toy_list", tmp_path / "toy.parquet", class_ids={1})
    sources = pd.read_parquet(tmp_path / "toy.parquet")
    assert report.rows_written == 2 and sources["ra"].tolist() == pytest.approx([187.5, 0.15])


def test_a_survey_defined_twice_is_an_error(toy_survey):
    (toy_survey / "toy_again.py").write_text(TOY_MODULE)
    catalogues.refresh()
    with pytest.raises(ConfigError, match="'toy_list' is defined twice"):
        formats()
    (toy_survey / "toy_again.py").unlink()


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="adapter"):
        with_survey_defaults({"adapter": "nvss"})
    with pytest.raises(ConfigError, match=r"catalogue\.format: 'votable' is not one of"):
        validate_config(with_survey_defaults({"survey": "x", "fields": "f.tsv",
                                              "catalogue": {"path": "c", "format": "votable"}}))
    with pytest.raises(ConfigError, match=r"catalogue\.table\.columns: 'dec' is a required property"):
        read_catalogue(HIPASS / "1904_comp.fits", "table", {"columns": {"ra": "ra"}})
    with pytest.raises(ConfigError, match=r"catalogue\.table: Additional properties .*'colums'"):
        read_catalogue(HIPASS / "1904_comp.fits", "table", {"colums": {"ra": "ra", "dec": "dec"}})
    with pytest.raises(ConfigError, match="'sdc1_truth' takes no options"):
        read_catalogue(REPO / "resources" / "sdc1" / "truth_B1_0.3tr.cat", "sdc1_truth", {"columns": {}})


def test_table_defaults_apply_only_with_the_table_section():
    config = with_survey_defaults({"survey": "x", "fields": "f.tsv", "catalogue": {"path": "c"}})
    validate_config(config)
    assert "table" not in config["catalogue"]
    assert section_defaults("catalogue", "table") == {"units": {}, "size": "fwhm", "pa_convention": "east_of_north",
                                                     "sizes_include_beam": False, "default_class": 1,
                                                     "read_format": None}


def test_hipass_aegean_table_reads_with_units_and_deconvolved_sizes():
    df = read_catalogue(HIPASS / "1904_comp.fits", "table", HIPASS_TABLE)
    raw = Table.read(HIPASS / "1904_comp.fits")
    assert len(df) == 51 and df["source_id"].tolist() == list(range(1, 52))
    assert df["ra"].to_numpy() == pytest.approx(np.asarray(raw["ra"], float))
    assert df["flux"].to_numpy() == pytest.approx(np.asarray(raw["int_flux"], float))  # Jy already
    # a circular 864" beam comes off both axes in quadrature (PA unchanged)
    a, b, beam = (np.asarray(raw[c], float) for c in ("a", "b", "psf_a"))
    resolved = b > beam * 1.01
    assert resolved.sum() >= 10
    assert df["major_fwhm"].to_numpy()[resolved] == pytest.approx(np.sqrt(a[resolved]**2 - beam[resolved]**2), rel=1e-4)
    assert df["minor_fwhm"].to_numpy()[resolved] == pytest.approx(np.sqrt(b[resolved]**2 - beam[resolved]**2), rel=1e-4)
    assert (df["minor_fwhm"][b < beam] < 1e-3).all()  # narrower than the beam: unresolved
    assert df["orig_uuid"].str.len().eq(36).all()


def test_table_units_win_and_a_missing_unit_is_named(tmp_path):
    table = Table({"RAJ2000": [10.0, 350.0], "DEJ2000": [-5.0, 5.0], "S": [2.0, 3.0], "maj": [1.0, 2.0],
                   "sig": [0.5, 0.5], "angle": [30.0, 120.0], "cls": [2, 1]})
    table["S"].unit = "mJy"
    table.write(tmp_path / "t.ecsv")
    options = {"columns": {"ra": "RAJ2000", "dec": "DEJ2000", "flux": "S", "major": "maj", "minor": "sig",
                           "pa": "angle", "class_id": "cls"},
               "units": {"ra": "deg", "dec": "deg", "flux": "Jy", "major": "arcmin", "minor": "arcmin",
                         "pa": "deg"}, "size": "sigma", "pa_convention": "sdc1"}
    df = read_catalogue(tmp_path / "t.ecsv", "table", options)
    assert df["flux"].tolist() == pytest.approx([2e-3, 3e-3])          # the table's mJy, not the config's Jy
    assert df["major_fwhm"].tolist() == pytest.approx([60 * 2.3548200, 120 * 2.3548200], rel=1e-6)
    assert df["pa"].tolist() == pytest.approx([60.0, 150.0])            # clockwise from west -> east of north
    assert df["class_id"].tolist() == [2, 1]
    del options["units"]["major"]
    with pytest.raises(CatalogueError, match=r"column 'maj' has no unit: give it as catalogue\.table\.units\.major"):
        read_catalogue(tmp_path / "t.ecsv", "table", options)
    options["units"]["major"] = "Jy"
    with pytest.raises(CatalogueError, match="column 'maj' is in Jy, which does not convert to arcsec"):
        read_catalogue(tmp_path / "t.ecsv", "table", options)
    options["units"]["major"] = "arcsec"
    options["columns"]["class_id"] = "sig"
    with pytest.raises(CatalogueError, match="column 'sig' must hold integers, found 0.5") as err:
        read_catalogue(tmp_path / "t.ecsv", "table", options)
    assert err.value.row == 1
    options["columns"]["class_id"] = "type"
    with pytest.raises(CatalogueError, match=r"column 'type' \(catalogue\.table\.columns\.class_id\) is missing"):
        read_catalogue(tmp_path / "t.ecsv", "table", options)


def test_csv_without_beam_needs_the_beam_named(tmp_path):
    (tmp_path / "c.csv").write_text(textwrap.dedent("""\
        ra,dec,a,b,pa
        1.0,2.0,10.0,8.0,0.0
        """))
    options = {"columns": {"ra": "ra", "dec": "dec", "major": "a", "minor": "b", "pa": "pa"},
               "units": {"ra": "deg", "dec": "deg", "major": "arcsec", "minor": "arcsec", "pa": "deg"},
               "sizes_include_beam": True}
    with pytest.raises(CatalogueError, match=r"catalogue\.table\.beam\.major"):
        read_catalogue(tmp_path / "c.csv", "table", options)
    options["beam"] = {"major": 6.0, "minor": 6.0, "pa": 0.0}
    df = read_catalogue(tmp_path / "c.csv", "table", options)
    assert (df.loc[0, "major_fwhm"], df.loc[0, "minor_fwhm"]) == pytest.approx((8.0, np.sqrt(28.0)))


def test_lotss_without_s_code_says_so(tmp_path, caplog):
    table = Table.read(REPO / "resources" / "lotss" / "catalog_shimwell_reduced.srl.fits")[:5]
    table.remove_column("S_Code")
    table.write(tmp_path / "no_code.fits")
    with caplog.at_level(logging.WARNING):
        df = read_catalogue(tmp_path / "no_code.fits", "lotss")
    assert (df["class_id"] == 1).all()
    assert "has no S_Code column: every source is labelled class 1" in caplog.text
    assert "no_code.fits" in caplog.text
