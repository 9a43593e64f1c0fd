"""Helper of the fit scripts (imported, not run): the published numbers of Mackensen et al.
2022 as data, and the cohort targets they imply.

``fits/data/mackensen2022_published.csv`` holds every public fact about the five patients
with its source and evidence level (see its header). This module reads it and derives the
summary targets that the cohort calibration fits.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pkpd_cart.estimation.summary_fit import Target

DATA = Path(__file__).resolve().parent / "data"
PUBLISHED = DATA / "mackensen2022_published.csv"


def load_published(path: Path = PUBLISHED) -> pd.DataFrame:
    """The published facts, one row per value (``#`` header lines skipped)."""
    frame = pd.read_csv(path, comment="#", dtype={"patient": str, "value": str})
    return frame


def patients(path: Path = PUBLISHED) -> pd.DataFrame:
    """Sex, age, baseline SLEDAI-2K and follow-up (months) of patients 1 to 5."""
    f = load_published(path)
    per = f[f["patient"].isin(["1", "2", "3", "4", "5"])]
    table = per.pivot(index="patient", columns="quantity", values="value")
    table = table.rename(
        columns={"SLEDAI2K_baseline": "SLEDAI0", "followup_at_ACR2022": "followup_months"}
    )
    for col in ("age", "SLEDAI0", "followup_months"):
        table[col] = table[col].astype(float)
    return table[["sex", "age", "SLEDAI0", "followup_months"]]


def _get(f: pd.DataFrame, quantity: str, statistic: str, column: str = "value") -> float:
    row = f[(f["quantity"] == quantity) & (f["statistic"] == statistic)].iloc[0]
    return float(row[column])


def cohort_targets(path: Path = PUBLISHED) -> list[Target]:
    """Summary targets with uncertainties for the cohort calibration.

    Standard errors: of a mean, SD/sqrt(n); of an SD, SD/sqrt(2(n-1)). The range of the
    peak % of CD3+ among five patients is compared, on the log scale, with the 12% and 88%
    quantiles of the simulated population (expected extremes of five draws, Blom), with an
    assumed uncertainty of 0.35 on the log scale. Seroconversion 5/5 and SLEDAI-2K at
    month 3 (median 0, maximum 2) enter as the likelihood terms in the calibration script.
    """
    f = load_published(path)
    m_peak, s_peak = _get(f, "CAR_T_peak_day", "mean"), _get(f, "CAR_T_peak_day", "sd")
    n_peak = 15
    m_b, s_b = _get(f, "B_cell_reappearance_day", "mean"), _get(f, "B_cell_reappearance_day", "sd")
    n_b = 5
    lo = _get(f, "CAR_T_peak_pct_CD3", "range", "low")
    hi = _get(f, "CAR_T_peak_pct_CD3", "range", "high")
    return [
        Target("peak_day_mean", m_peak, s_peak / math.sqrt(n_peak), "S5 (n=15 programme)"),
        Target("peak_day_sd", s_peak, s_peak / math.sqrt(2 * (n_peak - 1)), "S5"),
        Target(
            "log_peak_pct_low",
            math.log(lo),
            0.35,
            "S9 (secondary)",
            "lowest of five peaks vs the 12% quantile",
        ),
        Target(
            "log_peak_pct_high",
            math.log(hi),
            0.35,
            "S9 (secondary)",
            "highest of five peaks vs the 88% quantile",
        ),
        Target("B_return_mean", m_b, s_b / math.sqrt(n_b), "S1"),
        Target("B_return_sd", s_b, s_b / math.sqrt(2 * (n_b - 1)), "S1"),
    ]
