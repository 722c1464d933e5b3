"""PostGIS index: RA wrap, one set-based join, idempotent re-indexing, connections."""

import os
import stat

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from astropy.wcs import WCS
from conftest import SDC1_IMAGE, SDC1_TRUTH, gaussian_image, sky_header, write_image

from radiodet.cutouts import CutoutConfig, make_cutouts
from radiodet.db import (
    DatabaseUnavailable,
    PlanarPoints,
    binary_copy_records,
    connection_url,
    copy_binary,
    copy_rows,
    engine_for,
    hex_ewkb_polygons,
    validate_identifier,
)
from radiodet.errors import ConfigError
from radiodet.index import (
    SHAPE_COLUMNS,
    _cell_keys,
    _cutout_cells,
    _footprints,
    _partition,
    _with_fields_sorted,
    build_index,
    load_and_assign,
    source_point_records,
    stage_sources,
)
from radiodet.manifest import field_wcs

pytestmark = pytest.mark.postgis


def brute_force_assignment(sources: pd.DataFrame, manifest_path, margin_px: float) -> set:
    """(source_id, cutout_id) pairs by pixel arithmetic, no database."""
    manifest = pd.read_parquet(manifest_path)
    wcs = field_wcs(manifest_path)
    x, y = wcs.world_to_pixel_values(sources["ra"].to_numpy(), sources["dec"].to_numpy())
    pairs = set()
    for row in manifest.itertuples():
        inside = ((x >= row.x0 - 0.5 - margin_px) & (x <= row.x1 - 0.5 + margin_px)
                  & (y >= row.y0 - 0.5 - margin_px) & (y <= row.y1 - 0.5 + margin_px))
        pairs |= {(int(s), row.cutout_id) for s in sources["source_id"].to_numpy()[inside]}
    return pairs


def test_cutout_cells_are_every_cell_of_each_box():
    frame = pd.DataFrame({"cutout_id": ["a", "b", "c"], "cell_x0": [-2, 5, 7], "cell_x1": [0, 5, 8],
                          "cell_y0": [3, -1, -4], "cell_y1": [4, -1, -2]})
    got = _cutout_cells(frame)
    expected = [(c, int(_cell_keys(np.int64(x), np.int64(y)))) for c, x0, x1, y0, y1 in frame.itertuples(index=False)
                for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
    assert len(expected) == 6 + 1 + 6 and len(set(k for _, k in expected)) == len(expected)
    assert sorted(zip(got["cutout_id"], got["cell"].astype(int))) == sorted(expected)


@pytest.fixture
def field_across_ra_zero(tmp_path):
    """A 400 x 300 image centred on RA 0: its middle column is RA 0/360."""
    header = sky_header(400, 300, ra0=0.0, dec0=-30.0, cdelt=2.0 / 3600)
    image = write_image(tmp_path / "zero.fits", gaussian_image(400, 300, [], noise=1.0), header)
    make_cutouts(image, tmp_path / "fits", tmp_path / "manifest.parquet", tmp_path / "sample.npy", field="zero",
                 config=CutoutConfig(size=100))
    wcs = WCS(header)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-20, 420, 3000), rng.uniform(-20, 320, 3000)
    ra, dec = wcs.pixel_to_world_values(x, y)
    sources = pd.DataFrame({"source_id": np.arange(3000), "ra": np.mod(ra, 360.0), "dec": dec})
    # sources right on both sides of RA 0, in the middle of the image
    extra = pd.DataFrame({"source_id": [90001, 90002], "ra": [359.9999, 0.0001], "dec": [-30.0, -30.0]})
    sources = pd.concat([sources, extra], ignore_index=True)
    path = tmp_path / "sources.parquet"
    sources.to_parquet(path)
    return path, tmp_path / "manifest.parquet", sources


@pytest.mark.parametrize("cell_pixels", [64, 3])
def test_join_across_ra_zero_matches_pixel_arithmetic(cell_pixels, field_across_ra_zero, postgis_url, tmp_path,
                                                      monkeypatch):
    """The join grid's default cells (128", 2-3 per cutout side) and fine ones (6", 35 per side)."""
    import radiodet.index

    monkeypatch.setattr(radiodet.index, "CELL_PIXELS", cell_pixels)
    sources_path, manifest_path, sources = field_across_ra_zero
    assert (sources["ra"] > 359).any() and (sources["ra"] < 1).any()
    summary = build_index(sources_path, [manifest_path], tmp_path / "a.parquet", tmp_path / "a.json",
                          survey=f"wrap{cell_pixels}", database_url=postgis_url, private_dir=tmp_path / "unused",
                          margin_px=2.0)
    got = pd.read_parquet(tmp_path / "a.parquet")
    pairs = set(zip(got["source_id"].astype(int), got["cutout_id"]))
    expected = brute_force_assignment(sources, manifest_path, 2.0)
    # geography edges are great circles, pixel edges are not quite: allow
    # disagreement only within 0.01 px of an edge (none expected here)
    assert pairs == expected
    centre_cutouts = {c for s, c in pairs if s in (90001, 90002)}
    assert centre_cutouts == {"zero_x00100_y00100", "zero_x00200_y00100"}
    assert summary["pairs"] == len(expected)


