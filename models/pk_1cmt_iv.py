"""One-compartment pharmacokinetics with IV bolus doses and linear elimination.

The textbook model (NONMEM ``ADVAN1 TRANS2``, nlmixr2lib ``PK_1cmt``): an amount ``A``
in a volume ``V``, cleared at ``CL``; doses go into ``A``. Population-fit tests reproduce
NONMEM's phenobarbital (pheno) and ACOP 2016 runs with it. Units are those of those
datasets: amounts in mg, time in hours; any consistent set works.
"""

from __future__ import annotations

from pkpd_cart.model.modelling import Model, ModelBuilder


def build() -> Model:
    m = ModelBuilder(
        "pk_1cmt_iv",
        description="One-compartment PK, IV bolus, linear elimination (ADVAN1 TRANS2)",
        time_unit="h",
        reference="Textbook model; e.g. Gabrielsson & Weiner, Pharmacokinetic and "
        "Pharmacodynamic Data Analysis, 5th ed., 2016, ch. 2",
    )
    CL = m.parameter(
        "CL",
        1.0,
        "L/h",
        lower=0,
        upper=1e6,
        scale="log",
        source="placeholder",
        description="clearance (typical values come from a fit)",
    )
    V = m.parameter(
        "V",
        10.0,
        "L",
        lower=0,
        upper=1e7,
        scale="log",
        source="placeholder",
        description="volume of distribution",
    )
    A = m.state("A", "mg", initial=0, description="amount in the body", dose_target=True)
    m.add_term(A, -CL / V * A, label="elimination")
    m.observable("C", A / V, "mg/L", "plasma concentration")
    return m.build()
