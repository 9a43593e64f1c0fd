"""Uncertainty beyond the covariance matrix: likelihood profiles, bootstrap, sampling.

* :func:`profile_likelihood` - for each estimate, fix it on a grid, re-fit the others and
  record the OFV; the 95% interval is where the OFV rises by 3.84 (chi-square, 1 df). A side
  that never rises that far within the search (or runs into a bound) is reported as open:
  the parameter is not identifiable from these data on that side.
* :func:`bootstrap_by_subject` - resample subjects with replacement and re-fit.
* :func:`sample_estimates` - parametric draws from the asymptotic normal distribution of
  the estimates (for the uncertainty of derived quantities).
* :func:`mcmc` - posterior sampling with lmfit + emcee (optional extra ``emcee``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pkpd_cart.errors import FitError

CHI2_95 = 3.841458820694124  # chi-square quantile, 1 degree of freedom, 95%


@dataclass(frozen=True)
class Profile:
    """Likelihood profile of one estimate.

    Attributes
    ----------
    name : str
        lmfit name of the parameter.
    internal : ndarray
        Fixed values on the estimation scale (log for log-scale parameters).
    values : ndarray
        The same on the natural scale.
    delta_ofv : ndarray
        OFV minus the minimum OFV.
    ci_low, ci_high : float
        95% profile-likelihood interval (natural scale); NaN where open.
    identifiable : bool
        Both sides of the interval were found.
    """

    name: str
    internal: np.ndarray
    values: np.ndarray
    delta_ofv: np.ndarray
    ci_low: float
    ci_high: float
    identifiable: bool
    note: str


def _crossing(xs: list[float], ds: list[float], level: float) -> float | None:
    for (x0, d0), (x1, d1) in zip(zip(xs, ds), zip(xs[1:], ds[1:])):
        if d0 <= level < d1:
            return x0 + (level - d0) * (x1 - x0) / (d1 - d0)
    return None


def profile_likelihood(
    result,
    names: Sequence[str] | None = None,
    max_steps: int = 8,
    level: float = CHI2_95,
    max_nfev: int = 60,
    executor=None,
) -> dict[str, Profile]:
    """Profiles of the given estimates (lmfit names; default all) of a :class:`FitResult`.

    ``executor`` runs the profiles in parallel: a number of local processes, or a Dask
    client (see :mod:`pkpd_cart.simulation.executor`).
    """
    from functools import partial

    from pkpd_cart.simulation.executor import get_executor

    specs = {s.name for s in result.problem.specs}
    names = list(names) if names is not None else [s.name for s in result.problem.specs]
    for name in names:
        if name not in specs:
            raise FitError(f"no estimated parameter '{name}' to profile")
    one = partial(_profile_one, result, max_steps=max_steps, level=level, max_nfev=max_nfev)
    return dict(zip(names, get_executor(executor).map(one, names)))


def _profile_one(result, name: str, max_steps: int, level: float, max_nfev: int) -> Profile:
    """The profile of one estimate (refits warm-started from the neighbouring point)."""
    from pkpd_cart.estimation.fitting import _fit_result

    problem = result.problem
    specs = {s.name: k for k, s in enumerate(problem.specs)}
    base_params = problem.lmfit_parameters()
    x_hat, ofv_hat = result.x, result.ofv
    k = specs[name]
    se = result.parameters["se_internal"].iloc[k]
    step = 0.6 * se if np.isfinite(se) and se > 0 else 0.15
    step = float(np.clip(step, 0.01, 0.5))
    lo_bound, hi_bound = base_params[name].min, base_params[name].max
    points = {0.0: 0.0}
    open_sides = []
    for direction in (-1, 1):
        x_prev = x_hat.copy()
        reached = False
        for i in range(1, max_steps + 1):
            value = x_hat[k] + direction * i * step
            if not lo_bound <= value <= hi_bound:
                break
            params = base_params.copy()
            params[name].set(value=value, vary=False)
            start = x_prev.copy()
            start[k] = value
            res = _fit_result(problem, params, start, max_nfev)
            if res is None:
                break
            x_new = np.array([res.params[s.name].value for s in problem.specs])
            delta = problem.evaluate(x_new)[2] - ofv_hat
            points[direction * i * step] = delta
            x_prev = x_new
            if delta > level + 1.0:
                reached = True
                break
        if (
            not reached
            and max((d for o, d in points.items() if o * direction > 0), default=0.0) <= level
        ):
            open_sides.append("lower" if direction < 0 else "upper")
    offsets = sorted(points)
    deltas = [points[o] for o in offsets]
    internal = x_hat[k] + np.array(offsets)
    spec = problem.specs[k]
    natural = np.array([spec.to_natural(v) for v in internal])
    left = [(o, d) for o, d in zip(offsets, deltas) if o <= 0][::-1]
    right = [(o, d) for o, d in zip(offsets, deltas) if o >= 0]
    lo = _crossing([o for o, _ in left], [d for _, d in left], level)
    hi = _crossing([o for o, _ in right], [d for _, d in right], level)
    ci_low = spec.to_natural(x_hat[k] + lo) if lo is not None else float("nan")
    ci_high = spec.to_natural(x_hat[k] + hi) if hi is not None else float("nan")
    if min(deltas) < -0.5:
        note = "profile found a lower OFV: the fit had not converged to the minimum"
    elif open_sides:
        note = (
            f"not identifiable: the OFV does not rise by {level:.2f} on the "
            f"{' and '.join(open_sides)} side"
        )
    else:
        note = ""
    return Profile(name, internal, natural, np.array(deltas), ci_low, ci_high, not open_sides, note)


def sample_estimates(result, n: int = 200, seed: int = 0) -> np.ndarray:
    """``n`` draws of the internal estimates from N(x_hat, covariance) (rows)."""
    if result.covariance is None:
        raise FitError("no covariance matrix: cannot sample the estimates")
    cov = np.nan_to_num(result.covariance, nan=0.0)
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(result.x, cov, size=n, check_valid="ignore")


def bootstrap_by_subject(result, n: int = 100, seed: int = 0, **fit_kwargs) -> pd.DataFrame:
    """Re-fit ``n`` data sets made by resampling subjects with replacement.

    Returns one row per replicate with the natural-scale estimates of the shared
    parameters and sigmas (per-subject parameters do not carry over between resamples).
    """
    from pkpd_cart.data.dataset import Dataset
    from pkpd_cart.estimation.fitting import fit

    problem = result.problem
    data = problem.dataset
    subjects = [s.id for s in problem.subjects]
    rng = np.random.default_rng(seed)
    shared = [s for s in problem.specs if s.subject is None]
    per_subject = sorted({s.quantity for s in problem.specs if s.subject is not None})
    estimate = [s.quantity for s in shared if s.kind == "model"]
    initial = {
        s.quantity: s.to_natural(v) for s, v in zip(problem.specs, result.x) if s.subject is None
    }
    rows = []
    for b in range(n):
        chosen = rng.choice(subjects, size=len(subjects), replace=True)
        frames = []
        for j, sid in enumerate(chosen):
            part = data.frame[data.frame["ID"] == sid].copy()
            part["ID"] = f"{sid}#{j}"
            frames.append(part)
        resampled = Dataset(
            pd.concat(frames, ignore_index=True),
            f"{data.source} (bootstrap {b})",
            data.header,
            data.converted_to,
        )
        try:
            rep = fit(
                problem.model,
                resampled,
                estimate=estimate,
                per_subject=per_subject,
                error_models=problem.error_models,
                blq=problem.blq,
                initial=initial,
                options=problem.options,
                **fit_kwargs,
            )
        except FitError:
            rows.append({"replicate": b, "ok": False})
            continue
        row = {"replicate": b, "ok": True, "ofv": rep.ofv}
        for r in rep.parameters.itertuples():
            if r.subject == "all":
                row[r.quantity] = r.estimate
        rows.append(row)
    return pd.DataFrame(rows)


def mcmc(result, steps: int = 1000, walkers: int | None = None, burn: int = 200, seed: int = 0):
    """Posterior samples (flat priors within bounds) with lmfit's ``emcee`` method.

    Needs the optional ``emcee`` package. Returns the lmfit MinimizerResult, whose
    ``flatchain`` holds the samples on the estimation scale.
    """
    try:
        import emcee  # noqa: F401
    except ImportError:
        raise FitError("MCMC needs the emcee package: pip install emcee") from None
    import lmfit

    problem = result.problem
    params = problem.lmfit_parameters()
    for s, v in zip(problem.specs, result.x):
        params[s.name].value = float(v)

    def log_likelihood(p):
        x = np.array([p[s.name].value for s in problem.specs])
        return -0.5 * problem.evaluate(x)[2]

    nwalkers = walkers or max(2 * len(problem.specs) + 2, 10)
    return lmfit.minimize(
        log_likelihood,
        params,
        method="emcee",
        steps=steps,
        burn=burn,
        nwalkers=nwalkers,
        is_weighted=True,
        float_behavior="posterior",
        seed=seed,
        progress=False,
    )
