"""Spatial index: cutout footprints and sources in PostGIS, one set-based join.

Sources are points and cutout footprints polygons of PostGIS ``geography``
(longitude = RA folded into [-180, 180), latitude = Dec, SRID 4326 used as a
sphere label only), for the ownership of overlapping fields and for a user's
own queries. The join itself runs in each field's gnomonic (tangent-plane)
projection about its image centre, as planar ``geometry``: the projection
maps great circles (the edges of a geography polygon) to straight lines, so a
footprint covers a source in the plane exactly when it does on the sphere,
across RA = 0/360 (the SDC1 field straddles it) and at the poles alike, while
a planar ``ST_Covers`` is cheap. Every source within a field's radius
(the farthest footprint vertex from its centre) gets a point in that field's
plane; fields are kept apart by shifting each plane along x. Sources are then
assigned to cutouts by one ``INSERT ... SELECT ... JOIN ... WHERE
ST_Covers(plane_footprint, position)``, never a query per source.

The join finds its candidates by hashing, not through a spatial index: each
plane is divided into square cells of :data:`CELL_PIXELS` of the field's
pixels, every point carries the key of its cell (column ``cell``), and each
cutout lists the cells its footprint's bounding box touches (about 18 for an
SDC1 cutout). One hash join on the cell key pairs every point with the
cutouts whose boxes reach its cell, and ``ST_Covers`` decides. A point's cell
and a box's cells come from one monotonic function of the same float64
coordinates that the database holds, so a point inside a footprint is always
in one of its cells: the candidates hold every covered point. This replaced
a GiST index on the 5.25 M points of an SDC1 field (8 s to build) and a
nested loop through it (11 s; the hash join takes 9 s).

Footprints are the cutouts' outer pixel edges grown by ``margin_px`` pixels,
traced through the parent WCS with several points per side; the assignment is
therefore a superset, and the boxes stage decides in exact pixel coordinates
which sources are inside a cutout.

Re-indexing a survey replaces its rows in one transaction, under an advisory
lock keyed by the database schema, so reruns never duplicate rows and
concurrent index jobs (of one survey or several) take turns.

``sources`` (RA, Dec; the ``sky_sources`` view adds their geography),
``source_points``, ``cutouts`` and ``assignments`` are partitioned by
survey: each survey's rows are COPYed into fresh plain tables with no index
(the sources and points in COPY's binary format: floats as their 8 bytes,
points as WKB, nothing for the server to parse, 2-3 x faster than CSV), then
their primary keys (and GiST indexes) are built once and they are attached
as the survey's partitions (a bulk load into tables with live indexes was
the index stage's main cost). Re-indexing drops the survey's old
partitions, which also replaces a ``DELETE`` of millions of rows, and leaves
no dead rows behind (the cutouts' once made each later ``ANALYZE`` read a
1.2 GB table after 35 runs). Tables of an earlier layout (unpartitioned,
``sources`` with a geography column, or ``source_points`` without the join
grid's ``cell``) are dropped with a warning: they hold only rows derived
from the workflow's files.

The sources' half of that work needs no cutout: in the workflow a job
(:func:`stage_sources`, rule ``index_sources``) loads and indexes them into
staged tables while the cutouts are cut, each field's plane taken from its
image header (the same tangent point and shift; a radius holding the whole
image). The index job checks that the stage fits its cutouts (fields,
planes, margin, the catalogue file, the token in the staged table's comment)
and then renames the staged tables into the survey's partitions inside its
one transaction; when anything does not fit, it loads the sources itself.
Until then the staged tables are no partitions: nothing a user queries
changes before the index job commits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from astropy.io import fits

from .atomic import write_json
from .db import (
    PlanarPoints,
    binary_copy_records,
    copy_binary,
    copy_query,
    copy_rows,
    database,
    hex_ewkb_polygons,
    index_tables,
    validate_identifier,
)
from .errors import ConfigError, InputError
from .geometry import local_offsets, wrap_ra_difference
from .images import celestial_wcs, open_image
from .manifest import field_shape, field_wcs, footprints
from .schema import read_frame, read_parquet_metadata, read_sources, write_parquet

__all__ = ["ASSIGNMENT_COLUMNS", "OWNERSHIP_COLUMNS", "build_index", "load_and_assign", "field_centres",
           "stage_sources", "image_planes"]

log = logging.getLogger(__name__)

OWNERSHIP_COLUMNS: dict[str, tuple[pa.DataType, str, str]] = {
    "cutout_id": (pa.string(), "", "cutout id"),
    "field": (pa.string(), "", "field"),
    "split": (pa.string(), "", "split"),
    "owned": (pa.bool_(), "", "false: another field's centre is nearer somewhere in this cutout (not used)"),
}

ASSIGNMENT_COLUMNS: dict[str, tuple[pa.DataType, str, str]] = {
    "source_id": (pa.int64(), "", "source id (catalogue)"),
    "cutout_id": (pa.string(), "", "cutout whose footprint (grown by margin_px) covers the source"),
    "field": (pa.string(), "", "field of the cutout"),
}


#: survey names as the config schema allows them: they reach DDL as partition bounds
_SURVEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: the tables partitioned by survey
PARTITIONED = ("sources", "source_points", "assignments", "cutouts")
#: the widest a field may be: its farthest footprint vertex from its centre, degrees (gnomonic x, y grow as tan)
MAX_FIELD_RADIUS_DEG = 60.0
#: field k's plane is shifted by k times this along x, arcsec (a plane of radius 60 deg spans < 2 x 3.6e5")
PLANE_STRIDE_ARCSEC = 1.0e6
#: the join grid's cells are squares of this many of the field's pixels on a side (at the tangent point):
#: an SDC1 cutout of 205 px (209 grown) touches 4 x 4 or 5 x 5 of them
CELL_PIXELS = 64
#: the smallest cell, arcsec: a cell's row in a plane of radius 60 deg (|y| < tan 60 deg = 357,300") stays
#: below 2^20 in magnitude, so :func:`_cell_keys` stays unique
MIN_CELL_ARCSEC = 0.35
#: a cell's key is column x this + row (unique while |row| < 2^21)
_CELL_ROW_SPAN = 1 << 22
#: a footprint's box is grown by this (arcsec) before its cells are listed: a point that ST_Covers finds on
#: an edge by rounding, outside the box by a few ulp, is still a candidate
_CELL_SLACK_ARCSEC = 1e-6


def _partition(table: str, survey: str) -> str:
    """The name of ``survey``'s partition of ``table`` (a safe identifier for any survey name)."""
    return f"{table}_{hashlib.sha1(survey.encode()).hexdigest()[:12]}"


