"""Split a FITS image into FITS cutouts, each with its own WCS, and a manifest.

The image is memory-mapped and read one band of rows at a time (the rows of
one row of tiles), so memory stays at a few tile bands whatever the image
size. Each cutout is a 2-D FITS file with

* the parent's celestial WCS shifted to the cutout (``CRPIX`` minus the
  offset; pixel (0, 0) of the cutout is pixel (``CUTX0``, ``CUTY0``) of the
  parent, 0-based),
* the restoring beam (``BMAJ``, ``BMIN``, ``BPA``), ``BUNIT`` and the observing
  frequency (``FREQ``, Hz) when the parent has them,
* the robust noise estimate ``RMSMAD`` (1.4826 x median absolute deviation of
  the finite pixels, same unit as the data).

The manifest (Parquet, one row per written cutout) lists the cutout id, file,
split, pixel bounds in the parent, sky centre and footprint, NaN fraction and
noise; its file metadata holds the parent's celestial WCS header so later
stages can map sky positions to cutout pixels without opening every cutout.
A regular subsample of the field's pixels is saved for field-wide scaling of
the PNG/NPY views.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from astropy.io import fits

from .atomic import atomic_directory, atomic_path
from .errors import ImageError
from .geometry import normalise_ra
from .images import Beam, SkyImage, celestial_wcs, open_image, robust_rms
from .logs import Progress
from .schema import read_parquet_metadata, write_parquet
from .tiling import Tile, layout_tiles, regions_for_field

__all__ = ["MANIFEST_COLUMNS", "CutoutConfig", "make_cutouts", "cutout_header", "footprint",
           "field_wcs", "field_beam", "field_shape", "read_manifests"]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: dict[str, tuple[pa.DataType, str, str]] = {
    "cutout_id": (pa.string(), "", "unique cutout id: <field>_x<x0>_y<y0>"),
    "field": (pa.string(), "", "field name from the field table"),
    "split": (pa.string(), "", "train, val or test"),
    "file": (pa.string(), "", "cutout FITS path, relative to the manifest's directory"),
    "x0": (pa.int64(), "pix", "first parent column (0-based, inclusive)"),
    "y0": (pa.int64(), "pix", "first parent row (0-based, inclusive)"),
    "x1": (pa.int64(), "pix", "last parent column + 1 (exclusive)"),
    "y1": (pa.int64(), "pix", "last parent row + 1 (exclusive)"),
    "width": (pa.int64(), "pix", "NAXIS1 of the cutout"),
    "height": (pa.int64(), "pix", "NAXIS2 of the cutout"),
    "ra_center": (pa.float64(), "deg", "RA of the cutout centre, [0, 360)"),
    "dec_center": (pa.float64(), "deg", "Dec of the cutout centre"),
    "footprint": (pa.string(), "deg", "outer pixel-edge polygon as 'ra dec, ra dec, ...' (RA in [0, 360), closed)"),
    "nan_fraction": (pa.float64(), "", "fraction of NaN pixels"),
    "rms_mad": (pa.float64(), "", "1.4826 x MAD of finite pixels, in the image unit (BUNIT)"),
    "median": (pa.float64(), "", "median of finite pixels, in the image unit"),
}


@dataclass(frozen=True)
class CutoutConfig:
    """Cutout layout options (config ``cutouts``)."""

    size: int = 205
    min_overlap: int = 0
    max_nan_fraction: float = 0.5
    layout: str = "cover"
    #: samples of the field kept for field-wide view scaling
    pixel_sample_size: int = 2_000_000


def field_wcs(manifest_path: str | Path):
    """Celestial WCS of the parent image of a manifest (0-based pixels as everywhere)."""
    header = fits.Header.fromstring(read_parquet_metadata(manifest_path)["wcs_header"])
    return celestial_wcs(header, manifest_path)


def field_beam(manifest_path: str | Path) -> Beam:
    """Restoring beam of the parent image of a manifest."""
    beam = read_parquet_metadata(manifest_path).get("beam_arcsec")
    if not beam:
        raise ImageError(manifest_path, "the field's image has no beam (BMAJ/BMIN); set image.beam in the config")
    return Beam(*beam)


def field_shape(manifest_path: str | Path) -> tuple[int, int]:
    """(ny, nx) of the parent image of a manifest."""
    ny, nx = read_parquet_metadata(manifest_path)["shape"]
    return int(ny), int(nx)


def read_manifests(manifest_paths, ownership_path: str | Path | None = None) -> pd.DataFrame:
    """All fields' manifests in one table; only the owned cutouts when ``ownership_path`` is given.

    ``ownership_path`` is the index stage's ``cutouts.parquet``: cutouts where
    another field's centre is nearer (overlapping mosaics) are left out.
    """
    paths = manifest_paths.values() if isinstance(manifest_paths, dict) else manifest_paths
    manifest = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    if ownership_path is not None:
        owned = pd.read_parquet(ownership_path, columns=["cutout_id", "owned"])
        manifest = manifest[manifest["cutout_id"].isin(owned.loc[owned["owned"], "cutout_id"])]
    return manifest.reset_index(drop=True)


class _CutoutWriter:
    """Writes many same-shape 2-D float32 FITS files from one verified header.

    astropy builds and verifies the header once (for the first cutout); each
    file then gets that header with its own CRPIX and provenance cards
    substituted (``astropy.io.fits.Card`` formats them) and the data as
    big-endian float32, padded to 2880-byte blocks: the FITS standard's
    layout for a primary HDU, an order of magnitude faster than a full
    ``writeto`` per file for tens of thousands of cutouts.
    """

    VARYING = ("CRPIX1", "CRPIX2", "CUTID", "CUTX0", "CUTY0", "SPLIT", "RMSMAD")

    def __init__(self, template: fits.Header, shape: tuple[int, int]):
        hdu = fits.PrimaryHDU(data=np.zeros(shape, dtype=np.float32), header=template)
        hdu.verify("exception")
        self.cards = [card.image for card in hdu.header.cards]
        self.index = {card.keyword: i for i, card in enumerate(hdu.header.cards)}
        missing = [k for k in self.VARYING if k not in self.index]
        if missing:
            raise ValueError(f"cutout header template lacks {missing}")
        self.shape = shape

    def write(self, path: Path, data: np.ndarray, values: dict[str, tuple]) -> None:
        if data.shape != self.shape:
            raise ValueError(f"cutout of shape {data.shape}, expected {self.shape}")
        cards = list(self.cards)
        for key, (value, comment) in values.items():
            cards[self.index[key]] = fits.Card(key, value, comment).image
        header = "".join(cards) + "END".ljust(80)
        header += " " * (-len(header) % 2880)
        payload = np.ascontiguousarray(data, dtype=">f4").tobytes()
        with open(path, "wb") as handle:
            handle.write(header.encode("ascii"))
            handle.write(payload)
            handle.write(b"\0" * (-len(payload) % 2880))


def cutout_header(image: SkyImage, tile: Tile, *, cutout_id: str, field: str) -> fits.Header:
    """FITS header of a cutout: shifted celestial WCS plus beam and provenance."""
    wcs = image.wcs.deepcopy()
    wcs.wcs.crpix = wcs.wcs.crpix - np.array([tile.x0, tile.y0], dtype=float)
    header = wcs.to_header()
    if image.bunit:
        header["BUNIT"] = image.bunit
    if image.beam is not None:
        for key, (value, comment) in image.beam.header_cards().items():
            header[key] = (value, comment)
    if image.frequency_hz is not None:
        header["FREQ"] = (image.frequency_hz, "[Hz] observing frequency of the parent plane")
    header["CUTID"] = (cutout_id, "cutout id")
    header["CUTFIELD"] = (field, "field name")
    header["PARENT"] = (image.path.name, "parent image file")
    header["CUTX0"] = (tile.x0, "parent column of pixel x=0 (0-based)")
    header["CUTY0"] = (tile.y0, "parent row of pixel y=0 (0-based)")
    header["SPLIT"] = (tile.split, "dataset split")
    return header


def footprint(wcs, x0: int, y0: int, x1: int, y1: int, *, per_edge: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Sky polygon (RA in [0, 360), Dec) along the outer pixel edges, closed.

    The edges of pixels [x0, x1) are at x0 - 0.5 and x1 - 0.5 in 0-based pixel
    coordinates. ``per_edge`` points per side follow the projection's curvature.
    """
    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    xa, xb, ya, yb = x0 - 0.5, x1 - 0.5, y0 - 0.5, y1 - 0.5
    xs = np.concatenate([xa + (xb - xa) * t, np.full(per_edge, xb), xb - (xb - xa) * t, np.full(per_edge, xa), [xa]])
    ys = np.concatenate([np.full(per_edge, ya), ya + (yb - ya) * t, np.full(per_edge, yb), yb - (yb - ya) * t, [ya]])
    ra, dec = wcs.pixel_to_world_values(xs, ys)
    return normalise_ra(ra), np.asarray(dec)


