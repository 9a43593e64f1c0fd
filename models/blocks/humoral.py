"""Autoreactive B cells, plasma cells and autoantibodies; vaccine titres.

The structure is this package's synthesis: CD19+ plasmablasts and short-lived plasma cells
are killed by the CAR and CD19- long-lived plasma cells are spared, with the two plasma-cell
time scales of Andraud et al. PLoS Comput Biol 2012;8:e1002418 and an IgG half-life of 21 d
(Morell et al. J Clin Invest 1970;49:673). Plasma-cell pools are relative to their
pre-treatment steady state (1 at baseline), so the antibody level is anchored to a measured
baseline titre:

    dB_auto/dt = k_rec*B_mat - k_auto*B_auto - kill*B_auto      (autoreactive memory B)
    dPB/dt  = k_PB*(B_auto/B_auto0) - k_PB*PB - kill*PB          (plasmablasts, CD19+)
    dSL/dt  = k_SL*PB - k_SL*SL - w_SL*kill*SL                   (short-lived PC)
    dLL/dt  = k_LL*PB - k_LL*LL                                  (long-lived PC, CD19-)
    dAb/dt  = k_IgG*Ab0*((1 - f_SL - f_LL)*PB + f_SL*SL + f_LL*LL) - k_IgG*Ab

f_SL and f_LL are the baseline shares of anti-dsDNA production by short- and long-lived
plasma cells. If production by PB and SL stops, Ab/Ab0 = f_LL + (1 - f_LL)*exp(-k_IgG*t);
this closed form bounds f_LL from the seroconversion by month 3. Vaccine titres come from
long-lived plasma cells only, replenished from the mature B-cell pool, so CD19 CAR-T leaves
them nearly unchanged (Hill et al. Blood Adv 2019;3:3590: measles IgG +1.2% after CD19
CAR-T; titres "maintained", Schett et al. ACR Convergence 2023 abstract #0607).
"""

from __future__ import annotations

import math

import sympy as sp

from pkpd_cart.model.modelling import ModelBuilder

ANDRAUD = "Andraud et al. PLoS Comput Biol 2012;8:e1002418"


def autoreactive_bcells(m: ModelBuilder) -> sp.Symbol:
    """Autoreactive memory B cells ``B_auto``, recruited slowly from mature B cells."""
    f_auto = m.parameter(
        "f_auto",
        0.01,
        "1",
        lower=1e-4,
        upper=0.2,
        description="autoreactive memory B cells as a fraction of B_ref",
        source="assumption",
    )
    k_auto = m.parameter(
        "k_auto",
        1e-4,
        "1/d",
        lower=1e-5,
        upper=0.05,
        description="turnover of the autoreactive memory pool (t1/2 19 y): "
        "re-emergence after a reset takes years",
        source="assumption; no relapse to 29 months (Muller 2024)",
    )
    B_ref, B = m.symbol("B_ref"), m.symbol("B_mat")
    k_rec = m.expression("k_rec", k_auto * f_auto, "1/d", "recruitment from mature B cells")
    B_auto0 = m.expression("B_auto0", f_auto * B_ref, "cells", "autoreactive B at baseline")
    Ba = m.state(
        "B_auto", "cells", initial=B_auto0, description="autoreactive memory B cells (CD19+)"
    )
    m.add_term(Ba, k_rec * B, label="recruitment")
    m.add_term(Ba, -k_auto * Ba, label="loss")
    return Ba


