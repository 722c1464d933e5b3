"""Database connections: a configured PostGIS, or a private one started here.

Where the connection comes from, in order:

1. ``database.url`` in the config, e.g. ``postgresql://user@host:5432/db``;
   it must not contain a password: libpq reads that from ``PGPASSWORD``,
   ``~/.pgpass`` or a service file (``PGSERVICEFILE``);
2. the standard libpq variables (``PGHOST``, ``PGSERVICE``, ``PGDATABASE``,
   ...) when any of them is set;
3. otherwise a private PostgreSQL + PostGIS server: a fresh cluster under
   ``database.private_dir`` (default ``results/postgis``), directory mode 0700,
   listening on a Unix socket in a 0700 directory and never on TCP, started
   for the job that needs it and stopped after it. Jobs on one machine take
   turns through a file lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import getpass
import glob
import hashlib
import io
import logging
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from .errors import ConfigError

__all__ = ["connection_url", "private_server", "engine_for", "validate_identifier", "DatabaseUnavailable",
           "index_tables", "copy_rows", "copy_query", "copy_binary", "binary_copy_records",
           "PlanarPoints", "hex_ewkb_polygons"]

log = logging.getLogger(__name__)

LIBPQ_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: Unix socket paths are limited to 107 bytes; leave room for "/.s.PGSQL.5432".
_MAX_SOCKET_DIR = 90


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or started; the message says why."""


