"""Helper of the fit scripts (imported, not run): population summaries of ``sle_cart``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pkpd_cart.reporting.derived import first_crossing
from pkpd_cart.simulation.population import PopulationRun, observable_matrix

#: Output grid (days): fine around the CAR-T peak, coarser later.
GRID = np.unique(
    np.concatenate(
        (np.arange(-6.0, 0.0, 1.0), np.arange(0.0, 20.0, 0.05), np.arange(20.0, 400.0 + 1e-9, 0.5))
    )
)
APLASIA_THRESHOLD = 1.0  # B cells per uL
DSDNA_CUTOFF = 10.0  # IU/mL (assumption, see the model)
NO_RETURN_DAY = 400.0  # B-cell return censored at the end of the grid


def refined_peak_day(times: np.ndarray, values: np.ndarray) -> float:
    """Peak time refined by a parabola through the grid maximum and its neighbours."""
    i = int(np.argmax(values))
    if 0 < i < len(values) - 1:
        y0, y1, y2 = values[i - 1 : i + 2]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            return float(times[i] + 0.5 * (y0 - y2) / denom * (times[i + 1] - times[i]))
    return float(times[i])


def per_patient(run: PopulationRun) -> dict[str, np.ndarray]:
    """Derived quantities per virtual patient (successful simulations only)."""
    t = run_times(run)
    _, car = observable_matrix(run, "CAR_T")
    _, pct = observable_matrix(run, "CAR_T_pct_CD3")
    _, bc = observable_matrix(run, "B_cells")
    _, ab = observable_matrix(run, "anti_dsDNA")
    _, sl = observable_matrix(run, "SLEDAI")
    i90 = int(np.argmin(np.abs(t - 90.0)))
    back = []
    for row in bc:
        gone = first_crossing(t, row, APLASIA_THRESHOLD, "down", after=0.0)
        up = None if gone is None else first_crossing(t, row, APLASIA_THRESHOLD, "up", gone)
        back.append(NO_RETURN_DAY if up is None else up)
    return {
        "peak_day": np.array([refined_peak_day(t, row) for row in car]),
        "peak_cells": car.max(axis=1),
        "peak_pct": pct.max(axis=1),
        "B_return_day": np.array(back),
        "anti_dsDNA_d90": ab[:, i90],
        "SLEDAI_d90": sl[:, i90],
    }


def run_times(run: PopulationRun) -> np.ndarray:
    return next(iter(run.trajectories.values())).times


def summaries(run: PopulationRun) -> dict[str, float]:
    """The simulated counterparts of the published cohort summaries."""
    if not run.trajectories:
        return {}
    q = per_patient(run)
    # smooth probability of being below the cut-off at day 90 (logistic in log titre)
    p_sero = 1.0 / (1.0 + np.exp(-(np.log(DSDNA_CUTOFF) - np.log(q["anti_dsDNA_d90"])) / 0.1))
    p_all = max(float(np.mean(p_sero)), 1e-12)
    high_sledai = float(np.quantile(q["SLEDAI_d90"], 0.88))
    return {
        "peak_day_mean": float(np.mean(q["peak_day"])),
        "peak_day_sd": float(np.std(q["peak_day"], ddof=1)),
        "log_peak_pct_low": math.log(float(np.quantile(q["peak_pct"], 0.12))),
        "log_peak_pct_high": math.log(float(np.quantile(q["peak_pct"], 0.88))),
        "B_return_mean": float(np.mean(q["B_return_day"])),
        "B_return_sd": float(np.std(q["B_return_day"], ddof=1)),
        # 5 of 5 seroconverted: -2 log L = -2 * 5 * log(p); residual = its square root
        "seroconversion_5_of_5": math.sqrt(-2 * 5 * math.log(p_all)),
        "SLEDAI_month3_median": float(np.median(q["SLEDAI_d90"])),
        # the highest of five month-3 scores is 2: penalise the 88% quantile above 2.5
        "SLEDAI_month3_high": max(0.0, high_sledai - 2.5) / 0.5,
        "fraction_seroconverted": float(np.mean(q["anti_dsDNA_d90"] < DSDNA_CUTOFF)),
    }


def save_population(path: Path, typical: dict, omega: dict, note: str) -> None:
    """Write a calibrated population (typical values and omegas) as JSON."""
    path.write_text(
        json.dumps(
            {"model": "sle_cart", "typical": typical, "omega": omega, "note": note},
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )


def load_population(path: Path) -> tuple[dict, dict, str]:
    data = json.loads(path.read_text())
    return data["typical"], data["omega"], data.get("note", "")
