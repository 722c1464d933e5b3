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
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from astropy.io import fits

from .atomic import atomic_directory, atomic_path
from .configuration import schema_config
from .errors import ImageError
from .geometry import normalise_ra
from .images import BandBuffer, Beam, SkyImage, open_image, robust_rms
from .logs import Progress
from .manifest import MANIFEST_COLUMNS, cutout_dir_in_manifest, footprints, format_polygon
from .schema import write_parquet
from .streaming import DropBehind
from .tiling import Tile, layout_tiles, regions_for_field, rows_of_part, tile_rows

__all__ = ["CutoutConfig", "make_cutouts", "cutout_header"]

log = logging.getLogger(__name__)

@schema_config("cutouts")
class CutoutConfig:
    """Cutout layout options (config ``cutouts``; defaults from the schema)."""

    size: int
    min_overlap: int
    max_nan_fraction: float
    layout: str
    #: a field with more cutouts is cut by several jobs (whole rows of cutouts each)
    max_per_job: int
    #: samples of the field kept for field-wide view scaling
    pixel_sample_size: int = 2_000_000


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
    #: the varying cards whose values recur from cutout to cutout (formatted once each)
    REPEATING = frozenset({"CRPIX1", "CRPIX2", "CUTX0", "CUTY0", "SPLIT"})

    def __init__(self, template: fits.Header, shape: tuple[int, int], files: DropBehind):
        hdu = fits.PrimaryHDU(data=np.zeros(shape, dtype=np.float32), header=template)
        hdu.verify("exception")
        self.cards = [card.image for card in hdu.header.cards]
        self.index = {card.keyword: i for i, card in enumerate(hdu.header.cards)}
        missing = [k for k in self.VARYING if k not in self.index]
        if missing:
            raise ValueError(f"cutout header template lacks {missing}")
        self.shape = shape
        self._images: dict[tuple, str] = {}
        self._simple: dict[str, bool] = {}  # keyword -> _simple_card agreed with astropy on its first card
        self._big_endian = np.empty(shape, dtype=">f4")  # each file's data, reused
        self.files = files

    def card_image(self, key: str, value, comment: str | None) -> str:
        """The 80-character card for a varying keyword, as ``astropy.io.fits.Card(...).image`` gives it.

        A grid repeats each CRPIX/CUTX0/CUTY0/SPLIT value along a row or column
        of cutouts: those are formatted by astropy once per distinct (key,
        value, comment); the value's type is part of the key (``1 == 1.0`` in
        Python, but the cards differ). The others (the cutout id, the noise)
        are new for every cutout and laid out by :func:`_simple_card`: the
        first card of each keyword it lays out is checked against astropy's.
        """
        if key in self.REPEATING:
            cache_key = (key, type(value), value, comment)
            image = self._images.get(cache_key)
            if image is None:
                image = fits.Card(key, value, comment).image
                if len(self._images) < 100_000:
                    self._images[cache_key] = image
            return image
        image = _simple_card(key, value, comment) if self._simple.get(key, True) else None
        if image is not None and key not in self._simple:  # the first laid out here: is it astropy's?
            reference = fits.Card(key, value, comment).image
            self._simple[key] = image == reference
            if image != reference:
                log.warning("the %s card laid out here differs from astropy's (%r, %r): astropy formats every "
                            "%s card (slower, the same files)", key, image, reference, key)
            return reference
        return image if image is not None else fits.Card(key, value, comment).image

    def write(self, path: str, data: np.ndarray, values: dict[str, tuple]) -> None:
        if data.shape != self.shape:
            raise ValueError(f"cutout of shape {data.shape}, expected {self.shape}")
        cards = list(self.cards)
        for key, (value, comment) in values.items():
            cards[self.index[key]] = self.card_image(key, value, comment)
        header = "".join(cards) + "END".ljust(80)
        header += " " * (-len(header) % 2880)
        np.copyto(self._big_endian, data)
        payload = self._big_endian.data
        # the write copies the bytes: the buffer can take the next cutout's
        self.files.write(path, header.encode("ascii"), payload, b"\0" * (-payload.nbytes % 2880))


def _simple_card(key: str, value, comment: str | None) -> str | None:
    """A fixed-format card of a float or string value as astropy lays it out, or None where it might not.

    astropy (``astropy.io.fits.card``): the keyword in columns 1-8, ``= ``,
    the value right-justified in 20 columns (a float as ``str(value)`` with
    ``E`` for ``e``, its mantissa cut to fit 20 characters), or a string
    quoted (``'`` doubled), padded to 8 characters inside the quotes and
    left-justified in 20, then `` / `` and the comment, the whole padded to
    80. None for anything else (an empty or non-ASCII string, a non-finite
    or non-float number, a card longer than 80 characters, which astropy
    continues or cuts): astropy formats those.
    """
    if type(value) is float:
        if value != value or value in (float("inf"), float("-inf")):
            return None
        text = str(value).replace("e", "E")
        if len(text) > 20:
            exponent = text.find("E")
            text = text[:20] if exponent < 0 else text[:20 - (len(text) - exponent)] + text[exponent:]
        text = f"{text:>20}"
    elif type(value) is str and value and value.isascii() and value.isprintable():
        quoted = "'{:8}'".format(value.replace("'", "''"))
        text = f"{quoted:20}"
    else:
        return None
    if len(key) > 8 or not key.isupper():
        return None
    card = f"{key:8}= {text}" + (f" / {comment}" if comment else "")
    return card.ljust(80) if len(card) <= 80 else None


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


