"""Anti-CD19 CAR-T therapy in systemic lupus erythematosus (the Erlangen protocol).

Composed from the mechanism blocks in ``pkpd_cart.models.blocks`` for the setting of
Mackensen A et al. Nat Med 2022;28:2124 (doi:10.1038/s41591-022-02017-5): one infusion of
1e6 CAR-T cells/kg on day 0 after fludarabine (days -5 to -3) and cyclophosphamide (day -3).

Time is in days from the CAR-T infusion. The initial condition is the pre-treatment steady
state (nothing changes before lymphodepletion); simulations start on day -6 by default.
Cells are total-body counts; observables are in clinical units (cells/uL of blood, % of
CD3+ T cells, IU/mL, score).

The default parameters are literature-based and hand-tuned to the qualitative course
reported for the five patients (CAR-T peak near day 9, B-cell aplasia to about day 110,
anti-dsDNA seroconversion and SLEDAI-2K <= 2 by month 3, vaccine titres kept); they are not
fitted. Every parameter names its source or says "assumption".
"""

from __future__ import annotations

from pkpd_cart.models.blocks.bcell import bcell_reconstitution, cd19_kill, kill_pool
from pkpd_cart.models.blocks.cart import cart_expansion, cart_total
from pkpd_cart.models.blocks.disease import lymphodepletion, sledai
from pkpd_cart.models.blocks.humoral import (
    autoreactive_bcells,
    plasma_cells_and_autoantibody,
    vaccine_titre,
)

from pkpd_cart.model.modelling import Model, ModelBuilder
from pkpd_cart.simulation.solver import Dose

DOSE_PER_KG = 1e6  # CAR-T cells/kg, Mackensen 2022
N_TRANSIT = 4

ASSUMPTIONS = (
    "Cells are total-body counts; blood holds a fixed fraction of each pool (2% of T and B "
    "cells) in 5 L of blood (assumption: about 1-2% of body lymphocytes circulate; 2-2.5% of "
    "B cells by the tissue pools of Hosseini et al. npj Syst Biol Appl 2020;6:28).",
    "Infused cells distribute into the effector pool at k_dist; cells still distributing are "
    "not counted in blood.",
    "Expansion needs CD19 antigen (saturating stimulus) and ends with a programme gate near "
    "day T_exp, so marrow CD19 supply cannot drive unbounded growth (without such a limit "
    "CAR-T and B cells form a predator-prey system: Leon-Triana et al. Commun Nonlinear Sci "
    "Numer Simul 2021;94:105570, Eq 3).",
    "Every CD19+ pool is killed at the same rate: marrow precursors, mature and autoreactive "
    "B cells, plasmablasts and (weight w_SL) short-lived plasma cells; long-lived plasma "
    "cells are CD19-negative and spared.",
    "Autoreactive memory B cells are recruited from the mature pool only slowly (k_auto), so "
    "returning naive B cells do not restore autoantibody production for years.",
    "Anti-dsDNA and vaccine titres are IgG with a 21-day half-life; plasma-cell pools are "
    "relative to baseline.",
    "SLEDAI-2K is an indirect response to the anti-dsDNA level; it is continuous in the model "
    "and rounded to a score in reports.",
    "Lymphodepletion is an extra loss rate of lymphocytes (host T and B cells) between day -5 "
    "and day -2; its effect on CAR-T cells, infused on day 0, is nil.",
    "Anti-dsDNA positivity cut-off 10 IU/mL and baseline 100 IU/mL are assumptions: the "
    "assay values of the five patients are not public.",
)


def mackensen_doses(weight_kg: float) -> list[Dose]:
    """The protocol dose, 1e6 CAR-T cells/kg on day 0, into ``CAR_D``."""
    return [Dose(0.0, DOSE_PER_KG * weight_kg, "CAR_D")]


