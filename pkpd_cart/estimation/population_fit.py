"""Population (mixed-effects) fits: FOCE-I, FOCE, FO and LAPLACE, as NONMEM runs them.

:func:`fit_population` estimates the fixed effects (theta), the covariance of the random
effects (Omega) and the residual-error sigmas of a
:class:`~pkpd_cart.model.population_model.PopulationModel` by minimising NONMEM's
objective function value (OFV: -2 log-likelihood without ``N log 2 pi``), the sum of the
per-subject contributions of :mod:`pkpd_cart.estimation.conditional`.

Outer problem (:mod:`pkpd_cart.estimation.outer`). A BFGS quasi-Newton loop on an
unconstrained vector: bounded thetas through log/logit transforms, each free Omega block
through its Cholesky factor with a log diagonal, sigmas on the log scale. Its gradient is
a central difference of the marginal OFV with every subject's EBEs re-optimised from the
current ones (NONMEM's outer gradient is also numerical); see ``docs/population-fits.md``
for the measurements behind that choice. The ``2 n`` points of a gradient are independent
and run through the package's executor.

Covariance step (:mod:`pkpd_cart.estimation.covariance`): NONMEM's ``$COV``, the
sandwich ``R^-1 S R^-1`` by default, ``2 R^-1`` or ``4 S^-1`` on request.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from pkpd_cart.data.dataset import Dataset
from pkpd_cart.errors import FitError, PkpdCartWarning
from pkpd_cart.estimation.conditional import METHODS
from pkpd_cart.estimation.covariance import COVARIANCE_METHODS, covariance_step
from pkpd_cart.estimation.outer import Layout, quasi_newton
from pkpd_cart.estimation.population_objective import PopulationObjective, subjects_from_dataset
from pkpd_cart.estimation.population_result import (
    PopulationFitResult,
    assemble,
    lmfit_parameters,
)
from pkpd_cart.model.population_model import PopulationModel
from pkpd_cart.simulation.solver import SolverOptions

DEFAULT_OPTIONS = SolverOptions()  # rtol 1e-8, atol 1e-10 (see fit_population)

__all__ = [
    "DEFAULT_OPTIONS",
    "PopulationFitResult",
    "PopulationObjective",
    "covariance_step",
    "fit_population",
    "subjects_from_dataset",
]


def _parts(layout: Layout, x: np.ndarray):
    """``(theta by name, Omega, sigma by key)`` of a natural vector."""
    theta, omega, _ = layout.parts(x)
    sigma = {e.index: float(x[k]) for k, e in enumerate(layout.entries) if e.kind == "sigma"}
    return dict(zip(layout.pop.thetas, theta)), omega, sigma


def fit_population(
    population: PopulationModel,
    data: Dataset,
    method: str = "FOCEI",
    covariance: str | None = "sandwich",
    options: SolverOptions | None = None,
    executor=None,
    max_iterations: int = 500,
    ofv_tolerance: float = 1e-6,
) -> PopulationFitResult:
    """Fit a population model by ``"FOCEI"`` (default), ``"FOCE"``, ``"FO"`` or
    ``"LAPLACE"``.

    Parameters
    ----------
    covariance : ``"sandwich"`` (R^-1 S R^-1, NONMEM's default), ``"R"``, ``"S"``,
        ``"lin"`` (the linearised Fisher information at the EBEs, as Monolix and nlmixr2's
        linFim: no second differences of the OFV, so O(n_eta) simulations instead of
        O(n^2) EBE problems; mu-referenced models) or None. With priors, ``"sandwich"``
        becomes ``"R"``, and ``"lin"`` adds the priors' curvature.
    options : ODE solver settings (default ``SolverOptions()``: BDF, rtol 1e-8, atol 1e-10
        in state units). The OFV is differentiated numerically; on pheno, rtol 1e-8 and
        1e-10 give the same estimates and SEs to 5 digits, at half the cost.
    executor : None, a number of local processes, or a Dask client / address; the points of
        each numerical gradient and of the covariance step are evaluated through it.
    max_iterations : outer iterations; 0 evaluates the OFV at the initial values (NONMEM's
        ``MAXEVAL=0``) and still computes EBEs and diagnostics.
    ofv_tolerance : the outer iterations stop when the OFV decrease the quasi-Newton model
        predicts is below this (OFV units).
    """
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise FitError(f"unknown estimation method {method!r}; choose one of {', '.join(METHODS)}")
    method = method.upper()
    if covariance not in COVARIANCE_METHODS:
        raise FitError(
            f"unknown covariance method {covariance!r}; choose one of 'sandwich', 'R', 'S', "
            "'lin' or None"
        )
    if not isinstance(population, PopulationModel):
        raise FitError(f"fit_population needs a PopulationModel, not {type(population).__name__}")
    if not isinstance(data, Dataset):
        raise FitError(
            f"fit_population needs a Dataset (pk.read_dataset), not {type(data).__name__}"
        )
    if options is not None and not isinstance(options, SolverOptions):
        raise FitError(f"options must be a pk.SolverOptions, not {type(options).__name__}")
    if not (isinstance(ofv_tolerance, (int, float)) and ofv_tolerance > 0):
        raise FitError(f"ofv_tolerance must be a positive number, not {ofv_tolerance!r}")
    if not isinstance(max_iterations, int) or max_iterations < 0:
        raise FitError(f"max_iterations must be a non-negative integer, not {max_iterations!r}")
    from pkpd_cart.errors import ModelDefinitionError

    try:
        population.validate(for_estimation=True)
    except ModelDefinitionError as exc:
        raise FitError(str(exc)) from None
    options = options or DEFAULT_OPTIONS
    prior_note = None
    if population.priors and covariance == "sandwich":
        # the S matrix holds the data's scores only: with priors, the curvature of the
        # posterior (R, priors included) is the covariance
        covariance = "R"
        prior_note = "with priors the covariance is 2 R^-1 (R includes the priors)"
    if population.priors and method == "FO":
        raise FitError("priors need method FOCEI, FOCE or LAPLACE, not FO")
    subjects = subjects_from_dataset(population, data)
    if method == "FO" and any(s.censored.any() for s in subjects):
        raise FitError("records below the LLOQ (M3) need method FOCEI, FOCE or LAPLACE, not FO")
    objective = PopulationObjective(population, subjects, method, options, executor)
    try:
        layout = objective.layout
        x0 = layout.natural()
        timings = {}
        t0 = time.perf_counter()

        u0 = layout.to_u(x0)

        def ofv_at(u: np.ndarray) -> float:
            """OFV (plus the priors' -2 log) at u; the EBEs found become the next warm
            start."""
            x = layout.from_u(u, x0)
            total, results = objective.evaluate(x)
            if not results or not math.isfinite(total):
                return math.inf
            objective.etas = np.array([r.eta for r in results])
            return total + objective.prior(x)

        def gradient_at(u: np.ndarray, with_curvature: bool = False):
            """Central differences of the OFV in u (EBEs re-optimised from the current ones);
            with the centre point, also the diagonal second differences."""
            steps = 1e-4 * np.maximum(1.0, np.abs(u))
            plus, minus = [], []
            for k in range(len(u)):
                du = u.copy()
                du[k] += steps[k]
                plus.append(layout.from_u(du, x0))
                du[k] -= 2 * steps[k]
                minus.append(layout.from_u(du, x0))
            up, down = objective.evaluate_pairs(plus, minus, objective.etas)
            f_plus = np.array([o[0].sum() + objective.prior(x) for o, x in zip(up, plus)])
            f_minus = np.array([o[0].sum() + objective.prior(x) for o, x in zip(down, minus)])
            g = (f_plus - f_minus) / (2 * steps)
            if not with_curvature:
                return g, None
            f0 = ofv_at(u)
            return g, (f_plus - 2 * f0 + f_minus) / steps**2

        message = "evaluated at the initial estimates (max_iterations=0)"
        success = True
        n_iter = 0
        x_hat = x0
        if max_iterations > 0 and len(u0):
            u_hat, n_iter, success, message = quasi_newton(
                ofv_at, gradient_at, u0, max_iterations, ofv_tolerance
            )
            x_hat = layout.from_u(u_hat, x0)
        timings["estimation"] = time.perf_counter() - t0

        # final conditional estimates at x_hat
        total, results = objective.evaluate(x_hat)
        if not results:
            raise FitError("the final estimates give a non-positive-definite Omega")
        objective.etas = np.array([r.eta for r in results])

        fit_warnings = []
        if objective.failures:
            fit_warnings.append(
                f"{objective.failures} subject evaluations failed and were penalised; first: "
                f"{objective.failure_messages[0] if objective.failure_messages else ''}"
            )
        if not success:
            fit_warnings.append(f"the outer optimiser did not report success: {message}")

        t1 = time.perf_counter()
        cov, R, S, cov_used = None, None, None, None
        if covariance == "lin" and layout.free and max_iterations > 0:
            from pkpd_cart.estimation.saem_information import linearised_covariance

            fitted = population.with_values(*_parts(layout, x_hat))
            try:  # e.g. a model that is not mu-referenced: no SEs, the fit is kept
                cov, _, reason = linearised_covariance(
                    fitted, data, objective.etas, Layout(fitted), objective.prior
                )
            except FitError as exc:
                cov, reason = None, str(exc)
            cov_used = "linearised Fisher information (lin)" + (
                ", priors included" if population.priors else ""
            )
            if reason:
                fit_warnings.append(f"no standard errors: {reason}")
                cov_used = None
        elif covariance is not None and layout.free and max_iterations > 0:
            cov, R, S, cov_used, cov_warn = covariance_step(objective, x_hat, covariance)
            fit_warnings += cov_warn
        timings["covariance"] = time.perf_counter() - t1

        result = assemble(objective, x_hat, total, results, cov, R, S, cov_used, method)
        result.success = success
        result.message = message
        result.n_iterations = n_iter
        result.n_evaluations = objective.n_evaluations
        result.n_failures = objective.failures
        result.failure_messages = list(objective.failure_messages)
        result.warnings = fit_warnings
        result.timings = timings
        result.prior_ofv = objective.prior(x_hat)
        if prior_note:
            result.message = f"{message}; {prior_note}"
        result.params = lmfit_parameters(result.parameters, objective.layout)
        result.synthetic = bool(getattr(data, "synthetic", False))
        for w in fit_warnings:
            warnings.warn(w, PkpdCartWarning, stacklevel=3)
        return result
    finally:
        objective.close()  # worker processes of this fit, if any
