"""Drop-behind writing (radiodet.streaming): the same bytes, no page cache kept, no descriptor leaked."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os

import numpy as np
import pytest
from conftest import resident_pages

from radiodet import streaming
from radiodet.streaming import DropBehind

PAGE = mmap.PAGESIZE


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_files_hold_their_chunks_in_order(tmp_path):
    data = np.arange(10_000, dtype=">f4")
    with DropBehind(window=3 * PAGE) as files:  # a window smaller than the files: each waits for the disk
        for k in range(20):
            files.write(tmp_path / f"f{k}.bin", b"head%d" % k, data.data, memoryview(b"\0" * 7))
    assert files.files == 20
    for k in range(20):
        assert (tmp_path / f"f{k}.bin").read_bytes() == b"head%d" % k + data.tobytes() + b"\0" * 7
    assert files.bytes == sum(os.path.getsize(tmp_path / f"f{k}.bin") for k in range(20))


@pytest.mark.parametrize("accepted", [0, 1, 4999, 5000, 5003, 8603])
def test_what_a_short_writev_leaves_is_written_after_it(tmp_path, monkeypatch, accepted):
    # writev may take fewer bytes than offered (a signal, a full pipe): the rest follows in order
    real_writev = os.writev

    def short_writev(fd, buffers):
        joined = b"".join(bytes(b) for b in buffers)[:accepted]
        return real_writev(fd, [joined]) if joined else 0

    monkeypatch.setattr(streaming.os, "writev", short_writev)
    chunks = (b"h" * 5000, np.arange(900, dtype=">f4").data, b"\0" * 3)
    with DropBehind() as files:
        files.write(tmp_path / "f.bin", *chunks)
    assert (tmp_path / "f.bin").read_bytes() == b"".join(bytes(c) for c in chunks)
    assert files.bytes == 5000 + 3600 + 3


def test_more_chunks_than_one_writev_takes(tmp_path):
    # Linux refuses a writev of more than IOV_MAX (1024) buffers: the rest are written after it
    chunks = [bytes([k % 251]) * (k % 7 + 1) for k in range(2 * max(streaming._IOV_MAX, 1024) + 3)]
    with DropBehind() as files:
        files.write(tmp_path / "many.bin", *chunks)
    assert (tmp_path / "many.bin").read_bytes() == b"".join(chunks)


def test_the_same_bytes_without_drop_behind(tmp_path):
    chunks = (b"x" * 5000, np.ones((30, 30), np.float32).data)
    with DropBehind(enabled=False) as plain, DropBehind() as streamed:
        plain.write(tmp_path / "plain", *chunks)
        streamed.write(tmp_path / "streamed", *chunks)
    assert (tmp_path / "plain").read_bytes() == (tmp_path / "streamed").read_bytes()
    assert oct((tmp_path / "streamed").stat().st_mode & 0o777) == oct((tmp_path / "plain").stat().st_mode & 0o777)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_no_descriptor_is_left_open(tmp_path):
    before = _open_descriptors()
    with DropBehind(window=1 << 30) as files:  # everything in flight until the end
        for k in range(50):
            files.write(tmp_path / f"f{k}", b"y" * 1000)
        assert _open_descriptors() == before + (50 if files.enabled else 0)
    assert _open_descriptors() == before
    with pytest.raises(RuntimeError, match="stop"):
        with DropBehind(window=1 << 30) as files:
            files.write(tmp_path / "g", b"z")
            raise RuntimeError("stop")
    assert _open_descriptors() == before


@pytest.mark.skipif(streaming._SYNC_FILE_RANGE is None, reason="no sync_file_range here")
def test_written_files_leave_the_page_cache(tmp_path):
    payload = os.urandom(64 * PAGE)
    control = tmp_path / "control"
    control.write_bytes(payload)
    if resident_pages(control) == 0:
        pytest.skip("this file system keeps no page cache of its files (or mincore cannot see it)")
    with DropBehind(window=128 * PAGE) as files:
        for k in range(8):
            files.write(tmp_path / f"f{k}", payload)
    assert [resident_pages(tmp_path / f"f{k}") for k in range(8)] == [0] * 8
    assert resident_pages(control) > 0


def _failing_sync(code):
    def sync_file_range(fd, offset, nbytes, flags):
        ctypes.set_errno(code)
        return -1
    return sync_file_range


def test_a_file_system_refusing_it_gets_ordinary_writes(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(streaming, "_SYNC_FILE_RANGE", _failing_sync(errno.EINVAL))
    with caplog.at_level("INFO", logger="radiodet.streaming"):
        with DropBehind() as files:
            files.write(tmp_path / "a", b"first")
            files.write(tmp_path / "b", b"second")
    assert not files.enabled
    assert (tmp_path / "a").read_bytes() == b"first" and (tmp_path / "b").read_bytes() == b"second"
    assert "does not take sync_file_range" in caplog.text


def test_a_write_error_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "_SYNC_FILE_RANGE", _failing_sync(errno.EIO))
    with pytest.raises(OSError) as raised:
        with DropBehind() as files:
            files.write(tmp_path / "broken.fits", b"data")
    assert raised.value.errno == errno.EIO and raised.value.filename == str(tmp_path / "broken.fits")