def _drop_old_layout(conn: sa.Connection, schema: str, q: str) -> None:
    """Drop ``sources``/``source_points``/``assignments``/``cutouts`` tables of an earlier layout (with a warning).

    Earlier layouts: not partitioned by survey, ``sources`` holding the
    geography column the join once used, ``source_points`` without the
    join grid's cell (with the GiST index the join once used) or with a
    primary key (a partition without one cannot be attached to it).
    """
    kinds = dict(conn.execute(sa.text(
        "SELECT c.relname, c.relkind FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relname IN ('sources', 'source_points', 'assignments', 'cutouts')"),
        {"schema": schema}).fetchall())
    columns = set(conn.execute(sa.text(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = :schema "
        "AND (table_name, column_name) IN (('sources', 'position'), ('source_points', 'cell'))"),
        {"schema": schema}).fetchall())
    points_key = conn.execute(sa.text(
        "SELECT count(*) FROM pg_constraint AS k JOIN pg_class AS c ON c.oid = k.conrelid JOIN pg_namespace AS n "
        "ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relname = 'source_points' AND k.contype = 'p'"),
        {"schema": schema}).scalar()
    old = [name for name in ("assignments", "cutouts", "source_points", "sources")
           if kinds.get(name, "p") != "p" or (name == "sources" and ("sources", "position") in columns)
           or (name == "source_points" and name in kinds and ((name, "cell") not in columns or points_key))]
    if old:
        named = old[0] if len(old) == 1 else f"{', '.join(old[:-1])} and {old[-1]}"
        log.warning("database schema %s: %s made by an earlier version dropped; they held only derived rows: "
                    "rerun the index job of any other survey kept in this schema", schema, named)
        conn.execute(sa.text(f"DROP VIEW IF EXISTS {q}.sky_sources"))
        conn.execute(sa.text(f"DROP TABLE {', '.join(f'{q}.{name}' for name in old)}"))


def _build_indexes(conn: sa.Connection, part: str, bound: str, key: list[str] | None,
                   gist: tuple[str, ...] = ()) -> None:
    """Build a loaded partition-to-be's primary key (``key``, if any; a GiST index per ``gist`` column), its CHECK.

    The CHECK constraint spares :func:`_attach` a scan of the rows; the
    indexes built here become the partitions of the parent's indexes.
    """
    if key:
        conn.execute(sa.text(f"ALTER TABLE {part} ADD PRIMARY KEY ({', '.join(key)})"))
    for column in gist:
        conn.execute(sa.text(f"CREATE INDEX ON {part} USING gist ({column})"))
    conn.execute(sa.text(f"ALTER TABLE {part} ADD CHECK (survey = {bound})"))


def _attach(conn: sa.Connection, part: str, parent: str, bound: str) -> None:
    conn.execute(sa.text(f"ALTER TABLE {parent} ATTACH PARTITION {part} FOR VALUES IN ({bound})"))


def _lon(ra: np.ndarray) -> np.ndarray:
    """RA in degrees -> geography longitude in [-180, 180)."""
    return wrap_ra_difference(ra)