@pytest.mark.parametrize("dec0", [-89.97, 89.97])
def test_join_of_a_field_around_a_pole_matches_pixel_arithmetic(dec0, postgis_url, tmp_path):
    """The pole inside the image (every RA meets there); 2"/px, so the image is 0.22 x 0.17 deg."""
    header = sky_header(400, 300, ra0=123.0, dec0=dec0, cdelt=2.0 / 3600)
    image = write_image(tmp_path / "pole.fits", gaussian_image(400, 300, [], noise=1.0), header)
    make_cutouts(image, tmp_path / "fits", tmp_path / "manifest.parquet", tmp_path / "sample.npy", field="pole",
                 config=CutoutConfig(size=100))
    wcs = WCS(header)
    pole_x, pole_y = wcs.world_to_pixel_values(0.0, np.sign(dec0) * 90.0)
    assert 0 < pole_x < 400 and 0 < pole_y < 300
    rng = np.random.default_rng(6)
    x, y = rng.uniform(-20, 420, 4000), rng.uniform(-20, 320, 4000)
    ra, dec = wcs.pixel_to_world_values(x, y)
    sources = pd.DataFrame({"source_id": np.arange(4000), "ra": np.mod(ra, 360.0), "dec": dec})
    assert np.ptp(sources["ra"]) > 300  # every RA is there
    sources.to_parquet(tmp_path / "sources.parquet")
    build_index(tmp_path / "sources.parquet", [tmp_path / "manifest.parquet"], tmp_path / "a.parquet",
                tmp_path / "a.json", survey="pole", database_url=postgis_url, private_dir=tmp_path / "unused",
                margin_px=2.0)
    got = pd.read_parquet(tmp_path / "a.parquet")
    assert set(zip(got["source_id"].astype(int), got["cutout_id"])) == \
        brute_force_assignment(sources, tmp_path / "manifest.parquet", 2.0)


def test_sdc1_demo_join_matches_pixel_arithmetic(tmp_path, postgis_url):
    from radiodet.ingest import ingest

    regions = {"train": [{"x_max": 620}], "test": [{"x_min": 640}]}
    make_cutouts(SDC1_IMAGE, tmp_path / "fits", tmp_path / "m.parquet", tmp_path / "s.npy", field="sdc1",
                 config=CutoutConfig(size=205), regions=regions)
    ingest(SDC1_TRUTH, "sdc1_truth", tmp_path / "src.parquet", class_ids={1, 2, 3})
    build_index(tmp_path / "src.parquet", [tmp_path / "m.parquet"], tmp_path / "a.parquet", tmp_path / "a.json",
                survey="sdc1_test", database_url=postgis_url, private_dir=tmp_path / "unused", margin_px=0.0)
    got = pd.read_parquet(tmp_path / "a.parquet")
    sources = pd.read_parquet(tmp_path / "src.parquet")
    expected = brute_force_assignment(sources, tmp_path / "m.parquet", 0.0)
    pairs = set(zip(got["source_id"].astype(int), got["cutout_id"]))
    # sources within a hair of an edge may fall either way (great-circle edges)
    assert len(pairs ^ expected) <= 0.0005 * len(expected)
    assert len(expected) > 15000


def _index(tmp_path, name, sources_path, manifest_path, url, survey, margin_px=2.0, stage_path=None):
    build_index(sources_path, [manifest_path], tmp_path / f"{name}.parquet", tmp_path / f"{name}.json",
                survey=survey, database_url=url, private_dir=tmp_path / "unused", schema="radiodet_stage",
                margin_px=margin_px, stage_path=stage_path)
    got = pd.read_parquet(tmp_path / f"{name}.parquet")
    return set(zip(got["source_id"].astype(int), got["cutout_id"])), got


def _relations(engine, survey_hash_part: str) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.text(
            "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'radiodet_stage' AND c.relkind = 'r' AND c.relname LIKE :p"),
            {"p": f"%{survey_hash_part}%"})}


