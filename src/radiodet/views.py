"""PNG and NPY views of the FITS cutouts, scaled consistently across a field.

A view holds its cutout's pixels (the parent image's float32 values inside
the cutout's bounds, which is what the cutout FITS file stores), read from
the parent one band of cutouts at a time.

The display interval is computed once per field from a regular subsample of
all its pixels (written by the cutout stage), never per cutout: the same
brightness maps to the same grey level in every cutout of a field, so a model
sees comparable images (the MGCLS recipe's per-field contrast stretch).

Intervals (``views.interval``): ``percentile`` (``views.percentiles`` = [low,
high]), ``zscale`` (IRAF zscale on the field sample), ``minmax``.
Stretches (``views.stretch``): ``linear``, ``sqrt``, ``asinh``
(``views.asinh_a``), ``log`` (``views.log_a``); astropy.visualization's
definitions. NaN pixels become 0 (black).

Array orientation: row 0 of the PNG and of the NPY array is row 0 of the FITS
data (y = 0), i.e. the images are stored unflipped and look upside down
(south up) in an ordinary image viewer. COCO boxes use the same orientation.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from astropy.visualization import (
    AsinhStretch,
    AsymmetricPercentileInterval,
    LinearStretch,
    LogStretch,
    ManualInterval,
    SqrtStretch,
    ZScaleInterval,
)
from PIL import Image

from .atomic import atomic_directory, write_json
from .configuration import schema_config
from .errors import ConfigError, InputError
from .images import BandBuffer, open_image
from .logs import Progress
from .schema import read_parquet_metadata, read_table
from .streaming import DropBehind
from .workers import forked_pool

__all__ = ["ViewConfig", "field_interval", "scale", "png_bytes", "write_png", "write_views"]

log = logging.getLogger(__name__)


@schema_config("views")
class ViewConfig:
    """Options of the ``views`` config section (defaults from the schema)."""

    formats: tuple[str, ...]
    interval: str
    percentiles: tuple[float, float]
    stretch: str
    asinh_a: float
    log_a: float
    png_compress_level: int


def field_interval(sample: np.ndarray, config: ViewConfig) -> tuple[float, float]:
    """(vmin, vmax) in data units from the field's pixel sample."""
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        raise ValueError("the field pixel sample is empty (all NaN?)")
    if config.interval == "percentile":
        low, high = config.percentiles
        vmin, vmax = AsymmetricPercentileInterval(low, high).get_limits(sample)
    elif config.interval == "zscale":
        vmin, vmax = ZScaleInterval().get_limits(sample)
    elif config.interval == "minmax":
        vmin, vmax = float(sample.min()), float(sample.max())
    else:
        raise ConfigError(f"unknown views.interval {config.interval!r}; use percentile, zscale or minmax")
    if not vmax > vmin:
        vmax = vmin + 1.0
    return float(vmin), float(vmax)


def _stretch(config: ViewConfig):
    stretches = {"linear": LinearStretch, "sqrt": SqrtStretch,
                 "asinh": lambda: AsinhStretch(a=config.asinh_a), "log": lambda: LogStretch(a=config.log_a)}
    try:
        return stretches[config.stretch]()
    except KeyError:
        raise ConfigError(f"unknown views.stretch {config.stretch!r}; use {', '.join(stretches)}") from None


def scale(data: np.ndarray, vmin: float, vmax: float, config: ViewConfig, *, out: np.ndarray | None = None,
          stretch=None) -> np.ndarray:
    """Data -> float32 in [0, 1] (clipped interval, then stretch); NaN -> 0.

    ``out``: a float32 array of the shape of ``data`` (float32 too, of
    either byte order) to compute in, returned; ``stretch``: ``_stretch(config)`` made once by a
    caller scaling many cutouts. The values are the same either way: the
    same ufuncs on the same float32 values, in place.
    """
    stretch = stretch or _stretch(config)
    if out is None:
        normed = ManualInterval(vmin, vmax)(np.nan_to_num(data, nan=vmin), clip=True)
        return stretch(normed, clip=True).astype(np.float32)
    if data.dtype.newbyteorder("=") != np.float32 or out.dtype != np.float32:
        raise TypeError(f"in-place scaling takes float32 data and a native float32 output, not {data.dtype} and "
                        f"{out.dtype}")
    np.copyto(out, data)
    # NaN -> vmin; an infinity is left for the clip (nan_to_num's finite stand-ins clip the same way)
    np.copyto(out, out.dtype.type(vmin), where=np.isnan(out))
    ManualInterval(vmin, vmax)(out, clip=True, out=out)
    return stretch(out, clip=True, out=out)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(pixels: np.ndarray, compress_level: int) -> bytes:
    """A 2-D uint8 array as the bytes of an 8-bit greyscale PNG (row 0 first).

    Levels 1-9 go through PIL, whose adaptive row filters help zlib. At level
    0 (stored) a filter cannot make the file smaller, yet PIL still spends
    most of its time choosing one, so the file is made here directly: the
    PNG signature, IHDR, one IDAT of every row with filter type 0 (None)
    stored by zlib, IEND (PNG specification, ISO/IEC 15948). Twenty times
    faster, and it decodes to the same pixels.
    """
    if compress_level:
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=compress_level)
        return buffer.getvalue()
    rows = _filtered_rows(pixels.shape)
    rows[:, 1:] = pixels
    return _stored_png(rows)


