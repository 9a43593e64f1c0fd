"""Derived quantities of a simulated time course (NCA-style): peak, crossing times, AUC.

All functions take a time grid (model time unit, days for the shipped models) and values on
it; results are interpolated linearly between grid points, so their accuracy is that of the
grid.
"""

from __future__ import annotations

import numpy as np


def peak(times: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """``(t_max, c_max)``: time and value of the largest value on the grid."""
    values = np.asarray(values, dtype=float)
    i = int(np.argmax(values))
    return float(np.asarray(times)[i]), float(values[i])


def auc(times: np.ndarray, values: np.ndarray, start: float, end: float) -> float:
    """Area under the curve from ``start`` to ``end`` (trapezoidal rule on the grid)."""
    times = np.asarray(times, dtype=float)
    values = np.asarray(values, dtype=float)
    inside = (times > start) & (times < end)
    t = np.concatenate(([start], times[inside], [end]))
    v = np.interp(t, times, values)
    return float(np.trapezoid(v, t))


def value_at(times: np.ndarray, values: np.ndarray, t: float) -> float:
    """Value at time ``t`` (linear interpolation)."""
    return float(np.interp(t, np.asarray(times, float), np.asarray(values, float)))


def first_crossing(
    times: np.ndarray,
    values: np.ndarray,
    threshold: float,
    direction: str = "down",
    after: float = -np.inf,
) -> float | None:
    """First time after ``after`` at which ``values`` cross ``threshold``.

    ``direction="down"``: from >= threshold to < threshold; ``"up"``: from < to >=.
    Returns ``None`` if it never happens on the grid.
    """
    times = np.asarray(times, dtype=float)
    values = np.asarray(values, dtype=float)
    if direction not in ("down", "up"):
        raise ValueError(f"direction must be 'down' or 'up', not {direction!r}")
    below = values < threshold
    hits = np.flatnonzero(
        (below[1:] if direction == "down" else ~below[1:])
        & (~below[:-1] if direction == "down" else below[:-1])
        & (times[1:] > after)
    )
    if hits.size == 0:
        return None
    i = hits[0]
    t0, t1, v0, v1 = times[i], times[i + 1], values[i], values[i + 1]
    return float(t0 + (threshold - v0) * (t1 - t0) / (v1 - v0))
