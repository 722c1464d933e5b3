"""Exceptions that tell a user which input is wrong and where."""

from __future__ import annotations

import errno
from pathlib import Path

__all__ = ["InputError", "CatalogueError", "ImageError", "ConfigError", "NoSpaceError"]


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


class NoSpaceError(OSError):
    """An output that could not be written: the file system is full (or the quota used up).

    The message names the output, says "no space left" and what to do; the
    partial output has been removed by the time it is raised.
    """

    def __init__(self, path: str | Path, cause: OSError, *, part: str | None = None):
        path = Path(path)
        self.cause, self.part = cause, part
        mount = path.resolve().parent
        while not mount.is_mount() and mount != mount.parent:
            mount = mount.parent
        quota = getattr(cause, "errno", None) == errno.EDQUOT or "quota" in str(cause).lower()
        what = "disk quota exceeded" if quota else "no space left on the device"
        self.path = str(path)
        super().__init__(cause.errno or errno.ENOSPC,
                         f"{path}: {what} while writing it{f' (its {part})' if part else ''} (file system "
                         f"{mount}); nothing was written there "
                         f"(the partial output is removed). Free space there, or point the results at a larger "
                         f"file system, and run the same command again ({cause})")
