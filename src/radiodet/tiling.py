"""Where the cutouts go: split regions and the tile layout.

A split region is a box in pixels of one image or on the sky. Each split
(``train``, ``val``, ``test``) owns a list of regions; tiles are laid out
inside each region separately, so no cutout ever straddles two splits, and
the splits are spatially disjoint by construction (overlapping regions of
different splits are a configuration error).

Pixel boxes use 0-based pixel indices with ``min`` inclusive and ``max``
exclusive, like Python slices: ``{x_min: 640}`` is columns 640 .. NAXIS1-1.
Sky boxes are ``{ra_min, ra_max, dec_min, dec_max}`` in degrees; ``ra_min >
ra_max`` means the box wraps through RA = 0 (``ra_min: 359.5, ra_max: 0.5``).

Within a region of length L a tile of size s with at least ``min_overlap`` o
between neighbours is placed ``n = ceil((L - o) / (s - o))`` times per axis,
evenly spread from one edge of the region to the other, so the region is
covered completely (the MGCLS recipe: minimal overlap, no padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .geometry import normalise_ra

__all__ = ["PixelBox", "SkyBox", "Tile", "axis_starts", "region_from_config", "regions_for_field", "layout_tiles",
           "tile_rows", "rows_of_part", "count_parts", "SPLITS"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PixelBox:
    """Pixel rectangle [x_min, x_max) x [y_min, y_max), 0-based."""

    x_min: int
    x_max: int
    y_min: int
    y_max: int

    def intersects(self, other: "PixelBox") -> bool:
        return (self.x_min < other.x_max and other.x_min < self.x_max
                and self.y_min < other.y_max and other.y_min < self.y_max)

    def clip(self, nx: int, ny: int) -> "PixelBox":
        return PixelBox(max(self.x_min, 0), min(self.x_max, nx), max(self.y_min, 0), min(self.y_max, ny))

    @property
    def empty(self) -> bool:
        return self.x_max <= self.x_min or self.y_max <= self.y_min

    def holds(self, x, y) -> np.ndarray:
        """Whether 0-based pixel positions fall in the box's pixels.

        Pixel i covers [i - 0.5, i + 0.5), so the box spans
        [x_min - 0.5, x_max - 0.5) x [y_min - 0.5, y_max - 0.5).
        """
        x, y = np.asarray(x, float), np.asarray(y, float)
        return ((x >= self.x_min - 0.5) & (x < self.x_max - 0.5)
                & (y >= self.y_min - 0.5) & (y < self.y_max - 0.5))


@dataclass(frozen=True)
class SkyBox:
    """RA/Dec box in degrees; wraps through RA = 0 when ``ra_min > ra_max``."""

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float

    def contains(self, ra, dec) -> np.ndarray:
        ra = normalise_ra(ra)
        lo, hi = float(normalise_ra(self.ra_min)), float(normalise_ra(self.ra_max))
        in_ra = (ra >= lo) & (ra < hi) if lo <= hi else (ra >= lo) | (ra < hi)
        dec = np.asarray(dec, dtype=float)
        return in_ra & (dec >= self.dec_min) & (dec < self.dec_max)

    def boundary(self, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Points along the box edges (RA unwrapped, may exceed 360)."""
        lo = float(normalise_ra(self.ra_min))
        hi = float(normalise_ra(self.ra_max))
        if hi <= lo:
            hi += 360.0
        ra = np.linspace(lo, hi, n)
        dec = np.linspace(self.dec_min, self.dec_max, n)
        ras = np.concatenate([ra, np.full(n, hi), ra[::-1], np.full(n, lo)])
        decs = np.concatenate([np.full(n, self.dec_min), dec, np.full(n, self.dec_max), dec[::-1]])
        return ras, decs


@dataclass(frozen=True)
class Tile:
    """A cutout: pixels [x0, x1) x [y0, y1) of the parent image, in ``split``."""

    split: str
    x0: int
    y0: int
    x1: int
    y1: int