def _first_sampled_row(next_sample_row: int, y0: int, stride: int) -> int:
    """The first row of a band starting at ``y0`` that the field's pixel sample takes.

    The sample takes every ``stride``-th row of the image (0, stride, ...), each
    once, from the first band of rows that holds it: it depends on the band
    geometry only, so a job cutting later bands can tell where it starts.
    """
    first = max(next_sample_row, y0)
    return first + (-first) % stride


def make_cutouts(image_path: str | Path, out_dir: str | Path, manifest_path: str | Path,
                 sample_path: str | Path, *, field: str, config: CutoutConfig,
                 regions: dict[str, list[dict]] | None = None, plane: tuple[int, ...] | None = None,
                 beam: Beam | None = None, part: int = 0, parts: int = 1) -> pa.Table:
    """Cut ``image_path`` into FITS files under ``out_dir``; write the manifest.

    Parameters
    ----------
    image_path : str or Path
        The field's FITS image (2-D, or a cube with ``plane`` choosing the sky plane).
    out_dir : str or Path
        Directory of the cutout FITS files (``<field>_x<x0>_y<y0>.fits``).
    manifest_path, sample_path : str or Path
        The manifest (Parquet, :data:`radiodet.manifest.MANIFEST_COLUMNS`) and
        the regular pixel subsample (NPY) for the field-wide view scaling.
    field : str
        The field's name (field table).
    config : CutoutConfig
        Cutout size and minimum overlap (pixels), NaN limit, layout.
    regions : dict, optional
        Split name -> regions (pixel boxes 0-based, max exclusive, or sky
        boxes in degrees); a cutout goes to the split whose regions hold it
        whole, and is not written when it straddles two.
    plane : tuple of int, optional
        Indices of the non-celestial axes (e.g. frequency, Stokes) of a cube.
    beam : Beam, optional
        Restoring beam (FWHM arcsec, PA deg) where the header has none.
    part, parts : int
        Cut only part ``part`` (0-based) of ``parts``: a run of whole rows of
        the field's cutouts (:func:`radiodet.tiling.rows_of_part`). The parts'
        cutouts, manifests and samples, concatenated in part order
        (:func:`radiodet.parts.gather_cutouts`), equal one job's. A part may
        hold no cutout.

    Returns
    -------
    pyarrow.Table
        The manifest (an Arrow table: the job has no other use for pandas,
        whose import took a third of a small part's time). All outputs
        appear atomically: the cutout directory is renamed into place after
        its last file is complete, then the sample and the manifest.
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
        all_bands = tile_rows(tiles)
        mine = rows_of_part(len(all_bands), part, parts)
        next_sample_row = 0
        for y0, y1, _ in all_bands[:mine.start]:  # what the parts before this one sampled
            if _first_sampled_row(next_sample_row, y0, stride) < y1:
                next_sample_row = y1
        bands = all_bands[mine.start:mine.stop]
        n_tiles = sum(len(band_tiles) for _, _, band_tiles in bands)
        label = f"cutouts of {field}"
        if parts > 1:
            label += f" (part {part + 1} of {parts}: rows {mine.start}-{mine.stop - 1} of {len(all_bands)})"
            log.info("%s: %d tiles", label, n_tiles)
        rows: list[dict] = []
        samples: list[np.ndarray] = []
        dropped_nan = 0
        progress = Progress(label, n_tiles, unit="cutouts")
        writer = None
        relative_dir = cutout_dir_in_manifest(out_dir, manifest_path)
        band_buffer = BandBuffer()
        # nothing later in the run reads the cutout files back: their pages leave the cache once written
        with atomic_directory(out_dir) as tmp_dir, DropBehind() as files:
            tmp_prefix = os.path.join(tmp_dir, "")  # file paths as strings: tens of thousands of them
            for y0, y1, band_tiles in bands:
                bx0 = min(t.x0 for t in band_tiles)
                bx1 = max(t.x1 for t in band_tiles)
                # overwritten by the next band's read; the image's pages leave the cache once read; in the
                # file's byte order (FITS: big-endian), which the cutout files store: no swapping pass
                band = image.read(y0, y1, bx0, bx1, buffer=band_buffer, drop_behind=True, native=False)
                # the band's footprints and centres in one WCS call each
                tx0, ty0, tx1, ty1 = (np.array([getattr(t, c) for t in band_tiles]) for c in ("x0", "y0", "x1", "y1"))
                band_ra, band_dec = footprints(image.wcs, tx0, ty0, tx1, ty1)
                centre_ra, centre_dec = image.wcs.pixel_to_world_values((tx0 + tx1 - 1) / 2, (ty0 + ty1 - 1) / 2)
                centre_ra = normalise_ra(centre_ra).tolist()  # Python floats, as the manifest takes them
                centre_dec = np.asarray(centre_dec, dtype=float).tolist()
                first = _first_sampled_row(next_sample_row, y0, stride)
                if first < y1:
                    samples.append(band[first - y0::stride, ::stride].flatten())  # a copy: the buffer is reused
                    next_sample_row = y1
                for i, tile in enumerate(band_tiles):
                    data = band[:, tile.x0 - bx0:tile.x1 - bx0]
                    finite = np.isfinite(data)
                    nan_fraction = float(data.size - np.count_nonzero(finite)) / data.size
                    if nan_fraction >= 1.0 or nan_fraction > config.max_nan_fraction:
                        dropped_nan += 1
                        progress.advance()
                        continue
                    rms, median = robust_rms(data, finite)
                    cutout_id = f"{field}_x{tile.x0:05d}_y{tile.y0:05d}"
                    if writer is None:
                        template = cutout_header(image, tile, cutout_id=cutout_id, field=field)
                        template["RMSMAD"] = (rms, "1.4826 x median absolute deviation")
                        writer = _CutoutWriter(template, data.shape, files)
                        crpix_comments = template.comments["CRPIX1"], template.comments["CRPIX2"]
                    name = f"{cutout_id}.fits"
                    writer.write(f"{tmp_prefix}{name}", data, {
                        "CRPIX1": (float(image.wcs.wcs.crpix[0] - tile.x0), crpix_comments[0]),
                        "CRPIX2": (float(image.wcs.wcs.crpix[1] - tile.y0), crpix_comments[1]),
                        "CUTID": (cutout_id, "cutout id"),
                        "CUTX0": (tile.x0, "parent column of pixel x=0 (0-based)"),
                        "CUTY0": (tile.y0, "parent row of pixel y=0 (0-based)"),
                        "SPLIT": (tile.split, "dataset split"),
                        "RMSMAD": (rms, "1.4826 x median absolute deviation")})
                    rows.append({
                        "cutout_id": cutout_id, "field": field, "split": tile.split,
                        "file": str(relative_dir / name), "x0": tile.x0, "y0": tile.y0, "x1": tile.x1,
                        "y1": tile.y1, "width": tile.x1 - tile.x0, "height": tile.y1 - tile.y0,
                        "ra_center": centre_ra[i], "dec_center": centre_dec[i],
                        "footprint": format_polygon(band_ra[i], band_dec[i]), "nan_fraction": nan_fraction,
                        "rms_mad": rms, "median": median,
                    })
                    progress.advance()
            if not rows and parts == 1:  # raised inside the block: the directory is discarded
                raise ImageError(image.path, f"every cutout is NaN beyond max_nan_fraction="
                                             f"{config.max_nan_fraction} (an all-NaN image?)")
        progress.finish()
        if dropped_nan:
            log.info("%d of %d tiles dropped: NaN fraction above %.2f", dropped_nan, n_tiles,
                     config.max_nan_fraction)
        sample = np.concatenate(samples) if samples else np.empty(0, np.float32)
        sample = sample[np.isfinite(sample)].astype(np.float32)
        with atomic_path(sample_path, suffix=".npy") as tmp:
            np.save(tmp, sample)
        columns = pa.schema([(name, kind) for name, (kind, _, _) in MANIFEST_COLUMNS.items()])
        manifest = pa.Table.from_pylist(rows, schema=columns)
        write_parquet(manifest, manifest_path, columns=MANIFEST_COLUMNS, metadata={
            "image": str(image.path), "field": field, "shape": [ny, nx], "plane": list(image.plane),
            "wcs_header": image.wcs.to_header_string(relax=True),
            "beam_arcsec": None if image.beam is None else [image.beam.major, image.beam.minor, image.beam.pa],
            "frequency_hz": image.frequency_hz, "bunit": image.bunit,
            "cutout_size": config.size, "min_overlap": config.min_overlap,
            "tiles_laid_out": len(tiles), "tiles_dropped_nan": dropped_nan,
            "pixel_sample_stride": stride,
            **({"part": [part, parts]} if parts > 1 else {}),
        })
        log.info("wrote %d cutouts to %s and the manifest %s", len(rows), out_dir, manifest_path)
        return manifest
