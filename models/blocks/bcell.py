"""B cells: kill by CAR-T cells, and reconstitution from the marrow.

The structure is this package's synthesis. The saturating kill follows Kimmel et al. Proc R
Soc B 2021;288:20210229 and the Hill kill of Kirouac et al. Nat Biotechnol 2023;41:1606. The
marrow transit chain follows the inebilizumab (anti-CD19) model of Yan et al. Br J Clin
Pharmacol 2022;88:3803, in which CD19+ precursors are depleted too; mature B-cell turnover is
that of Yu et al. CNS Drugs 2022;36:283, and the feedback on marrow output and homeostatic
proliferation follow Hosseini et al. npj Syst Biol Appl 2020;6:28. Cells are total-body
counts; blood concentrations are a fixed fraction of the body pool per blood volume.

Kill, applied to every CD19+ pool j:

    kill = k_kill * C_eff^n_k / (K_E^n_k + C_eff^n_k),   C_eff = E + w_M*M
    dB_j/dt = ... - w_j * kill * B_j

Reconstitution: marrow production through a transit chain of n CD19+ precursor
stages (mean transit time tau_BM), homeostatic feedback when B cells are low, loss of
mature B cells. At the pre-treatment steady state every precursor stage holds
k_B*B_ref/k_tr cells and the mature pool holds B_ref.

    dP_1/dt = s_B*(1 + a_fb*max(0, 1 - B/B_ref)) - k_tr*P_1 - kill*P_1,  s_B = k_B*B_ref
    dP_i/dt = k_tr*(P_{i-1} - P_i) - kill*P_i,                           k_tr = n/tau_BM
    dB/dt   = k_tr*P_n - k_B*B + k_hp*B*max(0, 1 - B/B_ref) - kill*B
"""

from __future__ import annotations

import sympy as sp

from pkpd_cart.model.modelling import ModelBuilder, hill, positive_part

KIMMEL = "Kimmel et al. Proc R Soc B 2021;288:20210229"
KIROUAC = "Kirouac et al. Nat Biotechnol 2023;41:1606"
HOSSEINI = "Hosseini et al. npj Syst Biol Appl 2020;6:28"


def cd19_kill(m: ModelBuilder, effector: sp.Expr, memory: sp.Expr | None = None) -> sp.Symbol:
    """Declare the CAR-T kill rate (1/d) of CD19+ cells and return its symbol.

    Apply it to pools with :func:`kill_pool`. ``memory`` cells kill with weight ``w_M``.
    """
    k_kill = m.parameter(
        "k_kill",
        1.0,
        "1/d",
        lower=0.05,
        upper=5,
        description="maximal kill rate of CD19+ cells",
        source=KIMMEL + " (Table 1, gamma_B 1.15 /d); " + KIROUAC + " (k_kill 0.44-1 /d)",
    )
    K_E = m.parameter(
        "K_E",
        1e9,
        "cells",
        lower=1e6,
        upper=1e11,
        description="CAR-T cells for half-maximal kill",
        source=KIMMEL + " (Table 1, k_B 2e9); " + KIROUAC + " (TK50 1e5-1e9)",
    )
    n_k = m.parameter(
        "n_k",
        1.0,
        "1",
        lower=0.3,
        upper=4,
        description="Hill coefficient of kill",
        source=KIROUAC + " (Hill coefficient kt)",
    )
    c_eff = effector
    if memory is not None:
        w_M = m.parameter(
            "w_M",
            0.5,
            "1",
            lower=1e-3,
            upper=1,
            description="killing weight of memory CAR-T cells",
            source="assumption (memory cells must keep killing for the months-long B-cell "
            "aplasia seen after CD19 CAR-T)",
        )
        c_eff = effector + w_M * memory
    C_eff = m.expression("C_eff", c_eff, "cells", "CAR-T cells that kill")
    return m.expression(
        "kill",
        k_kill * hill(positive_part(C_eff), K_E, n_k),
        "1/d",
        "CAR-T kill rate of CD19+ cells",
    )


def kill_pool(m: ModelBuilder, pool: sp.Symbol, weight: sp.Expr = 1) -> None:
    """Apply the CAR-T kill rate to a CD19+ pool (``weight``: its CD19+ fraction)."""
    m.add_term(pool, -weight * m.symbol("kill") * pool, label="CAR-T kill")


def bcell_reconstitution(m: ModelBuilder, n_transit: int = 4) -> list[sp.Symbol]:
    """Marrow transit chain ``B_P1..B_Pn`` and mature B cells ``B_mat``; returns all pools."""
    B_ref = m.parameter(
        "B_ref",
        2e10,
        "cells",
        lower=1e9,
        upper=2e11,
        description="total-body mature B cells at steady state",
        source="Leon-Triana et al. Commun Nonlinear Sci Numer Simul 2021;94:105570 (B0 "
        "2.5e10); about 1e11 computed from the human parameters of " + HOSSEINI,
    )
    k_B = m.parameter(
        "k_B",
        0.0125,
        "1/d",
        lower=0.003,
        upper=0.05,
        description="loss of mature B cells (t1/2 55 d)",
        source="Yu et al. CNS Drugs 2022;36:283 (ofatumumab B-cell model, k_out 0.0124 /d)",
    )
    tau_BM = m.parameter(
        "tau_BM",
        55.0,
        "d",
        lower=5,
        upper=200,
        description="mean marrow transit time from precursor to mature B cell",
        source="assumption tuned to B-cell return 110 +/- 32 d (Mackensen et al. Nat Med "
        "2022;28:2124); transit chain after Yan et al. Br J Clin Pharmacol 2022;88:3803",
    )
    a_fb = m.parameter(
        "a_fb",
        2.0,
        "1",
        lower=1e-3,
        upper=10,
        description="up-regulation of marrow output when B cells are low",
        source=HOSSEINI + " (marrow output up to 6x when B cells are depleted)",
    )
    k_hp = m.parameter(
        "k_hp",
        0.01,
        "1/d",
        lower=1e-4,
        upper=0.1,
        description="homeostatic proliferation of mature B cells when low",
        source="assumption, below kBprolif 0.05 /d of " + HOSSEINI,
    )

    k_tr = m.expression("k_tr", n_transit / tau_BM, "1/d", "transit rate between marrow stages")
    B = m.state("B_mat", "cells", initial=B_ref, description="mature CD19+ B cells (total body)")
    s_B = m.expression("s_B", k_B * B_ref, "cells/d", "marrow B-cell production at steady state")
    deficit = m.expression(
        "B_deficit", positive_part(1 - B / B_ref), "1", "relative shortfall of mature B cells"
    )
    stages = []
    previous = None
    for i in range(1, n_transit + 1):
        P = m.state(
            f"B_P{i}",
            "cells",
            initial=s_B / k_tr,
            description=f"CD19+ marrow precursor stage {i} of {n_transit}",
        )
        if previous is None:
            m.add_term(P, s_B * (1 + a_fb * deficit), label="marrow production")
        else:
            m.flow(previous, P, k_tr * previous, label="maturation")
        stages.append(P)
        previous = P
    m.flow(previous, B, k_tr * previous, label="egress to periphery")
    m.add_term(B, -k_B * B, label="loss")
    m.add_term(B, k_hp * B * deficit, label="homeostatic proliferation")
    return [*stages, B]
