"""Calibrate a population (typical values and log-normal variability) to published summaries.

When only cohort summaries are public (a mean and SD of a peak day, a range, a fraction of
responders), the model is calibrated by simulating a virtual population with *fixed*
standard-normal draws ``eta`` and matching the same summaries computed on it, weighted by
the published uncertainty:

    minimise  sum_k ((s_k(theta, omega; eta) - y_k) / sigma_k)^2

with lmfit (``least_squares``; typical values on the log scale). Because ``eta`` is fixed
the objective is a smooth, reproducible function of the parameters. Simulation failures
of individual virtual patients are counted and reported, never fatal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import lmfit
import numpy as np
import pandas as pd

from pkpd_cart.errors import FitError
from pkpd_cart.model.modelling import Model
from pkpd_cart.simulation.population import (
    PopulationRun,
    individual_parameters,
    simulate_population,
    standard_normal_draws,
)
from pkpd_cart.simulation.solver import Dose, SolverOptions


@dataclass(frozen=True)
class Target:
    """A published summary ``value`` with uncertainty ``sigma`` (same unit).

    ``kind="gaussian"`` contributes ``(simulated - value) / sigma``; ``kind="residual"``
    means the summary function already returns a residual (e.g. the signed square root of
    -2 log-likelihood of 5 responders out of 5), which is used as is.
    """

    name: str
    value: float
    sigma: float
    source: str = ""
    note: str = ""
    kind: str = "gaussian"


@dataclass(frozen=True)
class Estimate:
    """A parameter to calibrate: initial value and bounds (natural scale)."""

    value: float
    lower: float
    upper: float


@dataclass
class SummaryFitResult:
    """Outcome of :func:`fit_population_summaries`.

    Attributes
    ----------
    estimates : DataFrame
        One row per estimated quantity: ``estimate``, ``se`` and 95% Wald interval on the
        natural scale (typical values are estimated on the log scale and back-transformed),
        ``rse_pct``.
    comparison : DataFrame
        Published vs simulated summaries with their weighted residuals.
    minimizer_result : lmfit.minimizer.MinimizerResult
    run : PopulationRun
        The virtual population at the estimates.
    n_failed_simulations : int
        Individual simulations that failed during the whole fit (penalised, counted).
    """

    estimates: pd.DataFrame
    comparison: pd.DataFrame
    minimizer_result: lmfit.minimizer.MinimizerResult = field(repr=False)
    run: PopulationRun = field(repr=False)
    n_failed_simulations: int
    n_evaluations: int
    seconds: float
    covariance_ok: bool
    warnings: list[str]


def _param_name(kind: str, name: str) -> str:
    return f"log_{name}" if kind == "typical" else f"omega_{name}"


def fit_population_summaries(
    model: Model,
    typical: Mapping[str, Estimate],
    omega: Mapping[str, Estimate],
    summaries: Callable[[PopulationRun], Mapping[str, float]],
    targets: Iterable[Target],
    times: Iterable[float],
    doses: Iterable[Dose] | Callable[[pd.Series], Iterable[Dose]] = (),
    n: int = 200,
    seed: int = 2022,
    options: SolverOptions | None = None,
    fixed: Mapping[str, float] | None = None,
    max_nfev: int = 400,
    diff_step: float = 1e-3,
) -> SummaryFitResult:
    """Fit typical values and omegas so that population summaries match ``targets``.

    ``summaries(run)`` returns one simulated value per target name. ``fixed`` overrides
    model defaults for parameters that are not estimated. ``diff_step`` is the finite-
    difference step of the Jacobian (relative, at least absolute on the log scale); it
    must be well above the solver tolerance, or solver noise swamps the derivatives and
    the standard errors.
    """
    targets = list(targets)
    times = np.asarray(list(times), dtype=float)
    options = options or SolverOptions(rtol=1e-6, atol=1e-6)
    eta = standard_normal_draws(n, list(omega), seed)
    params = lmfit.Parameters()
    for name, est in typical.items():
        params.add(
            _param_name("typical", name),
            value=math.log(est.value),
            min=math.log(est.lower),
            max=math.log(est.upper),
        )
    for name, est in omega.items():
        params.add(_param_name("omega", name), value=est.value, min=est.lower, max=est.upper)
    counters = {"failed": 0, "nfev": 0}
    penalty = 10.0  # residual given to a target the population cannot produce (e.g. no return)

    def population(p: lmfit.Parameters) -> PopulationRun:
        tv = dict(fixed or {})
        tv.update({name: math.exp(p[_param_name("typical", name)].value) for name in typical})
        om = {name: p[_param_name("omega", name)].value for name in omega}
        individuals = individual_parameters(model, tv, om, eta)
        return simulate_population(model, individuals, times, doses=doses, options=options)

    def residuals(p: lmfit.Parameters) -> np.ndarray:
        counters["nfev"] += 1
        run = population(p)
        counters["failed"] += run.n_failed
        sim = summaries(run)
        out = []
        for tg in targets:
            value = sim.get(tg.name, float("nan"))
            if not np.isfinite(value):
                out.append(penalty)
            elif tg.kind == "residual":
                out.append(value)
            else:
                out.append((value - tg.value) / tg.sigma)
        # failed members are penalised so the optimiser moves away from them
        out.append(3.0 * run.n_failed / max(n, 1))
        return np.asarray(out, dtype=float)

    start = time.perf_counter()
    try:
        # residuals are already divided by the published uncertainty: the covariance is
        # (J'J)^-1 itself, not rescaled by the reduced chi-square (scale_covar=False)
        result = lmfit.minimize(
            residuals,
            params,
            method="least_squares",
            max_nfev=max_nfev,
            diff_step=diff_step,
            scale_covar=False,
        )
    except Exception as exc:  # lmfit/scipy internals: report as our own error
        raise FitError(
            f"model '{model.name}': calibration failed: {type(exc).__name__}: {exc}"
        ) from exc
    seconds = time.perf_counter() - start
    run = population(result.params)
    sim = summaries(run)
    warnings = []
    covariance_ok = (
        result.covar is not None
        and bool(np.all(np.isfinite(result.covar)))
        and bool(np.all(np.diag(result.covar) > 0))
    )
    if not covariance_ok:
        warnings.append(
            "covariance matrix could not be estimated (singular Jacobian): "
            "standard errors are not available; some parameters are not "
            "identifiable from these summaries"
        )
    rows = []
    for kind, table in (("typical", typical), ("omega", omega)):
        for name in table:
            par = result.params[_param_name(kind, name)]
            se = par.stderr if covariance_ok and par.stderr is not None else float("nan")
            if kind == "typical":
                est = math.exp(par.value)
                lo, hi = math.exp(par.value - 1.96 * se), math.exp(par.value + 1.96 * se)
                se_nat = est * se  # delta method
                rse = 100 * se  # RSE of a log-scale estimate, in % of the natural value
            else:
                est, se_nat = par.value, se
                lo, hi = par.value - 1.96 * se, par.value + 1.96 * se
                rse = 100 * se / abs(par.value) if par.value else float("nan")
            rows.append(
                {
                    "quantity": f"{kind} {name}",
                    "parameter": name,
                    "kind": kind,
                    "unit": model.parameters[name].unit if kind == "typical" else "SD of log",
                    "estimate": est,
                    "se": se_nat,
                    "rse_pct": rse,
                    "ci95_low": lo,
                    "ci95_high": hi,
                    "initial": table[name].value,
                    "at_bound": bool(
                        np.isclose(par.value, par.min) or np.isclose(par.value, par.max)
                    ),
                }
            )
    estimates = pd.DataFrame(rows)
    poorly = estimates.loc[estimates["rse_pct"] > 100, "quantity"].tolist()
    if poorly:
        warnings.append(
            f"RSE above 100% for {', '.join(poorly)}: not identifiable from these summaries"
        )
    if estimates["at_bound"].any():
        names = ", ".join(estimates.loc[estimates["at_bound"], "quantity"])
        warnings.append(f"estimate(s) at a bound: {names}")
    comparison = pd.DataFrame(
        [
            {
                "summary": tg.name,
                "published": tg.value if tg.kind == "gaussian" else float("nan"),
                "sigma": tg.sigma if tg.kind == "gaussian" else float("nan"),
                "simulated": sim.get(tg.name, float("nan")),
                "weighted_residual": (sim.get(tg.name, float("nan")) - tg.value) / tg.sigma
                if tg.kind == "gaussian"
                else sim.get(tg.name, float("nan")),
                "source": tg.source,
                "note": tg.note,
            }
            for tg in targets
        ]
    )
    return SummaryFitResult(
        estimates,
        comparison,
        result,
        run,
        counters["failed"],
        counters["nfev"],
        seconds,
        covariance_ok,
        warnings,
    )