def test_staged_sources_become_the_partitions_with_the_same_join(field_across_ra_zero, postgis_url, engine,
                                                                  tmp_path, caplog):
    """RA 0 inside the field: the plane from the image header is the plane from the manifest."""
    sources_path, manifest_path, sources = field_across_ra_zero
    staged = stage_sources(sources_path, [("zero", tmp_path / "zero.fits")], tmp_path / "staged.json",
                           survey="staged", database_url=postgis_url, private_dir=tmp_path / "unused",
                           schema="radiodet_stage", margin_px=2.0)
    assert staged["rows"] == len(sources) and len(staged["planes"]) == 1
    suffix = _partition("sources", "staged").split("_")[-1]
    assert _relations(engine, suffix) >= {f"staged_sources_{suffix}", f"staged_source_points_{suffix}"}
    count = sa.text("SELECT count(*) FROM radiodet_stage.sources WHERE survey = 'staged'")
    with engine.connect() as conn:  # nothing visible to a user's query yet
        assert conn.execute(count).scalar() == 0
    with caplog.at_level("INFO", logger="radiodet.index"):
        pairs, got = _index(tmp_path, "a", sources_path, manifest_path, postgis_url, "staged",
                            stage_path=tmp_path / "staged.json")
    assert "staged beside the cutouts" in caplog.text and "loading them here" not in caplog.text
    assert pairs == brute_force_assignment(sources, manifest_path, 2.0)
    loaded, again = _index(tmp_path, "b", sources_path, manifest_path, postgis_url, "loaded")
    pd.testing.assert_frame_equal(got, again)
    assert _relations(engine, suffix) == {f"{table}_{suffix}" for table in
                                          ("sources", "source_points", "assignments", "cutouts")}
    with engine.connect() as conn:
        assert conn.execute(count).scalar() == len(sources)
    # the stage was consumed: indexing again with its marker loads the sources, with the same result
    caplog.clear()
    with caplog.at_level("INFO", logger="radiodet.index"):
        pairs_again, _ = _index(tmp_path, "c", sources_path, manifest_path, postgis_url, "staged",
                                stage_path=tmp_path / "staged.json")
    assert "are gone or were replaced" in caplog.text and pairs_again == pairs


def test_a_stage_that_does_not_fit_the_cutouts_is_not_used(field_across_ra_zero, postgis_url, tmp_path, caplog):
    import json

    sources_path, manifest_path, sources = field_across_ra_zero
    stage = dict(database_url=postgis_url, private_dir=tmp_path / "unused", schema="radiodet_stage")
    stage_sources(sources_path, [("zero", tmp_path / "zero.fits")], tmp_path / "m2.json", survey="misfit",
                  margin_px=2.0, **stage)
    # another margin than the stage's: a wider footprint may reach beyond the staged radius
    with caplog.at_level("WARNING", logger="radiodet.index"):
        pairs, _ = _index(tmp_path, "a", sources_path, manifest_path, postgis_url, "misfit", margin_px=30.0,
                          stage_path=tmp_path / "m2.json")
    assert "do not fit these cutouts" in caplog.text
    assert pairs == brute_force_assignment(sources, manifest_path, 30.0)
    # a newer stage replaced the one this marker describes
    stage_sources(sources_path, [("zero", tmp_path / "zero.fits")], tmp_path / "old.json", survey="misfit",
                  margin_px=2.0, **stage)
    stage_sources(sources_path, [("zero", tmp_path / "zero.fits")], tmp_path / "new.json", survey="misfit",
                  margin_px=2.0, **stage)
    caplog.clear()
    with caplog.at_level("WARNING", logger="radiodet.index"):
        pairs, _ = _index(tmp_path, "b", sources_path, manifest_path, postgis_url, "misfit",
                          stage_path=tmp_path / "old.json")
    assert "are gone or were replaced" in caplog.text
    assert pairs == brute_force_assignment(sources, manifest_path, 2.0)
    # the catalogue was rewritten after staging
    marker = json.loads((tmp_path / "new.json").read_text())
    marker["sources_file"][1] -= 1
    (tmp_path / "new.json").write_text(json.dumps(marker))
    caplog.clear()
    with caplog.at_level("WARNING", logger="radiodet.index"):
        _index(tmp_path, "c", sources_path, manifest_path, postgis_url, "misfit", stage_path=tmp_path / "new.json")
    assert "staged another version" in caplog.text


