"""Logging set-up for workflow scripts and a progress reporter for long loops."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator

__all__ = ["configure", "Progress", "get_logger"]

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


@contextlib.contextmanager
def configure(log_file: str | Path | None = None, *, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send log records (and Python warnings) to ``log_file`` and stderr.

    Used as ``with configure(snakemake.log[0]): ...`` by every workflow
    script. An exception escaping the block is written to the log with its
    traceback before it propagates, so the Snakemake log of a failed job says
    why it failed.
    """
    root = logging.getLogger()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    formatter = logging.Formatter(_FORMAT)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    old_level = root.level
    root.setLevel(level)
    logging.captureWarnings(True)
    log = logging.getLogger("radiodet")
    try:
        # the filters below are undone when the block ends (catch_warnings
        # restores the caller's), so a test or a notebook keeps its own
        with warnings.catch_warnings():
            # Warnings that say nothing to a user of this pipeline: the SDC1 images
            # carry a BLANK keyword on float data, which FITS ignores anyway.
            warnings.filterwarnings("ignore", message=".*BLANK.*")
            warnings.filterwarnings("ignore", message=".*'datfix' made the change.*")
            yield log
    except BaseException:
        log.exception("stage failed")
        raise
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)
        logging.captureWarnings(False)


class Progress:
    """Log ``done / total``, rate and time left, at most every ``interval`` s.

    >>> progress = Progress("cutouts", total=1000, unit="cutouts")
    >>> for _ in range(1000):
    ...     progress.advance()
    >>> progress.finish()
    """

    def __init__(self, what: str, total: int, *, unit: str = "items", interval: float = 10.0,
                 logger: logging.Logger | None = None):
        self.what = what
        self.total = max(int(total), 0)
        self.unit = unit
        self.interval = interval
        self.log = logger or logging.getLogger("radiodet.progress")
        self.done = 0
        self.start = time.monotonic()
        self._last = self.start

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._report(now)

    def _report(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        self.log.info("%s: %d/%d %s (%.1f%%), %.1f %s/s, %.0f s left",
                      self.what, self.done, self.total, self.unit, pct, rate, self.unit, left)

    def finish(self) -> float:
        """Log the final count and return the elapsed time in seconds."""
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        self.log.info("%s: %d %s in %.1f s (%.1f %s/s)", self.what, self.done, self.unit,
                      elapsed, rate, self.unit)
        return elapsed
