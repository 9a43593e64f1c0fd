"""SAEM: the stochastic approximation EM algorithm of Kuhn and Lavielle (2005, Comput Stat
Data Anal 49:1020), as Monolix, saemix and nlmixr2 run it.

The chains run on the *individual parameters* in their transformed, mu-referenced form
``phi_i = mu(theta, covariates_i) + eta_i`` (``phi = log P`` for a log-normal parameter,
``phi = P`` for a normal one), so that ``theta`` enters the complete-data likelihood only
through the Gaussian prior of ``phi`` and the M-step is cheap:

* **E-step** (simulation): Metropolis-Hastings kernels per subject and chain, all
  subjects simulated together in one compiled call per move: (1) proposals from the
  population distribution ``N(mu_i, Omega)``, (2) a component-wise random walk and (3) a
  random walk on a random block of components; random-walk steps adapted towards an
  acceptance rate of 0.4. Censored records (M3) contribute ``log Phi(z)``.
* **Stochastic approximation** of the sufficient statistics ``S1_i = E[phi_i]`` and
  ``S2 = sum_i E[phi_i phi_i']`` with step 1 during the ``k1`` exploratory iterations and
  ``1/(k - k1)`` during the ``k2`` smoothing ones.
* **M-step**: ``theta`` minimises ``sum_i (S1_i - mu_i)' Omega^-1 (S1_i - mu_i)`` (closed
  form for mu-referenced log-normal parameters; a small least-squares problem with
  covariate effects); ``Omega`` is the moment estimate from ``S1``, ``S2`` and ``mu``,
  with simulated annealing during exploration (its diagonal shrinks at most by
  ``annealing`` per iteration); each observable's residual-error SDs maximise the
  likelihood of the current samples, censored records counted as ``P(y < LLOQ)`` and not
  as observed values, and are then averaged by the same stochastic approximation.
* **-2 log-likelihood** by importance sampling with t-distributed proposals around each
  subject's conditional mean and variance from the chains (as Monolix and saemix), with
  its Monte Carlo standard error.

A theta without a random effect gets an artificial one whose variance shrinks
geometrically towards 0 during the run (Monolix's approach), so it is estimated through
the same M-step. Seeded and reproducible.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from pkpd_cart.data.dataset import Dataset
from pkpd_cart.errors import FitError, InputError, PkpdCartWarning
from pkpd_cart.estimation.conditional import LOG_2PI
from pkpd_cart.estimation.outer import Layout
from pkpd_cart.estimation.population_objective import PopulationObjective, subjects_from_dataset
from pkpd_cart.estimation.population_result import (
    PopulationFitResult,
    assemble,
    lmfit_parameters,
)
from pkpd_cart.estimation.records import RecordLayout, residual_variance
from pkpd_cart.estimation.saem_information import (
    SE_METHODS,
    LouisAccumulator,
    covariance_from,
    linearised_information,
)
from pkpd_cart.model.population_model import PopulationModel
from pkpd_cart.simulation.solver import BatchRun, SolverOptions

DEFAULT_OPTIONS = SolverOptions()  # the EBEs and diagnostics, as after FOCE-I

# The chains need likelihood ratios, not 8 digits: rtol 1e-6 changes pheno's log-likelihood
# by 1e-3 (Monte Carlo noise is far larger) and costs 8 ms per pass instead of 12.8 ms.
SAMPLING_SOLVER = SolverOptions(rtol=1e-6, atol=1e-8)
# Variance of the artificial random effect of a theta without one: x0.95 per iteration, so
# about 1e-12 of its start after 500 iterations; never below the floor (Omega stays PD).
VANISHING_RATE = 0.95
VANISHING_FLOOR = 1e-12


@dataclass(frozen=True)
class SaemOptions:
    """Settings of :func:`fit_saem` (defaults close to saemix and nlmixr2)."""

    k1: int = 300  # exploratory iterations (step 1, annealing)
    k2: int = 200  # smoothing iterations (step 1/(k - k1))
    chains: int | None = None  # default: ceil(50 / number of subjects), as saemix
    kernels: tuple[int, int, int] = (2, 2, 2)  # moves per iteration of the three kernels
    annealing: float = 0.95  # Omega's diagonal shrinks at most by this per exploratory step
    acceptance: float = 0.4  # target acceptance rate of the random walks
    is_samples: int = 500  # importance samples per subject for -2LL
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if self.k1 < 1 or self.k2 < 1:
            raise InputError(f"SaemOptions: k1 and k2 must be >= 1 (got {self.k1}, {self.k2})")
        if self.chains is not None and self.chains < 1:
            raise InputError(f"SaemOptions: chains must be >= 1 (got {self.chains})")
        if len(self.kernels) != 3 or min(self.kernels) < 0 or sum(self.kernels) == 0:
            raise InputError(f"SaemOptions: kernels must be 3 counts >= 0 (got {self.kernels})")
        if not 0 < self.annealing <= 1 or not 0 < self.acceptance < 1:
            raise InputError("SaemOptions: annealing must be in (0, 1], acceptance in (0, 1)")
        if self.is_samples < 10:
            raise InputError(f"SaemOptions: is_samples must be >= 10 (got {self.is_samples})")


@dataclass
class SaemResult(PopulationFitResult):
    """A SAEM fit: everything a :class:`PopulationFitResult` has (parameter table with SEs,
    EBEs, diagnostics, shrinkage; ``population`` carries the estimates, so its ``draw``
    simulates the fitted population), and SAEM's own outputs.

    ``minus2ll`` is -2 log-likelihood *with* the ``N log 2 pi`` constant (as Monolix and
    saemix print it), by importance sampling, with Monte Carlo SE ``minus2ll_se``;
    ``ofv`` is the same without the constant (NONMEM's convention), and AIC and BIC use
    it. ``minus2ll_lin`` is the linearised -2LL (uncensored records); ``ofv_focei`` the
    FOCE-I objective at the SAEM estimates (nlmixr2 prints it for SAEM fits). ``eta``
    holds each subject's conditional mean of the random effects over the smoothing
    iterations (``ebes`` the conditional modes); ``history`` every estimate over the
    iterations (for convergence plots).
    """

    minus2ll: float = math.nan
    minus2ll_se: float = math.nan
    minus2ll_lin: float = math.nan
    ofv_focei: float = math.nan
    eta: np.ndarray | None = field(default=None, repr=False)
    subject_ids: list = field(default_factory=list)
    history: dict = field(default_factory=dict, repr=False)
    chains: int = 1
    seconds: float = 0.0
    options: SaemOptions = field(default_factory=SaemOptions)

    def plot_convergence(self, path=None):
        """One panel per estimate over the iterations, the end of exploration marked; the
        figure is written to ``path`` (PNG, ...) if given, and returned."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        names = list(self.history)
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
        for ax, name in zip(axes.ravel(), names):
            ax.plot(np.arange(1, len(self.history[name]) + 1), self.history[name], lw=1)
            ax.axvline(self.options.k1, color="grey", ls=":", lw=1)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("iteration", fontsize=8)
        for ax in axes.ravel()[len(names) :]:
            ax.axis("off")
        title = f"SAEM convergence, '{self.population.name}' (dotted: end of k1)"
        fig.suptitle(title + (" - SYNTHETIC data" if self.synthetic else ""))
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig

    def summary(self) -> str:
        o = self.options
        head = [
            f"SAEM: {self.n_subjects} subjects, {self.chains} chain(s), k1={o.k1}, "
            f"k2={o.k2}, seed {o.seed}, {self.seconds:.1f} s",
            f"-2LL {self.minus2ll:.3f} (importance sampling, MC SE {self.minus2ll_se:.3f}); "
            f"linearised {self.minus2ll_lin:.3f}; FOCE-I OFV at the estimates "
            f"{self.ofv_focei:.3f}",
        ]
        return "\n".join(head + [PopulationFitResult.summary(self)])


def fit_saem(
    population: PopulationModel,
    data: Dataset,
    options: SaemOptions | None = None,
    solver: SolverOptions | None = None,
    covariance: str | None = "lin",
    workers: int = 1,
) -> SaemResult:
    """Estimate ``population`` on ``data`` by SAEM (see the module docstring).

    ``solver``: integrator settings for the chains (default :data:`SAMPLING_SOLVER`).
    ``covariance``: the standard errors, from the linearised Fisher information
    (``"lin"``, default, as saemix and nlmixr2), Louis' observed information over the
    smoothing iterations (``"sa"``, Monolix), the subjects' score outer products (``"S"``,
    NONMEM's ``$COV`` after SAEM), or None (see
    :mod:`~pkpd_cart.estimation.saem_information`).
    ``workers``: local processes that share the simulations of every MCMC move (the
    subjects and chains are split between them; Linux). Models solved exactly
    (linear in their states) are vectorised in numpy and stay in this process.
    """
    if not isinstance(population, PopulationModel):
        raise FitError(f"fit_saem needs a PopulationModel, not {type(population).__name__}")
    if not isinstance(data, Dataset):
        raise FitError(f"fit_saem needs a Dataset (pk.read_dataset), not {type(data).__name__}")
    if options is not None and not isinstance(options, SaemOptions):
        raise FitError(f"options must be a pk.SaemOptions, not {type(options).__name__}")
    if solver is not None and not isinstance(solver, SolverOptions):
        raise FitError(f"solver must be a pk.SolverOptions, not {type(solver).__name__}")
    if covariance is not None and covariance not in SE_METHODS:
        raise FitError(
            f"unknown SAEM covariance method {covariance!r}; choose one of 'lin', 'sa', 'S' or None"
        )
    if not isinstance(workers, int) or workers < 1:
        raise FitError(f"workers must be a positive integer, not {workers!r}")
    options = options or SaemOptions()
    started = time.perf_counter()
    from pkpd_cart.errors import ModelDefinitionError

    try:
        population.validate(for_estimation=True)
    except ModelDefinitionError as exc:
        raise FitError(str(exc)) from None
    if not population.etas:
        raise FitError(f"SAEM of '{population.name}': the population model has no random effect")
    if population.priors:
        raise FitError(
            f"SAEM of '{population.name}': priors are not supported by SAEM; use "
            "fit_population (FOCEI: maximum a posteriori)"
        )
    run = _Saem(population, data, options, solver or SAMPLING_SOLVER)
    if covariance in ("sa", "S"):
        run.louis = LouisAccumulator(run, Layout(population))
    serial = run.batch
    if workers > 1 and serial.linear is None:
        from pkpd_cart.simulation.executor import ForkedBatch

        run.batch = ForkedBatch(serial, workers)
    try:
        run.iterate()
        timings = {"estimation": time.perf_counter() - started}
        t = time.perf_counter()
        minus2ll, se = run.importance_sampling()
        timings["likelihood"] = time.perf_counter() - t
    finally:
        if run.batch is not serial:
            run.batch.close()
            run.batch = serial
    result = run.result(minus2ll, se, covariance, timings)
    result.synthetic = bool(getattr(data, "synthetic", False))
    result.seconds = time.perf_counter() - started
    for w in result.warnings:
        warnings.warn(w, PkpdCartWarning, stacklevel=2)
    return result


class _Saem:
    def __init__(self, pop: PopulationModel, data: Dataset, options: SaemOptions, solver):
        self.original = pop
        pop, self.annealed = _with_vanishing_effects(pop)
        self.pop, self.options = pop, options
        self.rng = np.random.default_rng(options.seed)
        self.subjects = subjects_from_dataset(pop, data)
        self.n_sub = len(self.subjects)
        self.n_eta = len(pop.etas)
        self.chains = options.chains or math.ceil(50 / self.n_sub)
        self.theta_names = list(pop.thetas)
        self.theta = pop.theta_vector()
        self.omega = pop.omega.copy()
        self.mu_fn, self.mu_thetas, self.mu_derivatives_fn = _mu_references(pop)
        model = pop.model
        self.observables = list(model.observables)
        compiled = model.compile()
        records = [(s.times, s.doses) for s in self.subjects] * self.chains
        self.batch = BatchRun(compiled, records, solver)
        self.n_ps = self.n_sub * self.chains  # pseudo-subjects: subject i, chain c -> c*N + i
        lay = RecordLayout.of(self.subjects * self.chains, self.batch.row_ptr)
        self.rec_ps, self.rec_row, self.rec_obs = lay.subject, lay.row, lay.obs
        self.y, self.cens, self.limit, self.logn = lay.y, lay.cens, lay.limit, lay.logn
        self.cov = lay.cov
        self.n_obs_records = int(sum(len(s.y) for s in self.subjects))
        self.log_y_sum = float(sum(s.log_y_sum for s in self.subjects))
        self.sigma = {k: float(v) for k, v in pop.sigma_values().items()}
        self.fixed_sigma = {(o, n) for o, r in pop.residuals.items() for n in r.fixed}
        self.fixed_omega = np.zeros((self.n_eta, self.n_eta), dtype=bool)
        self.omega_mask = np.eye(self.n_eta, dtype=bool)
        for block, fixed in zip(pop.omega_blocks, pop.omega_fixed):
            for a in block:
                for b in block:
                    self.omega_mask[a, b] = True
                    self.fixed_omega[a, b] = fixed
        self.delta = np.full(self.n_eta, 0.5) * np.sqrt(np.maximum(np.diag(self.omega), 1e-4))
        self.history: dict[str, list] = {}
        self.louis: LouisAccumulator | None = None
        self.n_passes = 0  # simulations of all pseudo-subjects

    # -- model pieces ------------------------------------------------------------------
    def mu(self, theta: np.ndarray) -> np.ndarray:
        """mu of every pseudo-subject, (n_ps, n_eta)."""
        with np.errstate(all="ignore"):
            values = self.mu_fn(list(theta), list(self.cov.T))
        return np.column_stack(
            [np.broadcast_to(np.asarray(v, dtype=float), (self.n_ps,)) for v in values]
        )

    def mu_derivatives(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``d mu / d theta`` (n_ps, n_eta, n_theta) and the second derivatives
        (n_ps, n_eta, n_theta, n_theta) of every pseudo-subject."""
        with np.errstate(all="ignore"):
            first, second = self.mu_derivatives_fn(list(theta), list(self.cov.T))
        q, p = self.n_eta, len(theta)
        d1 = np.zeros((self.n_ps, q, p))
        d2 = np.zeros((self.n_ps, q, p, p))
        for a in range(q):
            for k in range(p):
                d1[:, a, k] = np.broadcast_to(np.asarray(first[a][k], dtype=float), (self.n_ps,))
                for m in range(p):
                    d2[:, a, k, m] = np.broadcast_to(
                        np.asarray(second[a][k][m], dtype=float), (self.n_ps,)
                    )
        return d1, d2

    def predictions(self, phi: np.ndarray, first: int | None = None):
        """Per record F (log for log-normal observables) and all observables, and which
        pseudo-subjects failed; only the ``first`` pseudo-subjects are simulated if given."""
        eta = phi - self.mu(self.theta)
        with np.errstate(all="ignore"):
            P, _ = self.pop.individual_matrix(self.theta, eta, self.cov)
        bad = ~np.all(np.isfinite(P), axis=1)
        active = np.flatnonzero(~bad)
        if first is not None:
            active = active[active < first]
        OBS, _, status = self.batch.run(np.where(np.isfinite(P), P, 0.0), active)
        self.n_passes += 1
        failed = bad.copy()
        failed[active[status[active] != 0]] = True
        O = OBS[self.rec_row]
        f = O[np.arange(len(self.y)), self.rec_obs]
        with np.errstate(all="ignore"):
            F = np.where(self.logn, np.log(np.maximum(f, 1e-300)), f)
        return F, O, failed

    def variance(self, F: np.ndarray, O: np.ndarray, sigma: dict, select=None) -> np.ndarray:
        return residual_variance(self.pop, F, O, self.rec_obs, sigma, select)

    def record_loglik(self, F, V) -> np.ndarray:
        """log density of every record (censored: log P(y < LLOQ)), with the constant."""
        from scipy.special import log_ndtr

        with np.errstate(all="ignore"):
            r = self.y - F
            dens = -0.5 * (LOG_2PI + np.log(V) + r**2 / V)
            cens = log_ndtr((self.limit - F) / np.sqrt(V))
            out = np.where(self.cens, cens, dens)
        return np.where(np.isfinite(out), out, -np.inf)

    def loglik(self, phi: np.ndarray, first: int | None = None):
        """log p(y_i | phi_i) of every pseudo-subject (and the pieces for the M-step)."""
        F, O, failed = self.predictions(phi, first)
        ll = self.subject_loglik(F, O)
        ll[failed] = -np.inf
        return ll, (F, O)

    def subject_loglik(self, F: np.ndarray, O: np.ndarray, sigma: dict | None = None):
        """log p(y_i | predictions) of every pseudo-subject (at the current sigma)."""
        rec = self.record_loglik(F, self.variance(F, O, sigma or self.sigma))
        return np.bincount(
            self.rec_ps, weights=np.where(np.isfinite(rec), rec, -1e300), minlength=self.n_ps
        )

    def log_prior(self, phi: np.ndarray, mu: np.ndarray) -> np.ndarray:
        eta = phi - mu
        return -0.5 * np.einsum("se,ef,sf->s", eta, np.linalg.inv(self.omega), eta)

    # -- E-step ------------------------------------------------------------------------
    def e_step(self, phi, ll, pieces):
        mu = self.mu(self.theta)
        n1, n2, n3 = self.options.kernels
        chol = np.linalg.cholesky(self.omega)
        for _ in range(n1):  # proposals from the population distribution
            prop = mu + self.rng.standard_normal((self.n_ps, self.n_eta)) @ chol.T
            phi, ll, pieces, _ = self._accept(phi, ll, pieces, prop, 0.0)
        accepted = np.zeros(self.n_eta)
        for _ in range(n2):  # component-wise random walk
            for j in range(self.n_eta):
                prop = phi.copy()
                prop[:, j] += self.delta[j] * self.rng.standard_normal(self.n_ps)
                extra = self.log_prior(prop, mu) - self.log_prior(phi, mu)
                phi, ll, pieces, acc = self._accept(phi, ll, pieces, prop, extra)
                accepted[j] += acc.mean()
        if n2:
            rate = accepted / n2
            self.delta *= 1 + 0.4 * (rate - self.options.acceptance)
        for _ in range(n3):  # random walk on a random block
            size = int(self.rng.integers(1, self.n_eta + 1))
            block = self.rng.choice(self.n_eta, size, replace=False)
            prop = phi.copy()
            prop[:, block] += self.delta[block] * self.rng.standard_normal((self.n_ps, size))
            extra = self.log_prior(prop, mu) - self.log_prior(phi, mu)
            phi, ll, pieces, _ = self._accept(phi, ll, pieces, prop, extra)
        return phi, ll, pieces

    def _accept(self, phi, ll, pieces, prop, extra):
        ll_new, pieces_new = self.loglik(prop)
        with np.errstate(invalid="ignore"):
            log_ratio = ll_new - ll + extra
        accept = np.log(self.rng.random(self.n_ps)) < np.where(
            np.isfinite(log_ratio), log_ratio, -np.inf
        )
        phi = np.where(accept[:, None], prop, phi)
        ll = np.where(accept, ll_new, ll)
        take = accept[self.rec_ps]
        F = np.where(take, pieces_new[0], pieces[0])
        O = np.where(take[:, None], pieces_new[1], pieces[1])
        return phi, ll, (F, O), accept

    # -- M-step ------------------------------------------------------------------------
    def chain_mean(self, values: np.ndarray) -> np.ndarray:
        return values.reshape(self.chains, self.n_sub, *values.shape[1:]).mean(axis=0)

    def m_theta(self, S1: np.ndarray) -> None:
        from scipy.optimize import least_squares

        free = [i for i in self.mu_thetas if not self.pop.thetas[self.theta_names[i]].fixed]
        if not free:
            return
        L = np.linalg.cholesky(np.linalg.inv(self.omega))
        cov = self.cov[: self.n_sub]

        def residuals(x):
            theta = self.theta.copy()
            theta[free] = x
            with np.errstate(all="ignore"):
                values = self.mu_fn(list(theta), list(cov.T))
            mu = np.column_stack(
                [np.broadcast_to(np.asarray(v, dtype=float), (self.n_sub,)) for v in values]
            )
            r = (S1 - mu) @ L
            return np.where(np.isfinite(r), r, 1e10).ravel()

        lower = [self.pop.thetas[self.theta_names[i]].lower for i in free]
        upper = [self.pop.thetas[self.theta_names[i]].upper for i in free]
        x0 = np.clip(self.theta[free], np.nextafter(lower, np.inf), np.nextafter(upper, -np.inf))
        sol = least_squares(residuals, x0, bounds=(lower, upper), xtol=1e-12, ftol=1e-12)
        self.theta[free] = sol.x

    def m_omega(self, S1, S2, k: int) -> None:
        mu = self.mu(self.theta)[: self.n_sub]
        omega = (S2 - S1.T @ mu - mu.T @ S1 + mu.T @ mu) / self.n_sub
        omega = np.where(self.omega_mask, 0.5 * (omega + omega.T), 0.0)
        if k <= self.options.k1:  # simulated annealing: slow shrinkage while exploring
            d = np.maximum(np.diag(omega), self.options.annealing * np.diag(self.omega))
            scale = np.sqrt(np.maximum(d, 1e-12) / np.maximum(np.diag(omega), 1e-12))
            omega = omega * np.outer(scale, scale)
        omega = np.where(self.fixed_omega, self.omega, omega)
        for j in self.annealed:  # a theta without random effect: its variance vanishes
            omega[j, :] = omega[:, j] = 0.0
            omega[j, j] = max(VANISHING_RATE * self.omega[j, j], VANISHING_FLOOR)
        if np.all(np.linalg.eigvalsh(omega) > 0):
            self.omega = omega

    def sigma_target(self, F, O) -> dict:
        """Residual-error SDs that maximise the likelihood of the current samples."""
        from scipy.optimize import minimize

        out = {}
        for obs, res in self.pop.residuals.items():
            names = [n for n in res.error_model.sigma_names if (obs, n) not in self.fixed_sigma]
            if not names:
                continue
            k = self.observables.index(obs)
            sel = self.rec_obs == k
            if len(names) == 1 and not self.cens[sel].any():
                # V = sigma^2 h(F) (additive, proportional, ...): the maximum is closed form
                key = (obs, names[0])
                unit = dict(self.sigma)
                unit[key] = 1.0
                h = self.variance(F, O, unit, sel)[sel]
                doubled = dict(unit)
                doubled[key] = 2.0
                if np.allclose(self.variance(F, O, doubled, sel)[sel], 4 * h, rtol=1e-12):
                    out[key] = math.sqrt(float(np.mean((self.y[sel] - F[sel]) ** 2 / h)))
                    continue

            def nll(logs, obs=obs, names=names, sel=sel):
                sigma = dict(self.sigma)
                sigma.update({(obs, n): math.exp(v) for n, v in zip(names, logs)})
                V = self.variance(F, O, sigma, sel)
                rec = self.record_loglik(F, V)[sel]
                return -float(np.sum(rec)) if np.all(np.isfinite(rec)) else 1e300

            x0 = [math.log(max(self.sigma[(obs, n)], 1e-12)) for n in names]
            sol = minimize(nll, x0, method="Nelder-Mead" if len(names) > 1 else "BFGS")
            for n, v in zip(names, sol.x):
                out[(obs, n)] = math.exp(float(v))
        return out

    # -- the loop ----------------------------------------------------------------------
    def iterate(self) -> None:
        o = self.options
        mu = self.mu(self.theta)
        phi = (
            mu
            + self.rng.standard_normal((self.n_ps, self.n_eta)) @ np.linalg.cholesky(self.omega).T
        )
        ll, pieces = self.loglik(phi)
        bad = ~np.isfinite(ll)
        if bad.any():  # start failing pseudo-subjects at their typical values
            phi[bad] = mu[bad]
            ll, pieces = self.loglik(phi)
        if not np.all(np.isfinite(ll)):
            i = int(np.flatnonzero(~np.isfinite(ll))[0]) % self.n_sub
            raise FitError(
                f"SAEM of '{self.pop.name}': subject {self.subjects[i].id} cannot be simulated "
                "at the initial estimates"
            )
        S1 = self.chain_mean(phi)
        S2 = np.einsum("se,sf->ef", phi, phi) / self.chains
        var_sigma = {k: v**2 for k, v in self.sigma.items()}
        self.phi_sum = np.zeros((self.n_sub, self.n_eta))
        self.phi_sq = np.zeros((self.n_sub, self.n_eta, self.n_eta))
        self.n_kept = 0
        total = o.k1 + o.k2
        bar = None
        if o.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="SAEM", unit="it")
        for k in range(1, total + 1):
            phi, ll, pieces = self.e_step(phi, ll, pieces)
            gamma = 1.0 if k <= o.k1 else 1.0 / (k - o.k1)
            S1 = S1 + gamma * (self.chain_mean(phi) - S1)
            S2 = S2 + gamma * (np.einsum("se,sf->ef", phi, phi) / self.chains - S2)
            self.m_theta(S1)
            self.m_omega(S1, S2, k)
            for key, value in self.sigma_target(*pieces).items():
                var_sigma[key] += gamma * (value**2 - var_sigma[key])
                self.sigma[key] = math.sqrt(var_sigma[key])
            # given phi, only the new sigma changes the likelihood: no simulation needed
            F, O = pieces
            ll = np.where(np.isfinite(ll), self.subject_loglik(F, O), ll)
            if k > o.k1:
                if self.louis is not None:
                    self.louis.add(phi, *pieces)
                per_subject = phi.reshape(self.chains, self.n_sub, self.n_eta)
                self.phi_sum += per_subject.sum(axis=0)
                self.phi_sq += np.einsum("cse,csf->sef", per_subject, per_subject)
                self.n_kept += self.chains
            self.record(k)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        self.phi_last = phi

    def record(self, k: int) -> None:
        entries = {n: self.theta[i] for i, n in enumerate(self.theta_names)}
        entries.update({f"OMEGA({e})": self.omega[j, j] for j, e in enumerate(self.pop.etas)})
        entries.update({f"SIGMA({o}:{n})": v for (o, n), v in self.sigma.items()})
        for name, value in entries.items():
            self.history.setdefault(name, []).append(float(value))

    # -- likelihood ------------------------------------------------------------------------
    def importance_sampling(self) -> tuple[float, float]:
        """-2LL (with constant) by importance sampling, and its Monte Carlo SE."""
        from scipy.stats import t as student

        nu = 5.0
        mean = self.phi_sum / self.n_kept
        cov = self.phi_sq / self.n_kept - np.einsum("se,sf->sef", mean, mean)
        cov = cov + 1e-10 * np.eye(self.n_eta)[None]
        chol = np.linalg.cholesky(cov)
        mu = self.mu(self.theta)[: self.n_sub]
        inv = np.linalg.inv(self.omega)
        _, logdet = np.linalg.slogdet(self.omega)
        M = self.options.is_samples
        rng = np.random.default_rng(self.options.seed + 1)
        log_w = np.empty((M, self.n_sub))
        for m in range(M):
            z = rng.standard_normal((self.n_sub, self.n_eta))
            x = z / np.sqrt(rng.chisquare(nu, (self.n_sub, self.n_eta)) / nu)  # independent t
            phi = mean + np.einsum("sef,sf->se", chol, x)
            full = np.tile(phi, (self.chains, 1))
            ll, _ = self.loglik(full, first=self.n_sub)  # one chain's worth of subjects
            ll = ll[: self.n_sub]
            eta = phi - mu
            prior = -0.5 * (self.n_eta * LOG_2PI + logdet + np.einsum("se,ef,sf->s", eta, inv, eta))
            log_q = np.sum(student.logpdf(x, nu), axis=1) - np.sum(
                np.log(np.abs(np.diagonal(chol, axis1=1, axis2=2))), axis=1
            )
            log_w[m] = ll + prior - log_q
        top = np.max(log_w, axis=0)
        w = np.exp(log_w - top)
        li = top + np.log(w.mean(axis=0))
        minus2ll = -2.0 * float(np.sum(li)) + 2.0 * self.log_y_sum
        # delta method: var(log mean w) ~ var(w) / (M mean(w)^2), subjects independent
        rel = w.var(axis=0, ddof=1) / (M * w.mean(axis=0) ** 2)
        se = 2.0 * math.sqrt(float(np.sum(rel)))
        return minus2ll, se

    def result(self, minus2ll: float, se: float, covariance, timings: dict) -> SaemResult:
        """EBEs and diagnostics at the estimates (as after FOCE-I), standard errors and
        the linearised -2LL."""
        N = self.n_sub
        theta = {n: float(self.theta[i]) for i, n in enumerate(self.theta_names)}
        keep = [j for j in range(self.n_eta) if j not in self.annealed]
        mu = self.mu(self.theta)[:N]
        eta_mean = (self.phi_sum / self.n_kept - mu)[:, keep]
        estimates = self.original.with_values(
            theta, self.omega[np.ix_(keep, keep)], dict(self.sigma)
        )
        t = time.perf_counter()
        objective = PopulationObjective(estimates, self.subjects, "FOCEI", DEFAULT_OPTIONS)
        x = objective.layout.natural()
        objective.etas = eta_mean.copy()
        total, results = objective.evaluate(x)
        ebe = np.array([r.eta for r in results]).reshape(N, len(keep))
        phi_hat = mu.copy()
        phi_hat[:, keep] += ebe
        fit_warnings = []
        try:  # a failure here costs the SEs and the linearised -2LL, never the fit
            info, minus2ll_lin = linearised_information(self, objective.layout, phi_hat)
        except FitError as exc:
            info, minus2ll_lin = None, math.nan
            fit_warnings.append(f"no linearised information: {exc}")
        cov = None
        labels = {
            "lin": "linearised Fisher information (lin)",
            "sa": "Louis' observed information, stochastic approximation (sa)",
            "S": "S matrix: outer products of the subjects' scores (S)",
        }
        if covariance is not None:
            if covariance in ("sa", "S"):
                info = self.louis.information(covariance)
            if info is not None:
                cov, reason = covariance_from(info)
                if reason:
                    fit_warnings.append(f"no standard errors: {reason}")
        timings["covariance"] = time.perf_counter() - t
        base = assemble(
            objective, x, total, results, cov, None, None,
            labels.get(covariance) if cov is not None else None, "SAEM",
        )  # fmt: skip
        n_normal = base.n_observations - base.n_censored
        history = {
            k: np.asarray(v)
            for k, v in self.history.items()
            if not any(k == f"OMEGA({self.pop.etas[j]})" for j in self.annealed)
        }
        if objective.failures:
            fit_warnings.append(
                f"{objective.failures} subject(s) failed in the EBE step: "
                f"{objective.failure_messages[0] if objective.failure_messages else ''}"
            )
        fields_ = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        fields_.update(
            ofv=minus2ll - n_normal * LOG_2PI,
            warnings=fit_warnings,
            timings=timings,
            n_iterations=self.options.k1 + self.options.k2,
            n_evaluations=self.n_passes,
            params=lmfit_parameters(base.parameters, objective.layout),
        )
        return SaemResult(
            **fields_,
            minus2ll=minus2ll,
            minus2ll_se=se,
            minus2ll_lin=minus2ll_lin,
            ofv_focei=base.ofv,
            eta=eta_mean,
            subject_ids=[s.id for s in self.subjects],
            history=history,
            chains=self.chains,
            options=self.options,
        )


def _with_vanishing_effects(pop: PopulationModel) -> tuple[PopulationModel, list[int]]:
    """A copy of ``pop`` in which every estimated theta that reaches no random effect gets
    an artificial one (``theta exp(eta)`` if positive, else ``theta + eta``) whose
    variance the M-step shrinks geometrically to almost 0, as Monolix estimates
    parameters without variability; the indices of those random effects."""
    import copy

    with_eta = set()
    for expr in pop.individual_expressions.values():
        if any(sp.Symbol(e, real=True) in expr.free_symbols for e in pop.etas):
            with_eta |= {s.name for s in expr.free_symbols}
    lonely = [n for n, th in pop.thetas.items() if not th.fixed and n not in with_eta]
    if not lonely:
        return pop, []
    aug = copy.deepcopy(pop)
    indices = []
    for name in lonely:
        th = aug.thetas[name]
        positive = th.lower >= 0 and th.value > 0
        variance = 0.1 if positive else (0.3 * max(abs(th.value), 1.0)) ** 2
        indices.append(len(aug.etas))
        eta = aug.eta(f"vanishing_{name}", variance)
        new = th.symbol * sp.exp(eta) if positive else th.symbol + eta
        aug.individual_expressions = {
            k: v.xreplace({th.symbol: new}) for k, v in aug.individual_expressions.items()
        }
    aug._compiled = None
    return aug, indices


def _mu_references(pop: PopulationModel):
    """``mu(theta, covariates)`` of each random effect, and the thetas it uses.

    Each random effect must enter exactly one individual parameter ``P`` as
    ``P = exp(mu + eta)`` (log-normal) or ``P = mu + eta`` (normal)."""
    etas = [sp.Symbol(e, real=True) for e in pop.etas]
    thetas = [sp.Symbol(n, real=True) for n in pop.thetas]
    covs = [sp.Symbol(c, real=True) for c in pop.covariates]
    mus, used = [], set()
    for e in etas:
        users = [(p, x) for p, x in pop.individual_expressions.items() if e in x.free_symbols]
        if len(users) != 1:
            raise FitError(
                f"SAEM of '{pop.name}': random effect {e} must enter exactly one individual "
                f"parameter (it enters {len(users)})"
            )
        parameter, expr = users[0]
        positive = {s: sp.Symbol(s.name, positive=True) for s in expr.free_symbols - {e}}
        for transform in ("log", "identity"):
            if transform == "log":
                phi = sp.expand_log(sp.log(expr.xreplace(positive)), force=True)
                phi = phi.xreplace({v: k for k, v in positive.items()})
            else:
                phi = expr
            slope = sp.simplify(sp.diff(phi, e))
            others = [sp.simplify(sp.diff(phi, o)) for o in etas if o != e]
            if slope == 1 and all(d == 0 for d in others):
                mu = sp.simplify(phi.subs(e, 0))
                break
        else:
            raise FitError(
                f"SAEM of '{pop.name}': parameter '{parameter}' is not mu-referenced "
                f"(P = exp(mu + {e}) or P = mu + {e}, with mu a function of thetas and "
                "covariates)"
            )
        mus.append(mu)
        used |= {str(s) for s in mu.free_symbols}
    names = list(pop.thetas)
    idle = [n for n, th in pop.thetas.items() if n not in used and not th.fixed]
    if idle:  # a theta that enters together with a random effect, but not through mu
        raise FitError(
            f"SAEM of '{pop.name}': theta(s) {', '.join(idle)} enter no random effect's mu "
            "(write the parameter as exp(mu + eta) or mu + eta)"
        )
    fn = sp.lambdify((thetas, covs), mus, modules="numpy")
    first = [[sp.diff(m, t) for t in thetas] for m in mus]
    second = [[[sp.diff(d, t) for t in thetas] for d in row] for row in first]
    derivatives = sp.lambdify((thetas, covs), [first, second], modules="numpy")
    return fn, [names.index(n) for n in names if n in used], derivatives