def region_from_config(spec: dict) -> PixelBox | SkyBox:
    """A region from its config mapping (pixel keys or sky keys, not both)."""
    pixel_keys = {"x_min", "x_max", "y_min", "y_max"}
    sky_keys = {"ra_min", "ra_max", "dec_min", "dec_max"}
    keys = set(spec)
    if keys <= pixel_keys:
        big = 2**62
        return PixelBox(int(spec.get("x_min", 0)), int(spec.get("x_max", big)),
                        int(spec.get("y_min", 0)), int(spec.get("y_max", big)))
    if keys == sky_keys:
        return SkyBox(float(spec["ra_min"]), float(spec["ra_max"]), float(spec["dec_min"]), float(spec["dec_max"]))
    raise ConfigError(f"a split region needs pixel keys {sorted(pixel_keys)} (any subset) or all of the sky keys "
                      f"{sorted(sky_keys)}; got {sorted(keys)}")


def regions_for_field(regions: dict[str, list[dict]] | None, field: str) -> dict[str, list[dict]] | None:
    """The regions that apply to ``field``, without their ``field`` key.

    A region with ``field: NAME`` applies to that field only; one without it
    applies to every field. Returns None when no region was configured at
    all (the whole image is then train); a configured set that leaves this
    field out gives an empty mapping (no cutouts from this field).
    """
    if not regions:
        return None
    chosen: dict[str, list[dict]] = {}
    for split, specs in regions.items():
        for spec in specs or []:
            if spec.get("field", field) == field:
                chosen.setdefault(split, []).append({k: v for k, v in spec.items() if k != "field"})
    return chosen


def axis_starts(length: int, size: int, min_overlap: int = 0, *, layout: str = "cover") -> list[int]:
    """Start offsets of tiles of ``size`` covering ``length`` pixels.

    ``layout="cover"``: the fewest tiles with at least ``min_overlap``
    between neighbours; ``"n_plus_one"``: ``length // size + 1`` tiles (the
    MGCLS recipe). Tiles are spread evenly from edge to edge. Returns an empty
    list when the region is shorter than one tile.
    """
    if size <= 0 or not 0 <= min_overlap < size:
        raise ConfigError(f"cutout size {size} and overlap {min_overlap} need 0 <= overlap < size")
    if layout not in ("cover", "n_plus_one"):
        raise ConfigError(f"cutouts.layout must be cover or n_plus_one, got {layout!r}")
    if length < size:
        return []
    if layout == "n_plus_one":
        n = length // size + 1 if length > size else 1
    else:
        n = max(1, math.ceil((length - min_overlap) / (size - min_overlap)))
    if n == 1:
        return [0]
    return [int(round(v)) for v in np.linspace(0, length - size, n)]


def _sky_box_pixel_bounds(box: SkyBox, wcs, nx: int, ny: int) -> PixelBox:
    ra, dec = box.boundary()
    x, y = wcs.world_to_pixel_values(np.mod(ra, 360.0), dec)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return PixelBox(0, 0, 0, 0)
    return PixelBox(int(math.floor(x[ok].min() + 0.5)), int(math.ceil(x[ok].max() + 0.5)),
                    int(math.floor(y[ok].min() + 0.5)), int(math.ceil(y[ok].max() + 0.5))).clip(nx, ny)


def _tile_inside_sky_box(box: SkyBox, wcs, tile: Tile) -> bool:
    # corners and edge midpoints of the tile's outer pixel edges
    xs = np.array([tile.x0, (tile.x0 + tile.x1) / 2, tile.x1]) - 0.5
    ys = np.array([tile.y0, (tile.y0 + tile.y1) / 2, tile.y1]) - 0.5
    gx, gy = np.meshgrid(xs, ys)
    ra, dec = wcs.pixel_to_world_values(gx.ravel(), gy.ravel())
    return bool(np.all(box.contains(ra, dec)))


