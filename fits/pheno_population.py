"""Population fits of the phenobarbital neonates (REAL public data) by FOCE-I and by SAEM,
with their population reports and a comparison with NONMEM.

The data are the classic NONMEM example (Grasela and Donn 1985, Dev Pharmacol Ther 8:374;
59 neonates, 155 concentrations; converted in ``tests/data/nlme/pheno.csv``, provenance in
``tests/data/nlme/README.md``). The model is NONMEM's ``pheno_real``: one compartment,
``CL = THETA1 WGT exp(ETA1)``, ``V = THETA2 WGT (1 + THETA3 [APGR < 5]) exp(ETA2)``,
proportional error. NONMEM 7.4.2 FOCE-I (``pheno_real.ext``): OFV 586.276, THETA 0.00470,
0.984, 0.159, OMEGA 0.0293, 0.0279, SIGMA 0.0131.

    python fits/pheno_population.py [--out fits/reports] [--replicates 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd
import sympy as sp

import pkpd_cart as pk
from pkpd_cart.model.population_model import PopulationModel, indicator

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "nlme" / "pheno.csv"
NONMEM_FOCEI = {  # pheno_real.ext, final estimates (sigma as SD)
    "THETA1": 0.00469555,
    "THETA2": 0.984258,
    "THETA3": 0.158920,
    "OMEGA(ETA1)": 0.0293508,
    "OMEGA(ETA2)": 0.0279161,
    "SIGMA(C:prop)": math.sqrt(0.0130865),
}


def pheno_population() -> PopulationModel:
    """NONMEM's pheno_real with its initial estimates."""
    pop = PopulationModel(pk.load_model("pk_1cmt_iv"), name="pheno_real")
    th1 = pop.theta("THETA1", 0.00469307, lower=0, unit="L/h/kg")
    th2 = pop.theta("THETA2", 1.00916, lower=0, unit="L/kg")
    th3 = pop.theta("THETA3", 0.1, lower=-0.99, description="V shift if APGR < 5")
    e1, e2 = pop.eta("ETA1", 0.0309626), pop.eta("ETA2", 0.031128)
    wgt, apgr = pop.covariate("WGT"), pop.covariate("APGR")
    pop.individual("CL", th1 * wgt * sp.exp(e1))
    pop.individual("V", th2 * wgt * (1 + th3 * indicator(apgr < 5)) * sp.exp(e2))
    pop.error("C", pk.ErrorModel.proportional(math.sqrt(0.0130865)))
    return pop


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "fits" / "reports")
    parser.add_argument("--replicates", type=int, default=200, help="for VPC and NPDE")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.replicates < 0 or args.replicates == 1:
        parser.error("--replicates must be 0 or >= 2")
    data = pk.read_dataset(DATA, covariates=["WGT", "APGR"])
    pop = pheno_population()
    note = "real data: Grasela and Donn 1985, the NONMEM phenobarbital example"
    fits = {}
    for method in ("FOCEI", "SAEM"):
        started = time.perf_counter()
        if method == "FOCEI":
            fit = pk.fit_population(pop, data, method="FOCEI")
        else:  # ceil(50 / 59) = 1 chain by default; 5 as NONMEM's ISAMPLE=5
            fit = pk.fit_saem(pop, data, pk.SaemOptions(chains=5, seed=args.seed))
        out = pk.write_population_report(
            fit,
            data,
            args.out / f"pheno_{method.lower()}",
            f"{method} fit of pheno_real (phenobarbital in neonates)",
            {"model": "NONMEM pheno_real (one compartment, WGT and APGR covariates)"},
            n_replicates=args.replicates,
            seed=args.seed,
            data_note=note,
        )
        fits[method] = fit
        print(f"{method}: {time.perf_counter() - started:.1f} s, report {out / 'report.md'}")
    columns = {"NONMEM FOCE-I": NONMEM_FOCEI}
    for method, label in (("FOCEI", "FOCE-I"), ("SAEM", "SAEM")):
        p = fits[method].parameters.set_index("name")
        columns[label] = p["estimate"].to_dict()
        columns[f"{label} SE"] = p["se"].to_dict()
    table = pd.DataFrame(columns)
    print(table.to_string(float_format=lambda v: f"{v:.5g}"))
    saem = fits["SAEM"]
    print(
        f"OFV: NONMEM FOCE-I 586.276; FOCE-I {fits['FOCEI'].ofv:.3f}; SAEM by importance "
        f"sampling {saem.ofv:.3f} (MC SE {saem.minus2ll_se:.3f}), FOCE-I OFV at the SAEM "
        f"estimates {saem.ofv_focei:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
