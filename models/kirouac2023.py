"""Kirouac et al. 2023: CAR-T phenotypes with an antigen-sensing toggle (Kymriah in CLL).

Kirouac DC, Zmurchok C, Deyati A, et al. Deconvolution of clinical variance in CAR-T
cell pharmacology and response. Nat Biotechnol. 2023;41:1606-1617.
doi:10.1038/s41587-023-01687-x

Eight states: memory (Tm), two effector stages (Te1, Te2), exhausted (Tx), B cells (B),
B-cell antigen signal (Ba), the infused dose (dose) and the distributing dose (doseX).
The equations follow the public re-implementation ``mod_eqns.m`` (mstadt/CART2, "modified
from the code provided in Kirouac et al. 2023"); the reference outputs in the tests (CR1,
PR1, NR1) are those of the MATLAB runs stored in that repository (sims_patients/).

Units are cell counts as fitted (the absolute scale of T is that of the fitted data).
The 36 published parameter vectors (12 complete responders CR1..CR12, 12 partial PR1..PR12,
12 non-responders NR1..NR12) are the model's parameter sets; the default is CR1.
Bounds are not published: they are set to [0, inf) (f_max to [0, 1]) as an assumption.
The published runs start from Tm=Te1=Te2=Tx=0, B=Ba=1e10, dose=1e8 cells (a bolus at t=0).
"""

from __future__ import annotations

import csv
from pathlib import Path

from pkpd_cart.model.modelling import Model, ModelBuilder, hill, positive_part

SOURCE = "Kirouac 2023, published parameter vectors (get_pars.m, set CR1)"

# name: (unit, description)
PARAMETERS = {
    "B50": ("cells", "antigen signal Ba at half-maximal toggle"),
    "uB": ("1/d", "B-cell growth rate"),
    "k_kill": ("1/d", "maximal B-cell kill rate"),
    "f_loss": ("1", "loss of infused cells relative to distribution (1/(1+f_loss) reaches doseX)"),
    "TK50": ("cells", "Te2 at half-maximal kill"),
    "kt": ("1", "Hill coefficient of killing"),
    "kb1": ("1/d", "antigen signal production per B cell"),
    "kb2": ("1/d", "antigen signal clearance"),
    "um": ("1/d", "memory proliferation rate"),
    "km": ("1", "Hill coefficient of memory self-renewal"),
    "f_max": ("1", "maximal self-renewal fraction"),
    "ke": ("1", "Hill coefficient of effector proliferation"),
    "ue": ("1/d", "effector proliferation rate"),
    "N": ("1", "divisions within the Te2 stage"),
    "kex": ("1/d", "exhaustion rate"),
    "dm": ("1/d", "memory death rate"),
    "de1": ("1/d", "Te1 death rate"),
    "de2": ("1/d", "Te2 death rate"),
    "dx": ("1/d", "exhausted death rate"),
    "Bmax": ("cells", "B-cell (tumour) carrying capacity"),
    "kx": ("1", "Hill coefficient of exhaustion"),
    "rm": ("1/d", "memory regeneration from Te2"),
    "kr": ("1", "Hill coefficient of memory regeneration"),
    "fTm": ("1/d", "transfer rate of the distributing dose into Tm"),
    "fTe1": ("1/d", "transfer rate of the distributing dose into Te1"),
    "fTe2": ("1/d", "transfer rate of the distributing dose into Te2"),
    "fTx": ("1/d", "transfer rate of the distributing dose into Tx"),
}


def published_sets() -> dict[str, dict[str, float]]:
    """The 36 published parameter vectors, keyed ``CR1`` .. ``NR12``."""
    path = Path(__file__).with_name("kirouac2023_parameters.csv")
    with path.open(newline="") as fh:
        return {
            f"{row['group']}{row['patient']}": {k: float(row[k]) for k in PARAMETERS}
            for row in csv.DictReader(fh)
        }


