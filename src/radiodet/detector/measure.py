"""Batched measurement of sources: elliptical Gaussian fits on the image itself.

Every detection is measured on the image pixels (not on the scaled views the
network saw), all sources at once: stamps are cut with one fancy-indexing
gather, and a Levenberg-Marquardt fit runs on the whole batch of stamps in
numpy (no Python loop over sources).

Conventions
-----------
* Pixel coordinates are 0-based FITS array coordinates ``(x, y)`` = (column,
  row); pixel ``(i, j)`` is centred on ``(i, j)``.
* Shapes are 2 x 2 pixel covariance matrices (second moments of the
  Gaussian): ``total = intrinsic + beam``.
* The model of one source is ``A exp(-d^T total^-1 d / 2)``, ``d = (x - x0,
  y - y0)``; ``A`` is the peak brightness (the image's unit, e.g. Jy/beam)
  and the integrated flux is ``A sqrt(det total / det beam)`` (Jy for an
  image in Jy/beam).
* The fit works on stamps divided by the noise (signal-to-noise units), so
  it behaves the same for an image in Jy, mJy or counts: what limits a fit is
  the signal-to-noise ratio, never the unit.

Strategy: constrained where the data cannot support a free fit
--------------------------------------------------------------
1. *Amplitudes of all sources together* (:func:`linear_amplitudes`): with
   positions at the detections and shapes at ``beam + intrinsic guess`` (the
   detector's estimate, or a point source), the peak amplitudes minimise the
   residual of all models at once, a sparse linear system; close pairs share
   their flux instead of each taking all of it.
2. Sources whose amplitude reaches ``position_snr`` times the noise are then
   fitted (Levenberg-Marquardt, all at once), each on its stamp with every
   other source's current model subtracted (``deblend_passes`` passes):
   *fixed shape* (``A, x0, y0``) first, then, from ``free_snr``, *free shape*
   (``A, x0, y0`` and the three numbers of ``total^-1``), kept where it stays
   within bounds (positive-definite, no narrower than ``min_width`` of the
   beam, inside the stamp) and lowers chi^2.
3. Fainter sources keep the detector's position and shape; their amplitudes
   are solved again with the fitted sources' final models taken out.
Positions may move at most ``max_shift`` pixels from where the detector put
them (more for sources larger than the beam), so a source cannot wander onto
a neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve
from scipy.spatial import cKDTree

from ..configuration import schema_config

__all__ = ["MeasureConfig", "GaussianFits", "fit_sources", "linear_amplitudes", "stamp_radius", "render_models"]

#: stamp radii (pixels) sources are grouped into; a group is fitted as one batch
_RADII = (3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64)


@schema_config("predict", "measure")
class MeasureConfig:
    """Config ``predict.measure`` (defaults from the schema)."""

    #: stamp half-size in units of the total (source + beam) sigma along the major axis
    radius_sigmas: float
    #: smallest and largest stamp half-size, pixels (stamps are 2 r + 1 pixels wide)
    min_radius: int
    max_radius: int
    #: peak SNR from which the position is fitted (below: held at the detection, the amplitude solved linearly)
    position_snr: float
    #: peak SNR from which the shape is fitted freely (below it: held at the guess)
    free_snr: float
    #: how far (pixels) a fitted position may move from the detection
    max_shift: float
    #: fitted widths are kept at least this fraction of the beam's (per axis, sigma)
    min_width: float
    iterations: int
    #: fitting passes, each with every other source's current model subtracted first
    deblend_passes: int


@dataclass
class GaussianFits:
    """Results of :func:`fit_sources`, one entry per source (arrays)."""

    x: np.ndarray            #: 0-based pixel column of the centre
    y: np.ndarray            #: 0-based pixel row of the centre
    amplitude: np.ndarray    #: peak brightness, image unit
    cov: np.ndarray          #: (N, 2, 2) total (intrinsic + beam) pixel covariance
    snr: np.ndarray          #: amplitude / noise
    free: np.ndarray         #: shape fitted freely (else held at the guess)
    converged: np.ndarray    #: the fit ended on a chi^2 minimum (else: its last accepted step)

    def flux(self, beam_cov: np.ndarray) -> np.ndarray:
        """Integrated flux ``A sqrt(det total / det beam)`` (Jy for Jy/beam images)."""
        return self.amplitude * np.sqrt(np.linalg.det(self.cov) / np.linalg.det(beam_cov))


def stamp_radius(cov: np.ndarray, config: MeasureConfig) -> np.ndarray:
    """Stamp half-size (pixels) for total pixel covariances ``cov`` (N, 2, 2).

    ``radius_sigmas`` x the major-axis sigma, rounded up to the next of a few
    fixed sizes so that sources fall into a handful of batches.
    """
    major_sigma = np.sqrt(np.linalg.eigvalsh(cov)[..., -1])
    wanted = np.clip(np.ceil(config.radius_sigmas * major_sigma), config.min_radius, config.max_radius)
    radii = np.array([r for r in _RADII if config.min_radius <= r <= config.max_radius] + [config.max_radius])
    return radii[np.searchsorted(radii, wanted)]


class _Stamps:
    """Circular stamps of one radius around the pixels nearest a set of positions.

    ``ox, oy`` (M,) are the pixel offsets from each stamp's centre pixel
    ``(cx, cy)`` (N,); fits work in these local coordinates (a source at
    ``x`` sits at ``x - cx``), which keeps them exact far from the origin of
    a 32768-pixel image. ``flat`` (N, M) indexes the pixels in the image
    (clipped), ``inside`` (N, M) says which exist and are finite.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, radius: int, image: np.ndarray):
        offsets = np.arange(-radius, radius + 1)
        oy, ox = np.meshgrid(offsets, offsets, indexing="ij")
        round_ = (ox**2 + oy**2 <= (radius + 0.5) ** 2).ravel()  # the square's corners mostly hold neighbours
        self.ox, self.oy = ox.ravel()[round_].astype(float), oy.ravel()[round_].astype(float)
        self.cx, self.cy = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
        ny, nx = image.shape
        gx = self.cx[:, None] + self.ox.astype(np.intp)[None, :]
        gy = self.cy[:, None] + self.oy.astype(np.intp)[None, :]
        inside = (gx >= 0) & (gx < nx) & (gy >= 0) & (gy < ny)
        self.flat = np.clip(gy, 0, ny - 1) * nx + np.clip(gx, 0, nx - 1)
        self.inside = inside & np.isfinite(image.ravel()[self.flat])

    def gather(self, image: np.ndarray) -> np.ndarray:
        """Stamp pixels (N, M) of ``image`` (float64; 0 where outside or NaN)."""
        return np.where(self.inside, image.ravel()[self.flat], 0.0)

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x - self.cx, y - self.cy