def _format_polygon(ra: np.ndarray, dec: np.ndarray) -> str:
    return ", ".join(f"{a:.9f} {d:.9f}" for a, d in zip(ra, dec))


def _band_rows(tiles: list[Tile]) -> list[tuple[int, int, list[Tile]]]:
    bands: dict[tuple[int, int], list[Tile]] = {}
    for tile in tiles:
        bands.setdefault((tile.y0, tile.y1), []).append(tile)
    return [(y0, y1, group) for (y0, y1), group in sorted(bands.items())]


def make_cutouts(image_path: str | Path, out_dir: str | Path, manifest_path: str | Path,
                 sample_path: str | Path, *, field: str, config: CutoutConfig,
                 regions: dict[str, list[dict]] | None = None, plane: tuple[int, ...] | None = None,
                 beam: Beam | None = None) -> pd.DataFrame:
    """Cut ``image_path`` into FITS files under ``out_dir``; write the manifest.

    All outputs appear atomically: the cutout directory is renamed into place
    after its last file is complete, then the sample and the manifest.

    Returns the manifest DataFrame.
    """
    out_dir = Path(out_dir)
    manifest_path = Path(manifest_path)
    with open_image(image_path, plane=plane, beam=beam) as image:
        ny, nx = image.shape
        tiles = layout_tiles(image.shape, config.size, min_overlap=config.min_overlap,
                             regions=regions_for_field(regions, field), wcs=image.wcs, layout=config.layout)
        log.info("%s: %d x %d px, %d tiles of %d px (min overlap %d) in splits %s", image.path, nx, ny,
                 len(tiles), config.size, config.min_overlap,
                 {s: sum(t.split == s for t in tiles) for s in sorted({t.split for t in tiles})})
        if not tiles:
            raise ImageError(image.path, f"no {config.size} px cutout fits in the image ({nx} x {ny}) and the "
                                         f"split regions that apply to field {field!r}")
        stride = max(1, int(np.sqrt(nx * ny / config.pixel_sample_size)))
        rows: list[dict] = []
        samples: list[np.ndarray] = []
        next_sample_row = 0
        dropped_nan = 0
        progress = Progress(f"cutouts of {field}", len(tiles), unit="cutouts")
        writer = None
        try:
            relative_dir = out_dir.relative_to(manifest_path.parent)
        except ValueError:
            relative_dir = out_dir.resolve()
        with atomic_directory(out_dir) as tmp_dir:
            for y0, y1, band_tiles in _band_rows(tiles):
                bx0 = min(t.x0 for t in band_tiles)
                bx1 = max(t.x1 for t in band_tiles)
                band = image.read(y0, y1, bx0, bx1)
                first = max(next_sample_row, y0)
                first += (-first) % stride
                if first < y1:
                    samples.append(band[first - y0::stride, ::stride].ravel())
                    next_sample_row = y1
                for tile in band_tiles:
                    data = band[:, tile.x0 - bx0:tile.x1 - bx0]
                    nan_fraction = float(np.count_nonzero(~np.isfinite(data))) / data.size
                    if nan_fraction >= 1.0 or nan_fraction > config.max_nan_fraction:
                        dropped_nan += 1
                        progress.advance()
                        continue
                    rms, median = robust_rms(data)
                    cutout_id = f"{field}_x{tile.x0:05d}_y{tile.y0:05d}"
                    if writer is None:
                        template = cutout_header(image, tile, cutout_id=cutout_id, field=field)
                        template["RMSMAD"] = (rms, "1.4826 x median absolute deviation")
                        writer = _CutoutWriter(template, data.shape)
                    name = f"{cutout_id}.fits"
                    writer.write(tmp_dir / name, data, {
                        "CRPIX1": (float(image.wcs.wcs.crpix[0] - tile.x0), None),
                        "CRPIX2": (float(image.wcs.wcs.crpix[1] - tile.y0), None),
                        "CUTID": (cutout_id, "cutout id"),
                        "CUTX0": (tile.x0, "parent column of pixel x=0 (0-based)"),
                        "CUTY0": (tile.y0, "parent row of pixel y=0 (0-based)"),
                        "SPLIT": (tile.split, "dataset split"),
                        "RMSMAD": (rms, "1.4826 x median absolute deviation")})
                    ra, dec = footprint(image.wcs, tile.x0, tile.y0, tile.x1, tile.y1)
                    ra_c, dec_c = image.wcs.pixel_to_world_values((tile.x0 + tile.x1 - 1) / 2,
                                                                  (tile.y0 + tile.y1 - 1) / 2)
                    rows.append({
                        "cutout_id": cutout_id, "field": field, "split": tile.split,
                        "file": str(relative_dir / name), "x0": tile.x0, "y0": tile.y0, "x1": tile.x1,
                        "y1": tile.y1, "width": tile.x1 - tile.x0, "height": tile.y1 - tile.y0,
                        "ra_center": float(normalise_ra(ra_c)), "dec_center": float(dec_c),
                        "footprint": _format_polygon(ra, dec), "nan_fraction": nan_fraction,
                        "rms_mad": rms, "median": median,
                    })
                    progress.advance()
            if not rows:  # raised inside the block: the directory is discarded
                raise ImageError(image.path, f"every cutout is NaN beyond max_nan_fraction="
                                             f"{config.max_nan_fraction} (an all-NaN image?)")
        progress.finish()
        if dropped_nan:
            log.info("%d of %d tiles dropped: NaN fraction above %.2f", dropped_nan, len(tiles),
                     config.max_nan_fraction)
        sample = np.concatenate(samples) if samples else np.empty(0, np.float32)
        sample = sample[np.isfinite(sample)].astype(np.float32)
        with atomic_path(sample_path, suffix=".npy") as tmp:
            np.save(tmp, sample)
        manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
        write_parquet(manifest, manifest_path, columns=MANIFEST_COLUMNS, metadata={
            "image": str(image.path), "field": field, "shape": [ny, nx],
            "wcs_header": image.wcs.to_header_string(relax=True),
            "beam_arcsec": None if image.beam is None else [image.beam.major, image.beam.minor, image.beam.pa],
            "frequency_hz": image.frequency_hz, "bunit": image.bunit,
            "cutout_size": config.size, "min_overlap": config.min_overlap,
            "tiles_laid_out": len(tiles), "tiles_dropped_nan": dropped_nan,
            "pixel_sample_stride": stride,
        })
        log.info("wrote %d cutouts to %s and the manifest %s", len(rows), out_dir, manifest_path)
        return manifest
