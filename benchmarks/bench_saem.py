"""Population fits by SAEM: ACOP 2016 one-compartment bolus (120 subjects, 2276
observations) and pheno with its covariates (59 neonates).

Prints the wall time, the estimates beside the published ones and the time in units of a
baseline measured in the same run (one plain simulation of every subject), so that the
ratio survives a noisy machine. Published anchors (../shared/research/nlme/README.md):
nlmixr2 4.0.0 SAEM on ACOP 14.6 s (lCl 1.3608, lVc 4.2041, prop.err 0.19777, omega
eta.Cl 0.07309, eta.Vc 0.09128); NONMEM 7.5.1 SAEM on pheno without covariates 31 s.

    python benchmarks/bench_saem.py [--only acop|pheno] [--k1 300] [--k2 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time

from bench_nlme import acop, baseline, pheno

from pkpd_cart.estimation.saem import SaemOptions, fit_saem

PUBLISHED = {
    "acop": "nlmixr2 SAEM: lCL 1.36080  lV 4.20414  omega CL 0.07309  V 0.09128  prop SD 0.19777"
    " (FOCE-I NONMEM: 1.36751 4.20636 0.07258 0.09143 0.19804)",
    "pheno": "NONMEM FOCE-I (pheno_real): THETA 0.00470 0.98426 0.15892  omega 0.02935 0.02791"
    "  prop var 0.013241",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["acop", "pheno"], default=None)
    parser.add_argument("--k1", type=int, default=300)
    parser.add_argument("--k2", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, build in (("acop", acop), ("pheno", pheno)):
        if args.only and name != args.only:
            continue
        pop, data = build()
        unit = baseline(pop, data)
        started = time.perf_counter()
        fit = fit_saem(pop, data, SaemOptions(k1=args.k1, k2=args.k2, seed=args.seed))
        seconds = time.perf_counter() - started
        print(fit.summary())
        print(f"published: {PUBLISHED[name]}")
        print(
            f"{name}: SAEM {seconds:.1f} s = {seconds / unit:.0f} baselines "
            f"(baseline: one plain simulation of every subject, {unit * 1e3:.1f} ms)\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
