"""Write many output files without keeping them in the page cache (drop-behind).

The cutout and view stages write tens of thousands of files that nothing
later in the run reads back: an SDC1 field gives 4.3 GB of FITS cutouts and
as much again of NPY views, plus the PNG views. Written the ordinary way,
every byte stays in the page cache as a page of its own until the kernel
gets round to writing it out and, much later, reclaims it. On a cluster
node that is gigabytes of dirty memory charged to the job (SLURM's cgroup
counts the page cache against ``--mem``) and evicting everybody else's
cache; on the CI machine kind (a virtual machine whose free memory goes back
to its host) each new page costs a fault in the host: writing 4.4 GB as
25,600 files took 10 s of kernel time there.

:class:`DropBehind` writes each file, asks the kernel to start writing it
out at once (``sync_file_range``, no device cache flush, unlike ``fsync``)
and keeps it open; once more than ``window`` bytes are in flight, it waits
for the oldest files to be on the disk, drops their pages from the cache
(``posix_fadvise(POSIX_FADV_DONTNEED)``) and closes them. The stage's output
then occupies at most about ``window`` bytes of the page cache, and the same
pages are reused from file to file: the same 25,600 files took 1.2-1.3 s of
kernel time and 2.1 s of wall time instead of 10 s. The files' bytes are the
same either way; only where they wait on their way to the disk changes.
The job waits for the disk only when it produces faster than the disk
writes, which is when it would otherwise have filled the memory.

Where the calls do not exist (not Linux), or the file system refuses them,
the files are written and closed the ordinary way.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno
import logging
import os
from typing import Deque

__all__ = ["DropBehind", "DEFAULT_WINDOW_BYTES"]

log = logging.getLogger(__name__)

#: bytes written but not yet dropped from the page cache: a few bands of cutouts
DEFAULT_WINDOW_BYTES = 64 << 20

#: the most buffers one writev takes (Linux: 1024; POSIX's least, 16, where the system does not say);
#: 0 where there is no writev
_IOV_MAX = (os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in getattr(os, "sysconf_names", {}) else 16) \
    if hasattr(os, "writev") else 0

# sync_file_range(2) flags
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


def _sync_file_range():
    """libc's ``sync_file_range``, or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()


class DropBehind:
    """Writes files whose pages leave the page cache once they are on the disk.

    Use as a context manager; every file is complete and closed when the
    block ends without error. On an error the files written so far are
    closed as they are (the caller's atomic directory discards them).

    Parameters
    ----------
    window : int
        Bytes written and not yet dropped from the page cache (default
        :data:`DEFAULT_WINDOW_BYTES`).
    enabled : bool
        False writes and closes every file the ordinary way.
    """

    def __init__(self, window: int = DEFAULT_WINDOW_BYTES, *, enabled: bool = True):
        self.window = int(window)
        self.enabled = enabled and _SYNC_FILE_RANGE is not None and hasattr(os, "posix_fadvise")
        self._in_flight: Deque[tuple[int, str, int]] = collections.deque()
        self._bytes_in_flight = 0
        self.files = 0
        self.bytes = 0

    def __enter__(self) -> "DropBehind":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self._abandon()

    def write(self, path: str | os.PathLike, *chunks) -> None:
        """Create (or truncate) ``path`` and write ``chunks`` (bytes-like) to it, in order."""
        path = os.fspath(path)  # a string is enough: tens of thousands of files
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        size = 0
        try:
            views = [memoryview(chunk).cast("B") for chunk in chunks]
            # one system call for (at most IOV_MAX of) the chunks
            size = os.writev(fd, views[:_IOV_MAX]) if _IOV_MAX and views else 0
            skip = size
            for view in views:  # whatever writev left: a short write, chunks past IOV_MAX, or all without writev
                if skip >= len(view):
                    skip -= len(view)
                    continue
                view, skip = view[skip:], 0
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                    size += written
            if self.enabled:
                self._call(fd, path, _WRITE)
        except BaseException:
            os.close(fd)
            raise
        self.files += 1
        self.bytes += size
        if not self.enabled:
            os.close(fd)
            return
        self._in_flight.append((fd, path, size))
        self._bytes_in_flight += size
        while self._bytes_in_flight > self.window:
            self._retire()

    def close(self) -> None:
        """Wait for every file to be on the disk, drop it from the page cache and close it."""
        while self._in_flight:
            self._retire()

    def _retire(self) -> None:
        fd, path, size = self._in_flight.popleft()
        self._bytes_in_flight -= size
        try:
            if self.enabled:
                self._call(fd, path, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
                if self.enabled:  # unless the call turned drop-behind off
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def _call(self, fd: int, path: str, flags: int) -> None:
        """``sync_file_range(fd, 0, 0, flags)``; a file system that refuses it turns drop-behind off."""
        if _SYNC_FILE_RANGE(fd, 0, 0, flags) == 0:
            return
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.ESPIPE, errno.EOPNOTSUPP):
            log.info("%s: the file system does not take sync_file_range (%s); files are written the ordinary "
                     "way", os.path.dirname(path), os.strerror(code))
            self.enabled = False
            return
        raise OSError(code, os.strerror(code), path)

    def _abandon(self) -> None:
        while self._in_flight:
            fd, _, _ = self._in_flight.popleft()
            os.close(fd)
        self._bytes_in_flight = 0
