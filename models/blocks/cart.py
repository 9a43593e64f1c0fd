"""CAR-T cellular kinetics: infusion, antigen-driven expansion limited in time, contraction,
effector-to-memory conversion, memory persistence, optional exhaustion.

The structure is this package's synthesis of three published models: Stein et al. CPT
Pharmacometrics Syst Pharmacol 2019;8:285 (Fig. 2, Table 1: expansion programme ending at
Tmax, contraction, memory), Kirouac et al. Nat Biotechnol 2023;41:1606 (antigen-dependent
proliferation and exhaustion, distribution of the infused dose) and the lisocabtagene
maraleucel population model (Clin Pharmacokinet 2021, doi:10.1007/s40262-021-01039-5; lag
before expansion). Cells are total-body counts.

    dD/dt = -k_dist*D                                             (infused cells)
    dE/dt =  k_dist*D + k_exp*S(A)*G(t)*E - (k_E + k_EM)*E - k_EX*S(A)*E
    dM/dt =  k_EM*E - k_M*M
    dX/dt =  k_EX*S(A)*E - k_X*X                                  (optional)
    S(A)  =  A^h/(A^h + EC50_A^h)       antigen stimulus from all CD19+ cells A
    G(t)  =  1/(1 + (max(0,t)/T_exp)^n_g)  expansion programme (smooth Stein Tmax)

The programme gate G bounds the expansion in time, so a continuous CD19 supply from the
marrow cannot drive unbounded growth. Without such a limit, marrow B-cell production and
antigen-driven expansion form a predator-prey system in which CAR-T cells persist or
oscillate (Leon-Triana et al. Commun Nonlinear Sci Numer Simul 2021;94:105570, Eq 3).
"""

from __future__ import annotations

import sympy as sp

from pkpd_cart.model.modelling import ModelBuilder, hill, positive_part

STEIN = "Stein et al. CPT Pharmacometrics Syst Pharmacol 2019;8:285"
KIROUAC = "Kirouac et al. Nat Biotechnol 2023;41:1606"


def cart_expansion(m: ModelBuilder, antigen: sp.Expr, exhaustion: bool = False) -> None:
    """Add CAR-T states ``CAR_D`` (infused), ``CAR_E``, ``CAR_M`` (and ``CAR_X``).

    Parameters
    ----------
    antigen : sympy expression
        Total CD19+ cells seen by the CAR (cells), e.g. marrow + mature + autoreactive B.
    exhaustion : bool
        Add the exhausted pool ``CAR_X`` (Kirouac 2023) with antigen-driven exhaustion.
    """
    t = m.t
    k_dist = m.parameter(
        "k_dist",
        1.0,
        "1/d",
        lower=0.05,
        upper=20,
        description="distribution/homing of infused cells into the effector pool",
        source="assumption (t1/2 0.7 d); " + KIROUAC + " dose-split rates 1-70 /d",
    )
    k_exp = m.parameter(
        "k_exp",
        1.3,
        "1/d",
        lower=0.2,
        upper=3,
        description="maximal antigen-driven expansion rate",
        source=f"{STEIN} (Table 1, net rho 0.89 /d) plus contraction; {KIROUAC} (ue 0.5-1 /d)",
    )
    T_exp = m.parameter(
        "T_exp",
        8.0,
        "d",
        lower=3,
        upper=20,
        description="length of the expansion programme (half-maximal gate)",
        source=STEIN + " (Table 1, Tmax 9.3 d); Erlangen peak day 8.6 +/- 0.8 "
        "(Muller et al. ASH 2023 abstract)",
    )
    n_g = m.parameter(
        "n_g",
        6.0,
        "1",
        lower=1,
        upper=20,
        description="steepness of the programme gate (infinite = Stein switch)",
        source="assumption (4-6: a smooth but sharp version of the Stein Tmax switch)",
    )
    EC50_A = m.parameter(
        "EC50_A",
        1e9,
        "cells",
        lower=1e7,
        upper=1e11,
        description="CD19+ cells for half-maximal stimulus",
        source=KIROUAC + " (B50 1e9-1e10); Leon-Triana et al. Commun Nonlinear Sci "
        "Numer Simul 2021;94:105570 (C50 1e9, Eq 3)",
    )
    h = m.parameter(
        "h",
        1.0,
        "1",
        lower=0.3,
        upper=4,
        description="Hill coefficient of stimulus",
        source=KIROUAC + " (ke 1-3)",
    )
    k_E = m.parameter(
        "k_E",
        0.16,
        "1/d",
        lower=0.02,
        upper=1,
        description="effector contraction rate",
        source=STEIN + " (Table 1, alpha)",
    )
    k_EM = m.parameter(
        "k_EM",
        0.0015,
        "1/d",
        lower=1e-5,
        upper=0.05,
        description="effector to memory conversion",
        source=STEIN + " (Table 1, FB*(alpha-beta) = 0.0012 /d)",
    )
    k_M = m.parameter(
        "k_M",
        0.009,
        "1/d",
        lower=1e-3,
        upper=0.2,
        description="memory CAR-T loss (persistence, t1/2 77 d)",
        source=STEIN + " (Table 1, beta 0.0032 /d in B-ALL); persistence shorter in SLE "
        "(Muller et al. Blood 2025, doi:10.1182/blood.2025028375); value tuned to B-cell "
        "return ~110 d (assumption)",
    )

    D = m.state("CAR_D", "cells", dose_target=True, description="infused CAR-T cells")
    E = m.state("CAR_E", "cells", description="effector CAR-T cells (total body)")
    M = m.state("CAR_M", "cells", description="memory CAR-T cells (total body)")

    S = m.expression(
        "S_A", hill(positive_part(antigen), EC50_A, h), "1", "antigen stimulus from CD19+ cells"
    )
    G = m.expression(
        "G_prog",
        1 / (1 + (positive_part(t) / T_exp) ** n_g),
        "1",
        "expansion programme gate, 1 -> 0 around T_exp",
    )

    m.flow(D, E, k_dist * D, label="distribution")
    m.add_term(E, k_exp * S * G * E, label="antigen-driven expansion")
    m.add_term(E, -k_E * E, label="contraction")
    m.flow(E, M, k_EM * E, label="memory formation")
    m.add_term(M, -k_M * M, label="memory loss")
    if exhaustion:
        k_EX = m.parameter(
            "k_EX",
            0.05,
            "1/d",
            lower=1e-4,
            upper=1,
            description="antigen-driven exhaustion",
            source=KIROUAC + " (kex 0.1-0.36 /d)",
        )
        k_X = m.parameter(
            "k_X",
            0.05,
            "1/d",
            lower=1e-3,
            upper=1,
            description="loss of exhausted cells",
            source=KIROUAC + " (dx 0.006-0.09 /d)",
        )
        X = m.state("CAR_X", "cells", description="exhausted CAR-T cells")
        m.flow(E, X, k_EX * S * E, label="exhaustion")
        m.add_term(X, -k_X * X, label="loss")


def cart_total(m: ModelBuilder) -> sp.Expr:
    """Circulating-capable CAR-T cells: effector + memory (+ exhausted), cells."""
    total = m.symbol("CAR_E") + m.symbol("CAR_M")
    if m.has("CAR_X"):
        total += m.symbol("CAR_X")
    return total
