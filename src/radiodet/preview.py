"""Pictures for people: cutouts with their boxes, and dataset statistics.

Previews are drawn with FITS row 0 at the bottom (matplotlib
``origin='lower'``, as a radio astronomer expects; north up for the usual
north-up images), unlike the stored PNG views, which keep FITS row order.
Each preview carries a compass: the directions of north and east at the
cutout centre, from the field's WCS through the same Jacobian the boxes use,
so a rotated image or one near a pole is not shown as if north were up. The
boxes are drawn in the same continuous coordinates as COCO, so what you see
is exactly what is in the annotation files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .atomic import atomic_directory, atomic_path  # noqa: E402
from .geometry import pixel_jacobian  # noqa: E402
from .manifest import field_wcs, read_manifests  # noqa: E402
from .schema import read_frame  # noqa: E402

__all__ = ["choose_cutouts", "draw_cutout", "sky_directions", "write_previews", "plot_statistics", "plot_training_loss"]

log = logging.getLogger(__name__)

_COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3", "#a65628", "#f781bf", "#999999"]


def choose_cutouts(manifest: pd.DataFrame, boxes: pd.DataFrame, n: int) -> list[str]:
    """Up to ``n`` cutouts: per split in turn, the ones with the most boxes."""
    counts = boxes.groupby("cutout_id").size()
    ranked = {split: (manifest[manifest["split"] == split]
                      .assign(n=lambda d: d["cutout_id"].map(counts).fillna(0))
                      .sort_values(["n", "cutout_id"], ascending=[False, True])["cutout_id"].tolist())
              for split in ("train", "val", "test")}
    chosen: list[str] = []
    while len(chosen) < n and any(ranked.values()):
        for split in ("train", "val", "test"):
            if ranked[split] and len(chosen) < n:
                chosen.append(ranked[split].pop(0))
    return chosen


def sky_directions(wcs, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (dx, dy) in pixels pointing north and east at 0-based pixel ``(x, y)``."""
    jac = pixel_jacobian(wcs, [x], [y])[0]  # d(east, north) / d(x, y)
    inverse = np.linalg.inv(jac)
    north, east = inverse @ np.array([0.0, 1.0]), inverse @ np.array([1.0, 0.0])
    return north / np.hypot(*north), east / np.hypot(*east)


def _draw_compass(ax, width: int, height: int, north: np.ndarray, east: np.ndarray) -> None:
    length = 0.12 * min(width, height)
    origin = np.array([0.14 * width, 0.14 * height])
    for vector, label in ((north, "N"), (east, "E")):
        tip = origin + length * vector
        ax.annotate("", xy=tip, xytext=origin, arrowprops={"arrowstyle": "->", "color": "yellow", "lw": 1.0})
        ax.text(*(origin + 1.35 * length * vector), label, color="yellow", fontsize=8, ha="center", va="center")


