"""Spatial index: cutout footprints and sources in PostGIS, one set-based join.

Sources are points and cutout footprints polygons of PostGIS ``geography``
(longitude = RA folded into [-180, 180), latitude = Dec, SRID 4326 used as a
sphere label only). Geography works on the sphere, so a cutout that straddles
RA = 0/360 (the SDC1 field does) or sits at a pole needs no special case.
Both tables carry GiST indexes, and sources are assigned to cutouts by one
``INSERT ... SELECT ... JOIN ... ON ST_Covers(footprint, position)``, never a
query per source.

Footprints are the cutouts' outer pixel edges grown by ``margin_px`` pixels,
traced through the parent WCS with several points per side; the assignment is
therefore a superset, and the boxes stage decides in exact pixel coordinates
which sources are inside a cutout.

Re-indexing a survey replaces its rows in one transaction, under an advisory
lock keyed by the survey, so reruns never duplicate rows and concurrent runs
for the same survey take turns.
"""

from __future__ import annotations

import io
import logging
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from geoalchemy2 import Geography

from .atomic import write_json
from .cutouts import field_wcs, footprint
from .db import database, validate_identifier
from .geometry import wrap_ra_difference
from .schema import write_parquet

__all__ = ["ASSIGNMENT_COLUMNS", "tables", "build_index", "load_and_assign"]

log = logging.getLogger(__name__)

ASSIGNMENT_COLUMNS: dict[str, tuple[pa.DataType, str, str]] = {
    "source_id": (pa.int64(), "", "source id (catalogue)"),
    "cutout_id": (pa.string(), "", "cutout whose footprint (grown by margin_px) covers the source"),
    "field": (pa.string(), "", "field of the cutout"),
}


def tables(schema: str) -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table]:
    """SQLAlchemy tables ``sources``, ``cutouts``, ``assignments`` in ``schema``."""
    schema = validate_identifier(schema, "database.schema")
    meta = sa.MetaData(schema=schema)
    sources = sa.Table(
        "sources", meta,
        sa.Column("survey", sa.Text, primary_key=True),
        sa.Column("source_id", sa.BigInteger, primary_key=True),
        sa.Column("ra", sa.Float(53), nullable=False),
        sa.Column("dec", sa.Float(53), nullable=False),
        sa.Column("position", Geography("POINT", srid=4326, spatial_index=True), nullable=False),
    )
    cutouts = sa.Table(
        "cutouts", meta,
        sa.Column("survey", sa.Text, primary_key=True),
        sa.Column("cutout_id", sa.Text, primary_key=True),
        sa.Column("field", sa.Text, nullable=False),
        sa.Column("split", sa.Text, nullable=False),
        sa.Column("footprint", Geography("POLYGON", srid=4326, spatial_index=True), nullable=False),
    )
    assignments = sa.Table(
        "assignments", meta,
        sa.Column("survey", sa.Text, primary_key=True),
        sa.Column("source_id", sa.BigInteger, primary_key=True),
        sa.Column("cutout_id", sa.Text, primary_key=True),
    )
    return meta, sources, cutouts, assignments


def _lon(ra: np.ndarray) -> np.ndarray:
    """RA in degrees -> geography longitude in [-180, 180)."""
    return wrap_ra_difference(ra)


