"""Priors (NONMEM's $PRIOR NWPRI): the MAP of FOCE-I against the exact posterior mode of a
model linear in its random effect (FOCE-I is exact there), and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from test_saem import expected_information, level_model

import pkpd_cart as pk
from pkpd_cart.errors import FitError, ModelDefinitionError
from pkpd_cart.model.population_model import PopulationModel

LOG_2PI = math.log(2 * math.pi)


def small_cohort():
    """Six SYNTHETIC subjects (seeded): too few to pin Omega down without a prior."""
    rng = np.random.default_rng(11)
    rows, subjects = [], []
    for i in range(6):
        y = 5.0 + rng.normal(0, 0.7) + rng.normal(0, 0.3, 3)
        subjects.append(y)
        rows += [{"ID": i + 1, "TIME": float(t), "EVID": 0, "DV": v, "DVID": "y"}
                 for t, v in enumerate(y)]  # fmt: skip
    data = pk.dataset_from_frame(pd.DataFrame(rows), source="priors (SYNTHETIC)")
    return subjects, data


def exact_ofv(subjects, theta, omega, sd):
    total = 0.0
    for y in subjects:
        n = len(y)
        C = omega * np.ones((n, n)) + sd**2 * np.eye(n)
        e = y - theta
        total += np.linalg.slogdet(C)[1] + e @ np.linalg.solve(C, e)
    return total


def population() -> PopulationModel:
    pop = PopulationModel(level_model())
    pop.normal("P", 4.0, omega=1.0)
    pop.error("y", pk.ErrorModel.additive(0.5))
    return pop


def test_map_equals_the_exact_posterior_mode():
    subjects, data = small_cohort()
    pop = population()
    pop.prior_theta("tv_P", mean=4.5, sd=0.2, scale="linear", source="test: a made-up prior")
    pop.prior_omega(["eta_P"], [0.25], df=5, source="test")
    fit = pk.fit_population(pop, data, method="FOCEI")

    def posterior(x):
        theta, omega, sd = x[0], math.exp(x[1]), math.exp(x[2])
        prior = ((theta - 4.5) / 0.2) ** 2 + (5 + 2) * math.log(omega) + 5 * 0.25 / omega
        return exact_ofv(subjects, theta, omega, sd) + prior

    best = minimize(posterior, [5.0, math.log(0.5), math.log(0.3)], method="Nelder-Mead",
                    options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 10000})  # fmt: skip
    assert fit.theta["tv_P"] == pytest.approx(best.x[0], abs=1e-4)
    assert fit.omega[0, 0] == pytest.approx(math.exp(best.x[1]), rel=1e-3)
    assert fit.sigma[("y", "add")] == pytest.approx(math.exp(best.x[2]), rel=1e-3)
    # the objective is OFV (data) + the priors' -2 log, reported separately
    assert fit.ofv + fit.prior_ofv == pytest.approx(best.fun, abs=1e-3)
    assert "MAP with 2 prior(s)" in fit.summary()
    assert fit.covariance_method == "R"  # the posterior curvature, priors included
    # a prior 100x tighter pins the typical value at its mean
    tight = population()
    tight.prior_theta("tv_P", mean=4.5, sd=0.002, scale="linear")
    pinned = pk.fit_population(tight, data, method="FOCEI", covariance=None)
    assert pinned.theta["tv_P"] == pytest.approx(4.5, abs=1e-3)


def test_bad_priors_are_refused():
    pop = population()
    with pytest.raises(ModelDefinitionError, match="prior on unknown theta 'tv_Q'"):
        pop.prior_theta("tv_Q", 1.0, 0.1)
    with pytest.raises(ModelDefinitionError, match="needs a finite mean and an SD > 0"):
        pop.prior_theta("tv_P", 1.0, 0.0, scale="linear")
    with pytest.raises(ModelDefinitionError, match="needs theta 'tv_P' bounded below by 0"):
        pop.prior_theta("tv_P", 1.0, 0.1, scale="log")
    with pytest.raises(ModelDefinitionError, match="degrees of freedom must be > 0"):
        pop.prior_omega(["eta_P"], [0.2], df=0)
    with pytest.raises(ModelDefinitionError, match="Omega prior on unknown eta"):
        pop.prior_omega(["eta_Q"], [0.2], df=3)
    pop.prior_omega(["eta_P"], [0.2], df=3)
    _, data = small_cohort()
    with pytest.raises(FitError, match="priors are not supported by SAEM"):
        pk.fit_saem(pop, data)
    with pytest.raises(FitError, match="priors need method FOCEI, FOCE or LAPLACE, not FO"):
        pk.fit_population(pop, data, method="FO")


def test_linearised_covariance_of_a_map_fit_is_exact_for_a_linear_model():
    """covariance="lin": the expected Fisher information (exact here: the model is linear
    in its random effect) plus half the Hessian of -2 log prior, at the estimates."""
    subjects, data = small_cohort()
    pop = population()
    pop.prior_theta("tv_P", mean=4.5, sd=0.2, scale="linear", source="test")
    pop.prior_omega(["eta_P"], [0.25], df=5, source="test")
    fit = pk.fit_population(pop, data, method="FOCEI", covariance="lin")
    theta, omega, sd = fit.theta["tv_P"], fit.omega[0, 0], fit.sigma[("y", "add")]
    info = expected_information(subjects, theta, omega, sd)
    info[0, 0] += 1 / 0.2**2  # half the second derivative of ((theta - 4.5) / 0.2)^2
    info[1, 1] += 0.5 * (-(5 + 2) / omega**2 + 2 * 5 * 0.25 / omega**3)
    expected = np.sqrt(np.diag(np.linalg.inv(info)))
    assert fit.parameters["se"].to_numpy() == pytest.approx(expected, rel=1e-4)
    assert fit.covariance_method == "linearised Fisher information (lin), priors included"


def test_lin_covariance_of_a_model_that_is_not_mu_referenced_keeps_the_fit():
    """P = tv (1 + eta) has no mu-referenced form: no SEs and a warning, estimates kept."""
    _, data = small_cohort()
    pop = PopulationModel(level_model())
    tv = pop.theta("tv_P", 4.0, lower=0.1, upper=100)
    pop.individual("P", tv * (1 + pop.eta("eta_P", 0.02)))
    pop.error("y", pk.ErrorModel.additive(0.5))
    with pytest.warns(pk.PkpdCartWarning, match="no standard errors: .*not mu-referenced"):
        fit = pk.fit_population(pop, data, method="FOCEI", covariance="lin")
    assert fit.covariance is None and np.isnan(fit.parameters["se"]).all()
    assert 4.0 < fit.theta["tv_P"] < 6.0