def draw_cutout(image: np.ndarray, boxes: pd.DataFrame, classes: dict[int, str], title: str, path: str | Path,
                compass: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Save a PNG of ``image`` (scaled [0, 1], FITS row order) with its boxes.

    ``compass``: unit pixel vectors of north and east (:func:`sky_directions`).
    """
    height, width = image.shape
    fig, ax = plt.subplots(figsize=(6.4, 6.8), dpi=110)
    ax.imshow(image, origin="lower", cmap="gray", extent=(0, width, 0, height), interpolation="nearest",
              vmin=0, vmax=1)
    handles = {}
    for box in boxes.itertuples():
        colour = _COLOURS[(int(box.class_id) - 1) % len(_COLOURS)]
        patch = Rectangle((box.bbox_x, box.bbox_y), box.bbox_w, box.bbox_h, fill=False, lw=0.8, ec=colour)
        ax.add_patch(patch)
        handles.setdefault(int(box.class_id), patch)
    if handles:
        ax.legend(list(handles.values()), [classes.get(k, str(k)) for k in handles], loc="upper right",
                  fontsize=7, framealpha=0.6)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    if compass is not None:
        _draw_compass(ax, width, height, *compass)
    ax.set_xlabel("x [pixel]")
    ax.set_ylabel("y [pixel] (FITS row 0 at the bottom)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_previews(boxes_path: str | Path, manifest_paths: dict[str, str | Path], views_dirs: dict[str, str | Path],
                   out_dir: str | Path, *, classes: dict[int, str], n: int = 6,
                   ownership_path: str | Path | None = None) -> list[str]:
    """Draw ``n`` (owned) cutouts with their boxes into ``out_dir`` (atomically).

    Parameters
    ----------
    boxes_path : str or Path
        ``boxes.parquet`` of the boxes stage (pixel boxes in cutout pixels,
        0-based, the box corner at ``bbox_x``, ``bbox_y``).
    manifest_paths : dict of str to str or Path
        Field name -> its cutout manifest (Parquet).
    views_dirs : dict of str to str or Path
        Field name -> its views directory (``<cutout_id>.npy`` in display
        units 0..1, else ``.png``).
    out_dir : str or Path
        Directory written (replaced whole): one PNG per chosen cutout, with a
        north/east compass from the field's WCS.
    classes : dict of int to str
        Class code -> name, for the legend.
    n : int
        Number of cutouts drawn: the ones with most boxes, spread over the splits.
    ownership_path : str or Path, optional
        The index stage's cutout ownership table: only owned cutouts are drawn.

    Returns
    -------
    list of str
        The cutout ids drawn.
    """
    boxes = read_frame(boxes_path)
    manifest = read_manifests(manifest_paths, ownership_path)
    chosen = choose_cutouts(manifest, boxes, n)
    with atomic_directory(out_dir) as tmp:
        for cutout_id in chosen:
            row = manifest.set_index("cutout_id").loc[cutout_id]
            views = Path(views_dirs[row["field"]])
            npy = views / f"{cutout_id}.npy"
            if npy.exists():
                image = np.load(npy)
            else:
                from PIL import Image
                image = np.asarray(Image.open(views / f"{cutout_id}.png"), dtype=np.float32) / 255.0
            mine = boxes[boxes["cutout_id"] == cutout_id]
            title = f"{cutout_id} ({row['split']}): {len(mine)} boxes, parent x0={row['x0']} y0={row['y0']}"
            centre = (row["x0"] + (row["width"] - 1) / 2, row["y0"] + (row["height"] - 1) / 2)
            compass = sky_directions(field_wcs(manifest_paths[row["field"]]), *centre)
            draw_cutout(image, mine, classes, title, tmp / f"{cutout_id}.png", compass=compass)
    log.info("drew %d previews into %s", len(chosen), out_dir)
    return chosen


def plot_statistics(boxes_path: str | Path, filtered_path: str | Path, path: str | Path, *, k: float,
                    classes: dict[int, str]) -> None:
    """One PNG: SNR histogram (all vs kept), box sizes, counts per split and class.

    Parameters
    ----------
    boxes_path : str or Path
        ``boxes.parquet`` of the boxes stage (box sizes in pixels).
    filtered_path : str or Path
        The filter stage's table of (source, cutout) pairs with ``snr``
        (peak over local rms, dimensionless) and ``keep``.
    path : str or Path
        The PNG written (atomically).
    k : float
        The filter's SNR threshold, drawn as a line.
    classes : dict of int to str
        Class code -> name, for the legend.
    """
    boxes = read_frame(boxes_path, ["split", "class_id", "bbox_w", "bbox_h"])
    filtered = read_frame(filtered_path, ["snr", "keep"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=100)
    snr = filtered["snr"].to_numpy(float)
    snr = snr[np.isfinite(snr) & (snr > 0)]
    bins = np.logspace(np.log10(max(snr.min(), 1e-2)), np.log10(snr.max()), 60) if snr.size else 10
    axes[0].hist(snr, bins=bins, color="0.6", label="all (source, cutout) pairs")
    axes[0].hist(filtered.loc[filtered["keep"], "snr"], bins=bins, color="C0", label=f"kept (SNR >= {k:g})")
    axes[0].axvline(k, color="k", ls="--", lw=1)
    axes[0].set(xscale="log", yscale="log", xlabel="SNR", ylabel="pairs", title="Signal-to-noise")
    axes[0].legend(fontsize=8)
    size = np.maximum(boxes["bbox_w"], boxes["bbox_h"])
    size_bins = np.logspace(np.log10(max(size.min(), 0.5)), np.log10(size.max() + 1), 50) if len(boxes) else 10
    axes[1].hist(size, bins=size_bins, color="C1")
    axes[1].set(xscale="log", yscale="log", xlabel="box size max(w, h) [pixel]", ylabel="boxes",
                title=f"Box sizes (median {np.median(size) if len(boxes) else float('nan'):.2f} px)")
    table = boxes.groupby(["split", "class_id"]).size().unstack(fill_value=0) if len(boxes) else pd.DataFrame()
    bottom = np.zeros(len(table))
    for class_id in table.columns:
        axes[2].bar(table.index, table[class_id], bottom=bottom, label=classes.get(int(class_id), str(class_id)),
                    color=_COLOURS[(int(class_id) - 1) % len(_COLOURS)])
        bottom += table[class_id].to_numpy()
    for x, total in zip(table.index, bottom):
        axes[2].text(x, total, f"{int(total)}", ha="center", va="bottom", fontsize=8)
    axes[2].set(ylabel="annotations", title="Annotations per split and class")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_training_loss(loss_csv: str | Path, path: str | Path) -> None:
    """Loss terms and learning rate against step, from the trainer's ``loss.csv``."""
    loss = pd.read_csv(loss_csv)
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(13, 4.2), dpi=100)
    # the total, then every term the model kind logs (loss_*)
    terms = [c for c in loss.columns if c.startswith("loss_")]
    for i, column in enumerate(["loss"] + terms):
        if column in loss and len(loss):
            ax_loss.plot(loss["step"], loss[column], "k-" if column == "loss" else f"C{i - 1}-",
                         lw=1.2 if column == "loss" else 0.8, label=column)
    if "val_loss" in loss and loss["val_loss"].notna().any():
        val = loss[loss["val_loss"].notna()]
        ax_loss.plot(val["step"], val["val_loss"], "ko--", ms=3, lw=0.8, label="val_loss (per epoch)")
    ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title=f"Training loss ({len(loss)} steps, "
                f"{int(loss['epoch'].max()) + 1 if len(loss) else 0} epochs)")
    ax_loss.legend(fontsize=8)
    ax_lr.plot(loss["step"], loss["lr"], "C4-")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
