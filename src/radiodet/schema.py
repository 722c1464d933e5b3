"""The one catalogue schema every survey reader produces, and Parquet helpers.

Every ``results/<survey>/catalogue/sources.parquet`` has the columns below, in
this order, followed by the catalogue's original columns prefixed ``orig_``
(kept unchanged, for provenance). Units are stored in the Parquet field
metadata (key ``unit``, an astropy unit string) next to a ``description``;
:func:`read_units` reads them back.

====================  =======  ========  =======================================
column                type     unit      meaning
====================  =======  ========  =======================================
source_id             int64              unique id within the catalogue
ra                    float64  deg       right ascension, ICRS/FK5 J2000, in
                                         [0, 360); the position the source's
                                         box is centred on (SDC1: centroid)
dec                   float64  deg       declination, in [-90, 90]
ra_core               float64  deg       core position (SDC1); = ra otherwise
dec_core              float64  deg
flux                  float64  Jy        integrated flux density, as the
                                         catalogue gives it (SDC1: true, not
                                         attenuated by the primary beam)
peak_flux             float64  Jy/beam   catalogued peak brightness; NaN where
                                         the catalogue has none (SDC1)
major_fwhm            float64  arcsec    intrinsic (beam-deconvolved) Gaussian
                                         FWHM along the major axis
minor_fwhm            float64  arcsec    same along the minor axis
pa                    float64  deg       major-axis position angle EAST OF
                                         NORTH, folded into [0, 180)
size_class            int8               how the catalogue defined its sizes:
                                         1 largest angular size, 2 Gaussian
                                         FWHM, 3 exponential scale length
class_id              int16              class label (survey's own codes; names
                                         from the config ``classes`` mapping)
local_rms             float64  Jy/beam   catalogued local noise (PyBDSF
                                         Isl_rms); NaN where unknown (SDC1)
====================  =======  ========  =======================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .errors import InputError

if TYPE_CHECKING:  # pandas is imported where it is used: the cutout and view jobs never need it
    import pandas as pd

__all__ = ["SOURCE_COLUMNS", "write_parquet", "read_table", "read_frame", "read_units", "read_parquet_metadata",
           "read_sources", "read_pairs", "key_index", "rows_of_field", "FieldPairs", "field_pairs", "take_or_nan",
           "fields_end_to_end", "decoded_strings"]

#: name -> (arrow type, unit, description), in file order.
SOURCE_COLUMNS: dict[str, tuple[pa.DataType, str, str]] = {
    "source_id": (pa.int64(), "", "unique source id within the catalogue"),
    "ra": (pa.float64(), "deg", "right ascension in [0, 360); box centre (SDC1: centroid)"),
    "dec": (pa.float64(), "deg", "declination"),
    "ra_core": (pa.float64(), "deg", "right ascension of the core in [0, 360)"),
    "dec_core": (pa.float64(), "deg", "declination of the core"),
    "flux": (pa.float64(), "Jy", "integrated flux density (primary-beam corrected)"),
    "peak_flux": (pa.float64(), "Jy/beam", "catalogued peak brightness, NaN if unknown"),
    "major_fwhm": (pa.float64(), "arcsec", "intrinsic Gaussian FWHM, major axis"),
    "minor_fwhm": (pa.float64(), "arcsec", "intrinsic Gaussian FWHM, minor axis"),
    "pa": (pa.float64(), "deg", "major-axis position angle east of north, in [0, 180)"),
    "size_class": (pa.int8(), "", "catalogue size definition: 1 LAS, 2 Gaussian FWHM, 3 exponential scale length"),
    "class_id": (pa.int16(), "", "class label code"),
    "local_rms": (pa.float64(), "Jy/beam", "catalogued local noise (PyBDSF Isl_rms), NaN if unknown"),
}

SCHEMA_VERSION = "1"


def _field(name: str, dtype: pa.DataType, unit: str, description: str) -> pa.Field:
    return pa.field(name, dtype, metadata={"unit": unit, "description": description})


def write_parquet(df: pd.DataFrame | pa.Table, path: str | Path, *,
                  columns: dict[str, tuple[pa.DataType, str, str]] | None = None, metadata: dict | None = None) -> None:
    """Write ``df`` to ``path`` atomically with units in the field metadata.

    Parameters
    ----------
    df : pandas.DataFrame or pyarrow.Table
        The rows (a stage that has no other use for pandas builds an Arrow
        table and need not import it).
    columns : dict, optional
        ``name -> (arrow type, unit, description)`` for columns to type and
        document; other columns keep their inferred (pandas) or given (Arrow)
        type and get no unit.
    metadata : dict, optional
        JSON-serialisable file-level metadata, stored under ``radiodet``.
    """
    columns = columns or {}
    if not isinstance(df, pa.Table):
        df = _decoded_categoricals(df, columns)
    arrow = isinstance(df, pa.Table)
    fields = []
    for name in (df.column_names if arrow else df.columns):
        if name in columns:
            fields.append(_field(name, *columns[name]))
        elif arrow:
            fields.append(df.schema.field(name))
        else:
            fields.append(pa.Schema.from_pandas(df[[name]], preserve_index=False).field(name))
    stamp = json.dumps({"schema_version": SCHEMA_VERSION, **(metadata or {})})
    schema = pa.schema(fields, metadata={"radiodet": stamp})
    table = df.cast(schema) if arrow else pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    # dictionary pages for ids, labels and strings; floats (positions, fluxes) rarely repeat, and
    # trying a dictionary for each float column cost a fifth of the write. Snappy (Parquet's usual
    # codec): the 5.25 M-row SDC1-size catalogue written in 1.1-1.2 s and read in 0.45-0.5 s, against
    # 1.9 s and 0.8-1.0 s with zstd, for files a quarter larger (477 MB against 381 MB)
    dictionary = [field.name for field in table.schema if not pa.types.is_floating(field.type)]
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="snappy", use_dictionary=dictionary)


def _decoded_categoricals(df: pd.DataFrame, columns: dict[str, tuple[pa.DataType, str, str]]
                          ) -> pd.DataFrame | pa.Table:
    """``df`` as an Arrow table when it has categorical columns typed as plain strings in ``columns``, else ``df``.

    Arrow decodes such a column from its codes and categories: millions of
    (source, cutout) pairs name a few thousand cutouts, and converting the
    Python strings instead took most of writing an SDC1 field's pairs. The
    other columns convert as ``pa.Table.from_pandas`` would convert them.
    """
    import pandas as pd

    decode = [name for name in df.columns if isinstance(df[name].dtype, pd.CategoricalDtype)
              and name in columns and pa.types.is_string(columns[name][0])]
    if not decode:
        return df
    arrays = []
    for name in df.columns:
        if name in decode:
            arrays.append(decoded_strings(df[name].cat.codes.to_numpy(), df[name].cat.categories))
        else:
            kind = columns[name][0] if name in columns else None
            arrays.append(pa.Table.from_pandas(df[[name]], schema=None if kind is None else pa.schema([(name, kind)]),
                                               preserve_index=False).column(0).combine_chunks())
    return pa.table(arrays, names=list(df.columns))


def read_table(path: str | Path, columns: list[str] | None = None, *,
               read_dictionary: list[str] | None = None) -> pa.Table:
    """One Parquet file (all or some ``columns``) as an Arrow table.

    ``read_dictionary``: columns kept dictionary-encoded (pandas categoricals).
    The file is read by ``pq.ParquetFile``, not by ``pq.read_table`` or
    ``pd.read_parquet``: those go through Arrow's dataset layer (directories,
    partitions, filters, none of which a stage uses), whose import alone took
    0.3 s of every job that read a table (the same table either way).
    """
    with pq.ParquetFile(path, read_dictionary=read_dictionary) as handle:
        return handle.read(columns=columns, use_pandas_metadata=True)


def read_frame(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """:func:`read_table` as a pandas DataFrame (what ``pd.read_parquet`` returns for the file)."""
    return read_table(path, columns).to_pandas()


def read_units(path: str | Path) -> dict[str, str]:
    """Column -> unit string from a Parquet file written by :func:`write_parquet`."""
    schema = pq.read_schema(path)
    units = {}
    for field in schema:
        meta = field.metadata or {}
        if b"unit" in meta:
            units[field.name] = meta[b"unit"].decode()
    return units


def read_parquet_metadata(path: str | Path) -> dict:
    """The file-level ``radiodet`` metadata of a Parquet file (a dict)."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"radiodet")
    return json.loads(raw) if raw else {}


