"""Atomic file output: a killed job leaves either nothing or a complete file.

Every writer in this package goes through :func:`atomic_path`: the data are
written to a temporary name in the destination directory and renamed over the
destination only when the writer returned without error (``os.replace`` is
atomic on POSIX file systems, including the parallel file systems of clusters
for a rename inside one directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_directory", "write_json", "write_text", "remove_stale_temporaries"]


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries a killed earlier writer of ``path`` left behind.

    They are named ``.<name>.<random>.tmp*`` next to ``path``; one output path
    has one writer at a time (Snakemake guarantees it), so any such file is
    stale.
    """
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    Parameters
    ----------
    path : path-like
        Final destination. Its parent directory is created if missing.
    suffix : str, optional
        Suffix for the temporary name (some writers choose the format from it,
        e.g. matplotlib and PIL). Defaults to the suffix of ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; it replaces ``path`` on success.

    An existing ``path`` is removed only after the new content is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    old = path.with_name(f".{path.name}.old")
    if old.exists() and path.exists():  # an earlier writer was killed after its new content was in place
        shutil.rmtree(old)
    elif old.exists():  # killed between moving the old content aside and putting the new one in place
        os.replace(old, path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmpdir", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if path.exists():
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")
