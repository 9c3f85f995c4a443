"""Matching sync events across devices, and fitting linear clock models with their errors.

A clock estimate maps device time ``d`` to another clock ``r`` (see
:mod:`mmdata.timebase`)::

    r = origin_ns + (d - origin_ns) * (1 + drift_ppm * 1e-6) + offset_ns

and carries the 2x2 covariance of (offset ns, drift ppm), so estimates can be inverted,
composed (device -> plant clock -> reference device) and turned into an error bound over a
span of device time (three standard deviations of the fitted line at the span's ends).

Matching (:func:`match_events`): the events of a device and of the reference form two
jittered sequences, with spurious onsets on either side. Every pair within
``max_offset`` is a candidate; the offset with the most pairs within a window that allows
for the drift is the coarse match; then lines through one candidate (at the expected
drift) or two (any drift within ``max_drift``) are scored by how many events they match
within the fine tolerance, and the best line's pairs are assigned one to one.

Fitting (:func:`fit_line`): weighted least squares of ``r - d`` on ``d - origin`` with a
Gaussian prior on the drift (from NTP, or ``0 +- max_drift``), so one event fits the
offset only and coarse events (camera flashes) cannot produce a wild drift; outliers
(normalized residual beyond five robust standard deviations) are dropped and the fit
repeated.

>>> import numpy as np
>>> d = np.array([10, 70, 130, 190], dtype=np.int64) * 10**9
>>> r = d + 2_000_000 + (d * 50) // 10**6      # offset 2 ms, drift 50 ppm, origin 0
>>> fit = fit_line(d, r, np.full(4, 1000.0), origin_ns=0)
>>> round(fit.estimate.offset_ns), round(fit.estimate.drift_ppm, 3)
(2000000, 50.0)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mmdata.timebase import ClockModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Cov = npt.NDArray[np.float64]

_SIGMAS = 3.0  # error bound = this many standard deviations of the fitted line
_REJECT = 5.0  # outliers: normalized residual beyond this many robust standard deviations
_MAX_PAIR_HYPOTHESES = 4000


@dataclass(frozen=True)
class ClockEstimate:
    """A linear clock map with the covariance of (offset ns, drift ppm)."""

    origin_ns: int
    offset_ns: float
    drift_ppm: float
    cov: Cov = field(default_factory=lambda: np.zeros((2, 2)))

    @classmethod
    def identity(cls, origin_ns: int = 0) -> ClockEstimate:
        """The identity map (the reference device's own clock)."""
        return cls(origin_ns, 0.0, 0.0, np.zeros((2, 2)))

    def model(self) -> ClockModel:
        """As a :class:`~mmdata.timebase.ClockModel` (offset rounded to whole ns)."""
        return ClockModel(offset_ns=round(self.offset_ns), drift_ppm=float(self.drift_ppm),
                          origin_ns=int(self.origin_ns))  # fmt: skip

    def apply(self, device_ns: npt.ArrayLike) -> IntArray:
        """Mapped times (int64 ns, exact to the rounding of the correction)."""
        d = np.asarray(device_ns, dtype=np.int64) - np.int64(self.origin_ns)
        corr = np.rint(d.astype(np.float64) * (self.drift_ppm * 1e-6) + self.offset_ns)
        return d + corr.astype(np.int64) + np.int64(self.origin_ns)

    def rebase(self, origin_ns: int) -> ClockEstimate:
        """The same map, anchored at another origin (device time).

        >>> e = ClockEstimate(0, 1000.0, 10.0).rebase(1_000_000_000)
        >>> e.offset_ns, e.origin_ns
        (11000.0, 1000000000)
        """
        shift = float(int(origin_ns) - self.origin_ns) * 1e-6
        jac = np.array([[1.0, shift], [0.0, 1.0]])
        return ClockEstimate(int(origin_ns), self.offset_ns + shift * self.drift_ppm,
                             self.drift_ppm, jac @ self.cov @ jac.T)  # fmt: skip

    def invert(self) -> ClockEstimate:
        """The inverse map (``r -> d``), anchored where the origin maps to.

        >>> e = ClockEstimate(0, 5_000.0, 100.0)
        >>> e.invert().apply(e.apply([7_000_000_000])).tolist()
        [7000000000]
        """
        scale = 1.0 + self.drift_ppm * 1e-6
        new_origin = self.origin_ns + round(self.offset_ns)
        offset = (
            float(self.origin_ns - new_origin) + (round(self.offset_ns) - self.offset_ns) / scale
        )
        drift = (1.0 / scale - 1.0) * 1e6
        return ClockEstimate(new_origin, offset, drift, self.cov.copy())

    def then(self, outer: ClockEstimate) -> ClockEstimate:
        """``outer`` after ``self`` (device -> middle clock -> outer's clock).

        >>> a = ClockEstimate(0, 1_000.0, 10.0)
        >>> b = ClockEstimate(0, -1_000.0, -10.0)
        >>> c = a.then(b)
        >>> round(c.offset_ns, 3), round(c.drift_ppm, 6)
        (-0.01, -0.0001)
        """
        b1 = 1.0 + self.drift_ppm * 1e-6
        b2 = 1.0 + outer.drift_ppm * 1e-6
        o1, o2 = self.offset_ns, outer.offset_ns
        offset = o1 + o2 + (float(self.origin_ns - outer.origin_ns) + o1) * (b2 - 1.0)
        drift = (b1 * b2 - 1.0) * 1e6
        outer_here = outer.rebase(self.origin_ns + round(o1))
        return ClockEstimate(self.origin_ns, offset, drift, self.cov + outer_here.cov)

    def sd_at(self, device_ns: int) -> float:
        """Standard deviation (ns) of the mapped time at ``device_ns``."""
        x = float(int(device_ns) - self.origin_ns) * 1e-6
        v = self.cov[0, 0] + 2.0 * x * self.cov[0, 1] + x * x * self.cov[1, 1]
        return math.sqrt(max(v, 0.0))

    def bound_ns(self, lo_ns: int, hi_ns: int) -> int:
        """Error bound over device times ``[lo_ns, hi_ns]``: 3 sd at the worse end (ns)."""
        return math.ceil(_SIGMAS * max(self.sd_at(lo_ns), self.sd_at(hi_ns)))

    def drift_sd_ppm(self) -> float:
        """Standard deviation of the drift (ppm)."""
        return math.sqrt(max(float(self.cov[1, 1]), 0.0))


@dataclass(frozen=True)
class Prior:
    """A Gaussian prior on the drift (ppm): its mean and standard deviation."""

    mean_ppm: float = 0.0
    sd_ppm: float = 200.0 / math.sqrt(3.0)
    source: str = "prior"


@dataclass(frozen=True)
class LineFit:
    """What :func:`fit_line` found: the estimate, which pairs it used, how well they fit.

    ``drift_source`` is ``"data"`` when the pairs pin the drift better than the prior,
    otherwise the prior's source (e.g. ``"ntp_log"``, or ``"prior"``: drift unknown).
    """

    estimate: ClockEstimate
    used: npt.NDArray[np.bool_]
    residual_rms_ns: float | None
    drift_source: str

    @property
    def n_used(self) -> int:
        """Number of pairs in the final fit."""
        return int(self.used.sum())


def fit_line(
    device_ns: npt.ArrayLike,
    reference_ns: npt.ArrayLike,
    sigma_ns: npt.ArrayLike,
    *,
    origin_ns: int,
    prior: Prior | None = None,
    absolute_sigma: bool = True,
) -> LineFit:
    """Weighted least-squares line ``reference - device = offset + drift * (device - origin)``.

    ``sigma_ns`` is each pair's standard deviation (weights ``1/sigma^2``); with
    ``absolute_sigma`` the covariance is only scaled up when the residuals are larger than
    the sigmas say, otherwise it is scaled to the residuals. With ``prior`` (default
    ``0 +- 200/sqrt(3)`` ppm) one pair fits the offset only.
    """
    d = np.asarray(device_ns, dtype=np.int64)
    r = np.asarray(reference_ns, dtype=np.int64)
    sig = np.maximum(np.asarray(sigma_ns, dtype=np.float64), 1e-3)
    pr = prior or Prior()
    u = (d - np.int64(origin_ns)).astype(np.float64) * 1e-6  # drift ppm * u = ns
    v = (r - d).astype(np.float64)
    used = np.ones(d.size, bool)
    est, cov = _solve(u, v, sig, pr, absolute_sigma)
    for _ in range(3):
        if used.sum() <= 3:
            break
        resid = (v - est[0] - est[1] * u) / sig
        scale = 1.4826 * float(np.median(np.abs(resid[used] - np.median(resid[used]))))
        keep = np.abs(resid) <= _REJECT * max(scale, 0.05)
        if (keep == used).all() or keep.sum() < 2:
            break
        used = keep
        est, cov = _solve(u[used], v[used], sig[used], pr, absolute_sigma)
    res = v[used] - est[0] - est[1] * u[used]
    rms = float(np.sqrt(np.mean(res * res))) if used.sum() >= 3 else None
    w = 1.0 / sig[used] ** 2
    data_info = float((w * u[used] ** 2).sum() - (w * u[used]).sum() ** 2 / max(w.sum(), 1e-300))
    source = "data" if data_info > 1.0 / max(pr.sd_ppm, 1e-9) ** 2 else pr.source
    estimate = ClockEstimate(int(origin_ns), float(est[0]), float(est[1]), cov)
    return LineFit(estimate, used, rms, source)


def _solve(
    u: FloatArray, v: FloatArray, sig: FloatArray, prior: Prior, absolute: bool
) -> tuple[FloatArray, Cov]:
    w = 1.0 / (sig * sig)
    p = 1.0 / max(prior.sd_ppm, 1e-9) ** 2
    a = np.array([[w.sum(), (w * u).sum()], [(w * u).sum(), (w * u * u).sum() + p]])
    b = np.array([(w * v).sum(), (w * u * v).sum() + p * prior.mean_ppm])
    if a[0, 0] == 0.0:  # no data: the prior alone, offset unknown
        return np.array([0.0, prior.mean_ppm]), np.diag([np.inf, prior.sd_ppm**2])
    cov = np.linalg.inv(a)
    est = cov @ b
    dof = u.size + 1 - 2
    if dof > 0:
        resid = v - est[0] - est[1] * u
        chi2 = float((w * resid * resid).sum() + p * (est[1] - prior.mean_ppm) ** 2) / dof
        cov = cov * (max(chi2, 1.0) if absolute else chi2)
    return est, cov


def tighten_offset(
    fit: LineFit,
    device_ns: npt.ArrayLike,
    reference_ns: npt.ArrayLike,
    half_width_ns: npt.ArrayLike,
) -> LineFit:
    """Narrow a fit's offset with hard bounds: pair ``k`` is exact to ``+-half_width[k]``.

    For coarse events whose errors are bounded (a flash lies between the last dark and the
    first bright frame), every used pair confines the offset (at the fitted drift) to an
    interval; the offset becomes the middle of their intersection, its variance that of a
    uniform over it. An empty intersection (a bound was wrong) leaves the fit as it was.

    >>> d = np.array([0, 60, 120], dtype=np.int64) * 10**9
    >>> r = d + np.array([100, -150, 40]) * 10**6  # true offset 0, errors within +-250 ms
    >>> wide = fit_line(d, r, np.full(3, 144e6), origin_ns=0, prior=Prior(0.0, 0.1))
    >>> tight = tighten_offset(wide, d, r, np.full(3, 250e6))
    >>> round(tight.estimate.offset_ns / 1e6), round(tight.estimate.sd_at(0) / 1e6)
    (-25, 72)
    """
    est = fit.estimate
    d = np.asarray(device_ns, dtype=np.int64)[fit.used]
    r = np.asarray(reference_ns, dtype=np.int64)[fit.used]
    h = np.asarray(half_width_ns, dtype=np.float64)[fit.used]
    if d.size == 0:
        return fit
    u = (d - np.int64(est.origin_ns)).astype(np.float64) * 1e-6
    y = (r - d).astype(np.float64) - est.drift_ppm * u
    lo, hi = float((y - h).max()), float((y + h).min())
    if lo > hi:
        return fit
    cov = est.cov.copy()
    var = (hi - lo) ** 2 / 12.0
    if var >= cov[0, 0]:
        return fit
    cov[0, 1] = cov[1, 0] = cov[0, 1] * math.sqrt(var / cov[0, 0]) if cov[0, 0] > 0 else 0.0
    cov[0, 0] = var
    tight = ClockEstimate(est.origin_ns, (lo + hi) / 2, est.drift_ppm, cov)
    return LineFit(tight, fit.used, fit.residual_rms_ns, fit.drift_source)


@dataclass(frozen=True)
class Match:
    """Pairs of matched events (indices into the device's and the reference's events)."""

    device_index: IntArray
    reference_index: IntArray
    candidates: int

    def __len__(self) -> int:
        return int(self.device_index.size)


def match_events(
    device_ns: npt.ArrayLike,
    device_res_ns: npt.ArrayLike,
    reference_ns: npt.ArrayLike,
    reference_res_ns: npt.ArrayLike,
    *,
    max_offset_ns: int,
    tolerance_ns: float,
    max_drift_ppm: float,
    drift_ppm: float = 0.0,
) -> Match:
    """Match a device's events to the reference's (see the module docstring).

    ``*_res_ns`` is each event's resolution (it lies within +-res/2 of its time); two
    events match when they agree within ``tolerance_ns`` plus half their resolutions.
    ``drift_ppm`` is the expected drift (e.g. from NTP), ``max_drift_ppm`` how far off it
    may be.

    >>> ref = np.array([10, 55, 117, 180], dtype=np.int64) * 10**9
    >>> # the device missed one event and saw a spurious one
    >>> dev = np.concatenate([ref[[0, 2, 3]] - 1_500_000_000, [90 * 10**9]])
    >>> m = match_events(dev, np.zeros(4), ref, np.zeros(4), max_offset_ns=10**10,
    ...                  tolerance_ns=1e6, max_drift_ppm=100)
    >>> m.device_index.tolist(), m.reference_index.tolist()
    ([0, 1, 2], [0, 2, 3])
    """
    d = np.asarray(device_ns, dtype=np.int64)
    r = np.asarray(reference_ns, dtype=np.int64)
    dres = np.asarray(device_res_ns, dtype=np.float64)
    rres = np.asarray(reference_res_ns, dtype=np.float64)
    none = Match(np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
    if d.size == 0 or r.size == 0:
        return none
    x0 = int(d.min())
    x = (d - np.int64(x0)).astype(np.float64) * 1e-6  # drift ppm * x = ns
    span = float(x.max())
    order = np.argsort(r, kind="stable")
    rs = r[order]
    # candidate pairs: every (device, reference) pair within max_offset + the drift allowance
    window = tolerance_ns + float(dres.max() + rres.max()) / 2 + max_drift_ppm * span
    reach = int(max_offset_ns + window)
    lo = np.searchsorted(rs, d - reach, side="left")
    hi = np.searchsorted(rs, d + reach, side="right")
    counts = hi - lo
    if counts.sum() == 0:
        return none
    di = np.repeat(np.arange(d.size), counts)
    rj = order[np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])]
    y = (r[rj] - d[di]).astype(np.float64) - drift_ppm * x[di]
    # coarse: the offset window holding the most pairs
    ys = np.sort(y)
    inwin = np.searchsorted(ys, ys + 2 * window, side="right") - np.arange(ys.size)
    first = int(np.argmax(inwin))
    centre = (ys[first] + ys[first + int(inwin[first]) - 1]) / 2
    if abs(centre) > max_offset_ns + window:
        return none
    sel = np.flatnonzero(np.abs(y - centre) <= window + 1.0)
    tol = tolerance_ns + (dres[di[sel]] + rres[rj[sel]]) / 2
    best = _best_line(x[di[sel]], y[sel], di[sel], tol, max_drift_ppm)
    resid = np.abs(y[sel] - best[0] - best[1] * x[di[sel]])
    ok = resid <= tol
    pick = sel[ok][np.argsort(resid[ok], kind="stable")]
    taken_d: set[int] = set()
    taken_r: set[int] = set()
    out_d, out_r = [], []
    for k in pick:  # one to one, closest first
        i, j = int(di[k]), int(rj[k])
        if i in taken_d or j in taken_r:
            continue
        taken_d.add(i)
        taken_r.add(j)
        out_d.append(i)
        out_r.append(j)
    srt = np.argsort(out_d)
    return Match(np.asarray(out_d, np.int64)[srt], np.asarray(out_r, np.int64)[srt], int(sel.size))


def _best_line(
    x: FloatArray, y: FloatArray, di: IntArray, tol: FloatArray, max_drift: float
) -> tuple[float, float]:
    """The line (offset, extra drift) matching the most distinct device events within tol."""
    hyps: list[tuple[float, float]] = [(float(v), 0.0) for v in y]
    n = x.size
    pairs: list[tuple[int, int]] | npt.NDArray[np.int64]
    if n * (n - 1) // 2 <= _MAX_PAIR_HYPOTHESES:
        pairs = list(itertools.combinations(range(n), 2))
    else:
        rng = np.random.default_rng(0)
        pairs = rng.integers(0, n, (_MAX_PAIR_HYPOTHESES, 2))
    for a, b in pairs:
        if x[a] == x[b]:
            continue
        slope = (y[b] - y[a]) / (x[b] - x[a])
        if abs(slope) <= max_drift:
            hyps.append((float(y[a] - slope * x[a]), float(slope)))
    best, best_score = (float(np.median(y)), 0.0), (-1, 0.0)
    for off, slope in hyps:
        resid = np.abs(y - off - slope * x)
        ok = resid <= tol
        score = (np.unique(di[ok]).size, -float(resid[ok].sum()))
        if score > best_score:
            best, best_score = (off, slope), score
    return best