def _separation_deg(ra0: float, dec0: float, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return np.rad2deg(np.arccos(np.clip(_unit(ra, dec) @ _unit(np.array([ra0]), np.array([dec0]))[0], -1, 1)))


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Unit vectors (N, 3) of positions in degrees."""
    ra, dec = np.deg2rad(np.asarray(ra, float)), np.deg2rad(np.asarray(dec, float))
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


#: the cutouts frame's polygons (hex EWKB), named as the cutouts table's columns:
#: grown and exact on the sky, grown in the plane
SHAPE_COLUMNS = ["footprint", "extent", "plane_footprint"]
#: per-field plane columns of the cutouts frame: tangent point (deg), x shift (arcsec), radius (deg),
#: the join grid's cell (arcsec)
PLANE_COLUMNS = ["plane_ra", "plane_dec", "plane_shift", "plane_radius", "plane_cell"]
#: the cutouts frame's join-grid cells: the columns (first, last) and rows (first, last) its footprint's
#: box in the (shifted) plane touches
CELL_COLUMNS = ["cell_x0", "cell_x1", "cell_y0", "cell_y1"]


def _cell_size(wcs) -> float:
    """A field's join-grid cell, arcsec: :data:`CELL_PIXELS` of its pixels (at least :data:`MIN_CELL_ARCSEC`)."""
    pixel_arcsec = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
    return max(CELL_PIXELS * pixel_arcsec, MIN_CELL_ARCSEC)


def _cell_index(value: np.ndarray, cell: float) -> np.ndarray:
    """The grid column (of a shifted plane x) or row (of a y) of coordinates in arcsec: floor(value / cell).

    Monotonic in ``value``: a point between two coordinates is in a cell between theirs.
    """
    return np.floor(np.asarray(value, np.float64) / cell).astype(np.int64)


def _cell_keys(column: np.ndarray, row: np.ndarray) -> np.ndarray:
    """The join's hash key of grid cells (column, row).

    Fields' planes are shifted apart along x, so one cell size gives each
    field its own columns; fields of different cell sizes may share a key,
    which only adds candidates that ``ST_Covers`` rejects.
    """
    return column * _CELL_ROW_SPAN + row


def _cutout_cells(cutouts: pd.DataFrame) -> pd.DataFrame:
    """(cutout_id, cell) for every join-grid cell of each cutout's box (:data:`CELL_COLUMNS`)."""
    x0, x1, y0, y1 = (cutouts[c].to_numpy(np.int64) for c in CELL_COLUMNS)
    rows = y1 - y0 + 1
    counts = (x1 - x0 + 1) * rows
    owner = np.repeat(np.arange(len(cutouts)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    keys = _cell_keys(x0[owner] + within // rows[owner], y0[owner] + within % rows[owner])
    return pd.DataFrame({"cutout_id": cutouts["cutout_id"].to_numpy(object)[owner], "cell": keys})


def _plane_centre(wcs, shape: tuple[int, int]) -> tuple[float, float]:
    """Tangent point (RA, Dec in deg) of a field's plane: its image centre, pixel ((nx - 1) / 2, (ny - 1) / 2)."""
    ny, nx = shape
    ra, dec = wcs.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
    return float(ra), float(dec)


def _check_radius(path, radius: float) -> None:
    if radius >= MAX_FIELD_RADIUS_DEG:
        raise InputError(path, f"the cutouts reach {radius:.1f} deg from the field centre; the spatial join "
                               f"handles fields up to {MAX_FIELD_RADIUS_DEG:g} deg in radius (split the image)")


#: manifest paths, or the field -> manifests grouping :func:`_manifests_by_field` made of them
Manifests = list[Path] | dict[str, list[Path]]


def _manifests_by_field(manifest_paths: Manifests) -> dict[str, list[Path]]:
    """Field -> its manifests, the fields in the order they first come: a field's own, or its parts' in part order.

    The index job of a field cut by several jobs reads the parts' manifests
    (:mod:`radiodet.parts`): it need not wait for them to be gathered. A
    grouping already made is returned as it is (the field names are read
    from each manifest's metadata, once per index job).
    """
    if isinstance(manifest_paths, dict):
        return manifest_paths
    fields: dict[str, list[Path]] = {}
    for path in manifest_paths:
        fields.setdefault(read_parquet_metadata(path)["field"], []).append(Path(path))
    return fields


def _footprints(manifest_paths: Manifests, margin_px: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cutout polygons (grown, exact, grown in the field's plane) and the 5 ownership test points of each cutout.

    Field k (in the order the manifests first name it; the manifests of a
    field's parts concatenate to its own) is projected about its image
    centre and shifted by k x :data:`PLANE_STRIDE_ARCSEC` along x; its
    radius is the farthest grown footprint vertex from the centre. The frame
    also holds each cutout's join-grid cells (:data:`CELL_COLUMNS`).
    """
    frames, points = [], []
    for k, paths in enumerate(_manifests_by_field(manifest_paths).values()):
        path = paths[0]
        manifest = pd.concat([read_frame(p) for p in paths], ignore_index=True)
        wcs = field_wcs(path)
        ra0, dec0 = _plane_centre(wcs, field_shape(path))
        shift = k * PLANE_STRIDE_ARCSEC
        x0, y0, x1, y1 = (manifest[c].to_numpy(float) for c in ("x0", "y0", "x1", "y1"))
        grown = footprints(wcs, x0 - margin_px, y0 - margin_px, x1 + margin_px, y1 + margin_px)
        exact = footprints(wcs, x0, y0, x1, y1)
        east, north = local_offsets(ra0, dec0, *grown)
        radius = float(_separation_deg(ra0, dec0, grown[0].ravel(), grown[1].ravel()).max()) if len(x0) else 0.0
        _check_radius(path, radius)
        if manifest.empty:
            continue
        frame = manifest[["cutout_id", "field", "split"]].copy()
        frame["footprint"] = hex_ewkb_polygons(_lon(grown[0]), grown[1], srid=4326)
        frame["extent"] = hex_ewkb_polygons(_lon(exact[0]), exact[1], srid=4326)
        plane_x = east + shift
        frame["plane_footprint"] = hex_ewkb_polygons(plane_x, north)
        cell = _cell_size(wcs)
        frame[PLANE_COLUMNS] = [ra0, dec0, shift, radius, cell]
        for name, edge in (("cell_x0", plane_x.min(axis=1) - _CELL_SLACK_ARCSEC),
                           ("cell_x1", plane_x.max(axis=1) + _CELL_SLACK_ARCSEC),
                           ("cell_y0", north.min(axis=1) - _CELL_SLACK_ARCSEC),
                           ("cell_y1", north.max(axis=1) + _CELL_SLACK_ARCSEC)):
            frame[name] = _cell_index(edge, cell)
        frames.append(frame)
        # ownership test points: corners (just inside the outer pixel edges) and centre
        xs = np.column_stack([x0 - 0.49, x1 - 0.51, x1 - 0.51, x0 - 0.49, (x0 + x1 - 1) / 2])
        ys = np.column_stack([y0 - 0.49, y0 - 0.49, y1 - 0.51, y1 - 0.51, (y0 + y1 - 1) / 2])
        ra, dec = wcs.pixel_to_world_values(xs.ravel(), ys.ravel())
        points.append(pd.DataFrame({"cutout_id": np.repeat(manifest["cutout_id"].to_numpy(), 5),
                                    "field": np.repeat(manifest["field"].to_numpy(), 5),
                                    "lon": _lon(ra), "lat": np.asarray(dec, float)}))
    point_columns = ["cutout_id", "field", "lon", "lat"]
    columns = ["cutout_id", "field", "split", *SHAPE_COLUMNS, *PLANE_COLUMNS, *CELL_COLUMNS]
    return (pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns),
            pd.concat(points, ignore_index=True) if points else pd.DataFrame(columns=point_columns))


def _planes_of(cutouts: pd.DataFrame) -> pd.DataFrame:
    """The fields' planes (:data:`PLANE_COLUMNS`, indexed by field, in order) of a cutouts frame."""
    return cutouts.groupby("field", sort=False)[PLANE_COLUMNS].first()


def image_planes(images: list[tuple[str, str | Path]], margin_px: float) -> pd.DataFrame:
    """The fields' planes from their images alone (before any cutout): what :func:`stage_sources` projects into.

    ``images``: (field, image path) in the order of the manifests the index
    job is given. Tangent point and shift as :func:`_footprints` computes
    them from the manifests (the same WCS, from the same header string, so
    the same cell); the radius is that of the whole image grown by
    ``margin_px``, which holds every cutout's grown footprint (the index job
    checks that it does).
    """
    rows = []
    for k, (field, path) in enumerate(images):
        with open_image(path) as image:
            header, shape = image.wcs.to_header_string(relax=True), image.shape
        wcs = celestial_wcs(fits.Header.fromstring(header), path)  # as the manifest records it
        ra0, dec0 = _plane_centre(wcs, shape)
        ny, nx = shape
        ra, dec = footprints(wcs, [-margin_px], [-margin_px], [nx + margin_px], [ny + margin_px], per_edge=64)
        radius = float(_separation_deg(ra0, dec0, ra.ravel(), dec.ravel()).max())
        _check_radius(path, radius)
        rows.append((field, ra0, dec0, k * PLANE_STRIDE_ARCSEC, radius, _cell_size(wcs)))
    return pd.DataFrame(rows, columns=["field", *PLANE_COLUMNS]).set_index("field")


#: sources projected at a time by :func:`source_point_records` (its temporaries: ~100 MB, reused)
PROJECTION_CHUNK = 1 << 20
#: above this many (source, field) combinations the sources near a field are found with a KD-tree
_KD_TREE_ABOVE = 200_000_000


def source_point_records(sources: pd.DataFrame, planes: pd.DataFrame, *,
                         chunk: int = PROJECTION_CHUNK) -> list[tuple[int, memoryview]]:
    """Every source within a field's radius, in that field's (shifted) gnomonic plane, as COPY records.

    ``sources``: source_id, ra, dec (deg); ``planes``: :data:`PLANE_COLUMNS`
    indexed by field (:func:`_planes_of`, :func:`image_planes`). Returns
    (number of points, :func:`radiodet.db.binary_copy_records` of field,
    source_id, cell, position) per field and run of ``chunk`` sources, the
    fields in ``planes`` order and the sources in catalogue order within
    each: the rows of ``source_points``, x and y in arcsec, ``cell`` the key
    of the join-grid cell holding (x, y). A source near several fields has a
    point in each. The sources are projected ``chunk`` at a time, so the
    temporaries of the projection are a few chunk-sized arrays reused from
    chunk to chunk, not a dozen arrays of the whole catalogue (5.25 M SDC1
    sources: about 1 GB of new memory).
    """
    from scipy.spatial import cKDTree

    ra, dec = sources["ra"].to_numpy(float), sources["dec"].to_numpy(float)
    source_id = sources["source_id"].to_numpy(np.int64)
    # few fields: one dot product per source and field; many: a KD-tree of the sources
    use_tree = len(planes) * len(ra) > _KD_TREE_ABOVE
    # each field's centre as a unit vector and its radius (padded against rounding at the farthest
    # vertex) as the least dot product and the longest chord from the centre, worked out once
    reach = {}
    for field, plane in planes.iterrows():
        radius = np.deg2rad(plane["plane_radius"] + 1e-6)
        reach[field] = _unit([plane["plane_ra"]], [plane["plane_dec"]])[0], np.cos(radius), 2.0 * np.sin(radius / 2.0)
    near_by_chunk: dict[str, list[np.ndarray]] = {field: [] for field in planes.index}
    for start in range(0, len(ra), chunk):
        units = _unit(ra[start:start + chunk], dec[start:start + chunk])
        tree = cKDTree(units) if use_tree else None
        for field, (centre, least_dot, chord) in reach.items():
            if tree is None:
                near = np.flatnonzero(units @ centre >= least_dot)
            else:
                near = np.sort(np.asarray(tree.query_ball_point(centre, chord), dtype=np.int64))
            near_by_chunk[field].append(near + start)
    records = []
    for field, plane in planes.iterrows():
        for near in near_by_chunk[field]:
            if not len(near):
                continue
            east, north = local_offsets(plane["plane_ra"], plane["plane_dec"], ra[near], dec[near])
            x = east + plane["plane_shift"]
            cell = _cell_keys(_cell_index(x, plane["plane_cell"]), _cell_index(north, plane["plane_cell"]))
            records.append((len(near), binary_copy_records({
                "field": field, "source_id": source_id[near], "cell": cell, "position": PlanarPoints(x, north)})))
    return records


def field_centres(manifest_paths: Manifests, given: dict[str, tuple[float, float] | None] | None = None
                  ) -> pd.DataFrame:
    """Centre (RA, Dec) of each field: as given (field table), else the image centre."""
    rows = []
    for field, (path, *_) in _manifests_by_field(manifest_paths).items():
        if given and given.get(field) is not None:
            ra, dec = given[field]
        else:
            ny, nx = field_shape(path)
            ra, dec = field_wcs(path).pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
        rows.append((field, float(_lon(np.array([ra]))[0]), float(dec)))
    return pd.DataFrame(rows, columns=["field", "lon", "lat"])


class _Names:
    """Quoted names of one survey's tables in ``schema`` (partitions and the staged tables)."""

    def __init__(self, engine: sa.Engine, schema: str, survey: str):
        if not _SURVEY.match(survey):
            raise ConfigError(f"survey {survey!r} must match {_SURVEY.pattern}")
        preparer = engine.dialect.identifier_preparer
        self.q = q = preparer.quote_identifier(schema)
        self.bare = {name: _partition(name, survey) for name in PARTITIONED}
        self.sources, self.points, self.assignments, self.cutouts = (
            f"{q}.{preparer.quote_identifier(self.bare[name])}" for name in PARTITIONED)
        self.staged_sources, self.staged_points = (
            f"{q}.{preparer.quote_identifier(_partition('staged_' + name, survey))}"
            for name in ("sources", "source_points"))
        self.bound = f"'{survey}'"  # the pattern above admits no quote


def _ensure_schema(engine: sa.Engine, schema: str) -> None:
    """Create (or bring up to date) the schema's tables, indexes and views."""
    meta, _ = index_tables(schema)
    q = engine.dialect.identifier_preparer.quote_identifier(schema)
    # CREATE ... IF NOT EXISTS still races between concurrent sessions (both
    # see "absent", one fails on the catalogue's unique index), so the DDL is
    # serialised by one database-wide advisory lock, held to the commit.
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(b"radiodet:ddl")})
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {q}"))
        _drop_old_layout(conn, schema, q)
        meta.create_all(conn, checkfirst=True)
        # geography longitude in [-180, 180): RA >= 180 becomes RA - 360
        conn.execute(sa.text(
            f"CREATE OR REPLACE VIEW {q}.sky_sources AS SELECT survey, source_id, ra, dec, "
            "ST_SetSRID(ST_MakePoint(CASE WHEN ra >= 180 THEN ra - 360 ELSE ra END, dec), 4326)::geography "
            f"AS position FROM {q}.sources"))


def _load_sources(conn: sa.Connection, names: _Names, sources_table: str, points_table: str,
                  sources: pd.DataFrame, planes: pd.DataFrame) -> None:
    """Create and fill ``sources_table`` and ``points_table`` (not yet partitions) and build their indexes.

    Binary COPY into plain tables with no index, then each primary key built once.
    """
    t0 = time.monotonic()
    conn.execute(sa.text("SET LOCAL maintenance_work_mem = '256MB'"))
    # the survey column from the tables' default
    for table, parent in ((sources_table, "sources"), (points_table, "source_points")):
        conn.execute(sa.text(f"CREATE TABLE {table} (LIKE {names.q}.{parent} INCLUDING DEFAULTS)"))
        conn.execute(sa.text(f"ALTER TABLE {table} ALTER COLUMN survey SET DEFAULT {names.bound}"))

    def load_sources() -> float:
        copy_binary(conn, sources_table, ["source_id", "ra", "dec"], [binary_copy_records({
            name: sources[name].to_numpy(dtype) for name, dtype in
            (("source_id", np.int64), ("ra", np.float64), ("dec", np.float64))})], freeze=True)
        _build_indexes(conn, sources_table, names.bound, ["survey", "source_id"])
        return time.monotonic() - t0

    # The server loads and indexes the sources while this process projects them
    # into the fields' planes. One connection and one transaction: the thread has
    # the connection to itself until its result is taken (the pool's exit waits
    # for it, also when the projection fails).
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(load_sources)
        point_chunks = source_point_records(sources, planes)
        t_project = time.monotonic() - t0
        t_sources = loading.result()
    t1 = time.monotonic()
    copy_binary(conn, points_table, ["field", "source_id", "cell", "position"],
                [records for _, records in point_chunks], freeze=True)
    n_points = sum(n for n, _ in point_chunks)
    del point_chunks
    t2 = time.monotonic()
    _build_indexes(conn, points_table, names.bound, None)  # no index: see radiodet.db.index_tables
    log.info("sources: %d rows loaded and indexed in %.1f s, beside their projection into the fields' planes "
             "(%.1f s); %d points in the planes in %.1f s", len(sources), t_sources, t_project, n_points, t2 - t1)


def _stage_lock(schema: str, survey: str) -> int:
    return zlib.crc32(f"radiodet:{schema}:{survey}:stage".encode())


def stage_sources(sources_path: str | Path, images: list[tuple[str, str | Path]], marker_path: str | Path, *,
                  survey: str, database_url: str | None, private_dir: str | Path, schema: str = "radiodet",
                  margin_px: float = 2.0, postgres_bin: str | None = None, cores: int | None = None) -> dict:
    """Load a survey's sources and their plane points into staged tables, before its cutouts exist.

    The index stage's slowest part that needs no cutout (the binary COPY of
    the sources and of their points in the fields' planes, their primary
    keys) runs here, in its own committed transaction,
    beside the cutout jobs. The survey's visible rows are untouched: the
    staged tables are no partitions, and the index job
    (:func:`build_index` with ``stage_path``) attaches them in its one
    transaction, or loads the sources itself when the stage is not what the
    marker describes (another run replaced or consumed it).

    Parameters
    ----------
    images : list of (str, str or Path)
        (field, image) of every field, in the order of the manifests the
        index job is given: the planes come from the images' headers
        (:func:`image_planes`).
    marker_path : str or Path
        JSON written after the commit: survey, schema, a random token (also
        the staged points table's comment), the planes and the counts.
    cores : int, optional
        The job's cores, as for :func:`build_index`.

    Returns
    -------
    dict
        What the marker holds.
    """
    validate_identifier(schema, "database.schema")
    t0 = time.monotonic()
    sources = read_sources(sources_path, columns=["source_id", "ra", "dec"])
    planes = image_planes(images, margin_px)
    token = uuid.uuid4().hex
    with database(database_url, private_dir=private_dir, postgres_bin=postgres_bin, cores=cores) as engine:
        names = _Names(engine, schema, survey)
        _ensure_schema(engine, schema)
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _stage_lock(schema, survey)})
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {names.staged_points}, {names.staged_sources}"))
            _load_sources(conn, names, names.staged_sources, names.staged_points, sources, planes)
            conn.execute(sa.text(f"COMMENT ON TABLE {names.staged_points} IS '{token}'"))
    marker = {"survey": survey, "schema": schema, "token": token, "sources": str(sources_path),
              "sources_file": _file_state(sources_path), "rows": int(len(sources)), "margin_px": margin_px,
              "planes": planes.reset_index().to_dict(orient="records"), "seconds": round(time.monotonic() - t0, 2)}
    write_json(marker_path, marker)
    log.info("staged %d sources of survey %s in %.1f s (token %s)", len(sources), survey, marker["seconds"], token)
    return marker


def _file_state(path: str | Path) -> list[int]:
    """[size in bytes, modification time in ns]: a rewritten catalogue differs in one of them."""
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def _fitting_stage(marker: dict, cutouts: pd.DataFrame, sources_path: str | Path, n_sources: int, *,
                   survey: str, schema: str, margin_px: float) -> str | None:
    """The stage's token when it fits this index job, else None (with a warning naming why).

    It fits when it was made for this survey, schema and margin, from this
    version of the catalogue, in the cutouts' planes (the same fields in
    order, tangent points and shifts, a radius that holds every footprint).
    """
    ours = _planes_of(cutouts)
    staged = pd.DataFrame(marker["planes"]).set_index("field") if marker.get("planes") else None
    problem = None
    if (marker.get("survey"), marker.get("schema"), marker.get("margin_px")) != (survey, schema, margin_px):
        problem = (f"staged for survey {marker.get('survey')!r}, schema {marker.get('schema')!r}, margin "
                   f"{marker.get('margin_px')} px")
    elif marker.get("sources_file") != _file_state(sources_path) or marker.get("rows") != n_sources:
        problem = f"staged another version of {sources_path} ({marker.get('rows')} rows; it now holds {n_sources})"
    elif staged is None or not set(PLANE_COLUMNS) <= set(staged.columns):
        problem = "staged by an earlier version, without the join grid"
    elif list(staged.index) != list(ours.index):
        problem = "staged for other fields"
    elif not all((staged[c].to_numpy() == ours[c].to_numpy()).all()
                 for c in ("plane_ra", "plane_dec", "plane_shift", "plane_cell")):
        problem = "staged in other planes (the images changed?)"
    elif (ours["plane_radius"].to_numpy() > staged["plane_radius"].to_numpy()).any():
        problem = "a footprint lies beyond the staged radius"
    if problem:
        log.warning("the staged sources do not fit these cutouts (%s): the index job loads the sources itself",
                    problem)
        return None
    return marker["token"]


def load_and_assign(engine: sa.Engine, sources: pd.DataFrame | Callable[[], pd.DataFrame], cutouts: pd.DataFrame,
                    *, survey: str, schema: str, points: pd.DataFrame | None = None,
                    centres: pd.DataFrame | None = None, stage_token: str | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replace ``survey``'s rows, decide cutout ownership, join; return (assignments, cutouts).

    ``sources``: source_id, ra, dec (deg), or a function returning them
    (called only when they are loaded here, not staged). ``cutouts``: cutout_id, field,
    split, footprint and extent (geography polygons, longitudes in [-180, 180)),
    plane_footprint (hex EWKB, :data:`SHAPE_COLUMNS`), the plane columns and
    the join-grid cells (:func:`_footprints`).
    ``points``: cutout_id, field, lon, lat of each cutout's corners and centre;
    ``centres``: field, lon, lat. A cutout is owned by its field when, at each
    of its points, no other field with valid data there (one of its cutouts
    covers the point) has a nearer centre (ties go to the field name that
    sorts first): each patch of sky is cut out from one field only. Only
    owned cutouts take part in the join. Everything happens in one
    transaction. ``stage_token``: the survey's sources were staged by
    :func:`stage_sources` with this token; its tables become the survey's
    partitions (when they are still there with that token, else the sources
    are loaded here).
    """
    _, t = index_tables(schema)
    names = _Names(engine, schema, survey)
    q, bound = names.q, names.bound
    sources_part, points_part, assignments_part = names.sources, names.points, names.assignments
    cutouts_part = names.cutouts
    # one survey's load attaches partitions to tables every survey shares (and
    # analyses them), so index jobs of one schema take turns, whatever the survey
    lock_key = zlib.crc32(f"radiodet:{schema}:index".encode())
    _ensure_schema(engine, schema)
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
        # the survey's old partitions go whole (instead of a DELETE of every row)
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {assignments_part}, {points_part}, {sources_part}, "
                             f"{cutouts_part}"))
        conn.execute(t["fields"].delete().where(t["fields"].c.survey == survey))
        t0 = time.monotonic()
        staged = False
        if stage_token is not None:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _stage_lock(schema, survey)})
            found = conn.execute(sa.text("SELECT obj_description(to_regclass(:t), 'pg_class')"),
                                 {"t": names.staged_points}).scalar()
            staged = found == stage_token and conn.execute(
                sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": names.staged_sources}).scalar()
            if staged:
                conn.execute(sa.text(f"ALTER TABLE {names.staged_sources} RENAME TO {names.bare['sources']}"))
                conn.execute(sa.text(f"ALTER TABLE {names.staged_points} RENAME TO {names.bare['source_points']}"))
                conn.execute(sa.text(f"COMMENT ON TABLE {points_part} IS NULL"))
                log.info("sources: the rows and their plane points staged beside the cutouts (token %s) "
                         "become the survey's partitions", stage_token)
            else:
                log.warning("the staged sources are gone or were replaced (token %s, found %s): loading them here",
                            stage_token, found)
        if not staged:
            _load_sources(conn, names, sources_part, points_part, sources() if callable(sources) else sources,
                          _planes_of(cutouts))
        _attach(conn, sources_part, f"{q}.sources", bound)
        _attach(conn, points_part, f"{q}.source_points", bound)
        conn.execute(sa.text(f"CREATE TABLE {cutouts_part} (LIKE {q}.cutouts INCLUDING DEFAULTS)"))
        copy_rows(conn, cutouts_part, ["survey", "cutout_id", "field", "split", *SHAPE_COLUMNS],
                  cutouts.assign(survey=survey))
        _build_indexes(conn, cutouts_part, bound, ["survey", "cutout_id"], gist=tuple(SHAPE_COLUMNS))
        _attach(conn, cutouts_part, f"{q}.cutouts", bound)
        # the plans of the ownership query and the join need the new partition's row counts and the
        # extents' statistics (without them the ownership of 200 small fields took 8.2 s instead of 0.2 s);
        # autovacuum analyses the rest for a user's own queries
        conn.execute(sa.text(f"ANALYZE {cutouts_part} (survey, field, owned, extent)"))
        log.info("sources and %d cutout footprints in place in %.1f s", len(cutouts), time.monotonic() - t0)
        if centres is not None and points is not None and centres["field"].nunique() > 1:
            conn.execute(sa.text("CREATE TEMP TABLE tmp_fields (field text, lon double precision, "
                                 "lat double precision) ON COMMIT DROP"))
            copy_rows(conn, "tmp_fields", ["field", "lon", "lat"], centres)
            conn.execute(sa.text(
                f"INSERT INTO {q}.fields (survey, field, centre) SELECT :survey, field, "
                "ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography FROM tmp_fields"), {"survey": survey})
            conn.execute(sa.text("CREATE TEMP TABLE tmp_points (cutout_id text, field text, lon double precision, "
                                 "lat double precision) ON COMMIT DROP"))
            copy_rows(conn, "tmp_points", ["cutout_id", "field", "lon", "lat"], points)
            t0 = time.monotonic()
            lost = conn.execute(sa.text(
                f"WITH p AS (SELECT cutout_id, field, ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography AS g "
                "FROM tmp_points), "
                "rivals AS (SELECT DISTINCT p.cutout_id FROM p "
                f"JOIN {q}.fields AS own ON own.survey = :survey AND own.field = p.field "
                f"JOIN {q}.cutouts AS o ON o.survey = :survey AND o.field <> p.field AND ST_Covers(o.extent, p.g) "
                f"JOIN {q}.fields AS other ON other.survey = :survey AND other.field = o.field "
                "WHERE ST_Distance(p.g, other.centre, false) < ST_Distance(p.g, own.centre, false) "
                "OR (ST_Distance(p.g, other.centre, false) = ST_Distance(p.g, own.centre, false) "
                "AND other.field < own.field)) "
                f"UPDATE {q}.cutouts AS c SET owned = false FROM rivals "
                "WHERE c.survey = :survey AND c.cutout_id = rivals.cutout_id"), {"survey": survey}).rowcount
            log.info("ownership: %d of %d cutouts lie (partly) where another field's centre is nearer; "
                     "dropped (%.1f s)", lost, len(cutouts), time.monotonic() - t0)
        conn.execute(sa.text(f"ANALYZE {points_part}"))
        t0 = time.monotonic()
        conn.execute(sa.text("CREATE TEMP TABLE tmp_cells (cutout_id text, cell bigint) ON COMMIT DROP"))
        copy_rows(conn, "tmp_cells", ["cutout_id", "cell"], _cutout_cells(cutouts))
        conn.execute(sa.text("ANALYZE tmp_cells"))
        conn.execute(sa.text(f"CREATE TABLE {assignments_part} (LIKE {q}.assignments INCLUDING DEFAULTS)"))
        # In each field's plane: the points hashed against the owned cutouts' cells (one
        # hash table of the cells, one of the cutouts), and ST_Covers decides. A point is one
        # (source, field), so pairs are unique. Merge joins are off (they would sort millions
        # of points), and so are nested loops: for 200 small fields the planner probed the
        # footprints' GiST index once per point instead, 10 x slower. For an SDC1 field the
        # hash tables (472 k cells, 25,600 footprints) take 43 MB, one batch each within
        # work_mem (x hash_mem_multiplier). The inserted pairs come back through COPY
        # (INSERT ... RETURNING): no second scan.
        conn.execute(sa.text("SET LOCAL jit = off"))
        conn.execute(sa.text("SET LOCAL enable_mergejoin = off"))
        conn.execute(sa.text("SET LOCAL enable_nestloop = off"))
        conn.execute(sa.text("SET LOCAL work_mem = '128MB'"))
        pairs = copy_query(
            conn, f"INSERT INTO {assignments_part} (survey, source_id, cutout_id) "
                  "SELECT c.survey, p.source_id, c.cutout_id FROM tmp_cells AS k "
                  f"JOIN {q}.cutouts AS c ON c.survey = {bound} AND c.cutout_id = k.cutout_id "
                  f"JOIN {points_part} AS p ON p.cell = k.cell "
                  "WHERE c.owned AND ST_Covers(c.plane_footprint, p.position) RETURNING source_id, cutout_id",
            {"source_id": pa.int64(), "cutout_id": pa.dictionary(pa.int32(), pa.string())})
        t_join = time.monotonic() - t0
        # the server builds the pairs' primary key while a thread here sorts them
        with ThreadPoolExecutor(1) as pool:
            sorting = pool.submit(_with_fields_sorted, pairs,
                                  cutouts[["cutout_id", "field"]].sort_values("cutout_id", ignore_index=True))
            _build_indexes(conn, assignments_part, bound, ["survey", "source_id", "cutout_id"])
            _attach(conn, assignments_part, f"{q}.assignments", bound)
            t_key = time.monotonic() - t0 - t_join
            owned = pd.DataFrame(conn.execute(sa.text(
                f"SELECT cutout_id, field, split, owned FROM {q}.cutouts WHERE survey = :survey"),
                {"survey": survey}).fetchall(), columns=["cutout_id", "field", "split", "owned"])
            assigned = sorting.result()
    owned = owned.sort_values("cutout_id", ignore_index=True)
    log.info("spatial join: %d (source, cutout) pairs in %.1f s; their primary key in %.1f s, beside their "
             "sorting here", len(assigned), t_join, t_key)
    return assigned, owned


def _with_fields_sorted(pairs: pd.DataFrame, cutouts: pd.DataFrame) -> pd.DataFrame:
    """(source_id, cutout_id) pairs with the cutout's field, ordered by cutout id, then source id.

    Sorted here, by code point, so the order is the same whatever the
    database's collation (a server's locale orders ``_`` and digits its own
    way); ``cutouts`` holds every cutout id of the pairs, sorted. ``cutout_id``
    and ``field`` come back as categoricals (the ids of ``cutouts`` and their
    fields): millions of pairs name a few thousand cutouts.
    """
    ids = cutouts["cutout_id"].to_numpy(object)
    codes = pd.Categorical(pairs["cutout_id"], categories=ids).codes
    if (codes < 0).any():
        raise ValueError("assignments name cutouts the cutouts table does not hold")
    source_ids = pairs["source_id"].to_numpy(np.int64)
    order = np.lexsort((source_ids, codes))
    codes = codes[order]
    fields = pd.Categorical(cutouts["field"])
    return pd.DataFrame({"source_id": source_ids[order],
                         "cutout_id": pd.Categorical.from_codes(codes, categories=ids),
                         "field": pd.Categorical.from_codes(fields.codes[codes], categories=fields.categories)})


def build_index(sources_path: str | Path, manifest_paths: list[str | Path],
                output: str | Path, summary_path: str | Path, *, survey: str, database_url: str | None,
                private_dir: str | Path, schema: str = "radiodet", margin_px: float = 2.0,
                postgres_bin: str | None = None, cutouts_output: str | Path | None = None,
                centres: dict[str, tuple[float, float] | None] | None = None, allow_empty: bool = False,
                stage_path: str | Path | None = None, cores: int | None = None) -> dict:
    """Index a survey; write the assignments, the cutout ownership and a JSON summary.

    Parameters
    ----------
    sources_path : str or Path
        The ingested catalogue (RA, Dec in degrees).
    manifest_paths : list of str or Path
        Every field's cutout manifest, or the manifests of its parts (in part
        order) where several jobs cut it.
    output, summary_path : str or Path
        Assignments (Parquet, one row per (source, cutout) pair) and the
        JSON summary (counts, seconds).
    survey : str
        Key of this survey's rows in the database tables.
    database_url : str or None
        A PostGIS server; None starts a private one under ``private_dir``.
    margin_px : float
        Cutout footprints are grown by this many pixels before the join, so a
        source on a cutout's edge is assigned to it.
    cores : int, optional
        The job's cores: a private server runs at most ``cores - 1`` parallel
        workers (:func:`radiodet.db.private_server`).
    cutouts_output : str or Path, optional
        Cutout ownership (Parquet): which field owns each cutout where
        mosaics overlap (the nearest field centre).
    centres : dict, optional
        {field: (RA, Dec)} of the pointing/mosaic centres in degrees (else
        the image centres).
    allow_empty : bool
        When no source falls in any cutout (image and catalogue do not
        overlap) this is an error naming both, unless ``allow_empty``: then
        the outputs are written, empty, with a warning.
    stage_path : str or Path, optional
        The marker :func:`stage_sources` wrote: its staged tables become the
        survey's sources and plane points instead of a load here (the
        outputs are the same either way).

    Returns
    -------
    dict
        The summary written to ``summary_path``.
    """
    validate_identifier(schema, "database.schema")
    manifest_paths = [Path(p) for p in manifest_paths]
    n_sources = pq.read_metadata(sources_path).num_rows
    by_field = _manifests_by_field(manifest_paths)
    cutouts, points = _footprints(by_field, margin_px)
    centre_table = field_centres(by_field, centres)
    stage_token = None
    if stage_path is not None:
        stage_token = _fitting_stage(json.loads(Path(stage_path).read_text()), cutouts, sources_path, n_sources,
                                     survey=survey, schema=schema, margin_px=margin_px)

    def read() -> pd.DataFrame:
        return read_sources(sources_path, columns=["source_id", "ra", "dec"])

    with database(database_url, private_dir=private_dir, postgres_bin=postgres_bin, cores=cores) as engine:
        assigned, ownership = load_and_assign(engine, read if stage_token else read(), cutouts, survey=survey,
                                              schema=schema, points=points, centres=centre_table,
                                              stage_token=stage_token)
    if assigned.empty:
        catalogue = read_parquet_metadata(sources_path).get("source_file", str(sources_path))
        images = ", ".join(sorted({str(read_parquet_metadata(p)["image"]) for p in manifest_paths}))
        message = (f"no source of the catalogue {catalogue} ({n_sources} rows) falls in any cutout of "
                   f"{images}: the image(s) and the catalogue do not overlap")
        if not allow_empty:
            raise InputError(None, message + " (set index.allow_empty: true to write an explicitly empty dataset)")
        log.warning("%s; writing an empty dataset as index.allow_empty asks", message)
    write_parquet(assigned, output, columns=ASSIGNMENT_COLUMNS,
                  metadata={"survey": survey, "margin_px": margin_px, "sources": str(sources_path)})
    if cutouts_output is not None:
        write_parquet(ownership, cutouts_output, columns=OWNERSHIP_COLUMNS, metadata={"survey": survey})
    in_a_cutout = len(pd.unique(assigned["source_id"].to_numpy()))
    summary = {
        "survey": survey, "sources": int(n_sources), "cutouts": int(len(cutouts)),
        "cutouts_owned": int(ownership["owned"].sum()),
        "pairs": int(len(assigned)), "sources_in_a_cutout": in_a_cutout,
        "sources_in_no_cutout": int(n_sources - in_a_cutout),
        "margin_px": margin_px,
    }
    write_json(summary_path, summary)
    log.info("index: %s", summary)
    return summary
