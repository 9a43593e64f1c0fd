"""Population fits by FOCE-I: ACOP 2016 one-compartment bolus (120 subjects, 2276
observations) and pheno (59 neonates), with the covariance step.

Prints the wall time of each stage and the OFV beside NONMEM's and nlmixr2's. Published
anchors, on their machines (../shared/research/nlme/README.md): NONMEM 7.4.3 ADVAN13
runODE001 36.2 s estimation + 8.3 s covariance, OFV 20058.504; nlmixr2 4.0.0 FOCEi
0.35 s + 0.35 s, OFV 20058.555; NONMEM 7.4.2 pheno_real 0.32 s + 0.28 s, OFV 586.276.
The baseline measured in the same run is one plain simulation of every subject (the unit
of work of an OFV evaluation), so that the ratios survive a noisy machine.

    python benchmarks/bench_nlme.py [--executor N] [--only pheno|acop]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import lmfit  # noqa: F401 - imported before timing: a one-off 1-2 s that fits pay once
import numpy as np
import sympy as sp

import pkpd_cart as pk
from pkpd_cart.model.population_model import PopulationModel, indicator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def acop() -> tuple[PopulationModel, pk.Dataset]:
    """runODE001: CL = exp(th1 + eta1), V = exp(th2 + eta2), proportional SD th3."""
    pop = PopulationModel(pk.load_model("pk_1cmt_iv"), name="acop_runODE001")
    lcl, lv = pop.theta("lCL", 1.6), pop.theta("lV", 4.5)
    e1, e2 = pop.eta("eta_CL", 0.15), pop.eta("eta_V", 0.15)
    pop.individual("CL", sp.exp(lcl + e1))
    pop.individual("V", sp.exp(lv + e2))
    pop.error("C", pk.ErrorModel.proportional(0.3))
    return pop, pk.read_dataset(ROOT / "tests" / "data" / "nlme" / "acop_bolus_1cpt.csv")


def pheno() -> tuple[PopulationModel, pk.Dataset]:
    pop = PopulationModel(pk.load_model("pk_1cmt_iv"), name="pheno_real")
    th1 = pop.theta("THETA1", 0.00469307, lower=0)
    th2 = pop.theta("THETA2", 1.00916, lower=0)
    th3 = pop.theta("THETA3", 0.1, lower=-0.99)
    e1, e2 = pop.eta("ETA1", 0.0309626), pop.eta("ETA2", 0.031128)
    wgt, apgr = pop.covariate("WGT"), pop.covariate("APGR")
    pop.individual("CL", th1 * wgt * sp.exp(e1))
    pop.individual("V", th2 * wgt * (1 + th3 * indicator(apgr < 5)) * sp.exp(e2))
    pop.error("C", pk.ErrorModel.proportional(math.sqrt(0.0130865)))
    path = ROOT / "tests" / "data" / "nlme" / "pheno.csv"
    data = pk.read_dataset(path, covariates=["WGT", "APGR"])
    return pop, data


def baseline(pop: PopulationModel, data: pk.Dataset, repeats: int = 5) -> float:
    """Seconds for one plain simulation of every subject at the initial estimates."""
    from pkpd_cart.estimation.population_fit import DEFAULT_OPTIONS, subjects_from_dataset

    subjects = subjects_from_dataset(pop, data)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in subjects:
            p = pop.individual_parameters(np.zeros(len(pop.etas)), s.covariates)
            pk.simulate(pop.model, s.times, params=p, doses=s.doses, options=DEFAULT_OPTIONS)
        best = min(best, time.perf_counter() - t0)
    return best


def run(name: str, pop: PopulationModel, data: pk.Dataset, reference: dict, executor) -> None:
    pop.model.compile()
    base = baseline(pop, data)
    t0 = time.perf_counter()
    result = pk.fit_population(pop, data, method="FOCEI", executor=executor)
    wall = time.perf_counter() - t0
    est, cov = result.timings["estimation"], result.timings["covariance"]
    print(f"\n{name}: {result.n_subjects} subjects, {result.n_observations} observations")
    print(f"  OFV {result.ofv:.3f}   " + "   ".join(f"{k} {v:.3f}" for k, v in reference.items()))
    print(
        f"  estimation {est:.2f} s ({result.n_iterations} BFGS iterations, "
        f"{result.n_evaluations} OFV evaluations), covariance {cov:.2f} s, total {wall:.2f} s"
    )
    print(
        f"  baseline (one plain simulation of every subject): {base * 1e3:.2f} ms; the fit "
        f"costs {wall / base:.0f} baselines, {result.n_evaluations} OFV evaluations"
    )
    print(result.summary())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", type=int, default=None, help="local processes")
    parser.add_argument("--only", choices=["pheno", "acop"], default=None)
    args = parser.parse_args(argv)
    if args.only != "acop":
        run(
            "pheno (NONMEM 7.4.2 FOCE-I, covariates, $COV)",
            *pheno(),
            {"NONMEM": 586.276},
            args.executor,
        )
    if args.only != "pheno":
        run(
            "ACOP 2016 bolus 1-cmt (runODE001 / nlmixr2 U001)",
            *acop(),
            {"NONMEM": 20058.504, "nlmixr2": 20058.555},
            args.executor,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