def read_sources(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The ingested catalogue (all or some columns), checked against the schema.

    A file written by an older version of the schema (a column missing) is
    an error that says how to remake it, not a cryptic Arrow message.
    """
    available = set(pq.read_schema(path).names)
    wanted = list(SOURCE_COLUMNS) if columns is None else columns
    missing = [c for c in wanted if c not in available]
    if missing:
        raise ValueError(f"{path}: no column(s) {', '.join(missing)}: the catalogue was written by an older "
                         "version of radiodet; remake it with `snakemake --forcerun ingest`")
    return read_frame(path, columns)


# --------------------------------------------------------------------------
# (source, cutout) pair tables joined to the sources and the manifests by
# integer row lookups: string merges of millions of rows cost several times more


def read_pairs(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A pair table (index, filter stages) with ``cutout_id`` and ``field`` as categoricals (dictionary codes)."""
    names = pq.read_schema(path).names if columns is None else columns
    coded = [c for c in ("cutout_id", "field") if c in names]
    return read_table(path, columns, read_dictionary=coded).to_pandas()


def key_index(keys, *, path: str | Path, column: str) -> pd.Index:
    """The key column ``keys`` of the table in ``path`` as an index: ``.get_indexer(wanted)`` gives rows, -1 absent.

    A key column that is not unique is an error naming the file. Build it
    once per table: hashing millions of keys is the lookup's main cost.
    """
    import pandas as pd

    index = pd.Index(keys)
    if not index.is_unique:
        raise InputError(path, f"{column} is not unique")
    return index


def rows_of_field(pairs: pd.DataFrame, field: str) -> np.ndarray:
    """The rows of ``pairs`` (:func:`read_pairs`) in ``field``, in table order."""
    code = pairs["field"].cat.categories.get_indexer([field])[0]
    if code < 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(pairs["field"].cat.codes.to_numpy() == code)


@dataclass(frozen=True)
class FieldPairs:
    """One field's pairs with the rows of their source and cutout (-1: the table lacks it), in pair-table order."""

    rows: np.ndarray        #: rows of the pair table
    source_id: np.ndarray   #: int64
    cutout_code: np.ndarray  #: the pair table's ``cutout_id`` codes (its categories name the cutouts)
    of_source: np.ndarray   #: row in the sources table
    of_cutout: np.ndarray   #: row in the field's manifest


def field_pairs(pairs: pd.DataFrame, field: str, source_rows: pd.Index, manifest_ids, *,
                manifest_path: str | Path) -> FieldPairs:
    """``field``'s pairs (:func:`read_pairs`) looked up in the sources (``source_rows``, :func:`key_index`)
    and in the field's manifest (its ``cutout_id`` column ``manifest_ids``, from ``manifest_path``)."""
    rows = rows_of_field(pairs, field)
    codes = pairs["cutout_id"].cat.codes.to_numpy()[rows]
    categories = pairs["cutout_id"].cat.categories
    source_id = pairs["source_id"].to_numpy(np.int64)[rows]
    of_cutout = key_index(manifest_ids, path=manifest_path, column="cutout_id").get_indexer(categories)[codes]
    return FieldPairs(rows=rows, source_id=source_id, cutout_code=codes,
                      of_source=source_rows.get_indexer(source_id), of_cutout=of_cutout)


def take_or_nan(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]`` as float64, NaN where ``rows`` is -1 (a left join's missing match)."""
    values = np.asarray(values, dtype=np.float64)
    out = values[np.maximum(rows, 0)] if len(values) else np.full(len(rows), np.nan)
    out[rows < 0] = np.nan
    return out


def fields_end_to_end(parts: list[dict[str, np.ndarray]], dtypes: dict[str, type]) -> dict[str, np.ndarray]:
    """Per-field column arrays (a dict per field) as one array per column, the fields in order.

    ``dtypes`` names the columns and their types when there is no field. One
    field's arrays are taken as they are: concatenating them would copy every
    column of millions of pairs (the boxes of an SDC1 field: 0.9 GB).
    """
    if not parts:
        return {name: np.empty(0, dtype) for name, dtype in dtypes.items()}
    if len(parts) == 1:
        return {name: parts[0][name] for name in dtypes}
    return {name: np.concatenate([part[name] for part in parts]) for name in dtypes}


def decoded_strings(codes: np.ndarray, names) -> pa.Array:
    """``names[codes]`` as an Arrow string array, decoded by Arrow from dictionary codes (-1: null).

    Millions of (source, cutout) pairs name a few thousand cutouts: Arrow
    fills the strings from the codes, where converting a column of Python
    strings took a large part of writing the table.
    """
    codes = np.asarray(codes)
    dictionary = pa.array(np.asarray(names, dtype=object), pa.string())
    indices = pa.array(codes, pa.int32(), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())