def _copy(conn: sa.Connection, table: str, columns: list[str], frame: pd.DataFrame) -> None:
    """COPY ``frame`` into ``table`` (a trusted, already-quoted name) as CSV."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, float_format="%.12g")
    buffer.seek(0)
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cursor:
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buffer)


def _footprints(manifest_paths: list[Path], margin_px: float) -> pd.DataFrame:
    rows = []
    for path in manifest_paths:
        manifest = pd.read_parquet(path)
        wcs = field_wcs(path)
        for row in manifest.itertuples():
            ra, dec = footprint(wcs, row.x0 - margin_px, row.y0 - margin_px, row.x1 + margin_px, row.y1 + margin_px)
            wkt = "POLYGON((" + ", ".join(f"{lo:.10f} {la:.10f}" for lo, la in zip(_lon(ra), dec)) + "))"
            rows.append((row.cutout_id, row.field, row.split, wkt))
    return pd.DataFrame(rows, columns=["cutout_id", "field", "split", "wkt"])


def load_and_assign(engine: sa.Engine, sources: pd.DataFrame, cutouts: pd.DataFrame, *, survey: str,
                    schema: str) -> pd.DataFrame:
    """Replace ``survey``'s rows, join, and return the assignment table.

    ``sources``: columns source_id, ra, dec (deg). ``cutouts``: cutout_id,
    field, split, wkt (geography polygon, longitudes in [-180, 180)).
    Everything happens in one transaction.
    """
    meta, src, cut, asg = tables(schema)
    preparer = engine.dialect.identifier_preparer
    q_schema = preparer.quote_identifier(schema)
    lock_key = zlib.crc32(f"radiodet:{schema}:{survey}".encode())
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {q_schema}"))
    # create_all in its own transaction: concurrent CREATE TABLE IF NOT EXISTS
    # can still collide, so serialise it with a global advisory lock.
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(f"radiodet:{schema}".encode())})
        meta.create_all(conn, checkfirst=True)
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
        for table in (asg, cut, src):
            conn.execute(table.delete().where(table.c.survey == survey))
        t0 = time.monotonic()
        conn.execute(sa.text("CREATE TEMP TABLE tmp_sources (source_id bigint, lon double precision, "
                             "ra double precision, dec double precision) ON COMMIT DROP"))
        _copy(conn, "tmp_sources", ["source_id", "lon", "ra", "dec"],
              pd.DataFrame({"source_id": sources["source_id"].to_numpy(), "lon": _lon(sources["ra"].to_numpy()),
                            "ra": sources["ra"].to_numpy(), "dec": sources["dec"].to_numpy()}))
        conn.execute(sa.text(
            f"INSERT INTO {q_schema}.sources (survey, source_id, ra, dec, position) "
            "SELECT :survey, source_id, ra, dec, ST_SetSRID(ST_MakePoint(lon, dec), 4326)::geography "
            "FROM tmp_sources"), {"survey": survey})
        conn.execute(sa.text("CREATE TEMP TABLE tmp_cutouts (cutout_id text, field text, split text, wkt text) "
                             "ON COMMIT DROP"))
        _copy(conn, "tmp_cutouts", ["cutout_id", "field", "split", "wkt"], cutouts)
        conn.execute(sa.text(
            f"INSERT INTO {q_schema}.cutouts (survey, cutout_id, field, split, footprint) "
            "SELECT :survey, cutout_id, field, split, ST_GeogFromText('SRID=4326;' || wkt) FROM tmp_cutouts"),
            {"survey": survey})
        log.info("loaded %d sources and %d cutout footprints in %.1f s", len(sources), len(cutouts),
                 time.monotonic() - t0)
        conn.execute(sa.text(f"ANALYZE {q_schema}.sources"))
        conn.execute(sa.text(f"ANALYZE {q_schema}.cutouts"))
        t0 = time.monotonic()
        inserted = conn.execute(sa.text(
            f"INSERT INTO {q_schema}.assignments (survey, source_id, cutout_id) "
            f"SELECT s.survey, s.source_id, c.cutout_id FROM {q_schema}.sources AS s "
            f"JOIN {q_schema}.cutouts AS c ON c.survey = s.survey AND ST_Covers(c.footprint, s.position) "
            "WHERE s.survey = :survey"), {"survey": survey}).rowcount
        log.info("spatial join: %d (source, cutout) pairs in %.1f s", inserted, time.monotonic() - t0)
        result = conn.execute(sa.text(
            f"SELECT a.source_id, a.cutout_id, c.field FROM {q_schema}.assignments AS a "
            f"JOIN {q_schema}.cutouts AS c ON c.survey = a.survey AND c.cutout_id = a.cutout_id "
            "WHERE a.survey = :survey ORDER BY a.cutout_id, a.source_id"), {"survey": survey})
        assigned = pd.DataFrame(result.fetchall(), columns=["source_id", "cutout_id", "field"])
    return assigned.astype({"source_id": np.int64})


def build_index(sources_path: str | Path, manifest_paths: list[str | Path], output: str | Path,
                summary_path: str | Path, *, survey: str, database_url: str | None, private_dir: str | Path,
                schema: str = "radiodet", margin_px: float = 2.0, postgres_bin: str | None = None) -> dict:
    """Index a survey and write the assignment Parquet and a JSON summary."""
    validate_identifier(schema, "database.schema")
    sources = pd.read_parquet(sources_path, columns=["source_id", "ra", "dec"])
    cutouts = _footprints([Path(p) for p in manifest_paths], margin_px)
    with database(database_url, private_dir=private_dir, postgres_bin=postgres_bin) as engine:
        assigned = load_and_assign(engine, sources, cutouts, survey=survey, schema=schema)
    write_parquet(assigned, output, columns=ASSIGNMENT_COLUMNS,
                  metadata={"survey": survey, "margin_px": margin_px, "sources": str(sources_path)})
    summary = {
        "survey": survey, "sources": int(len(sources)), "cutouts": int(len(cutouts)),
        "pairs": int(len(assigned)), "sources_in_a_cutout": int(assigned["source_id"].nunique()),
        "sources_in_no_cutout": int(len(sources) - assigned["source_id"].nunique()),
        "margin_px": margin_px,
    }
    write_json(summary_path, summary)
    log.info("index: %s", summary)
    return summary
