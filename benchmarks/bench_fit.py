"""Exact gradients vs finite differences in a fit, and the main job's wall time.

1. The shared-parameter Mackensen fit (25 estimates, 5 subjects, synthetic virtual cohort)
   from the same start, once with the residual Jacobian from forward sensitivities (the
   package) and once with lmfit/scipy's 2-point finite differences; prints simulations,
   wall time and their ratios, and checks both reach the same OFV.
2. The main job (``python fits/mackensen2022_fit.py``, profiles included) timed as a whole
   against its 2-minute budget.

Run: ``python benchmarks/bench_fit.py``
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lmfit
import numpy as np

import pkpd_cart as pk
from pkpd_cart.estimation.fitting import Problem, fit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fits"))
import mackensen2022_fit as job  # noqa: E402


def finite_difference_fit(problem: Problem) -> tuple[float, float]:
    params = problem.lmfit_parameters()

    def residual(p):
        return problem.residuals_only(np.array([p[s.name].value for s in problem.specs]))

    start = time.perf_counter()
    res = lmfit.minimize(residual, params, method="least_squares", x_scale="jac", max_nfev=5000)
    seconds = time.perf_counter() - start
    x = np.array([res.params[s.name].value for s in problem.specs])
    return problem.evaluate(x)[2], seconds


def main() -> None:
    model = pk.load_model("sle_cart")
    data = pk.read_dataset(job.DEFAULT_DATA, model=model)
    errors = {k: v for k, v in job.ERRORS.items() if k in set(data.observations()["DVID"])}
    model.compile()  # JIT outside the timings

    exact = fit(model, data, estimate=job.SHARED, per_subject=job.PER_SUBJECT, error_models=errors)
    problem = Problem(model, data, job.SHARED, job.PER_SUBJECT, error_models=errors)
    fd_ofv, fd_seconds = finite_difference_fit(problem)
    n_par = len(problem.specs)
    print(
        f"fit: {n_par} estimates, {len(problem.subjects)} subjects, "
        f"{problem.n_records} records (synthetic virtual cohort)"
    )
    print(
        f"  exact Jacobian (sensitivities): {exact.n_simulations:5d} simulations, "
        f"{exact.seconds:6.2f} s, OFV {exact.ofv:.3f}"
    )
    print(
        f"  finite differences (2-point)  : {problem.n_simulations:5d} simulations, "
        f"{fd_seconds:6.2f} s, OFV {fd_ofv:.3f}"
    )
    print(
        f"  ratio FD / exact: {problem.n_simulations / exact.n_simulations:.1f}x "
        f"simulations, {fd_seconds / exact.seconds:.1f}x wall time; "
        f"OFV difference {fd_ofv - exact.ofv:+.3f}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "fits" / "mackensen2022_fit.py"),
                "--out",
                str(Path(tmp) / "fit"),
            ],
            check=True,
            capture_output=True,
        )
        seconds = time.perf_counter() - start
    print(
        f"main job (fit + profiles + report, new process): {seconds:.1f} s = "
        f"{seconds / 120:.2f} of the 120-s budget"
    )


if __name__ == "__main__":
    main()