def write_png(path: str | Path, pixels: np.ndarray, compress_level: int) -> None:
    """Write a 2-D uint8 array as an 8-bit greyscale PNG file (:func:`png_bytes`)."""
    Path(path).write_bytes(png_bytes(pixels, compress_level))


def _filtered_rows(shape: tuple[int, int]) -> np.ndarray:
    """A (height, width + 1) uint8 array of zeros: each row its filter byte (0, None), then its pixels."""
    height, width = shape
    return np.zeros((height, width + 1), dtype=np.uint8)


def _stored_png(rows: np.ndarray) -> bytes:
    """A level-0 PNG from :func:`_filtered_rows` holding the pixels (see :func:`png_bytes`)."""
    height, width = rows.shape[0], rows.shape[1] - 1
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8 bits, greyscale, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows.data, 0))
            + _png_chunk(b"IEND", b""))


def _npy_header(shape: tuple[int, ...], dtype) -> bytes:
    """The bytes ``np.save`` writes before the data of a C-ordered array of ``shape`` and ``dtype``."""
    buffer = io.BytesIO()
    empty = np.zeros(shape, dtype=dtype)
    np.save(buffer, empty)
    return buffer.getvalue()[:-empty.nbytes]


#: one band of a field's cutouts: (y0, y1 of the band's rows, [(cutout_id, x0, x1), ...])
Band = tuple[int, int, list[tuple[str, int, int]]]


class _Workspace:
    """Arrays reused from one cutout of a shape to the next (fresh ones cost a page fault per 4 KiB)."""

    def __init__(self, shape: tuple[int, int]):
        self.scaled = np.empty(shape, dtype=np.float32)
        self.grey = np.empty(shape, dtype=np.float32)
        self.rows = _filtered_rows(shape)  # the level-0 PNG's rows; pixels in rows[:, 1:]
        self.pixels = self.rows[:, 1:]
        self.npy_header = _npy_header(shape, np.float32)


def _write_bands(image_path: Path, plane: tuple[int, ...] | None, bands: list[Band], out_dir: Path,
                 vmin: float, vmax: float, config: ViewConfig) -> int:
    """Write the views of the cutouts in ``bands`` into ``out_dir``, reading each band of the parent once."""
    workspaces: dict[tuple[int, int], _Workspace] = {}
    stretch = _stretch(config)
    band_buffer = BandBuffer()
    written = 0
    out_prefix = os.path.join(out_dir, "")  # file paths as strings: tens of thousands of them
    # nothing later in the run reads the views back: their pages leave the cache once written
    with open_image(image_path, plane=plane) as image, DropBehind() as files:
        for y0, y1, cutouts in bands:
            x_start, x_stop = min(c[1] for c in cutouts), max(c[2] for c in cutouts)
            # in the file's byte order: scale()'s first copy converts it
            band = image.read(y0, y1, x_start, x_stop, buffer=band_buffer, drop_behind=True, native=False)
            if band.shape[0] != y1 - y0:
                raise InputError(image.path, f"rows {y0}..{y1} of a cutout lie outside the image "
                                             f"({image.shape[1]} x {image.shape[0]}): not the image that was cut?")
            for cutout_id, x0, x1 in cutouts:
                # the cutout FITS file's pixels: the same float32 values, cut from the same rows
                data = band[:, x0 - x_start:x1 - x_start]
                work = workspaces.get(data.shape)
                if work is None:
                    work = workspaces[data.shape] = _Workspace(data.shape)
                scaled = scale(data, vmin, vmax, config, out=work.scaled, stretch=stretch)
                if "png" in config.formats:
                    # round(255 x scaled) as uint8, as np.round(scaled * 255).astype(np.uint8) gives it
                    np.multiply(scaled, 255, out=work.grey)
                    np.round(work.grey, out=work.grey)
                    np.copyto(work.pixels, work.grey, casting="unsafe")
                    png = (png_bytes(np.ascontiguousarray(work.pixels), config.png_compress_level)
                           if config.png_compress_level else _stored_png(work.rows))
                    files.write(f"{out_prefix}{cutout_id}.png", png)
                if "npy" in config.formats:
                    # np.save's bytes; its header, the same for every cutout of the shape, formatted once
                    files.write(f"{out_prefix}{cutout_id}.npy", work.npy_header, scaled.data)
                written += 1
    return written


#: at least this many cutouts (whole bands) per task handed to a worker process
_CHUNK = 256


def _bands(manifest: dict[str, list]) -> list[Band]:
    """The manifest's cutouts (its columns as lists) grouped by their rows (y0, y1), in manifest order."""
    groups: dict[tuple[int, int], list[tuple[str, int, int]]] = {}
    for cutout_id, x0, y0, x1, y1 in zip(*(manifest[c] for c in ("cutout_id", "x0", "y0", "x1", "y1"))):
        groups.setdefault((y0, y1), []).append((cutout_id, x0, x1))
    return [(y0, y1, cutouts) for (y0, y1), cutouts in groups.items()]


