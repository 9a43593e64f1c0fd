"""Disease activity (SLEDAI-2K) and lymphodepletion with host T cells.

SLEDAI-2K: an indirect response to the autoantibody burden (a form chosen for this
package, not taken from a published model),

    dS/dt = k_S*(S0*(Ab/Ab0)^gamma_S - S),

continuous inside the model (S -> S0 at baseline) and rounded to an integer score only
when reported (:func:`sledai_score`).

Lymphodepletion (fludarabine days -5 to -3, cyclophosphamide day -3; ASH 2023 abstract,
Muller et al.) as an extra loss rate k_LD of lymphocytes between the switch times
t_LD_start and t_LD_end. Host T cells (blood concentration) recover towards T_ref; they
are the denominator of the CAR-T % of CD3+ observable.

    dT/dt = k_T*(T_ref - T) - k_LD*LD(t)*T
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from pkpd_cart.model.modelling import ModelBuilder


def sledai(m: ModelBuilder, antibody: sp.Symbol, baseline: sp.Symbol) -> sp.Symbol:
    """Disease-activity state ``S_act`` (SLEDAI-2K units) driven by ``antibody / baseline``."""
    S0 = m.parameter(
        "SLEDAI0",
        16.0,
        "score",
        lower=1,
        upper=40,
        description="baseline SLEDAI-2K",
        source="Mackensen et al. Nat Med 2022;28:2124, median 16 (range 8-16); conflicts "
        "with the per-patient 16/16/10/8/9 of Schett et al. ACR Convergence 2022 abstract "
        "#1651",
    )
    k_S = m.parameter(
        "k_S",
        0.06,
        "1/d",
        lower=0.005,
        upper=1,
        description="turnover of disease activity",
        source="assumption (t1/2 ~12 d, so SLEDAI-2K falls from 16 to <= 2 by month 3 as "
        "in Mackensen et al. Nat Med 2022;28:2124)",
    )
    gamma_S = m.parameter(
        "gamma_S",
        1.5,
        "1",
        lower=0.2,
        upper=5,
        description="sensitivity of activity to autoantibody burden",
        source="assumption (chosen with k_S to match the fall of SLEDAI-2K by month 3)",
    )
    S = m.state("S_act", "score", initial=S0, description="disease activity in SLEDAI-2K units")
    ratio = sp.Max(antibody / baseline, 0)
    m.add_term(S, k_S * (S0 * ratio**gamma_S - S), label="indirect response")
    return S


def sledai_score(value: float | np.ndarray) -> float | np.ndarray:
    """The continuous SLEDAI-2K reported as an integer score (rounded, at least 0)."""
    return np.maximum(np.rint(value), 0)


def lymphodepletion(m: ModelBuilder) -> sp.Expr:
    """Host T cells ``T_host`` (cells/uL) and the lymphodepletion window; returns LD(t)."""
    t_start = m.parameter(
        "t_LD_start",
        -5.0,
        "d",
        lower=-10,
        upper=0,
        scale="linear",
        description="first day of fludarabine",
        source="ASH 2023 abstract (Muller), days -5 to -3",
    )
    t_end = m.parameter(
        "t_LD_end",
        -2.0,
        "d",
        lower=-9,
        upper=0.5,
        scale="linear",
        description="end of the chemotherapy effect (after day -3)",
        source="ASH 2023 abstract (Muller); effect assumed to end a day after",
    )
    k_LD = m.parameter(
        "k_LD",
        0.6,
        "1/d",
        lower=0.01,
        upper=3,
        description="extra loss of lymphocytes during lymphodepletion",
        source="assumption (about 80% of lymphocytes lost over 3 days)",
    )
    T_ref = m.parameter(
        "T_ref",
        1000.0,
        "cells/uL",
        lower=100,
        upper=3000,
        description="host CD3+ T cells in blood before treatment",
        source="assumption (adult reference range; SLE often lower)",
    )
    k_T = m.parameter(
        "k_T",
        0.02,
        "1/d",
        lower=0.001,
        upper=0.2,
        description="recovery of host T cells after lymphodepletion",
        source="assumption (weeks to months)",
    )
    on = m.switch("LD_started", at=t_start, description="lymphodepletion begins")
    off = m.switch("LD_ended", at=t_end, description="lymphodepletion effect ends")
    window = m.expression("LD", on * (1 - off), "1", "1 during lymphodepletion, else 0")
    T = m.state("T_host", "cells/uL", initial=T_ref, description="host CD3+ T cells in blood")
    m.add_term(T, k_T * (T_ref - T), label="homeostatic recovery")
    m.add_term(T, -k_LD * window * T, label="lymphodepletion")
    return window