def _gaussian(amplitude: np.ndarray, x0: np.ndarray, y0: np.ndarray, ox: np.ndarray, oy: np.ndarray,
              precision: np.ndarray) -> np.ndarray:
    """Model values (N, M) of Gaussians on stamp offsets ``ox, oy`` (M,); ``precision`` (N, 3) = p, r, s."""
    dx, dy = ox[None, :] - x0[:, None], oy[None, :] - y0[:, None]
    p, r, s = precision[:, 0:1], precision[:, 1:2], precision[:, 2:3]
    return amplitude[:, None] * np.exp(-0.5 * (p * dx * dx + 2.0 * r * dx * dy + s * dy * dy))


def _gaussian_and_jacobian(params: np.ndarray, ox: np.ndarray, oy: np.ndarray, precision: np.ndarray | None):
    """Model values (N, M) and Jacobian (N, M, K) of Gaussians on stamp offsets ``ox, oy`` (M,).

    ``params``: (N, 3) ``A, x0, y0`` (local coordinates) with ``precision``
    (N, 3) = ``(p, r, s)`` of ``total^-1 = [[p, r], [r, s]]`` held fixed, or
    (N, 6) ``A, x0, y0, p, r, s`` with ``precision`` None.
    """
    amplitude, x0, y0 = params[:, 0:1], params[:, 1:2], params[:, 2:3]
    p, r, s = (params[:, 3:4], params[:, 4:5], params[:, 5:6]) if precision is None else (
        precision[:, 0:1], precision[:, 1:2], precision[:, 2:3])
    dx, dy = ox[None, :] - x0, oy[None, :] - y0
    # trial steps of the fit may be non-positive-definite (they are refused): no warnings for their overflow
    with np.errstate(over="ignore", invalid="ignore"):
        u, v = p * dx + r * dy, r * dx + s * dy
        e = np.exp(-0.5 * (dx * u + dy * v))
        model = amplitude * e
        columns = [e, model * u, model * v]
        if precision is None:
            columns += [-0.5 * model * dx * dx, -model * dx * dy, -0.5 * model * dy * dy]
        return model, np.stack(columns, axis=-1)


