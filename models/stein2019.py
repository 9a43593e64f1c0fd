"""Stein et al. 2019: tisagenlecleucel cellular kinetics in r/r B-ALL.

Stein AM, Grupp SA, Levine JE, et al. Tisagenlecleucel model-based cellular kinetic
analysis of chimeric antigen receptor-T cells. CPT Pharmacometrics Syst Pharmacol.
2019;8(5):285-295. doi:10.1002/psp4.12388

Compartmental form of the paper's Fig. 2: effector-like cells E expand at rate rho until
Tmax, then contract at alpha, feeding a memory-like pool M (rate k) that declines at beta.
Observed transgene level C = E + M (copies/ug genomic DNA).

Deviations from the paper: the comedication factors F_toci and F_ster (Table 1) are not
implemented (as in nlmixr2lib); the typical patient has neither.
"""

from __future__ import annotations

import sympy as sp

from pkpd_cart.model.modelling import Model, ModelBuilder, switched

TABLE1 = "Stein 2019, Table 1"


def build() -> Model:
    m = ModelBuilder(
        "stein2019",
        description="Tisagenlecleucel cellular kinetics: expansion to Tmax, biexponential decline",
        reference="Stein AM et al. CPT Pharmacometrics Syst Pharmacol 2019;8:285. "
        "doi:10.1002/psp4.12388",
    )
    # Parameters (Table 1 typical values)
    foldx = m.parameter(
        "foldx",
        3900,
        "1",
        lower=1,
        upper=1e7,
        source=TABLE1,
        description="fold expansion from R0 to Cmax",
    )
    Tmax = m.parameter(
        "Tmax", 9.3, "d", lower=1, upper=60, source=TABLE1, description="time of peak expansion"
    )
    Cmax = m.parameter(
        "Cmax", 24000, "copies/ug", upper=1e8, source=TABLE1, description="peak transgene level"
    )
    alpha = m.parameter(
        "alpha",
        0.16,
        "1/d",
        upper=10,
        source=TABLE1,
        description="contraction rate of effector cells after Tmax",
    )
    FB = m.parameter(
        "FB",
        0.0079,
        "1",
        upper=1,
        source=TABLE1,
        description="fraction of cells entering the memory (slow) phase",
    )
    beta = m.parameter(
        "beta",
        0.0032,
        "1/d",
        upper=10,
        source=TABLE1,
        description="persistence (slow decline) rate of memory cells",
    )

    # Derived quantities (Stein 2019, Fig. 2 and Methods)
    rho = m.expression("rho", sp.log(foldx) / Tmax, "1/d", "expansion rate, ln(foldx)/Tmax")
    k = m.expression("k", FB * (alpha - beta), "1/d", "effector to memory conversion rate")
    R0 = m.expression("R0", Cmax / foldx, "copies/ug", "transgene level at infusion")

    # States
    E = m.state("E", "copies/ug", initial=R0, description="effector-like CAR-T signal")
    M = m.state("M", "copies/ug", initial=0, description="memory-like CAR-T signal")
    after_Tmax = m.switch("after_Tmax", at=Tmax, description="expansion ends at Tmax")

    # Equations
    m.add_term(E, switched(after_Tmax, rho * E, -alpha * E), label="expansion / contraction")
    m.add_term(M, switched(after_Tmax, 0, k * E - beta * M), label="memory formation and loss")

    # Observables
    m.observable("C", E + M, "copies/ug", "transgene level in blood (qPCR)")
    return m.build()