def test_reindexing_never_duplicates_rows(field_across_ra_zero, engine):
    _, manifest_path, sources = field_across_ra_zero
    cutouts, _ = _footprints([manifest_path], 2.0)
    counts = []
    for _ in range(2):
        assigned, _ = load_and_assign(engine, sources, cutouts, survey="idem", schema="radiodet_test")
        with engine.connect() as conn:
            counts.append(tuple(conn.execute(sa.text(
                f"SELECT count(*) FROM radiodet_test.{t} WHERE survey = 'idem'")).scalar()
                for t in ("sources", "cutouts", "assignments")))
        assert len(assigned) == counts[-1][2]
    assert counts[0] == counts[1] == (len(sources), len(cutouts), counts[0][2])
    with engine.connect() as conn:
        indexes = {r[0] for r in conn.execute(sa.text(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'radiodet_test'"))}
    assert not any(".source_points" in i for i in indexes)  # ON <schema>.source_points...: the join hashes cells
    assert sum("cutouts USING gist" in i and "plane_footprint" in i for i in indexes) == 1


def _partitions(conn, schema: str, table: str) -> dict[str, str]:
    """Partition name -> its bound, of ``schema.table``."""
    return dict(conn.execute(sa.text(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits AS i "
        "JOIN pg_class AS c ON c.oid = i.inhrelid JOIN pg_class AS p ON p.oid = i.inhparent "
        "JOIN pg_namespace AS n ON n.oid = p.relnamespace WHERE n.nspname = :s AND p.relname = :t"),
        {"s": schema, "t": table}).fetchall())


def _partition_oid(conn, table: str, survey: str) -> int:
    """The oid of ``survey``'s partition of ``radiodet_parts.table``."""
    return conn.execute(sa.text(
        "SELECT c.oid FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
        "JOIN pg_class AS p ON p.oid = i.inhparent JOIN pg_namespace AS n ON n.oid = p.relnamespace "
        "WHERE n.nspname = 'radiodet_parts' AND p.relname = :t AND pg_get_expr(c.relpartbound, c.oid) = :b"),
        {"t": table, "b": f"FOR VALUES IN ('{survey}')"}).scalar_one()


def test_each_survey_is_a_partition_with_its_indexes_and_reindexing_one_keeps_the_others(
        field_across_ra_zero, engine):
    _, manifest_path, sources = field_across_ra_zero
    cutouts, _ = _footprints([manifest_path], 2.0)
    first, _ = load_and_assign(engine, sources, cutouts, survey="alpha", schema="radiodet_parts")
    with engine.connect() as conn:
        alpha_cutouts = _partition_oid(conn, "cutouts", "alpha")
    load_and_assign(engine, sources.iloc[:100], cutouts, survey="beta.2", schema="radiodet_parts")
    again, _ = load_and_assign(engine, sources, cutouts, survey="alpha", schema="radiodet_parts")
    pd.testing.assert_frame_equal(first, again)
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.text(
            "SELECT survey, count(*) FROM radiodet_parts.sources GROUP BY survey")).fetchall())
        assert counts == {"alpha": len(sources), "beta.2": 100}
        # the sky view: RA 359.9999 is geography longitude -0.0001, 0.0001 deg from RA 0.0001
        near_zero = conn.execute(sa.text(
            "SELECT ST_Distance(a.position, b.position, false) FROM radiodet_parts.sky_sources AS a, "
            "radiodet_parts.sky_sources AS b WHERE a.survey = 'alpha' AND b.survey = 'alpha' "
            "AND a.source_id = 90001 AND b.source_id = 90002")).scalar()
        assert near_zero == pytest.approx(2e-4 * np.pi / 180 * 6371008.8 * np.cos(np.deg2rad(30)), rel=1e-2)
        for table in ("sources", "source_points", "assignments", "cutouts"):
            parts = _partitions(conn, "radiodet_parts", table)
            assert sorted(parts.values()) == ["FOR VALUES IN ('alpha')", "FOR VALUES IN ('beta.2')"]
        indexes = conn.execute(sa.text(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'radiodet_parts'")).fetchall()
        for part in _partitions(conn, "radiodet_parts", "source_points"):
            defs = [d for t, d in indexes if t == part]
            assert defs == [], defs  # no index: the join hashes the points' cells
        for part in _partitions(conn, "radiodet_parts", "cutouts"):
            defs = [d for t, d in indexes if t == part]
            assert all(any(f"USING gist ({c})" in d for d in defs) for c in SHAPE_COLUMNS), defs
        # re-indexing replaced the survey's cutouts with a new table: no dead rows left behind
        assert _partition_oid(conn, "cutouts", "alpha") != alpha_cutouts
        # the planner reads a survey's points from its partition only
        plan = "\n".join(r[0] for r in conn.execute(sa.text(
            "EXPLAIN SELECT count(*) FROM radiodet_parts.source_points WHERE survey = 'alpha' AND "
            "ST_DWithin(position, ST_MakePoint(0, 0), 10)")))
        alpha, beta = (_partition("source_points", s) for s in ("alpha", "beta.2"))
        assert alpha in plan and beta not in plan, plan
    with pytest.raises(ConfigError, match="survey"):
        load_and_assign(engine, sources, cutouts, survey="x'; DROP TABLE y; --", schema="radiodet_parts")


#: tables of earlier layouts: (the tables, the DDL that makes them with an 'old' row, how the warning names them)
_EARLIER_LAYOUTS = {
    "sources_and_assignments": (
        ("sources", "assignments"),
        "CREATE TABLE {s}.sources (survey text, source_id bigint, ra float8, dec float8, "
        "position geography(POINT, 4326), PRIMARY KEY (survey, source_id)); CREATE TABLE {s}.assignments "
        "(survey text, source_id bigint, cutout_id text, PRIMARY KEY (survey, source_id, cutout_id)); "
        "INSERT INTO {s}.sources VALUES ('old', 1, 0, 0, NULL)",
        "assignments and sources"),
    "source_points_without_cells": (
        ("source_points",),
        "CREATE TABLE {s}.source_points (survey text, field text, source_id bigint, "
        "position geometry(POINT, 0) NOT NULL, PRIMARY KEY (survey, field, source_id)) PARTITION BY LIST (survey); "
        "CREATE INDEX ON {s}.source_points USING gist (position); "
        "CREATE TABLE {s}.source_points_old PARTITION OF {s}.source_points FOR VALUES IN ('old'); "
        "INSERT INTO {s}.source_points VALUES ('old', 'f', 1, 'POINT(0 0)')",
        "source_points"),
    "source_points_with_a_key": (
        ("source_points",),
        "CREATE TABLE {s}.source_points (survey text, field text, source_id bigint, cell bigint NOT NULL, "
        "position geometry(POINT, 0) NOT NULL, PRIMARY KEY (survey, field, source_id)) PARTITION BY LIST (survey); "
        "CREATE TABLE {s}.source_points_old PARTITION OF {s}.source_points FOR VALUES IN ('old'); "
        "INSERT INTO {s}.source_points VALUES ('old', 'f', 1, 0, 'POINT(0 0)')",
        "source_points"),
    "cutouts": (
        ("cutouts",),
        "CREATE TABLE {s}.cutouts (survey text, cutout_id text, field text NOT NULL, split text NOT NULL, "
        "footprint geography(POLYGON, 4326) NOT NULL, PRIMARY KEY (survey, cutout_id)); "
        "INSERT INTO {s}.cutouts VALUES ('old', 'c', 'f', 'train', 'POLYGON((0 0, 1 0, 1 1, 0 0))')",
        "cutouts"),
}


@pytest.mark.parametrize("layout", sorted(_EARLIER_LAYOUTS))
def test_tables_of_an_unpartitioned_layout_are_replaced_with_a_warning(layout, field_across_ra_zero, engine, caplog):
    tables, ddl, named = _EARLIER_LAYOUTS[layout]
    schema = f"radiodet_old_{layout}"
    _, manifest_path, sources = field_across_ra_zero
    cutouts, _ = _footprints([manifest_path], 2.0)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE EXTENSION IF NOT EXISTS postgis; DROP SCHEMA IF EXISTS {schema} CASCADE; "
                             f"CREATE SCHEMA {schema}; " + ddl.format(s=schema)))
    with caplog.at_level("WARNING", logger="radiodet.index"):
        assigned, _ = load_and_assign(engine, sources, cutouts, survey="new", schema=schema)
    assert "earlier version" in caplog.text and f"{named} made by" in caplog.text
    assert len(assigned) > 0
    with engine.connect() as conn:
        kinds = dict(conn.execute(sa.text(
            "SELECT c.relname, c.relkind FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname IN :t").bindparams(sa.bindparam("t", expanding=True)),
            {"s": schema, "t": list(tables)}).fetchall())
        assert kinds == dict.fromkeys(tables, "p")
        for table in tables:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {schema}.{table} WHERE survey = 'old'")).scalar() == 0
        assert conn.execute(sa.text(f"SELECT count(*) FROM {schema}.cutouts WHERE survey = 'new'")).scalar() \
            == len(cutouts)


def test_private_server_listens_on_a_private_socket_only(engine, postgis_url):
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW listen_addresses")).scalar() == ""
        socket_dir = conn.execute(sa.text("SHOW unix_socket_directories")).scalar()
    assert stat.S_IMODE(os.stat(socket_dir).st_mode) == 0o700
    datadir = os.path.join(os.path.dirname(socket_dir), "data")
    if os.path.isdir(datadir):
        assert stat.S_IMODE(os.stat(datadir).st_mode) == 0o700


def test_source_points_are_the_same_rows_whatever_the_chunk_and_search(monkeypatch):
    """The projected points of fields across RA 0 and near a pole: chunking and the KD-tree change no byte."""
    import radiodet.index as index

    rng = np.random.default_rng(3)
    n = 5_000
    ra = np.concatenate([rng.uniform(-1.5, 1.5, n) % 360, rng.uniform(0, 360, n)])
    dec = np.concatenate([rng.uniform(-31.5, -28.5, n), rng.uniform(87.0, 90.0, n)])
    sources = pd.DataFrame({"source_id": np.arange(2 * n) + 10**12, "ra": ra, "dec": dec})
    planes = pd.DataFrame({"plane_ra": [0.2, 359.4, 45.0], "plane_dec": [-30.0, -30.5, 89.0],
                           "plane_shift": [0.0, 1e6, 2e6], "plane_radius": [1.0, 0.8, 1.5],
                           "plane_cell": [38.4, 38.4, 10.0]}, index=["a", "b", "pole"])

    def rows(**kwargs):
        records = source_point_records(sources, planes, **kwargs)
        return sum(count for count, _ in records), b"".join(bytes(r) for _, r in records)

    count, whole = rows(chunk=len(sources))
    separation = {field: np.rad2deg(np.arccos(np.clip(
        index._unit(ra, dec) @ index._unit([p.plane_ra], [p.plane_dec])[0], -1, 1))) for field, p in planes.iterrows()}
    assert count == sum(int((separation[f] <= planes.loc[f, "plane_radius"]).sum()) for f in planes.index)
    near_any = np.logical_or.reduce([separation[f] <= planes.loc[f, "plane_radius"] for f in planes.index])
    assert count > near_any.sum() > 1_000  # the two fields across RA 0 share sources
    assert rows(chunk=777) == (count, whole)
    monkeypatch.setattr(index, "_KD_TREE_ABOVE", 0)
    assert rows(chunk=1_234) == (count, whole)


def test_binary_copy_round_trips_every_value_exactly(engine):
    """Binary COPY: int64 extremes, float64 bits (no decimal rounding), a non-ASCII constant, WKB points."""
    rng = np.random.default_rng(3)
    ids = np.array([np.iinfo(np.int64).min, -1, 0, 2**53 + 1, np.iinfo(np.int64).max], dtype=np.int64)
    ra = np.array([0.0, 359.99999999999994, 1e-300, -0.0, 123.456789012345678])
    x, y = rng.normal(0, 3e5, 5), np.array([-1e-12, 1.5e5, np.pi, -2.0**-40, 7.0])
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
        conn.execute(sa.text("CREATE TEMP TABLE t_binary (field text, source_id bigint, ra double precision, "
                             "position geometry(POINT, 0)) ON COMMIT DROP"))
        chunks = [binary_copy_records({"field": "Ä-field_1", "source_id": ids[:2], "ra": ra[:2],
                                       "position": PlanarPoints(x[:2], y[:2])}),
                  binary_copy_records({"field": "f2", "source_id": ids[2:], "ra": ra[2:],
                                       "position": PlanarPoints(x[2:], y[2:])})]
        copy_binary(conn, "t_binary", ["field", "source_id", "ra", "position"], chunks)
        rows = conn.execute(sa.text("SELECT field, source_id, ra, ST_X(position), ST_Y(position), "
                                    "ST_SRID(position) FROM t_binary")).fetchall()
    assert [r[0] for r in rows] == ["Ä-field_1"] * 2 + ["f2"] * 3
    assert [r[1] for r in rows] == ids.tolist()
    assert np.array_equal(np.array([r[2] for r in rows]).view(np.int64), ra.view(np.int64))  # bit for bit
    assert np.array_equal([r[3] for r in rows], x) and np.array_equal([r[4] for r in rows], y)
    assert {r[5] for r in rows} == {0}
    with pytest.raises(TypeError, match="column ra: binary COPY of dtype float32"):
        binary_copy_records({"ra": ra.astype(np.float32)})
    with pytest.raises(ValueError, match="column ra has 2 rows, the others 5"):
        binary_copy_records({"source_id": ids, "ra": ra[:2]})


def test_hex_ewkb_polygons_reach_postgis_bit_for_bit(engine):
    """Footprints as hex EWKB: geography (SRID 4326, across RA 0) and planar polygons keep every float64 bit."""
    lon = np.array([[-0.0001, 0.00012345678901234567, 0.0002, -0.0001],
                    [179.99999999999997, -180.0, -179.9, 179.99999999999997]])
    lat = np.array([[-30.0, -30.0, -29.999, -30.0], [89.99, 89.99, 89.999999999, 89.99]])
    x, y = lon * 3.6e3 + 1.0e6, lat * 3.6e3
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
        conn.execute(sa.text("CREATE TEMP TABLE t_shapes (k int, sky geography(POLYGON, 4326), "
                             "plane geometry(POLYGON, 0)) ON COMMIT DROP"))
        copy_rows(conn, "t_shapes", ["k", "sky", "plane"], pd.DataFrame(
            {"k": [0, 1], "sky": hex_ewkb_polygons(lon, lat, srid=4326), "plane": hex_ewkb_polygons(x, y)}))
        rows = conn.execute(sa.text(
            "SELECT k, ST_SRID(sky), ST_SRID(plane), ST_NPoints(sky::geometry), "
            "ARRAY(SELECT ST_X(d.geom) FROM ST_DumpPoints(sky::geometry) AS d), "
            "ARRAY(SELECT ST_Y(d.geom) FROM ST_DumpPoints(sky::geometry) AS d), "
            "ARRAY(SELECT ST_X(d.geom) FROM ST_DumpPoints(plane) AS d), "
            "ARRAY(SELECT ST_Y(d.geom) FROM ST_DumpPoints(plane) AS d), "
            "ST_Covers(sky, ST_SetSRID(ST_MakePoint(0.0001, -29.9999), 4326)::geography) "
            "FROM t_shapes ORDER BY k")).fetchall()
    for k, row in enumerate(rows):
        assert row[1:4] == (4326, 0, 4)
        for got, want in zip(row[4:8], (lon[k], lat[k], x[k], y[k])):
            assert np.array_equal(np.array(got).view(np.int64), want.view(np.int64))  # bit for bit
    assert rows[0][8] and not rows[1][8]  # the first polygon straddles RA 0 (a sliver, not the long way round)
    with pytest.raises(ValueError, match="one 2-D shape"):
        hex_ewkb_polygons(lon, lat[:, :3])


def test_connection_rules():
    with pytest.raises(ConfigError, match="must not contain a password"):
        connection_url("postgresql://user:secret@db.example.org/radio")
    assert connection_url("postgresql://user@db.example.org/radio", environ={}) == \
        "postgresql+psycopg2://user@db.example.org/radio"
    assert connection_url(None, environ={"PGHOST": "db"}) == "postgresql+psycopg2://"
    assert connection_url(None, environ={}) is None
    with pytest.raises(ConfigError):
        validate_identifier("radiodet; DROP TABLE x", "database.schema")


def test_unreachable_database_is_a_clear_error(tmp_path):
    with pytest.raises(DatabaseUnavailable, match="cannot connect to the database"):
        engine_for(f"postgresql+psycopg2://nobody@/nodb?host={tmp_path}")


def test_overlapping_fields_give_each_patch_of_sky_to_the_nearest_centre(tmp_path, postgis_url):
    """Two overlapping 'mosaics' of the same sky with centres 300 px apart.

    Owned cutouts of different fields never overlap, each owned cutout lies
    nearer its own centre than the other's, and sources are assigned only to
    owned cutouts.
    """
    big = sky_header(700, 300, ra0=205.0, dec0=55.0, cdelt=1.5 / 3600)
    big_wcs = WCS(big)
    manifests, centres = [], {}
    for name, x0 in (("west", 0), ("east", 300)):
        header = big.copy()
        header["CRPIX1"] = big["CRPIX1"] - x0
        header["NAXIS1"] = 400
        image = write_image(tmp_path / f"{name}.fits", gaussian_image(400, 300, [], noise=1.0, seed=x0), header)
        make_cutouts(image, tmp_path / name / "fits", tmp_path / name / "m.parquet", tmp_path / name / "s.npy",
                     field=name, config=CutoutConfig(size=100))
        manifests.append(tmp_path / name / "m.parquet")
        ra, dec = big_wcs.pixel_to_world_values(x0 + 200 - 0.5, 150 - 0.5)
        centres[name] = (float(ra), float(dec))
    rng = np.random.default_rng(3)
    ra, dec = big_wcs.pixel_to_world_values(rng.uniform(0, 699, 2000), rng.uniform(0, 299, 2000))
    pd.DataFrame({"source_id": np.arange(2000), "ra": ra, "dec": dec}).to_parquet(tmp_path / "src.parquet")
    summary = build_index(tmp_path / "src.parquet", manifests, tmp_path / "a.parquet", tmp_path / "a.json",
                          survey="overlap", database_url=postgis_url, private_dir=tmp_path / "unused",
                          margin_px=0.0, cutouts_output=tmp_path / "c.parquet", centres=centres)
    ownership = pd.read_parquet(tmp_path / "c.parquet")
    owned = ownership[ownership["owned"]]
    assert 0 < summary["cutouts_owned"] < summary["cutouts"] == 24
    # in the parent frame: west cutouts keep x < 350 (the midpoint), east ones x >= 350
    spans = {}
    for row in owned.itertuples():
        manifest = pd.read_parquet(tmp_path / row.field / "m.parquet").set_index("cutout_id")
        x0 = manifest.loc[row.cutout_id, "x0"] + (300 if row.field == "east" else 0)
        spans.setdefault(row.field, []).append((x0, x0 + 100))
    assert max(b for _, b in spans["west"]) <= 350 <= min(a for a, _ in spans["east"])
    assigned = pd.read_parquet(tmp_path / "a.parquet")
    assert set(assigned["cutout_id"]) <= set(owned["cutout_id"])
    assert not assigned.duplicated("source_id").any()  # no sky in two owned cutouts here


def test_pairs_come_back_in_code_point_order_whatever_the_collation():
    """A locale collation orders '_', '-' and case its own way; the assignments are sorted by code point."""
    ids = ["P1_x00205_y00000", "P1-b_x00000_y00000", "P10_x00000_y00000", "p1_x00000_y00000", "P1_x00000_y00205"]
    cutouts = pd.DataFrame({"cutout_id": ids, "field": [i.split("_x")[0] for i in ids]})
    cutouts = cutouts.sort_values("cutout_id", ignore_index=True)
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(ids), 200)
    pairs = pd.DataFrame({"source_id": rng.permutation(200).astype(np.int64),
                          "cutout_id": pd.Categorical(np.array(ids, dtype=object)[pick])})
    out = _with_fields_sorted(pairs, cutouts)
    expected = sorted(zip(np.array(ids, dtype=object)[pick], pairs["source_id"]))
    assert list(zip(out["cutout_id"], out["source_id"])) == expected
    assert (out["field"] == out["cutout_id"].str.split("_x").str[0]).all()
    assert out["source_id"].dtype == np.int64 and out["cutout_id"].dtype == "category"
    with pytest.raises(ValueError, match="cutouts table does not hold"):
        _with_fields_sorted(pd.DataFrame({"source_id": [1], "cutout_id": ["elsewhere"]}), cutouts)