def plasma_cells_and_autoantibody(m: ModelBuilder) -> dict[str, sp.Symbol]:
    """Plasmablasts, short- and long-lived plasma cells, and anti-dsDNA ``Ab_dsDNA`` (IU/mL)."""
    k_PB = m.parameter(
        "k_PB",
        0.2,
        "1/d",
        lower=0.05,
        upper=1,
        description="plasmablast turnover (t1/2 3.5 d)",
        source="assumption (plasmablasts live a few days; not from a primary source)",
    )
    k_SL = m.parameter(
        "k_SL",
        0.015,
        "1/d",
        lower=0.003,
        upper=0.1,
        description="short-lived plasma-cell turnover (months)",
        source=ANDRAUD + " (short-lived plasma cells live several months)",
    )
    k_LL = m.parameter(
        "k_LL",
        1e-4,
        "1/d",
        lower=1e-6,
        upper=1e-3,
        description="long-lived plasma-cell turnover (decades)",
        source=ANDRAUD + " (long-lived plasma cells live decades)",
    )
    w_SL = m.parameter(
        "w_SL",
        0.9,
        "1",
        lower=0.01,
        upper=1,
        description="CD19+ fraction of short-lived plasma cells (killed)",
        source="assumption (short-lived plasma cells are mostly CD19+, unlike long-lived ones)",
    )
    f_SL = m.parameter(
        "f_SL",
        0.4,
        "1",
        lower=0.01,
        upper=0.9,
        description="baseline share of anti-dsDNA from short-lived plasma cells",
        source="assumption",
    )
    f_LL = m.parameter(
        "f_LL",
        0.03,
        "1",
        lower=1e-3,
        upper=0.5,
        description="baseline share of anti-dsDNA from long-lived plasma cells",
        source="anti-dsDNA seroconversion by month 3 (Mackensen et al. Nat Med "
        "2022;28:2124) implies <= 0.1-0.2 if only long-lived plasma cells keep secreting "
        "(this package's calculation)",
    )
    k_IgG = m.parameter(
        "k_IgG",
        math.log(2) / 21,
        "1/d",
        lower=0.01,
        upper=0.1,
        description="IgG elimination (t1/2 21 d)",
        source="Morell et al. J Clin Invest 1970;49:673 (IgG1/2/4 t1/2 ~21 d); belimumab "
        "t1/2 19.4 d (Struemper et al. J Clin Pharmacol 2013;53:711)",
    )
    Ab0 = m.parameter(
        "Ab0",
        100.0,
        "IU/mL",
        lower=1,
        upper=5000,
        description="baseline anti-dsDNA titre",
        source="assumption (typical positive titre; Mackensen 2022 values not public)",
    )
    kill = m.symbol("kill")
    Ba, Ba0 = m.symbol("B_auto"), m.symbol("B_auto0")

    PB = m.state("PB", "1", initial=1, description="plasmablasts, relative to baseline (CD19+)")
    SL = m.state("SLPC", "1", initial=1, description="short-lived plasma cells, relative")
    LL = m.state("LLPC", "1", initial=1, description="long-lived plasma cells (CD19-), relative")
    Ab = m.state("Ab_dsDNA", "IU/mL", initial=Ab0, description="anti-dsDNA IgG")

    m.add_term(PB, k_PB * Ba / Ba0 - k_PB * PB, label="differentiation, turnover")
    m.add_term(PB, -kill * PB, label="CAR-T kill")
    m.add_term(SL, k_SL * PB - k_SL * SL, label="formation, turnover")
    m.add_term(SL, -w_SL * kill * SL, label="CAR-T kill")
    m.add_term(LL, k_LL * PB - k_LL * LL, label="formation, turnover")
    m.add_term(
        Ab, k_IgG * Ab0 * ((1 - f_SL - f_LL) * PB + f_SL * SL + f_LL * LL), label="secretion"
    )
    m.add_term(Ab, -k_IgG * Ab, label="IgG elimination")
    return {"PB": PB, "SLPC": SL, "LLPC": LL, "Ab": Ab}


def vaccine_titre(m: ModelBuilder) -> sp.Symbol:
    """Vaccine-specific long-lived plasma cells ``LLPC_vac`` and titre ``Ab_vac`` (relative)."""
    k_LL, k_IgG = m.symbol("k_LL"), m.symbol("k_IgG")
    B, B_ref = m.symbol("B_mat"), m.symbol("B_ref")
    LLv = m.state(
        "LLPC_vac",
        "1",
        initial=1,
        description="vaccine-specific long-lived plasma cells, relative (CD19-)",
    )
    Abv = m.state("Ab_vac", "1", initial=1, description="vaccine IgG titre, relative to baseline")
    m.add_term(LLv, k_LL * B / B_ref - k_LL * LLv, label="replenishment, turnover")
    m.add_term(Abv, k_IgG * LLv - k_IgG * Abv, label="secretion, IgG elimination")
    return Abv