def _precision_of(cov: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(cov)
    return np.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], axis=-1)


def _cov_of(precision: np.ndarray) -> np.ndarray:
    p, r, s = precision[:, 0], precision[:, 1], precision[:, 2]
    det = p * s - r * r
    cov = np.empty((len(p), 2, 2))
    cov[:, 0, 0], cov[:, 1, 1] = s / det, p / det
    cov[:, 0, 1] = cov[:, 1, 0] = -r / det
    return cov


#: a fit has converged when an accepted step lowers chi^2 (in SNR^2 units) by less than this:
#: a change of 1 is one standard deviation of a parameter
_CHI2_TOLERANCE = 1e-3


def _levenberg_marquardt(data, weight, ox, oy, start, precision, bounds, iterations):
    """Batched LM fit of (N, K) parameters to stamps ``data`` (N, M) in SNR units.

    Returns (parameters, chi2, converged). ``bounds(trial, rows) -> bool``
    says which trial steps (of the sources ``rows``) are allowed; a step that
    leaves them is refused like one that raises chi^2 (the damping grows and
    a shorter step is tried). Sources leave the batch as they converge.
    """
    n, k = start.shape
    out_params, out_chi2, out_converged = start.copy(), np.zeros(n), np.zeros(n, dtype=bool)
    rows = np.arange(n)
    params = start.copy()
    prec = precision
    model, jac = _gaussian_and_jacobian(params, ox, oy, prec)
    resid = (data - model) * weight
    chi2 = np.einsum("nm,nm->n", resid, resid)
    out_chi2[:] = chi2
    damping = np.full(n, 1e-3)
    eye = np.eye(k)
    for _ in range(iterations):
        if rows.size == 0:
            break
        jw = jac * weight[:, :, None]
        jwt = jw.transpose(0, 2, 1)
        jtj = jwt @ jw
        grad = (jwt @ resid[:, :, None])[..., 0]
        diag = jtj[:, np.arange(k), np.arange(k)]
        lhs = jtj + damping[:, None, None] * (diag[:, :, None] * eye + 1e-12 * eye)
        try:
            step = np.linalg.solve(lhs, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(lhs, grad)])
        trial = params + step
        t_model, t_jac = _gaussian_and_jacobian(trial, ox, oy, prec)
        with np.errstate(over="ignore", invalid="ignore"):
            t_resid = (data - t_model) * weight
            t_chi2 = np.einsum("nm,nm->n", t_resid, t_resid)
        better = bounds(trial, rows) & np.isfinite(t_chi2) & (t_chi2 <= chi2)
        gain = np.where(better, chi2 - t_chi2, np.inf)
        params[better], chi2[better] = trial[better], t_chi2[better]
        model[better], jac[better], resid[better] = t_model[better], t_jac[better], t_resid[better]
        damping = np.where(better, np.maximum(damping / 3.0, 1e-7), damping * 4.0)
        converged = gain <= _CHI2_TOLERANCE
        done = converged | (damping > 1e6)  # no step possible any more: a minimum within the bounds
        if done.any():
            out_params[rows[done]], out_chi2[rows[done]] = params[done], chi2[done]
            out_converged[rows[done]] = True
            keep = ~done
            rows, params, chi2, damping = rows[keep], params[keep], chi2[keep], damping[keep]
            model, jac, resid, data, weight = model[keep], jac[keep], resid[keep], data[keep], weight[keep]
            prec = None if prec is None else prec[keep]
    out_params[rows], out_chi2[rows] = params, chi2
    return out_params, out_chi2, out_converged