def build() -> Model:
    sets = published_sets()
    cr1 = sets["CR1"]
    m = ModelBuilder(
        "kirouac2023",
        description="CAR-T memory/effector/exhausted phenotypes with an antigen-sensing toggle",
        reference="Kirouac DC et al. Nat Biotechnol 2023;41:1606. doi:10.1038/s41587-023-01687-x",
    )
    p = {
        name: m.parameter(
            name,
            cr1[name],
            unit,
            lower=0.0,
            upper=1.0 if name == "f_max" else float("inf"),
            scale="log",
            source=SOURCE,
            description=desc,
        )
        for name, (unit, desc) in PARAMETERS.items()
    }
    B0 = m.parameter(
        "B0",
        1e10,
        "cells",
        source="Kirouac 2023 stored runs (ICbase)",
        description="initial B cells",
    )
    Ba0 = m.parameter(
        "Ba0",
        1e10,
        "cells",
        source="Kirouac 2023 stored runs (ICbase)",
        description="initial antigen signal",
    )

    Tm = m.state("Tm", "cells", description="memory CAR-T")
    Te1 = m.state("Te1", "cells", description="early effector CAR-T")
    Te2 = m.state("Te2", "cells", description="late effector CAR-T")
    Tx = m.state("Tx", "cells", description="exhausted CAR-T")
    B = m.state("B", "cells", initial=B0, description="CD19+ B cells (tumour and normal)")
    Ba = m.state("Ba", "cells", initial=Ba0, description="B-cell antigen signal")
    dose = m.state("dose", "cells", dose_target=True, description="infused CAR-T cells")
    doseX = m.state("doseX", "cells", description="distributing CAR-T cells")

    # Antigen toggle (Hill functions of the antigen signal)
    hM = m.expression("hM", hill(Ba, p["B50"], p["km"]), "1", "toggle: memory differentiation")
    hE = m.expression("hE", hill(Ba, p["B50"], p["ke"]), "1", "toggle: effector proliferation")
    hX = m.expression("hX", hill(Ba, p["B50"], p["kx"]), "1", "toggle: exhaustion")
    hR = m.expression("hR", hill(Ba, p["B50"], p["kr"]), "1", "toggle: memory regeneration")
    Tm_, Te1_, Te2_, Tx_, B_ = (positive_part(v) for v in (Tm, Te1, Te2, Tx, B))
    um, fmax, rm = p["um"], p["f_max"], p["rm"]
    ue, kex = p["ue"], p["kex"]

    m.add_term(
        Tm,
        um * fmax * (1 - hM) * Tm_ - um * (1 - fmax * (1 - hM)) * Tm_ - p["dm"] * Tm_,
        label="self-renewal, differentiation, death",
    )
    m.add_term(Tm, p["fTm"] * doseX + rm * (1 - hR) * Te2, label="from dose; regeneration")
    m.add_term(
        Te1,
        2 * um * (1 - fmax * (1 - hM)) * Tm_ - ue * hE * Te1_ - p["de1"] * Te1_ + p["fTe1"] * doseX,
        label="from memory; proliferation; death",
    )
    m.add_term(
        Te2,
        ue * hE * Te1 * 2 ** p["N"]
        - kex * hX * Te2_
        - p["de2"] * Te2_
        + p["fTe2"] * doseX
        - rm * (1 - hR) * Te2,
        label="clonal burst; exhaustion; death; regeneration",
    )
    m.add_term(Tx, kex * hX * Te2_ - p["dx"] * Tx_ + p["fTx"] * doseX, label="exhaustion; death")
    m.add_term(B, p["uB"] * B_ * (1 - B / p["Bmax"]), label="growth")
    m.add_term(B, -p["k_kill"] * B * hill(positive_part(Te2), p["TK50"], p["kt"]), label="kill")
    m.add_term(Ba, p["kb1"] * B - p["kb2"] * Ba, label="antigen signal turnover")
    m.add_term(dose, -p["f_loss"] * dose - dose, label="loss and distribution")
    m.add_term(
        doseX,
        dose - (p["fTm"] + p["fTe1"] + p["fTe2"] + p["fTx"]) * doseX,
        label="distribution into phenotypes",
    )

    m.observable("CAR_total", Tm + Te1 + Te2 + Tx, "cells", "total CAR-T cells")
    m.observable("B_cells", B, "cells", "CD19+ B cells")
    for name, values in sets.items():
        m.parameter_set(name, values, note=f"Kirouac 2023 published set {name}")
    return m.build()