def validate_identifier(name: str, what: str = "identifier") -> str:
    """Return ``name`` if it is a safe lower-case SQL identifier, else raise."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ConfigError(f"{what} {name!r} must match {_IDENTIFIER.pattern} (lower-case letters, digits, _)")
    return name


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database url>"


def connection_url(config_url: str | None, environ=os.environ) -> str | None:
    """The SQLAlchemy URL to use, or None when a private server is needed."""
    if config_url:
        try:
            url = make_url(config_url)
        except Exception as exc:
            raise ConfigError(f"database.url is not a valid URL: {exc}") from None
        if url.password is not None:
            raise ConfigError("database.url must not contain a password: put it in PGPASSWORD, ~/.pgpass or a "
                              "libpq service file, which are read at connection time")
        if not url.drivername.startswith("postgresql"):
            raise ConfigError(f"database.url must be a postgresql:// URL, got {url.drivername}://")
        return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    if any(environ.get(v) for v in LIBPQ_VARIABLES):
        # An empty URL lets libpq take host, port, user, database and service
        # from the environment, and the password from PGPASSWORD or .pgpass.
        return "postgresql+psycopg2://"
    return None


def engine_for(url: str) -> sa.Engine:
    """An engine for ``url``; :class:`DatabaseUnavailable` if it cannot connect."""
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot connect to the database {redact(url)}: {reason}") from None
    return engine


# --------------------------------------------------------------------------
# private server


def _postgres_bindir(configured: str | None) -> Path:
    if configured:
        path = Path(configured)
        if not (path / "pg_ctl").exists():
            raise DatabaseUnavailable(f"database.postgres_bin {path} holds no pg_ctl")
        return path
    found = shutil.which("pg_ctl")
    if found:
        # resolve symlinks (/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin)
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(re.search(r"/(\d+)/bin", p).group(1)), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    raise DatabaseUnavailable("no PostgreSQL server binaries found (pg_ctl): install them (Debian: "
                              "postgresql-15-postgis-3), set database.postgres_bin, or set database.url / PG* "
                              "variables to use an existing PostGIS")


def _check_postgis(bindir: Path) -> None:
    pg_config = bindir / "pg_config"
    share = None
    if pg_config.exists():
        sharedir = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True)
        share = Path(sharedir.stdout.strip()) if sharedir.returncode == 0 else None
    if share is None:  # Debian layout: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
        share = Path("/usr/share/postgresql") / bindir.parent.name
    if not (share / "extension" / "postgis.control").exists():
        raise DatabaseUnavailable(f"PostGIS is not installed for the PostgreSQL in {bindir} (no "
                                  "extension/postgis.control): install postgresql-<version>-postgis-3")


class _Runner:
    """Runs server commands as the ``postgres`` user when we are root."""

    def __init__(self):
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise DatabaseUnavailable("running as root, but there is no 'postgres' user to run the server "
                                          "(PostgreSQL refuses to run as root)") from None
            self.uid, self.gid, self.user = entry.pw_uid, entry.pw_gid, "postgres"
        else:
            self.uid, self.gid, self.user = os.getuid(), os.getgid(), getpass.getuser()

    def run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        cmd = (["runuser", "-u", "postgres", "--"] + args) if self.as_root else args
        return subprocess.run(cmd, capture_output=True, text=True, **kwargs)

    def own(self, path: Path) -> None:
        if self.as_root:
            os.chown(path, self.uid, self.gid)


def _private_dir(path: Path, runner: _Runner) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    runner.own(path)


#: written into a cluster directory once initdb has finished, before it is renamed into place
_INITIALISED = "radiodet-initialised"


def _initialise_cluster(root: Path, datadir: Path, bindir: Path, runner: _Runner) -> None:
    """Make ``datadir`` a complete cluster, atomically: initdb in a scratch directory, then rename.

    A cluster without the completion marker (an initdb killed half-way, as a
    SLURM time limit does, or a directory from an older version) is removed
    and made again, and the log says so: the cluster holds only the spatial
    index, which the index stage rebuilds.
    """
    for scratch in root.glob("data.initdb-*"):
        log.warning("removing %s, left by an initdb that was interrupted", scratch)
        shutil.rmtree(scratch, ignore_errors=True)
    if datadir.exists():
        if (datadir / _INITIALISED).exists():
            return
        log.warning("%s is not a complete cluster (its initialisation was interrupted): making it again", datadir)
        shutil.rmtree(datadir)
    scratch = root / f"data.initdb-{os.getpid()}"
    _private_dir(scratch, runner)
    log.info("initialising a private PostgreSQL cluster in %s", datadir)
    done = runner.run([str(bindir / "initdb"), "-D", str(scratch), "--auth=trust", "--encoding=UTF8",
                       "--no-instructions", "-U", runner.user])
    if done.returncode:
        shutil.rmtree(scratch, ignore_errors=True)
        raise DatabaseUnavailable(f"initdb failed in {scratch}: {done.stderr.strip() or done.stdout.strip()}")
    (scratch / _INITIALISED).touch()
    runner.own(scratch / _INITIALISED)
    os.rename(scratch, datadir)


def _server_options(socket_dir: Path, cores: int | None) -> str:
    """The private server's settings (``postgres -c`` options).

    A scratch server for derived rows: no fsync, and minimal WAL, which lets
    the index stage's tables, created and loaded in one transaction, skip the
    WAL. With ``cores``, at most ``cores - 1`` parallel workers
    (``max_parallel_workers``, which bounds index builds' workers too): the
    server runs inside the job's allocation (a SLURM job's cores, or a share
    of a workstation's beside the other jobs). Full SDC1 field on 2 cores,
    the index jobs given 1 core each: the server's busy time 20.4 -> 16.9
    core-seconds and the views beside it 27.8 -> 24.2 s, the index job 16.5
    / 16.8 s either way.
    """
    options = (f"-c listen_addresses='' -c unix_socket_directories='{socket_dir}' -c fsync=off "
               "-c wal_level=minimal -c max_wal_senders=0")
    if cores is not None:
        options += f" -c max_parallel_workers={max(int(cores) - 1, 0)}"
    return options


@contextlib.contextmanager
def private_server(root: str | Path, *, postgres_bin: str | None = None, cores: int | None = None) -> Iterator[str]:
    """Start (or reuse) a private PostGIS cluster in ``root``; yield its URL.

    The cluster directory and the socket directory have mode 0700 and belong
    to the server's user; the server listens on no TCP address. Authentication
    is ``trust`` on the socket only, which nobody but that user (and root)
    can reach. The server is stopped when the block exits, also on error.

    ``cores``: the cores the job may use (its Snakemake threads); the
    server's parallel workers (queries and index builds) are then at most
    ``cores - 1`` besides the backend (:func:`_server_options`). None keeps
    PostgreSQL's defaults. A server left running by an interrupted job is
    used with the settings it was started with.
    """
    root = Path(root).resolve()
    bindir = _postgres_bindir(postgres_bin)
    _check_postgis(bindir)
    runner = _Runner()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    lock_path = root / "lock"
    with open(lock_path, "a") as lock:
        log.info("waiting for the private PostGIS lock %s", lock_path)
        fcntl.flock(lock, fcntl.LOCK_EX)
        runner.own(root)
        datadir = root / "data"
        socket_dir = root / "socket"
        if len(str(socket_dir)) > _MAX_SOCKET_DIR:
            digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
            socket_dir = Path(tempfile.gettempdir()) / f"radiodet-pg-{digest}"
        _private_dir(socket_dir, runner)
        _initialise_cluster(root, datadir, bindir, runner)
        options = _server_options(socket_dir, cores)
        logfile = root / "server.log"
        if runner.as_root and not logfile.exists():
            logfile.touch(mode=0o600)
            runner.own(logfile)
        if runner.run([str(bindir / "pg_ctl"), "-D", str(datadir), "status"]).returncode == 0:
            # we hold the lock, so this server was left running by a job that was killed
            log.warning("a private PostgreSQL server left by an interrupted run is still running in %s: "
                        "using it", datadir)
        else:
            pid_file = datadir / "postmaster.pid"
            if pid_file.exists():
                log.warning("removing the stale %s of a server that was killed", pid_file)
                pid_file.unlink()
            started = runner.run([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(logfile), "-o", options,
                                  "-w", "-t", "60", "start"])
            if started.returncode:
                tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
                raise DatabaseUnavailable(f"the private PostgreSQL server did not start: {started.stderr.strip()}\n"
                                          f"{tail}\nIf {datadir} is damaged, delete it: the next run makes a new one.")
        log.info("private PostgreSQL server started (socket in %s, no TCP)", socket_dir)
        url = f"postgresql+psycopg2://{runner.user}@/postgres?host={socket_dir}"
        try:
            yield url
        finally:
            stopped = runner.run([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"])
            if stopped.returncode:
                log.warning("stopping the private server failed: %s", stopped.stderr.strip())
            else:
                log.info("private PostgreSQL server stopped")


@contextlib.contextmanager
def database(config_url: str | None, *, private_dir: str | Path,
             postgres_bin: str | None = None, cores: int | None = None) -> Iterator[sa.Engine]:
    """An engine from config / environment, or from a private server (using ``cores``, see :func:`private_server`).

    ``cores`` does not touch a configured server: it runs elsewhere, on its own cores.
    """
    url = connection_url(config_url)
    if url is not None:
        log.info("using the database %s", redact(url) if url != "postgresql+psycopg2://" else "from PG* variables")
        engine = engine_for(url)
        try:
            yield engine
        finally:
            engine.dispose()
        return
    with private_server(private_dir, postgres_bin=postgres_bin, cores=cores) as private_url:
        engine = engine_for(private_url)
        try:
            yield engine
        finally:
            engine.dispose()


# --------------------------------------------------------------------------
# the spatial index's tables and bulk transfer


def index_tables(schema: str) -> tuple[sa.MetaData, dict[str, sa.Table]]:
    """SQLAlchemy tables ``fields``, ``sources``, ``cutouts``, ``assignments`` in ``schema``."""
    # imported here: every Snakemake start reads this module (connection_url), and GeoAlchemy2 is 0.12 s of it
    from geoalchemy2 import Geography, Geometry

    schema = validate_identifier(schema, "database.schema")
    meta = sa.MetaData(schema=schema)
    fields = sa.Table(
        "fields", meta,
        sa.Column("survey", sa.Text, primary_key=True),
        sa.Column("field", sa.Text, primary_key=True),
        sa.Column("centre", Geography("POINT", srid=4326, spatial_index=False), nullable=False),
    )
    # sources, source_points, cutouts and assignments: one partition per survey,
    # loaded without live indexes that are built once after the load (radiodet.index)
    # RA, Dec (deg); the view sky_sources adds their geography for a user's own queries
    sources = sa.Table(
        "sources", meta,
        sa.Column("survey", sa.Text, primary_key=True),
        sa.Column("source_id", sa.BigInteger, primary_key=True),
        sa.Column("ra", sa.Float(53), nullable=False),
        sa.Column("dec", sa.Float(53), nullable=False),
        postgresql_partition_by="LIST (survey)",
    )
    # each source near a field, in that field's gnomonic plane, and the grid cell
    # of the plane holding it: the join's hash key (radiodet.index). No index at all:
    # the join hashes the cells, and a (source, field) twice would break the
    # assignments' primary key (a primary key here cost the staging job 3.7 s)
    source_points = sa.Table(
        "source_points", meta,
        sa.Column("survey", sa.Text, nullable=False),
        sa.Column("field", sa.Text, nullable=False),
        sa.Column("source_id", sa.BigInteger, nullable=False),
        sa.Column("cell", sa.BigInteger, nullable=False),
        sa.Column("position", Geometry("POINT", srid=0, spatial_index=False), nullable=False),
        postgresql_partition_by="LIST (survey)",
    )
    cutouts = sa.Table(
        "cutouts", meta,
        sa.Column("survey", sa.Text, primary_key=True),
        sa.Column("cutout_id", sa.Text, primary_key=True),
        sa.Column("field", sa.Text, nullable=False),
        sa.Column("split", sa.Text, nullable=False),
        # outer pixel edges grown by margin_px, on the sky (the join uses plane_footprint)
        sa.Column("footprint", Geography("POLYGON", srid=4326, spatial_index=True), nullable=False),
        # exact outer pixel edges: where the field has valid data
        sa.Column("extent", Geography("POLYGON", srid=4326, spatial_index=True), nullable=False),
        # the footprint in its field's gnomonic plane: what the join uses
        sa.Column("plane_footprint", Geometry("POLYGON", srid=0, spatial_index=True), nullable=True),
        sa.Column("owned", sa.Boolean, nullable=False, server_default=sa.true()),
        postgresql_partition_by="LIST (survey)",
    )
    assignments = sa.Table(
        "assignments", meta,
        sa.Column("survey", sa.Text, primary_key=True),
        sa.Column("source_id", sa.BigInteger, primary_key=True),
        sa.Column("cutout_id", sa.Text, primary_key=True),
        postgresql_partition_by="LIST (survey)",
    )
    return meta, {"fields": fields, "sources": sources, "source_points": source_points, "cutouts": cutouts,
                  "assignments": assignments}


@dataclasses.dataclass(frozen=True)
class PlanarPoints:
    """A ``geometry(POINT, 0)`` column for :func:`copy_binary`: x, y arrays (the plane's units)."""

    x: np.ndarray
    y: np.ndarray


def hex_ewkb_polygons(x: np.ndarray, y: np.ndarray, srid: int = 0) -> list[str]:
    """Polygons of one ring, vertices (x[i], y[i]) (2-D arrays, a row per closed ring), as hex EWKB.

    The text form PostGIS itself prints for a ``geometry``/``geography``
    value, read back without parsing a decimal: every coordinate keeps its
    float64 bits (longitude/latitude in degrees for a geography, the plane's
    units for a planar geometry). ``srid`` 0 writes plain WKB.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"polygon vertices: x {x.shape} and y {y.shape} must be one 2-D shape")
    n, m = x.shape
    layout = [("order", "u1"), ("type", "<u4")] + ([("srid", "<u4")] if srid else []) + [
        ("rings", "<u4"), ("points", "<u4"), ("xy", "<f8", (m, 2))]
    records = np.empty(n, dtype=layout)
    records["order"] = 1  # little-endian
    records["type"] = 3 | (0x20000000 if srid else 0)  # polygon, with the EWKB SRID flag
    if srid:
        records["srid"] = srid
    records["rings"], records["points"] = 1, m
    records["xy"] = np.stack([x, y], axis=2)
    size = records.dtype.itemsize
    data = records.tobytes()
    return [data[k:k + size].hex() for k in range(0, n * size, size)]


#: COPY's binary format: signature, flags, header-extension length; the trailer is a field count of -1
_COPY_BINARY_HEADER = b"PGCOPY\n\xff\r\n\0" + b"\0\0\0\0" + b"\0\0\0\0"
_COPY_BINARY_TRAILER = b"\xff\xff"


def binary_copy_records(columns: dict[str, np.ndarray | str | PlanarPoints]) -> memoryview:
    """The rows of COPY's binary format for ``columns`` (no header or trailer), as the bytes of one array.

    A column is an int64 array (``bigint``), a float64 array (``double
    precision``, sent as its 8 bytes: no decimal round trip), a ``str``
    (``text``, the same for every row) or :class:`PlanarPoints` (``geometry``
    as little-endian WKB, which PostGIS receives directly). One numpy record
    per row: each field is its length (big-endian int32) and its bytes.
    """
    layout, fill, n = [("count", ">i2")], {}, None
    for k, (name, value) in enumerate(columns.items()):
        if isinstance(value, str):
            encoded = value.encode("utf-8")
            layout += [(f"len{k}", ">i4"), (f"v{k}", f"S{len(encoded)}")]
            fill[f"len{k}"], fill[f"v{k}"] = len(encoded), encoded
            continue
        if isinstance(value, PlanarPoints):
            layout += [(f"len{k}", ">i4"), (f"order{k}", "u1"), (f"type{k}", "<u4"), (f"x{k}", "<f8"),
                       (f"y{k}", "<f8")]
            fill.update({f"len{k}": 21, f"order{k}": 1, f"type{k}": 1, f"x{k}": value.x, f"y{k}": value.y})
            size = len(value.x)
        else:
            value = np.asarray(value)
            kind = {np.dtype(np.int64): ">i8", np.dtype(np.float64): ">f8"}.get(value.dtype)
            if kind is None:
                raise TypeError(f"column {name}: binary COPY of dtype {value.dtype} is not supported")
            layout += [(f"len{k}", ">i4"), (f"v{k}", kind)]
            fill[f"len{k}"], fill[f"v{k}"] = 8, value
            size = len(value)
        if n is not None and size != n:
            raise ValueError(f"column {name} has {size} rows, the others {n}")
        n = size
    if n is None:
        raise ValueError("binary COPY needs at least one array column")
    records = np.empty(n, dtype=layout)
    records["count"] = len(columns)
    for field, value in fill.items():
        records[field] = value
    return records.data.cast("B")  # the array's own bytes: no copy of millions of rows


class _ChunkStream(io.RawIOBase):
    """A readable stream of ``chunks`` (bytes-like) one after the other, without joining them into one copy."""

    def __init__(self, chunks: Iterable):
        self._chunks = iter(chunks)
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._current:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._current = memoryview(chunk).cast("B")
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n


def copy_binary(conn: sa.Connection, table: str, columns: list[str], chunks: Iterable, *,
                freeze: bool = False) -> None:
    """COPY rows in binary format (``chunks`` from :func:`binary_copy_records`) into ``table`` (trusted name).

    ``freeze``: write the rows frozen (``COPY ... FREEZE``; ``table`` must be
    created in this transaction), so the first scan (an index build, the
    join) need not set and write back every page's hint bits. The chunks
    are sent as they are, not joined first: a copy of an SDC1 field's
    points is 0.4 GB of new memory.
    """
    stream = _ChunkStream([_COPY_BINARY_HEADER, *chunks, _COPY_BINARY_TRAILER])
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cursor:
        # large reads: a few GIL acquisitions, so a COPY in a thread runs beside Python work
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT binary"
                           f"{', FREEZE' if freeze else ''})", stream, size=1 << 24)


def copy_rows(conn: sa.Connection, table: str, columns: list[str], frame: pd.DataFrame) -> None:
    """COPY ``frame`` into ``table`` (a trusted, already-quoted name) as CSV.

    pyarrow writes the CSV (17 significant digits for floats: positions
    survive the round trip exactly); values never pass through SQL text.
    """
    buffer = io.BytesIO()
    pacsv.write_csv(pa.Table.from_pandas(frame[columns], preserve_index=False), buffer,
                    write_options=pacsv.WriteOptions(include_header=False))
    buffer.seek(0)
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cursor:
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buffer)


def copy_query(conn: sa.Connection, query: str, types: dict[str, pa.DataType]) -> pd.DataFrame:
    """Run ``query`` (a trusted statement without parameters) through COPY TO; columns typed by ``types``."""
    names = list(types)
    buffer = io.BytesIO()
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cursor:
        cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", buffer)
    buffer.seek(0)
    if not buffer.getbuffer().nbytes:
        return pa.schema(list(types.items())).empty_table().to_pandas()
    return pacsv.read_csv(buffer, read_options=pacsv.ReadOptions(column_names=names),
                          convert_options=pacsv.ConvertOptions(column_types=types)).to_pandas()