def layout_tiles(shape: tuple[int, int], size: int, *, min_overlap: int = 0,
                 regions: dict[str, list[dict]] | None = None, wcs=None, layout: str = "cover") -> list[Tile]:
    """Tiles for an image of ``shape`` = (ny, nx), split by ``regions``.

    ``regions`` maps a split name to a list of region specs (see
    :func:`region_from_config`). With ``regions=None`` the whole image is
    ``train``; an empty mapping gives no tiles. Raises
    :class:`ConfigError` when regions of different splits overlap.
    """
    ny, nx = shape
    if regions is None:
        regions = {"train": [{}]}
    unknown = set(regions) - set(SPLITS)
    if unknown:
        raise ConfigError(f"unknown split(s) {sorted(unknown)}; use {list(SPLITS)}")
    bounds: list[tuple[str, PixelBox, PixelBox | SkyBox]] = []
    for split, specs in regions.items():
        for spec in specs or []:
            region = region_from_config(spec)
            if isinstance(region, SkyBox):
                if wcs is None:
                    raise ConfigError("sky regions need the image WCS")
                box = _sky_box_pixel_bounds(region, wcs, nx, ny)
            else:
                box = region.clip(nx, ny)
            bounds.append((split, box, region))
    for i, (split_a, box_a, _) in enumerate(bounds):
        for split_b, box_b, _ in bounds[i + 1:]:
            if split_a != split_b and not box_a.empty and not box_b.empty and box_a.intersects(box_b):
                raise ConfigError(f"split regions overlap: {split_a} {box_a} and {split_b} {box_b}; "
                                  "the splits must be spatially disjoint")
    tiles: list[Tile] = []
    for split, box, region in bounds:
        if box.empty:
            continue
        for y0 in axis_starts(box.y_max - box.y_min, size, min_overlap, layout=layout):
            for x0 in axis_starts(box.x_max - box.x_min, size, min_overlap, layout=layout):
                tile = Tile(split, box.x_min + x0, box.y_min + y0, box.x_min + x0 + size, box.y_min + y0 + size)
                if isinstance(region, SkyBox) and not _tile_inside_sky_box(region, wcs, tile):
                    continue
                tiles.append(tile)
    # deterministic order: by rows, then columns (the order cutouts are read)
    tiles.sort(key=lambda t: (t.y0, t.x0, t.split))
    return tiles


def tile_rows(tiles: list[Tile]) -> list[tuple[int, int, list[Tile]]]:
    """The tiles grouped into rows of equal (y0, y1), as (y0, y1, tiles), from the bottom row up.

    A row is what the cutout stage reads in one go; a field cut by several
    jobs gives each job a run of whole rows (:func:`rows_of_part`).
    """
    rows: dict[tuple[int, int], list[Tile]] = {}
    for tile in tiles:
        rows.setdefault((tile.y0, tile.y1), []).append(tile)
    return [(y0, y1, group) for (y0, y1), group in sorted(rows.items())]


def rows_of_part(n_rows: int, part: int, parts: int) -> range:
    """Indices of the tile rows that job ``part`` (0-based) of ``parts`` cuts.

    The rows are dealt out in runs of nearly equal length, in order, so the
    parts concatenated in part order are the rows of one job; a part may be
    empty when there are fewer rows than parts.
    """
    if not 0 <= part < parts:
        raise ValueError(f"part {part} of {parts}: need 0 <= part < parts")
    return range(part * n_rows // parts, (part + 1) * n_rows // parts)


def count_parts(shape: tuple[int, int], size: int, *, min_overlap: int = 0, layout: str = "cover",
                max_per_job: int) -> int:
    """How many jobs cut an image of ``shape`` = (ny, nx): ceil(tiles / ``max_per_job``).

    The tiles are counted on the whole image, before split regions and NaN
    cuts, so the count is known from the header alone, before any job runs.
    Never more parts than rows of tiles (a part is at least one whole row).
    """
    ny, nx = shape
    rows = len(axis_starts(ny, size, min_overlap, layout=layout))
    columns = len(axis_starts(nx, size, min_overlap, layout=layout))
    return max(1, min(rows, math.ceil(rows * columns / max(1, int(max_per_job)))))