def build() -> Model:
    m = ModelBuilder(
        "sle_cart",
        description="Anti-CD19 CAR-T in SLE: expansion, B-cell kill and reconstitution, "
        "autoantibodies, vaccine titres and SLEDAI-2K",
        reference="Mackensen A et al. Nat Med 2022;28:2124 (setting); structure: this "
        "package's synthesis of Stein et al. CPT Pharmacometrics Syst Pharmacol 2019;8:285, "
        "Kirouac et al. Nat Biotechnol 2023;41:1606, Yan et al. Br J Clin Pharmacol "
        "2022;88:3803, Hosseini et al. npj Syst Biol Appl 2020;6:28 and Andraud et al. PLoS "
        "Comput Biol 2012;8:e1002418 (per-parameter sources in the parameter table)",
        start_time=-6.0,
    )
    m.notes.extend(ASSUMPTIONS)
    # B-cell reconstitution first: the antigen seen by the CAR depends on its pools
    pools = bcell_reconstitution(m, n_transit=N_TRANSIT)
    B_auto = autoreactive_bcells(m)
    antigen = sum(pools[1:], pools[0]) + B_auto
    cart_expansion(m, antigen)
    cd19_kill(m, effector=m.symbol("CAR_E"), memory=m.symbol("CAR_M"))
    for pool in [*pools, B_auto]:
        kill_pool(m, pool)
    humoral = plasma_cells_and_autoantibody(m)
    vaccine = vaccine_titre(m)
    S = sledai(m, humoral["Ab"], m.symbol("Ab0"))
    LD = lymphodepletion(m)
    k_LD = m.symbol("k_LD")
    for pool in (pools[-1], B_auto, humoral["PB"]):
        m.add_term(pool, -k_LD * LD * pool, label="lymphodepletion")

    # Observation model
    f_T = m.parameter(
        "f_blood_T",
        0.02,
        "1",
        lower=0.002,
        upper=0.2,
        description="fraction of body CAR-T cells in blood",
        source="assumption (about 1-2% of body T cells circulate in blood)",
    )
    f_B = m.parameter(
        "f_blood_B",
        0.02,
        "1",
        lower=0.002,
        upper=0.2,
        description="fraction of body B cells in blood",
        source="2-2.5%, computed from the blood and tissue B-cell pools of Hosseini et al. "
        "npj Syst Biol Appl 2020;6:28",
    )
    V = m.parameter(
        "V_blood",
        5e6,
        "uL",
        lower=2e6,
        upper=8e6,
        description="blood volume",
        source="assumption (adult, 5 L)",
    )
    cut = m.parameter(
        "dsDNA_cutoff",
        10.0,
        "IU/mL",
        lower=1,
        upper=200,
        description="anti-dsDNA positivity cut-off of the assay",
        source="assumption (assay not reported)",
    )
    car_blood = m.expression(
        "CAR_blood", f_T * cart_total(m) / V, "cells/uL", "CAR-T cells per uL of blood"
    )
    m.observable("CAR_T", car_blood, "cells/uL", "CAR-T cells in blood")
    m.observable(
        "CAR_T_pct_CD3",
        100 * car_blood / (car_blood + m.symbol("T_host")),
        "%",
        "CAR-T cells as % of CD3+ T cells",
    )
    m.observable("B_cells", f_B * (pools[-1] + B_auto) / V, "cells/uL", "CD19+ B cells in blood")
    m.observable("anti_dsDNA", humoral["Ab"], "IU/mL", "anti-dsDNA IgG")
    m.observable(
        "anti_dsDNA_positive",
        humoral["Ab"] / cut,
        "1",
        "anti-dsDNA relative to the positivity cut-off (>1 positive)",
    )
    m.observable("vaccine_titre", vaccine, "1", "vaccine IgG titre relative to baseline")
    m.observable("SLEDAI", S, "score", "SLEDAI-2K (continuous; round for the score)")
    return m.build()


def summarise(frame, aplasia_threshold: float = 1.0, cutoff: float | None = None) -> dict:
    """Clinical summaries of one simulated ``sle_cart`` course (``frame`` from ``simulate``).

    Keys: CAR-T peak day, peak cells/uL and % of CD3+, AUC(0-28 d) of CAR-T (cells*d/uL),
    first day B cells < ``aplasia_threshold`` cells/uL, day they return to >= it, aplasia
    duration, anti-dsDNA at month 3 (day 90), seroconverted (below the cut-off at day 90),
    SLEDAI-2K score at month 3 and vaccine titre at one year. Missing events give NaN.
    """
    from pkpd_cart.models.blocks.disease import sledai_score

    from pkpd_cart.reporting.derived import auc, first_crossing, peak, value_at

    t = frame["time"].to_numpy()
    t_peak, c_peak = peak(t, frame["CAR_T"])
    gone = first_crossing(t, frame["B_cells"], aplasia_threshold, "down", after=0.0)
    back = (
        None
        if gone is None
        else first_crossing(t, frame["B_cells"], aplasia_threshold, "up", after=gone)
    )
    ab90 = value_at(t, frame["anti_dsDNA"], 90.0)
    cut = (
        cutoff
        if cutoff is not None
        else value_at(t, frame["anti_dsDNA"] / frame["anti_dsDNA_positive"], 90.0)
    )
    nan = float("nan")
    return {
        "CAR_T_peak_day": t_peak,
        "CAR_T_peak_cells_per_uL": c_peak,
        "CAR_T_peak_pct_CD3": float(frame["CAR_T_pct_CD3"].max()),
        "CAR_T_AUC_0_28": auc(t, frame["CAR_T"], 0.0, 28.0),
        "B_aplasia_start_day": nan if gone is None else gone,
        "B_reappearance_day": nan if back is None else back,
        "B_aplasia_days": nan if (gone is None or back is None) else back - gone,
        "anti_dsDNA_day90": ab90,
        "seroconverted_day90": bool(ab90 < cut),
        "SLEDAI_day90": float(sledai_score(value_at(t, frame["SLEDAI"], 90.0))),
        "vaccine_titre_day365": value_at(t, frame["vaccine_titre"], 365.0),
    }
