"""Table helpers shared by the catalogue readers, with errors that name file and row.

Two kinds of input: whitespace-separated text tables (errors name the 1-based
line of the file, header lines counted, so ``sed -n '<line>p' file`` shows
it) and tables astropy reads (FITS, VOTable, ECSV, CSV; errors name the
1-based table row). Column values come back as float64 in the unit asked
for, converted with astropy units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CatalogueError

__all__ = ["read_whitespace_table", "line_of_row", "read_table", "column", "text_column", "native",
           "with_original_columns"]


def _data_lines(path: Path, skip_lines: int):
    """Yield (1-based line number, fields) of the non-blank, non-comment data lines."""
    with open(path, "r", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if number <= skip_lines or line.startswith("#"):
                continue
            fields = line.split()
            if fields:
                yield number, fields


def line_of_row(path: Path, skip_lines: int, row_index: int) -> int:
    """1-based file line of the 0-based data row ``row_index`` (-1 if past the end)."""
    for i, (number, _) in enumerate(_data_lines(path, skip_lines)):
        if i == row_index:
            return number
    return -1


def _first_bad_line(path: Path, skip_lines: int, names: list[str]) -> tuple[int, str]:
    """Locate the first line that does not parse as len(names) numbers."""
    for number, fields in _data_lines(path, skip_lines):
        if len(fields) != len(names):
            return number, f"expected {len(names)} columns ({' '.join(names)}), found {len(fields)}"
        for name, text in zip(names, fields):
            try:
                float(text)
            except ValueError:
                return number, f"column {name!r} is not a number: {text!r}"
    return -1, "unreadable content"


def read_whitespace_table(path: str | Path, names: list[str], *, skip_lines: int = 0) -> pd.DataFrame:
    """Read a whitespace-separated numeric table; all columns float64.

    Raises :class:`CatalogueError` naming the file and 1-based line for text in
    a numeric column, a wrong number of columns, or a missing value.
    """
    path = Path(path)
    if not path.is_file():
        raise CatalogueError(path, "catalogue file not found")
    df = _read_single_spaced(path, names, skip_lines)
    if df is not None:
        return df
    try:
        df = pd.read_csv(path, sep=r"\s+", header=None, names=names, skiprows=skip_lines,
                         dtype=dict.fromkeys(names, np.float64), engine="c", comment=None,
                         float_precision="round_trip")
    except (ValueError, pd.errors.ParserError) as exc:
        line, why = _first_bad_line(path, skip_lines, names)
        raise CatalogueError(path, why if line > 0 else str(exc), row=line if line > 0 else None) from None
    bad = df.isna().any(axis=1).to_numpy()
    if bad.any():
        line, why = _first_bad_line(path, skip_lines, names)  # a short line reads as trailing NaN
        if line < 0:
            index = int(np.flatnonzero(bad)[0])
            missing = [c for c in names if pd.isna(df.iloc[index][c])]
            line, why = line_of_row(path, skip_lines, index), f"NaN value in column(s) {', '.join(missing)}"
        raise CatalogueError(path, f"{why} ({int(bad.sum())} rows with missing or NaN values)", row=line)
    return df


def _read_single_spaced(path: Path, names: list[str], skip_lines: int) -> pd.DataFrame | None:
    """The table read by Arrow's CSV reader when every data line is numbers separated by single spaces, else None.

    Arrow parses on all cores and rounds every number correctly: pandas'
    default C parser took five times as long for the 5.25 M rows of
    ``make bench``'s SDC1-size catalogue, and read 15 to 25 % of the bundled
    SDC1 truth file's fluxes, sizes and PAs one unit in the last place off
    (``float_precision="round_trip"``, used below, is exact). Any other
    layout (runs of spaces or tabs, text, a missing value, a wrong number of
    columns) gives None, and :func:`read_whitespace_table` reads the file
    with pandas, whose errors it turns into ones that name the line.
    """
    import pyarrow as pa
    import pyarrow.csv as csv

    with open(path, "rb") as handle:
        for _ in range(skip_lines):
            handle.readline()
        try:
            table = csv.read_csv(
                handle, read_options=csv.ReadOptions(column_names=names),
                parse_options=csv.ParseOptions(delimiter=" ", quote_char=False),
                convert_options=csv.ConvertOptions(column_types=dict.fromkeys(names, pa.float64())))
        except pa.ArrowInvalid:
            return None
    if table.num_rows == 0 or any(column.null_count for column in table.columns):
        return None
    return table.to_pandas()


def read_table(path: str | Path, table_format: str | None = None):
    """Any table astropy reads (FITS, VOTable, ECSV, CSV, ...) as an astropy Table.

    ``table_format`` is astropy's format name (``fits``, ``votable``,
    ``ascii.ecsv``, ``ascii.csv``); None lets astropy tell from the file.
    """
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise CatalogueError(path, "catalogue file not found")
    try:
        return Table.read(path, format=table_format)
    except Exception as exc:  # astropy raises many types for broken or unknown files
        raise CatalogueError(path, f"not a table astropy can read{f' as {table_format}' if table_format else ''}: "
                                   f"{exc}") from None


def column(table, path: Path, name: str, unit: str | None = None, *, default_unit: str | None = None,
           required: bool = True, unit_key: str | None = None) -> np.ndarray:
    """A column as float64 in ``unit``, converted with its own astropy unit.

    A column without a unit is taken to be in ``default_unit`` (the format's
    documented unit, or the one the config gives). Without either, the error
    names the column and, when given, the config key (``unit_key``) that
    would supply it. Text in a numeric column is an error naming the row.
    """
    import astropy.units as u

    if name not in table.colnames:
        if required:
            raise CatalogueError(path, f"column {name!r} is missing (has: {', '.join(table.colnames)})")
        return np.full(len(table), np.nan)
    col = table[name]
    if col.dtype.kind in "SUO":
        values = text_column(table, name)
        numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy()
        bad = np.isnan(numeric) & ~np.isin(np.char.lower(values.astype(str)), ["nan", ""])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise CatalogueError(path, f"column {name!r} is not a number: {str(values[row])!r}", row=row + 1)
        data = numeric
    else:
        data = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan)
    if unit is None:
        return np.asarray(data, dtype=float)
    source_unit = col.unit if col.unit is not None else (u.Unit(default_unit) if default_unit else None)
    if source_unit is None:
        hint = f": give it as {unit_key}" if unit_key else " and the format documents none"
        raise CatalogueError(path, f"column {name!r} has no unit{hint}")
    try:
        return (np.asarray(data, dtype=float) * u.Unit(source_unit)).to_value(u.Unit(unit))
    except u.UnitConversionError:
        raise CatalogueError(path, f"column {name!r} is in {source_unit}, which does not convert to {unit}") from None


def text_column(table, name: str) -> np.ndarray:
    """A column as stripped Python strings (bytes decoded)."""
    return np.array([str(v.decode() if isinstance(v, bytes) else v).strip() for v in table[name]])


def native(values) -> np.ndarray:
    """Native byte order (FITS is big-endian; Parquet wants native)."""
    values = np.asarray(values)
    return values.astype(values.dtype.newbyteorder("=")) if values.dtype.kind in "iufb" else values


def with_original_columns(out: pd.DataFrame, raw) -> pd.DataFrame:
    """Add every 1-D column of ``raw`` (a DataFrame or an astropy Table) as ``orig_<name>``.

    The catalogue's own values travel with the schema's, so nothing the
    survey wrote is lost (text stays text, FITS numbers in native byte order).
    The columns are not copied into a consolidated block (for the 5.25 M-row
    SDC1 catalogue ``pd.concat`` spent 4 s copying them).
    """
    if isinstance(raw, pd.DataFrame):
        extra = {f"orig_{name}": raw[name].to_numpy() for name in raw.columns}
    else:
        extra = {f"orig_{name}": (text_column(raw, name) if raw[name].dtype.kind in "SUO" else native(raw[name]))
                 for name in raw.colnames if raw[name].ndim == 1}
    clash = set(extra) & set(out.columns)
    if clash:
        raise ValueError(f"schema columns {sorted(clash)} clash with the original columns")
    return pd.DataFrame({**{name: out[name] for name in out.columns}, **extra}, index=out.index, copy=False)
