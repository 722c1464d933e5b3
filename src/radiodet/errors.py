"""Exceptions that tell a user which input is wrong and where."""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError", "CatalogueError", "ImageError", "ConfigError"]


class InputError(ValueError):
    """Bad input data. The message names the file (and row, where it applies)."""

    def __init__(self, path: str | Path | None, message: str, *, row: int | None = None):
        self.path = None if path is None else str(path)
        self.row = row
        where = "" if path is None else f"{path}"
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {message}" if where else message)


class CatalogueError(InputError):
    """A catalogue file that cannot be turned into the documented schema.

    ``row`` is the 1-based line number in the file (header lines counted), so
    ``sed -n '<row>p' file`` shows the offending line.
    """


class ImageError(InputError):
    """A FITS image that cannot be cut out (no celestial WCS, all NaN, ...)."""


class ConfigError(ValueError):
    """A configuration the workflow cannot run with; the message names the key."""
