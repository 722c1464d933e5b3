"""Worker processes for the stages that use a rule's threads (views, COCO)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context

__all__ = ["CAN_FORK", "forked_pool"]

#: whether workers can be forked here (they then see the data the parent built before the fork)
CAN_FORK = "fork" in get_all_start_methods()


def forked_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, forked where the platform can.

    Fork, not spawn: a spawned worker would re-run the calling script (a
    Snakemake script has no ``__main__`` guard), and a forked one starts with
    the parent's data (a task can name rows of a table the parent built
    instead of receiving them pickled). Tasks should use numpy, astropy, PIL
    and the standard library only (no open database connections or threads).
    """
    return ProcessPoolExecutor(workers, mp_context=get_context("fork" if CAN_FORK else "spawn"))
