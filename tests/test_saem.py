"""SAEM: against the exact likelihood of a model linear in its random effect (fast), and
against NONMEM 7.5.1's SAEM run of the phenobarbital model (slow)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from test_nlme import pheno_data, pheno_population

import pkpd_cart as pk
from pkpd_cart.errors import FitError, InputError
from pkpd_cart.estimation.saem import SaemOptions, fit_saem
from pkpd_cart.model.population_model import PopulationModel

LOG_2PI = math.log(2 * math.pi)


def level_model() -> pk.Model:
    m = pk.ModelBuilder("level", description="a constant level")
    P = m.parameter("P", 5.0, "mg/L", lower=-100, upper=100)
    x = m.state("x", "mg/L", initial=P)
    m.add_term(x, 0 * x)
    m.observable("y", x, "mg/L")
    return m.build()


def exact_maximum(minus2ll) -> tuple[float, float, float]:
    """(theta, omega, sd) minimising an exact -2LL(theta, omega, sd), from (5, 0.5, 0.3)."""
    best = minimize(
        lambda x: minus2ll(x[0], math.exp(x[1]), math.exp(x[2])),
        [5.0, math.log(0.5), math.log(0.3)],
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 5000},
    )
    return best.x[0], math.exp(best.x[1]), math.exp(best.x[2])


@pytest.fixture(scope="module")
def linear_case():
    """y_ij = P_i + e_ij, P_i = theta + eta_i (SYNTHETIC data, seeded): the marginal
    likelihood is Gaussian, so -2LL and the ML estimates are known exactly."""
    rng = np.random.default_rng(7)
    rows, subjects = [], []
    for i in range(40):
        n = 1 + i % 4
        y = 5.0 + rng.normal(0, math.sqrt(0.5)) + rng.normal(0, 0.3, n)
        subjects.append(y)
        rows += [{"ID": i + 1, "TIME": float(t), "EVID": 0, "DV": v, "DVID": "y"}
                 for t, v in enumerate(y)]  # fmt: skip
    data = pk.dataset_from_frame(pd.DataFrame(rows), source="linear (SYNTHETIC)")

    def minus2ll(theta, omega, sd):
        total = 0.0
        for y in subjects:
            n = len(y)
            C = omega * np.ones((n, n)) + sd**2 * np.eye(n)
            e = y - theta
            total += n * LOG_2PI + np.linalg.slogdet(C)[1] + e @ np.linalg.solve(C, e)
        return total

    mle = exact_maximum(minus2ll)
    pop = PopulationModel(level_model())
    pop.normal("P", 4.0, omega=1.0)
    pop.error("y", pk.ErrorModel.additive(0.6))
    fit = fit_saem(pop, data, SaemOptions(k1=150, k2=150, seed=3, is_samples=400))
    fit.subjects_y, fit.data, fit.start = subjects, data, pop  # for the tests below
    return fit, mle, minus2ll


def test_saem_reaches_the_exact_maximum_likelihood(linear_case):
    fit, (theta, omega, sd), _ = linear_case
    assert fit.theta["tv_P"] == pytest.approx(theta, rel=0.005)
    assert fit.omega[0, 0] == pytest.approx(omega, rel=0.05)
    assert fit.sigma[("y", "add")] == pytest.approx(sd, rel=0.03)


def test_importance_sampling_matches_the_exact_likelihood(linear_case):
    """The IS estimate of -2LL at the SAEM estimates against the closed form there."""
    fit, _, minus2ll = linear_case
    exact = minus2ll(fit.theta["tv_P"], fit.omega[0, 0], fit.sigma[("y", "add")])
    assert 0 < fit.minus2ll_se < 1.0
    assert abs(fit.minus2ll - exact) < 4 * fit.minus2ll_se + 0.05
    n_obs = 100
    assert fit.ofv == pytest.approx(fit.minus2ll - n_obs * LOG_2PI)


def test_history_and_reproducibility(linear_case):
    fit, _, _ = linear_case
    assert len(fit.history["tv_P"]) == 300
    assert fit.chains == 2  # ceil(50 / 40 subjects), as saemix
    assert "Population fit of 'level' by SAEM" in fit.summary()
    # the result's population carries the estimates
    assert fit.population.thetas["tv_P"].value == fit.theta["tv_P"]
    assert np.array_equal(fit.population.omega, fit.omega)
    assert fit.population.sigma_values()[("y", "add")] == fit.sigma[("y", "add")]


def expected_information(subjects, theta, omega, sd) -> np.ndarray:
    """The exact expected Fisher information of (theta, omega, sd) of the linear case."""
    info = np.zeros((3, 3))
    for y in subjects:
        n = len(y)
        Ci = np.linalg.inv(omega * np.ones((n, n)) + sd**2 * np.eye(n))
        dm = [np.ones(n), np.zeros(n), np.zeros(n)]
        dV = [np.zeros((n, n)), np.ones((n, n)), 2 * sd * np.eye(n)]
        for a in range(3):
            for b in range(3):
                info[a, b] += dm[a] @ Ci @ dm[b] + 0.5 * np.trace(Ci @ dV[a] @ Ci @ dV[b])
    return info


def observed_information(minus2ll, x, h=1e-4) -> np.ndarray:
    """Half the Hessian of an exact -2LL at x, by central differences."""
    x = np.asarray(x, dtype=float)
    H = np.zeros((len(x), len(x)))
    for i in range(len(x)):
        for j in range(len(x)):
            hi, hj = h * max(1, abs(x[i])), h * max(1, abs(x[j]))

            def at(di, dj, i=i, j=j):
                z = x.copy()
                z[i] += di
                z[j] += dj
                return minus2ll(*z)

            H[i, j] = (at(hi, hj) - at(hi, -hj) - at(-hi, hj) + at(-hi, -hj)) / (4 * hi * hj)
    return H / 2


def test_linearised_standard_errors_and_likelihood_are_exact_for_a_linear_model(linear_case):
    """The model is linear in its random effect, so the linearisation is exact: the
    linearised Fisher information is the exact expected one, and the linearised -2LL the
    exact -2LL, at the SAEM estimates."""
    fit, _, minus2ll = linear_case
    x = (fit.theta["tv_P"], fit.omega[0, 0], fit.sigma[("y", "add")])
    exact_se = np.sqrt(np.diag(np.linalg.inv(expected_information(fit.subjects_y, *x))))
    assert fit.parameters["se"].to_numpy() == pytest.approx(exact_se, rel=1e-5)
    assert fit.minus2ll_lin == pytest.approx(minus2ll(*x), abs=1e-8)
    assert fit.covariance_method == "linearised Fisher information (lin)"
    # RSE and the log-scale interval of the variance follow from the SE
    omega = fit.parameters.iloc[1]
    assert omega.rse_pct == pytest.approx(100 * exact_se[1] / x[1], rel=1e-5)
    assert omega.lower_95 == pytest.approx(x[1] / math.exp(1.959964 * exact_se[1] / x[1]))


def test_louis_standard_errors_match_the_observed_information(linear_case):
    """Louis' formula over the smoothing samples ('sa') against the exact observed
    information (the Hessian of the exact -2LL) at the same estimates: within 3%."""
    fit, _, minus2ll = linear_case
    data = fit.data
    sa = fit_saem(
        fit.start, data, SaemOptions(k1=150, k2=150, seed=3, is_samples=100), covariance="sa"
    )
    x = (sa.theta["tv_P"], sa.omega[0, 0], sa.sigma[("y", "add")])
    exact_se = np.sqrt(np.diag(np.linalg.inv(observed_information(minus2ll, x))))
    assert sa.parameters["se"].to_numpy() == pytest.approx(exact_se, rel=0.03)
    assert sa.covariance_method.startswith("Louis' observed information")


def test_convergence_plot_is_written(linear_case, tmp_path):
    fit, _, _ = linear_case
    fig = fit.plot_convergence(tmp_path / "convergence.png")
    assert (tmp_path / "convergence.png").stat().st_size > 10_000
    assert [ax.get_title() for ax in fig.axes[:3]] == ["tv_P", "OMEGA(eta_P)", "SIGMA(y:add)"]


def test_bad_requests_are_refused():
    with pytest.raises(InputError, match="k1 and k2 must be >= 1"):
        SaemOptions(k1=0)
    with pytest.raises(InputError, match="kernels must be 3 counts"):
        SaemOptions(kernels=(1, 1))
    pop = PopulationModel(level_model())
    tv, offset = pop.theta("tv_P", 4.0), pop.theta("offset", 1.0)
    pop.individual("P", tv + pop.eta("eta_P", 1.0) * offset)  # offset scales eta: no mu
    pop.error("y", pk.ErrorModel.additive(0.6))
    data = pk.dataset_from_frame(
        pd.DataFrame([{"ID": 1, "TIME": 0.0, "EVID": 0, "DV": 1.0, "DVID": "y"}])
    )
    with pytest.raises(FitError, match="parameter 'P' is not mu-referenced"):
        fit_saem(pop, data)


@pytest.mark.slow
def test_pheno_matches_nonmem_saem():
    """NONMEM 7.5.1 SAEM (pheno_saem.ext, ISAMPLE=5): theta within 5%, omega within 20%;
    the SEs of its $COV (the S matrix) within 10%; and NONMEM's FOCE-I estimates
    (pheno.ext) within one SAEM SE of the SAEM estimates."""
    fit = fit_saem(
        pheno_population(False),
        pheno_data(),
        SaemOptions(k1=150, k2=250, chains=5, seed=1, is_samples=200),
        covariance="S",
    )
    se = dict(zip(fit.parameters["name"], fit.parameters["se"]))
    nonmem_se = {  # pheno_saem.ext, rows -1000000001 and -1000000005 (sigma as SD)
        "tv_CL": 5.23660e-04,
        "tv_V": 1.27232e-01,
        "OMEGA(eta_CL)": 4.43791e-02,
        "OMEGA(eta_V)": 4.08575e-02,
        "SIGMA(C:prop)": 1.30457e-02,
    }
    for name, value in nonmem_se.items():
        assert se[name] == pytest.approx(value, rel=0.10), name
    focei = {  # pheno.ext, METHOD=1 INTERACTION, final estimates (sigma as SD)
        "tv_CL": 5.81756e-03,
        "tv_V": 1.44555,
        "OMEGA(eta_CL)": 1.11053e-01,
        "OMEGA(eta_V)": 2.01526e-01,
        "SIGMA(C:prop)": math.sqrt(1.64177e-02),
    }
    estimate = dict(zip(fit.parameters["name"], fit.parameters["estimate"]))
    for name, value in focei.items():
        assert abs(estimate[name] - value) < se[name], name
    assert fit.theta["tv_CL"] == pytest.approx(5.61554e-03, rel=0.05)
    assert fit.theta["tv_V"] == pytest.approx(1.39713, rel=0.05)
    assert fit.omega[0, 0] == pytest.approx(1.32337e-01, rel=0.20)
    assert fit.omega[1, 1] == pytest.approx(1.99377e-01, rel=0.20)
    assert fit.sigma[("C", "prop")] ** 2 == pytest.approx(1.52465e-02, rel=0.20)


def test_censored_records_m3_match_the_exact_likelihood():
    """A third of the records below the LLOQ (M3): SAEM against the maximum of the exact
    marginal likelihood, computed by Gauss-Hermite quadrature over the random intercept
    (SYNTHETIC data, seeded). Counting censored records as observed values would bias the
    residual SD low (nlmixr2est issue 916)."""
    from scipy.special import log_ndtr

    rng = np.random.default_rng(11)
    lloq = 4.6
    rows, subjects = [], []
    for i in range(40):
        n = 2 + i % 3
        y = 5.0 + rng.normal(0, math.sqrt(0.5)) + rng.normal(0, 0.3, n)
        subjects.append(y)
        for t, v in enumerate(y):
            cens = v < lloq
            rows.append({"ID": i + 1, "TIME": float(t), "EVID": 0, "DVID": "y",
                         "DV": "" if cens else v, "CENS": int(cens), "LIMIT": lloq})  # fmt: skip
    data = pk.dataset_from_frame(pd.DataFrame(rows), source="censored (SYNTHETIC)")
    fraction = float(np.mean(np.concatenate(subjects) < lloq))
    assert 0.25 < fraction < 0.45
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)  # N(0, 1) quadrature

    def minus2ll(theta, omega, sd):
        total = 0.0
        for y in subjects:
            level = theta + math.sqrt(omega) * nodes[:, None]  # (nodes, 1)
            dens = np.where(
                y < lloq,
                log_ndtr((lloq - level) / sd),
                -0.5 * (LOG_2PI + 2 * math.log(sd) + ((y - level) / sd) ** 2),
            ).sum(axis=1)
            total += -2 * np.log(np.sum(weights * np.exp(dens)) / math.sqrt(2 * math.pi))
        return total

    theta, omega, sd = exact_maximum(minus2ll)
    pop = PopulationModel(level_model())
    pop.normal("P", 4.0, omega=1.0)
    pop.error("y", pk.ErrorModel.additive(0.6))
    fit = fit_saem(pop, data, SaemOptions(k1=150, k2=150, seed=5, is_samples=400))
    assert fit.theta["tv_P"] == pytest.approx(theta, rel=0.002)
    assert fit.omega[0, 0] == pytest.approx(omega, rel=0.05)
    assert fit.sigma[("y", "add")] == pytest.approx(sd, rel=0.03)
    exact = minus2ll(fit.theta["tv_P"], fit.omega[0, 0], fit.sigma[("y", "add")])
    assert abs(fit.minus2ll - exact) < 4 * fit.minus2ll_se + 0.05


def test_a_theta_without_random_effect_is_estimated():
    """y_ij = P_i + S t_j: S has no random effect (SYNTHETIC data). It gets a vanishing
    artificial one; SAEM must land on the exact ML estimate of S, not its initial value."""
    m = pk.ModelBuilder("sloped", description="a level with a common slope")
    P = m.parameter("P", 5.0, "mg/L", lower=-100, upper=100)
    S = m.parameter("S", 0.0, "mg/L/h", lower=-100, upper=100)
    x = m.state("x", "mg/L", initial=P)
    m.add_term(x, 0 * x)
    m.observable("y", x + S * pk.t, "mg/L")
    rng = np.random.default_rng(17)
    rows, subjects = [], []
    for i in range(40):
        n = 2 + i % 3
        times = np.arange(n, dtype=float)
        y = 5.0 + rng.normal(0, math.sqrt(0.5)) - 0.7 * times + rng.normal(0, 0.3, n)
        subjects.append((times, y))
        rows += [{"ID": i + 1, "TIME": t, "EVID": 0, "DV": v, "DVID": "y"}
                 for t, v in zip(times, y)]  # fmt: skip
    data = pk.dataset_from_frame(pd.DataFrame(rows), source="sloped (SYNTHETIC)")

    def minus2ll(x):
        theta, slope, omega, sd = x[0], x[1], math.exp(x[2]), math.exp(x[3])
        total = 0.0
        for times, y in subjects:
            n = len(y)
            C = omega * np.ones((n, n)) + sd**2 * np.eye(n)
            e = y - theta - slope * times
            total += np.linalg.slogdet(C)[1] + e @ np.linalg.solve(C, e)
        return total

    best = minimize(minus2ll, [5.0, 0.0, math.log(0.5), math.log(0.3)], method="BFGS",
                    options={"gtol": 1e-8})  # fmt: skip
    pop = PopulationModel(m.build())
    pop.normal("P", 4.0, omega=1.0)
    pop.individual("S", pop.theta("S", 0.0))
    pop.error("y", pk.ErrorModel.additive(0.6))
    fit = fit_saem(pop, data, SaemOptions(k1=150, k2=150, seed=2, is_samples=200))
    assert abs(best.x[1] + 0.7) < 0.1  # the exact ML slope, near the truth
    assert fit.theta["S"] == pytest.approx(best.x[1], abs=0.01)
    assert fit.theta["tv_P"] == pytest.approx(best.x[0], rel=0.005)
    assert fit.omega.shape == (1, 1)  # the artificial random effect is not reported
    assert fit.omega[0, 0] == pytest.approx(math.exp(best.x[2]), rel=0.1)
    assert "OMEGA(vanishing_S)" not in fit.history
    # the linearised SEs include the theta without random effect, exactly (linear model)
    om, sd = fit.omega[0, 0], fit.sigma[("y", "add")]
    info = np.zeros((4, 4))
    for times, _ in subjects:
        n = len(times)
        Ci = np.linalg.inv(om * np.ones((n, n)) + sd**2 * np.eye(n))
        dm = [np.ones(n), times, np.zeros(n), np.zeros(n)]
        dV = [np.zeros((n, n))] * 2 + [np.ones((n, n)), 2 * sd * np.eye(n)]
        for a in range(4):
            for b in range(4):
                info[a, b] += dm[a] @ Ci @ dm[b] + 0.5 * np.trace(Ci @ dV[a] @ Ci @ dV[b])
    assert fit.parameters["se"].to_numpy() == pytest.approx(
        np.sqrt(np.diag(np.linalg.inv(info))), rel=1e-5
    )
    with pytest.raises(
        FitError,
        match=r"SAEM standard errors 'sa' and 'S' need a random "
        r"effect on every estimated theta \(S has none\); use covariance='lin'",
    ):
        fit_saem(pop, data, covariance="sa")
    with pytest.raises(FitError, match="unknown SAEM covariance method 'louis'"):
        fit_saem(pop, data, covariance="louis")


def test_worker_processes_give_the_same_fit(linear_case):
    """The simulations of every MCMC move shared by 2 forked workers (the compiled BDF
    path; the exact linear solver stays in-process): the same numbers as 1 process."""
    fit, _, _ = linear_case
    bdf = pk.SolverOptions(rtol=1e-6, atol=1e-8, exact_linear=False)
    options = SaemOptions(k1=15, k2=10, seed=4, is_samples=50)
    one = fit_saem(fit.start, fit.data, options, solver=bdf, covariance=None)
    two = fit_saem(fit.start, fit.data, options, solver=bdf, covariance=None, workers=2)
    assert two.theta == one.theta and np.array_equal(two.omega, one.omega)
    assert two.minus2ll == one.minus2ll
    with pytest.raises(FitError, match="workers must be a positive integer, not 0"):
        fit_saem(fit.start, fit.data, options, workers=0)
