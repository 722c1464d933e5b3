"""A field cut by several jobs: gather the parts into what one job writes.

A field whose image holds more than ``cutouts.max_per_job`` cutouts is cut
(and its views written) by several jobs, each taking a run of whole rows of
the cutout grid (:func:`radiodet.tiling.rows_of_part`); the number of parts
comes from the image header before the run (:func:`planned_parts`), so the
workflow needs no checkpoint. Each part writes its own FITS directory,
manifest and pixel sample, then its own views. The gather steps here make
the field's ``fits/``, ``manifest.parquet``, ``pixel_sample.npy`` and views
directory from them, equal to one job's output: the files are hard links to
the parts' (copies where the file system has none), the manifest rows and
the sample are the parts' in part order.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from .atomic import atomic_directory, atomic_path, link_files, write_json
from .errors import ImageError
from .manifest import MANIFEST_COLUMNS, cutout_dir_in_manifest
from .schema import read_parquet_metadata, read_table, write_parquet
from .tiling import count_parts

__all__ = ["planned_parts", "gather_cutouts", "gather_views"]

log = logging.getLogger(__name__)


def planned_parts(image_path: str | Path | None, cutouts: dict, *,
                  shape: tuple[int, int] | None = None) -> int:
    """How many jobs cut the field: from its image header, or ``shape`` = (ny, nx) when given.

    ``cutouts`` is the config's ``cutouts`` section (size, min_overlap,
    layout, max_per_job). An image that is not there yet (made by an earlier
    rule) and has no ``shape`` is cut by one job.
    """
    if shape is None and image_path is not None:
        from .images import image_shape  # here: the gathering jobs need no astropy (a quarter of their time)

        shape = image_shape(image_path)
    if shape is None:
        return 1
    return count_parts(shape, int(cutouts["size"]), min_overlap=int(cutouts["min_overlap"]),
                       layout=cutouts["layout"], max_per_job=int(cutouts["max_per_job"]))


def _part_metadata(manifest_paths: list[Path]) -> list[dict]:
    """Each part's manifest metadata, checked to be parts 0..n-1 of one field, in order."""
    metadata = [read_parquet_metadata(path) for path in manifest_paths]
    n = len(manifest_paths)
    for k, (path, meta) in enumerate(zip(manifest_paths, metadata)):
        if n > 1 and meta.get("part") != [k, n]:
            raise ValueError(f"{path}: expected part {k} of {n}, the manifest says {meta.get('part')}")
        if (meta.get("field"), meta.get("image")) != (metadata[0].get("field"), metadata[0].get("image")):
            raise ValueError(f"{path}: part of field {meta.get('field')!r} ({meta.get('image')}), "
                             f"not of {metadata[0].get('field')!r} ({metadata[0].get('image')})")
    return metadata


def gather_cutouts(part_manifests: list[str | Path], part_samples: list[str | Path], fits_dir: str | Path,
                   manifest_path: str | Path, sample_path: str | Path) -> pa.Table:
    """The field's cutout directory, manifest and pixel sample from its parts.

    Parameters
    ----------
    part_manifests, part_samples : list of str or Path
        The parts' manifests and pixel samples, in part order (0 first).
    fits_dir : str or Path
        The field's cutout directory: a hard link to every part's FITS file.
    manifest_path, sample_path : str or Path
        The field's manifest (the parts' rows in order, ``file`` relative to
        this manifest's directory; metadata of part 0 with the NaN-dropped
        tiles summed) and its pixel sample (the parts' samples concatenated).

    Returns
    -------
    pyarrow.Table
        The manifest, written as the cutout stage writes one (an Arrow table:
        the files of one job and of the gathered parts are the same bytes).
        The outputs appear like the cutout stage's: the directory first, then
        the sample, then the manifest.
    """
    part_manifests = [Path(p) for p in part_manifests]
    fits_dir, manifest_path = Path(fits_dir), Path(manifest_path)
    metadata = _part_metadata(part_manifests)
    frames = [read_table(path) for path in part_manifests]
    manifest = pa.concat_tables(frames).combine_chunks()  # one chunk, as one job writes it
    if manifest.num_rows == 0:
        raise ImageError(metadata[0]["image"], f"no cutout in any of the {len(frames)} parts: every tile is NaN "
                                               "beyond cutouts.max_nan_fraction (an all-NaN image?)")
    relative_dir = cutout_dir_in_manifest(fits_dir, manifest_path)
    prefix = "" if relative_dir == Path(".") else f"{relative_dir}/"  # what str(relative_dir / name) gives
    names = [os.path.basename(file) for file in manifest.column("file").to_pylist()]
    sources = [os.path.join(path.parent, file) for path, frame in zip(part_manifests, frames)
               for file in frame.column("file").to_pylist()]
    with atomic_directory(fits_dir) as tmp_dir:
        link_files(zip(sources, [os.path.join(tmp_dir, name) for name in names]))
    manifest = manifest.set_column(manifest.schema.get_field_index("file"), "file",
                                   pa.array([prefix + name for name in names], pa.string()))
    sample = np.concatenate([np.load(p) for p in part_samples]).astype(np.float32)
    with atomic_path(sample_path, suffix=".npy") as tmp:
        np.save(tmp, sample)
    field_metadata = {k: v for k, v in metadata[0].items() if k not in ("part", "schema_version")}
    field_metadata["tiles_dropped_nan"] = sum(int(m["tiles_dropped_nan"]) for m in metadata)
    write_parquet(manifest, manifest_path, columns=MANIFEST_COLUMNS, metadata=field_metadata)
    log.info("gathered %d cutouts of field %s from %d parts into %s and %s", manifest.num_rows,
             field_metadata.get("field"), len(frames), fits_dir, manifest_path)
    return manifest


def gather_views(part_dirs: list[str | Path], out_dir: str | Path) -> int:
    """The field's views directory from its parts' (hard links; one ``scaling.json``).

    Every part must have scaled with the same interval (they read the same
    field sample); the gathered ``scaling.json`` is part 0's with the cutouts
    of all parts counted. Returns the number of cutouts.
    """
    part_dirs = [Path(d) for d in part_dirs]
    scalings = [json.loads((d / "scaling.json").read_text()) for d in part_dirs]
    for d, scaling in zip(part_dirs, scalings):
        differs = {k for k in scaling if k != "n_cutouts" and scaling[k] != scalings[0][k]}
        if differs:
            raise ValueError(f"{d}: scaled unlike {part_dirs[0]} ({sorted(differs)} differ): "
                             "the parts of a field must share its pixel sample and views config")
    total = sum(int(s["n_cutouts"]) for s in scalings)
    with atomic_directory(out_dir) as tmp_dir:
        # not scaling.json (one for the field) nor hidden files (Snakemake's .snakemake_timestamp)
        link_files((entry.path, os.path.join(tmp_dir, entry.name)) for d in part_dirs for entry in os.scandir(d)
                   if entry.name != "scaling.json" and not entry.name.startswith("."))
        write_json(tmp_dir / "scaling.json", {**scalings[0], "n_cutouts": total})
    log.info("gathered the views of %d cutouts from %d parts into %s", total, len(part_dirs), out_dir)
    return total