def render_models(shape: tuple[int, int], x, y, amplitude, cov, radius, *, centre_x=None,
                  centre_y=None) -> np.ndarray:
    """Sum of the Gaussian models of sources on an image of ``shape``.

    Each source is drawn over its circular stamp of ``radius`` (array, per
    source) only, as in the fit; the stamps are centred on the pixels
    nearest ``(centre_x, centre_y)`` (default: the sources' positions).
    """
    centre_x = x if centre_x is None else centre_x
    centre_y = y if centre_y is None else centre_y
    out = np.zeros(shape[0] * shape[1])
    frame = np.zeros(shape, dtype=bool)
    for r in np.unique(radius):
        sel = np.flatnonzero(radius == r)
        stamps = _Stamps(centre_x[sel], centre_y[sel], int(r), frame)
        lx, ly = stamps.local(x[sel], y[sel])
        model = _gaussian(amplitude[sel], lx, ly, stamps.ox, stamps.oy, _precision_of(cov[sel]))
        out += np.bincount(stamps.flat[stamps.inside], weights=model[stamps.inside], minlength=out.size)
    return out.reshape(shape)


def linear_amplitudes(image: np.ndarray, x, y, cov: np.ndarray, radius: np.ndarray, *, background=0.0,
                      floor: float = 0.0) -> np.ndarray:
    """Peak amplitudes of Gaussians of fixed positions and shapes, all solved together.

    Minimises ``sum over pixels (image - background - sum_i a_i G_i)^2`` for
    the amplitudes ``a`` alone: ``M a = b`` with ``b_i`` the sum of ``G_i``
    times the data over source i's stamp and ``M_ij`` the overlap of ``G_i``
    and ``G_j``, closed-form for Gaussians, ``2 pi det(P_i + P_j)^-1/2
    exp(-d^T (C_i + C_j)^-1 d / 2)`` (``P`` the inverse covariances, ``d``
    the separation). Overlapping sources thereby share their flux instead of
    each taking all of it. ``M`` is sparse (pairs within their stamps'
    reach) and solved with scipy's sparse solver. Amplitudes come out in the
    image's unit; those below ``floor`` are set to it.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = x.size
    background = np.broadcast_to(np.asarray(background, float), (n,))
    b = np.zeros(n)
    clean = np.where(np.isfinite(image), image, 0.0)
    for r in np.unique(radius):
        sel = np.flatnonzero(radius == r)
        stamps = _Stamps(x[sel], y[sel], int(r), image)
        lx, ly = stamps.local(x[sel], y[sel])
        model = _gaussian(np.ones(sel.size), lx, ly, stamps.ox, stamps.oy, _precision_of(cov[sel]))
        data = stamps.gather(clean) - background[sel, None]
        b[sel] = np.einsum("nm,nm->n", np.where(stamps.inside, model, 0.0), data)
    # the diagonal and the pairs close enough to overlap
    rows, cols = [np.arange(n)], [np.arange(n)]
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(r=float(2 * radius.max()), output_type="ndarray")
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        reach = np.hypot(x[i] - x[j], y[i] - y[j]) <= radius[i] + radius[j]
        i, j = i[reach], j[reach]
        rows += [i, j]
        cols += [j, i]
    i, j = np.concatenate(rows), np.concatenate(cols)
    precision = np.linalg.inv(cov)
    separation = np.column_stack([x[i] - x[j], y[i] - y[j]])
    exponent = np.einsum("ni,nij,nj->n", separation, np.linalg.inv(cov[i] + cov[j]), separation)
    overlap = 2 * np.pi / np.sqrt(np.linalg.det(precision[i] + precision[j])) * np.exp(-0.5 * exponent)
    # a relative ridge of 1e-6 keeps coincident positions solvable (they share the flux equally)
    overlap = np.where(i == j, overlap * (1 + 1e-6), overlap)
    matrix = coo_matrix((overlap, (i, j)), shape=(n, n)).tocsc()
    amplitudes = np.atleast_1d(spsolve(matrix, b))
    return np.maximum(np.where(np.isfinite(amplitudes), amplitudes, floor), floor)


def fit_sources(image: np.ndarray, x, y, noise, beam_cov: np.ndarray, *, shape_guess: np.ndarray | None = None,
                background=0.0, config: MeasureConfig | None = None) -> GaussianFits:
    """Fit an elliptical Gaussian to every source of ``image``, all at once.

    Parameters
    ----------
    image : ndarray (ny, nx)
        The pixels, in the image's own unit (NaN pixels are ignored).
    x, y : array_like (N,)
        Starting positions, 0-based pixels of ``image``.
    noise : float or array_like (N,)
        Noise (image unit) at each source: stamps are divided by it.
    beam_cov : ndarray (2, 2)
        The restoring beam's pixel covariance (sigma^2, pixels^2).
    shape_guess : ndarray (N, 2, 2), optional
        Intrinsic pixel covariance to hold the shape at where it is not
        fitted freely (the detector's estimate); a point source when omitted.
    background : float or array_like (N,)
        Background level (image unit) under each source, subtracted from its
        stamp.
    config : MeasureConfig, optional
        Fitting options (config ``predict.measure``); the schema's defaults
        when omitted.

    Returns
    -------
    GaussianFits
        Positions, peak brightness (image unit), total pixel covariance, SNR
        and flags for each source, in input order.
    """
    config = config or MeasureConfig()
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    n = x.size
    noise = np.broadcast_to(np.asarray(noise, float), (n,)).copy()
    background = np.broadcast_to(np.asarray(background, float), (n,)).copy()
    if np.any(~np.isfinite(noise) | (noise <= 0)):
        raise ValueError("fit_sources: the noise must be finite and positive at every source")
    beam_cov = np.asarray(beam_cov, float)
    guess = np.zeros((n, 2, 2)) if shape_guess is None else np.asarray(shape_guess, float).reshape(n, 2, 2)
    fixed_cov = guess + beam_cov
    if n == 0:
        return GaussianFits(x, y, np.zeros(0), np.zeros((0, 2, 2)), np.zeros(0), np.zeros(0, bool),
                            np.zeros(0, bool))
    clean = np.where(np.isfinite(image), image, 0.0)
    min_var = (config.min_width ** 2) * np.linalg.eigvalsh(beam_cov)[0]
    radius = stamp_radius(fixed_cov, config)
    # a source may move further when it is larger than the beam
    shift = np.maximum(config.max_shift, 0.5 * np.sqrt(np.linalg.eigvalsh(fixed_cov)[:, -1]))
    # every source's amplitude solved together at the detected positions: the start of the fits
    floor = 1e-3 * float(np.min(noise))
    amplitude = linear_amplitudes(image, x, y, fixed_cov, radius, background=background, floor=floor)
    state = {"x": x.copy(), "y": y.copy(), "cov": fixed_cov.copy(), "free": np.zeros(n, bool),
             "converged": np.ones(n, bool), "amplitude": amplitude}
    fitted = amplitude / noise >= config.position_snr
    groups = {int(r): np.flatnonzero((radius == r) & fitted) for r in np.unique(radius[fitted])}
    stamps = {r: _Stamps(x[sel], y[sel], r, image) for r, sel in groups.items()}

    def fit_group(sel, stamp, data, r):
        weight = stamp.inside.astype(np.float64)
        x_start, y_start = stamp.local(x[sel], y[sel])
        shift_sel = shift[sel]

        def position_ok(trial, rows):
            return ((np.abs(trial[:, 1] - x_start[rows]) <= shift_sel[rows])
                    & (np.abs(trial[:, 2] - y_start[rows]) <= shift_sel[rows]) & (trial[:, 0] > 0))

        # 1. fixed shape: A, x0, y0
        lx, ly = stamp.local(state["x"][sel], state["y"][sel])
        start = np.column_stack([state["amplitude"][sel] / noise[sel], lx, ly])
        params, chi2, converged = _levenberg_marquardt(data, weight, stamp.ox, stamp.oy, start,
                                                       _precision_of(fixed_cov[sel]), position_ok, config.iterations)
        cov = fixed_cov[sel].copy()
        free = np.zeros(sel.size, bool)
        # 2. free shape where the signal supports it, from the previous free shape if there is one
        try_free = np.flatnonzero(params[:, 0] >= config.free_snr)
        if try_free.size:
            max_var = (r / 1.5) ** 2

            def shape_ok(trial, rows):
                ok = position_ok(trial, try_free[rows])
                p, q, s = trial[:, 3], trial[:, 4], trial[:, 5]
                det = p * s - q * q
                ok &= (p > 0) & (s > 0) & (det > 0)
                with np.errstate(divide="ignore", invalid="ignore"):
                    half_trace = 0.5 * (p + s) / det
                    root = np.sqrt(np.maximum(0.25 * (s - p) ** 2 + q * q, 0)) / det
                    ok &= (half_trace - root >= min_var) & (half_trace + root <= max_var)
                return ok

            start6 = np.column_stack([params[try_free], _precision_of(state["cov"][sel][try_free])])
            p6, chi6, conv6 = _levenberg_marquardt(data[try_free], weight[try_free], stamp.ox, stamp.oy, start6,
                                                   None, shape_ok, config.iterations)
            better = chi6 <= chi2[try_free]
            keep = try_free[better]
            params[keep, :3] = p6[better, :3]
            cov[keep] = _cov_of(p6[better, 3:])
            converged[keep] = conv6[better]
            free[keep] = True
        params[:, 1] += stamp.cx
        params[:, 2] += stamp.cy
        return params, cov, free, converged

    for _ in range(max(config.deblend_passes, 1) if groups else 0):
        # every other source's current model is subtracted from each stamp (Jacobi: all updated together)
        residual = clean - render_models(image.shape, state["x"], state["y"], state["amplitude"], state["cov"],
                                         radius, centre_x=x, centre_y=y)
        update = {key: value.copy() for key, value in state.items()}
        for r, sel in groups.items():
            stamp = stamps[r]
            lx, ly = stamp.local(state["x"][sel], state["y"][sel])
            own = _gaussian(state["amplitude"][sel], lx, ly, stamp.ox, stamp.oy, _precision_of(state["cov"][sel]))
            data = np.where(stamp.inside, stamp.gather(residual) + own - background[sel, None], 0.0)
            params, cov, free, converged = fit_group(sel, stamp, data / noise[sel, None], r)
            update["amplitude"][sel] = params[:, 0] * noise[sel]
            update["x"][sel], update["y"][sel] = params[:, 1], params[:, 2]
            update["cov"][sel], update["free"][sel], update["converged"][sel] = cov, free, converged
        state = update
    faint = np.flatnonzero(~fitted)
    if groups and faint.size:
        # the faint sources' amplitudes again, with the fitted sources' final models taken out
        bright = np.flatnonzero(fitted)
        rest = clean - render_models(image.shape, state["x"][bright], state["y"][bright], state["amplitude"][bright],
                                     state["cov"][bright], radius[bright], centre_x=x[bright], centre_y=y[bright])
        state["amplitude"][faint] = linear_amplitudes(rest, x[faint], y[faint], fixed_cov[faint], radius[faint],
                                                      background=background[faint], floor=floor)
    return GaussianFits(state["x"], state["y"], state["amplitude"], state["cov"], state["amplitude"] / noise,
                        state["free"], state["converged"])
