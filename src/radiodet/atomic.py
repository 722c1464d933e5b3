"""Atomic file output: a killed job leaves either nothing or a complete file.

Every writer in this package goes through :func:`atomic_path`: the data are
written to a temporary name in the destination directory and renamed over the
destination only when the writer returned without error (``os.replace`` is
atomic on POSIX file systems, including the parallel file systems of clusters
for a rename inside one directory). A write that fails because the file
system is full (or the quota is used up) is raised as
:class:`radiodet.errors.NoSpaceError`, naming the output, after the partial
output is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import NoSpaceError

__all__ = ["atomic_path", "atomic_directory", "write_json", "write_text", "link_files",
           "remove_stale_temporaries"]


#: what a full file system (or a used-up quota) looks like, as an errno or in the
#: message of writers that drop the errno (pyarrow's "Error writing bytes to file")
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_MESSAGES = ("no space left on device", "disk quota exceeded")


def _out_of_space(exc: OSError) -> bool:
    return exc.errno in _FULL_ERRNOS or any(m in str(exc).lower() for m in _FULL_MESSAGES)


@contextlib.contextmanager
def _naming_a_full_disk(path: Path, scratch: Path | None = None) -> Iterator[None]:
    """Turn a write error of a full file system into :class:`NoSpaceError` naming ``path``.

    A writer's output inside the ``scratch`` directory of an atomic directory
    is named as a part of the directory's destination, not by its temporary
    name, which is gone by the time a user reads the message.
    """
    try:
        yield
    except NoSpaceError as exc:
        if scratch is not None and Path(exc.path).is_relative_to(scratch):
            raise NoSpaceError(path, exc.cause, part=str(Path(exc.path).relative_to(scratch))) from exc.cause
        raise
    except OSError as exc:
        if _out_of_space(exc):
            raise NoSpaceError(path, exc) from exc
        raise


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
        with _naming_a_full_disk(path):
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
        with _naming_a_full_disk(path, tmp):
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


def _hard_link(source: str | os.PathLike, destination: str | os.PathLike) -> bool:
    """``os.link``; False where the file system gives no hard link (a missing or existing file raises)."""
    try:
        os.link(source, destination)
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError:  # another file system, or none with hard links
        return False
    return True


def link_files(pairs: Iterable[tuple[str | os.PathLike, str | os.PathLike]]) -> int:
    """Hard-link each (source, destination) pair (same bytes, no extra space); copy where links fail.

    A missing destination directory is made; an existing destination is an
    error (``FileExistsError``). Once a link fails (another file system, or
    none with hard links) the rest are copied. Returns the number of files.
    Plain ``os.link`` calls: a gather links tens of thousands of files.
    """
    n, linking = 0, True
    for source, destination in pairs:
        if linking:
            try:
                linking = _hard_link(source, destination)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
                linking = _hard_link(source, destination)
        if not linking:
            os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
            if os.path.lexists(destination):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(destination))
            shutil.copy2(source, destination)
        n += 1
    return n