def test_the_index_of_a_field_s_parts_equals_the_index_of_the_gathered_field(tmp_path, postgis_url):
    """The workflow indexes a field cut by several jobs from its parts' manifests, before they are gathered."""
    from radiodet.ingest import ingest
    from radiodet.parts import gather_cutouts

    config = CutoutConfig(size=205)
    parts = [tmp_path / "parts" / f"{k:03d}" for k in range(3)]
    for k, d in enumerate(parts):
        make_cutouts(SDC1_IMAGE, d / "fits", d / "manifest.parquet", d / "s.npy", field="a", config=config,
                     part=k, parts=3)
    gathered = tmp_path / "a"
    gather_cutouts([d / "manifest.parquet" for d in parts], [d / "s.npy" for d in parts], gathered / "fits",
                   gathered / "manifest.parquet", gathered / "s.npy")
    # a second field over the same sky: ownership goes to "a" (the same centre; the name sorts first)
    make_cutouts(SDC1_IMAGE, tmp_path / "b" / "fits", tmp_path / "b" / "manifest.parquet", tmp_path / "b" / "s.npy",
                 field="b", config=config)
    ingest(SDC1_TRUTH, "sdc1_truth", tmp_path / "src.parquet", class_ids={1, 2, 3})
    outputs = {}
    for name, manifests in (("parts", [d / "manifest.parquet" for d in parts]),
                            ("gathered", [gathered / "manifest.parquet"])):
        build_index(tmp_path / "src.parquet", [*manifests, tmp_path / "b" / "manifest.parquet"],
                    tmp_path / f"{name}.parquet", tmp_path / f"{name}.json", survey="sdc1_parts",
                    database_url=postgis_url, private_dir=tmp_path / "unused", margin_px=2.0,
                    cutouts_output=tmp_path / f"{name}_cutouts.parquet")
        outputs[name] = (pd.read_parquet(tmp_path / f"{name}.parquet"),
                         pd.read_parquet(tmp_path / f"{name}_cutouts.parquet"))
    pd.testing.assert_frame_equal(outputs["parts"][0], outputs["gathered"][0])
    pd.testing.assert_frame_equal(outputs["parts"][1], outputs["gathered"][1])
    pairs, ownership = outputs["parts"]
    assert len(pairs) > 15000 and set(pairs["field"]) == {"a"}
    assert ownership.groupby("field")["owned"].all().to_dict() == {"a": True, "b": False}


@pytest.mark.parametrize("cores, workers", [(None, None), (1, "0"), (2, "1"), (4, "3")])
def test_the_private_server_s_parallel_workers_fit_the_job_s_cores(cores, workers):
    from pathlib import Path

    from radiodet.db import _server_options

    options = _server_options(Path("/tmp/sock"), cores)
    assert "fsync=off" in options and "listen_addresses=''" in options
    assert ("max_parallel_workers" in options) == (workers is not None)
    if workers is not None:
        assert options.endswith(f"-c max_parallel_workers={workers}")


def test_a_private_server_for_one_core_runs_no_parallel_worker(postgis_url):
    # a real server started with the option: the setting the planner and index builds read
    import shutil

    from conftest import world_readable_tmpdir

    from radiodet.db import engine_for, private_server

    base = world_readable_tmpdir("radiodet-cores-")
    try:
        with private_server(base / "postgis", cores=1) as url:
            engine = engine_for(url)
            try:
                with engine.connect() as conn:
                    assert conn.execute(sa.text("SHOW max_parallel_workers")).scalar() == "0"
            finally:
                engine.dispose()
    finally:
        shutil.rmtree(base, ignore_errors=True)