def _parent_image(manifest_path: Path, image_path: str | Path | None) -> tuple[Path, tuple[int, ...] | None]:
    """The image (and its plane) that the manifest's cutouts were cut from; checked against ``image_path``."""
    metadata = read_parquet_metadata(manifest_path)
    recorded = Path(metadata["image"])
    path = Path(image_path) if image_path is not None else recorded
    if path.resolve() != recorded.resolve():
        raise InputError(manifest_path, f"its cutouts were cut from {recorded}, not from {path}: re-run the cutouts")
    plane = None if metadata.get("plane") is None else tuple(metadata["plane"])
    with open_image(path, plane=plane) as image:
        if plane is None and image.plane:  # a manifest written before the plane was recorded
            raise InputError(manifest_path, f"it does not record which plane of the cube {path} was cut "
                                            "(written by an earlier version): re-run the cutouts")
        if list(image.shape) != [int(n) for n in metadata["shape"]]:
            raise InputError(manifest_path, f"its image was {metadata['shape'][1]} x {metadata['shape'][0]} px, "
                                            f"{path} is {image.shape[1]} x {image.shape[0]}: re-run the cutouts")
    return path, plane


def write_views(manifest_path: str | Path, sample_path: str | Path, out_dir: str | Path,
                config: ViewConfig, *, image_path: str | Path | None = None, workers: int = 1) -> int:
    """Write ``<cutout_id>.png`` / ``.npy`` into the directory ``out_dir``.

    The pixels of each view are those of its cutout FITS file: the parent
    image's values inside the cutout's bounds (manifest ``x0``-``x1``,
    ``y0``-``y1``, the plane the manifest records) as float32. They are read
    from the parent, one positioned read per band of cutouts, rather than
    from tens of thousands of small FITS files (that read was half the
    stage's time).

    Parameters
    ----------
    manifest_path : str or Path
        The field's (or one part's) cutout manifest.
    sample_path : str or Path
        The field's pixel subsample: the display interval is computed once
        over it, so every cutout of the field is scaled the same way.
    out_dir : str or Path
        The views directory (it appears atomically, complete).
    config : ViewConfig
        Formats, interval (percentile, zscale, minmax) and stretch.
    image_path : str or Path, optional
        The parent image (the workflow passes its input); it must be the one
        the manifest records (default).
    workers : int
        Processes writing views (the rule's threads); the files are the same
        whatever the number.

    Returns
    -------
    int
        The number of cutouts written. PNG: 8-bit greyscale, round(255 x
        scaled), FITS row order (row 0 first, as COCO images). NPY: float32
        scaled to [0, 1]. ``out_dir/scaling.json`` records the interval (image
        unit) and stretch, so the mapping can be inverted.
    """
    manifest_path = Path(manifest_path)
    # the columns as lists, through Arrow: this job has no other use for pandas (its import took a
    # fifth of a part's time)
    manifest = read_table(manifest_path, ["cutout_id", "x0", "y0", "x1", "y1"]).to_pydict()
    n_cutouts = len(manifest["cutout_id"])
    unknown = set(config.formats) - {"png", "npy"}
    if unknown:
        raise ConfigError(f"unknown views.formats {sorted(unknown)}; use png and/or npy")
    image_path, plane = _parent_image(manifest_path, image_path)
    sample = np.load(sample_path)
    vmin, vmax = field_interval(sample, config)
    log.info("field interval %s: [%.4g, %.4g] (from %d sampled pixels), stretch %s", config.interval,
             vmin, vmax, sample.size, config.stretch)
    progress = Progress("views", n_cutouts, unit="cutouts")
    chunks: list[list[Band]] = [[]]
    in_chunk = 0
    for band in _bands(manifest):
        if in_chunk >= _CHUNK:
            chunks.append([])
            in_chunk = 0
        chunks[-1].append(band)
        in_chunk += len(band[2])
    workers = max(1, min(int(workers), len(chunks)))
    with atomic_directory(out_dir) as tmp_dir:
        if workers == 1:
            for chunk in chunks:
                progress.advance(_write_bands(image_path, plane, chunk, tmp_dir, vmin, vmax, config))
        else:
            from concurrent.futures import as_completed

            log.info("views written by %d processes", workers)
            with forked_pool(workers) as pool:
                futures = [pool.submit(_write_bands, image_path, plane, chunk, tmp_dir, vmin, vmax, config)
                           for chunk in chunks]
                for future in as_completed(futures):
                    progress.advance(future.result())
        write_json(tmp_dir / "scaling.json", {
            "vmin": vmin, "vmax": vmax, "unit": "image BUNIT", "interval": config.interval,
            "percentiles": list(config.percentiles), "stretch": config.stretch, "asinh_a": config.asinh_a,
            "log_a": config.log_a, "formats": list(config.formats), "pixel_sample_size": int(sample.size),
            "n_cutouts": n_cutouts,
            "orientation": "array row 0 = FITS row 0 (unflipped; south up in an image viewer)"})
    progress.finish()
    return n_cutouts
