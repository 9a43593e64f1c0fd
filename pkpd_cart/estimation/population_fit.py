"""Population (mixed-effects) fits: FOCE-I, FOCE, FO and LAPLACE, as NONMEM runs them.

:func:`fit_population` estimates the fixed effects (theta), the covariance of the random
effects (Omega) and the residual-error sigmas of a
:class:`~pkpd_cart.model.population_model.PopulationModel` by minimising NONMEM's
objective function value (OFV: -2 log-likelihood without ``N log 2 pi``), the sum of the
per-subject contributions of :mod:`pkpd_cart.estimation.conditional`.

Outer problem. A BFGS quasi-Newton loop (:func:`quasi_newton`) on an
unconstrained vector: bounded thetas through log/logit transforms, each free Omega block
through its Cholesky factor with a log diagonal, sigmas on the log scale. Its gradient is
a central difference of the marginal OFV with every subject's EBEs re-optimised from the
current ones (NONMEM's outer gradient is also numerical); see ``docs/population-fits.md``
for the measurements behind that choice. The ``2 n`` points of a gradient are independent
and run through the package's executor.

Covariance step (NONMEM ``$COV``), in the natural parameters (thetas, Omega elements,
sigma SDs): ``R`` is the Hessian of the OFV and ``S`` the sum over subjects of the outer
products of the gradients of their OBJ contributions, both by central differences with
re-optimised EBEs; the covariance is ``R^-1 S R^-1`` (``"sandwich"``, NONMEM's default),
``2 R^-1`` (``"R"``) or ``4 S^-1`` (``"S"``). When ``R`` is not positive definite the
step falls back to ``S`` and says so.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pkpd_cart.data.dataset import Dataset
from pkpd_cart.errors import DatasetError, FitError, PkpdCartWarning
from pkpd_cart.estimation.conditional import (
    LOG_2PI,
    METHODS,
    BatchConditional,
    Context,
    SubjectData,
    SubjectObjective,
    SubjectResult,
)
from pkpd_cart.model.population_model import PopulationModel
from pkpd_cart.simulation.solver import Dose, RepeatedRun, SolverOptions

COVARIANCE_METHODS = ("sandwich", "R", "S", None)
COVARIANCE_INNER_TOLERANCE = 1e-16  # Newton decrement of the EBEs in the covariance step
DEFAULT_OPTIONS = SolverOptions()  # rtol 1e-8, atol 1e-10 (see fit_population)


# -- parameters -------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One natural parameter: a theta, an Omega element or a sigma (an SD)."""

    kind: str  # "theta", "omega", "sigma"
    name: str
    fixed: bool
    index: tuple  # theta: (k,); omega: (i, j); sigma: (observable, sigma name)
    lower: float = -math.inf
    upper: float = math.inf


class Layout:
    """Maps the natural parameters ``x`` to the optimiser's unconstrained ``u`` and back."""

    def __init__(self, pop: PopulationModel):
        self.pop = pop
        self.entries: list[Entry] = []
        for k, th in enumerate(pop.thetas.values()):
            self.entries.append(Entry("theta", th.name, th.fixed, (k,), th.lower, th.upper))
        self.blocks = []
        for block, fixed in zip(pop.omega_blocks, pop.omega_fixed):
            idx = sorted(block)
            self.blocks.append((idx, fixed))
            for a, i in enumerate(idx):
                for j in idx[: a + 1]:
                    name = (
                        f"OMEGA({pop.etas[i]})" if i == j else f"OMEGA({pop.etas[i]},{pop.etas[j]})"
                    )
                    self.entries.append(Entry("omega", name, fixed, (i, j)))
        for obs, res in pop.residuals.items():
            for s in res.error_model.sigma_names:
                self.entries.append(
                    Entry("sigma", f"SIGMA({obs}:{s})", s in res.fixed, (obs, s), 0.0)
                )
        self.free = [k for k, e in enumerate(self.entries) if not e.fixed]

    def natural(self) -> np.ndarray:
        """Initial natural vector from the population model."""
        pop = self.pop
        th = pop.theta_vector()
        sig = pop.sigma_values()
        out = []
        for e in self.entries:
            if e.kind == "theta":
                out.append(th[e.index[0]])
            elif e.kind == "omega":
                out.append(pop.omega[e.index])
            else:
                out.append(sig[e.index])
        return np.array(out, dtype=float)

    def parts(self, x: np.ndarray):
        """``(theta, Omega, sigma by observable)`` of a natural vector."""
        pop = self.pop
        theta = np.array([x[k] for k, e in enumerate(self.entries) if e.kind == "theta"])
        n = len(pop.etas)
        omega = np.zeros((n, n))
        sig = {obs: [] for obs in pop.residuals}
        for k, e in enumerate(self.entries):
            if e.kind == "omega":
                i, j = e.index
                omega[i, j] = omega[j, i] = x[k]
            elif e.kind == "sigma":
                sig[e.index[0]].append(x[k])
        return theta, omega, sig

    # unconstrained coordinates of the free entries
    def to_u(self, x: np.ndarray) -> np.ndarray:
        u = {}
        for k in self.free:
            e = self.entries[k]
            if e.kind == "theta":
                u[k] = _to_unbounded(x[k], e.lower, e.upper)
            elif e.kind == "sigma":
                u[k] = math.log(x[k])
        _, omega, _ = self.parts(x)
        for idx, fixed in self.blocks:
            if fixed:
                continue
            L = np.linalg.cholesky(omega[np.ix_(idx, idx)])
            for a, i in enumerate(idx):
                for b, j in enumerate(idx[: a + 1]):
                    k = self._omega_index(i, j)
                    u[k] = math.log(L[a, b]) if a == b else L[a, b]
        return np.array([u[k] for k in self.free])

    def from_u(self, u: np.ndarray, x0: np.ndarray) -> np.ndarray:
        x = x0.copy()
        vals = dict(zip(self.free, u))
        for k in self.free:
            e = self.entries[k]
            if e.kind == "theta":
                x[k] = _from_unbounded(vals[k], e.lower, e.upper)
            elif e.kind == "sigma":
                x[k] = math.exp(min(vals[k], 700.0))
        for idx, fixed in self.blocks:
            if fixed:
                continue
            m = len(idx)
            L = np.zeros((m, m))
            for a, i in enumerate(idx):
                for b, j in enumerate(idx[: a + 1]):
                    v = vals[self._omega_index(i, j)]
                    L[a, b] = math.exp(min(v, 350.0)) if a == b else v
            block = L @ L.T
            for a, i in enumerate(idx):
                for b, j in enumerate(idx[: a + 1]):
                    x[self._omega_index(i, j)] = block[a, b]
        return x

    def _omega_index(self, i: int, j: int) -> int:
        for k, e in enumerate(self.entries):
            if e.kind == "omega" and e.index in ((i, j), (j, i)):
                return k
        raise KeyError((i, j))


def _to_unbounded(v: float, lo: float, hi: float) -> float:
    if math.isfinite(lo) and math.isfinite(hi):
        p = (v - lo) / (hi - lo)
        return math.log(p / (1 - p))
    if math.isfinite(lo):
        return math.log(v - lo)
    if math.isfinite(hi):
        return math.log(hi - v)
    return v


def _from_unbounded(u: float, lo: float, hi: float) -> float:
    if math.isfinite(lo) and math.isfinite(hi):
        return lo + (hi - lo) / (1 + math.exp(-u))
    if math.isfinite(lo):
        return lo + math.exp(min(u, 700.0))
    if math.isfinite(hi):
        return hi - math.exp(min(u, 700.0))
    return u


# -- data ---------------------------------------------------------------------------------
def subjects_from_dataset(pop: PopulationModel, dataset: Dataset) -> list[SubjectData]:
    """Per-subject records; covariates checked (present, numeric, constant per subject)."""
    model = pop.model
    if dataset.converted_to != model.name:
        dataset = dataset.for_model(model)
    frame = dataset.frame
    for c in pop.covariates:
        if c not in frame:
            raise DatasetError(
                f"{dataset.source}: column {c}: covariate of population model '{pop.name}' "
                "is missing from the dataset"
            )
    obs = dataset.observations()
    used = sorted(set(obs["DVID"]))
    missing = [o for o in used if o not in pop.residuals]
    if missing:
        raise FitError(
            f"population model '{pop.name}': no residual error model for observable(s) "
            f"{', '.join(missing)} (use pop.error(name, ErrorModel...))"
        )
    obs_names = list(model.observables)
    subjects = []
    doses_by_subject = dict(tuple(dataset.doses().groupby("ID", sort=False)))
    rows_by_subject = dict(tuple(frame.groupby("ID", sort=False)))
    obs_by_subject = dict(tuple(obs.groupby("ID", sort=False)))
    for sid in dataset.subjects:
        rows = rows_by_subject[sid]
        covs = []
        for c in pop.covariates:
            values = rows[c].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                raise DatasetError(
                    f"{dataset.source}: row {int(rows['ROW'].iloc[0])}, column {c}: subject "
                    f"{sid} has no value of covariate {c}"
                )
            if np.any(finite != finite[0]):
                bad = rows.iloc[int(np.argmax(np.isfinite(values) & (values != finite[0])))]
                raise DatasetError(
                    f"{dataset.source}: row {int(bad['ROW'])}, column {c}: covariate {c} "
                    f"varies within subject {sid} ({finite[0]:g}, {float(bad[c]):g}); it must "
                    "be constant within a subject"
                )
            covs.append(float(finite[0]))
        rec = obs_by_subject.get(sid)
        if rec is None or rec.empty:
            continue
        times = np.unique(rec["TIME"].to_numpy(dtype=float))
        o_index = np.array([obs_names.index(d) for d in rec["DVID"]])
        logn = np.array([pop.residuals[d].error_model.kind == "lognormal" for d in rec["DVID"]])
        cens = rec["CENS"].to_numpy() == 1
        y = rec["DV"].to_numpy(dtype=float)
        lim = rec["LIMIT"].to_numpy(dtype=float)
        if np.any(logn & ~cens & ~(y > 0)):
            bad = rec[logn & ~cens & ~(y > 0)].iloc[0]
            raise DatasetError(
                f"{dataset.source}: row {int(bad['ROW'])}, column DV: {bad['DV']:g} is not "
                f"positive, but '{bad['DVID']}' has a log-normal error model"
            )
        log_y_sum = float(np.sum(np.log(y[logn & ~cens])))
        y = np.where(logn & ~cens, np.log(np.where(y > 0, y, 1.0)), y)
        lim = np.where(logn & cens, np.log(np.where(lim > 0, lim, 1.0)), lim)
        doses = [
            Dose(float(r.TIME), float(r.AMT), str(r.CMT))
            for r in doses_by_subject.get(sid, dataset.doses().iloc[:0]).itertuples()
        ]
        subjects.append(
            SubjectData(
                sid,
                times,
                np.searchsorted(times, rec["TIME"].to_numpy(dtype=float)),
                o_index,
                y,
                cens,
                lim,
                log_y_sum,
                logn,
                doses,
                np.array(covs),
                rec,
            )
        )
    if not subjects:
        raise FitError(f"no observations to fit in {dataset.source}")
    return subjects


# -- the objective over all subjects ---------------------------------------------------------
class PopulationObjective:
    """The OFV as a function of the natural parameters, with EBE warm starts."""

    def __init__(
        self,
        pop: PopulationModel,
        subjects: list[SubjectData],
        method: str,
        options: SolverOptions,
        executor=None,
    ):
        self.pop = pop
        self.layout = Layout(pop)
        self.subjects = subjects
        self.method = method
        self.options = options
        self.executor = executor
        self.subject_objective = SubjectObjective(pop, options)
        self.etas = np.zeros((len(subjects), len(pop.etas)))
        self.n_evaluations = 0
        self.failures = 0
        self.failure_messages: list[str] = []
        self._pool: _ForkedPool | None = None

    def context(self, x: np.ndarray) -> Context:
        theta, omega, sig = self.layout.parts(x)
        if len(omega):
            L = np.linalg.cholesky(omega)  # LinAlgError: not positive definite
            inv = np.linalg.inv(omega)
            logdet = 2 * float(np.sum(np.log(np.diag(L))))
        else:
            inv, logdet = omega, 0.0
        return Context(theta, omega, inv, logdet, sig, self.method)

    def evaluate(
        self, x: np.ndarray, etas: np.ndarray | None = None
    ) -> tuple[float, list[SubjectResult]]:
        """Total OFV and per-subject results at natural ``x`` (EBEs from ``etas``)."""
        self.n_evaluations += 1
        try:
            ctx = self.context(x)
        except np.linalg.LinAlgError:
            return math.inf, []
        start = self.etas if etas is None else etas
        batch = self.batch()
        if batch is not None:
            results = batch.solve(ctx, start, self.subject_objective.inner_tolerance)
        else:
            results = [
                self.subject_objective.conditional(s, ctx, start[i])
                for i, s in enumerate(self.subjects)
            ]
        for r in results:
            if r.failed:
                self.failures += 1
                if len(self.failure_messages) < 20:
                    self.failure_messages.append(r.failed)
        total = float(sum(r.obj for r in results))
        return total, results

    def batch(self):
        """The all-subjects solver when it applies (FOCE-I and FOCE, compiled BDF, no
        switches), else None (then subjects are solved one by one)."""
        if not hasattr(self, "_batch"):
            so = self.subject_objective
            ok = self.method in ("FOCEI", "FOCE") and RepeatedRun.supported(
                self.pop.model, self.options
            )
            self._batch = BatchConditional(so, self.subjects) if ok else None
        return self._batch

    def evaluate_many(self, points: Sequence[np.ndarray], etas) -> list:
        """Per-subject OBJ arrays and EBEs at several points (through the executor);
        ``etas``: the warm start of all points, or a list with one per point."""
        from pkpd_cart.simulation.executor import LocalExecutor, get_executor

        ex = get_executor(self.executor)
        tol = self.subject_objective.inner_tolerance
        starts = etas if isinstance(etas, list) else [etas] * len(points)
        if isinstance(ex, LocalExecutor) and "fork" in mp.get_all_start_methods():
            if self._pool is None:
                self._pool = _ForkedPool(self, ex.workers)
            out = self._pool.map([(x, e, tol) for x, e in zip(points, starts)])
        else:
            out = ex.map(_evaluate_task, [(self, x, e) for x, e in zip(points, starts)])
        if ex.workers > 1:  # evaluations in other processes are not counted there
            self.n_evaluations += len(points)
        return out

    def evaluate_pairs(
        self, plus: Sequence[np.ndarray], minus: Sequence[np.ndarray], etas: np.ndarray
    ) -> tuple[list, list]:
        """Points symmetric about the current one: the ``plus`` points first, then each
        ``minus`` point warm-started from ``2 eta - eta(plus)``, which is off its EBEs by
        O(h^2) only (measured on ACOP: 10 -> 7 simulations per subject and gradient
        direction)."""
        up = self.evaluate_many(plus, etas)
        down = self.evaluate_many(minus, [2 * etas - e for _, e in up])
        return up, down

    def close(self) -> None:
        """Stop the worker processes of this fit, if any."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __getstate__(self) -> dict:  # for Dask: compiled pieces are rebuilt on arrival
        state = dict(self.__dict__)
        state.pop("_batch", None)
        state["_pool"] = None
        state["executor"] = None  # a worker evaluates its points itself
        return state


_WORKER_OBJECTIVE: PopulationObjective | None = None  # inherited by forked workers


def _forked_task(task):
    x, etas, tol = task
    objective = _WORKER_OBJECTIVE
    objective.subject_objective.inner_tolerance = tol
    return _evaluate_task((objective, x, etas))


def _worker_start() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # the workers already use the cores


class _ForkedPool:
    """Worker processes forked once per fit. Each inherits the objective (compiled model,
    packed records), so a task carries only a point, the warm-start EBEs and the inner
    tolerance. (The package's LocalExecutor forks a new pool per map, which costs more
    than a gradient of a small model: pheno and ACOP took as long on 2 processes as on 1.)
    """

    def __init__(self, objective: PopulationObjective, workers: int):
        from concurrent.futures import ProcessPoolExecutor

        global _WORKER_OBJECTIVE
        _WORKER_OBJECTIVE = objective
        objective.batch()  # built before the fork, shared by the workers
        self.pool = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("fork"), initializer=_worker_start
        )

    def map(self, tasks: list) -> list:
        return list(self.pool.map(_forked_task, tasks))

    def close(self) -> None:
        self.pool.shutdown()


def _evaluate_task(task):
    objective, x, etas = task
    total, results = objective.evaluate(x, etas)
    if not results:
        return np.full(len(objective.subjects), math.inf), etas
    return np.array([r.obj for r in results]), np.array([r.eta for r in results])


# -- results --------------------------------------------------------------------------------
@dataclass
class PopulationFitResult:
    """Estimates, uncertainty, EBEs and diagnostics of a population fit.

    ``parameters`` has one row per theta, Omega element and sigma: ``estimate`` (Omega
    as variances/covariances, sigma as SDs), ``se``, ``rse_pct``, 95% Wald limits,
    ``fixed``; Omega diagonals also carry ``sd`` and ``cv_pct`` (``100 sqrt(exp(w^2)-1)``,
    log-normal) and sigmas ``variance`` (NONMEM's ``$SIGMA``).
    """

    population: PopulationModel
    method: str
    ofv: float
    n_observations: int
    n_censored: int
    n_subjects: int
    parameters: object = field(repr=False)  # DataFrame
    ebes: object = field(repr=False)  # DataFrame: ID, etas, ETC, OBJ
    individual: object = field(repr=False)  # DataFrame of individual parameters
    diagnostics: object = field(repr=False)  # DataFrame per record
    shrinkage: object = field(repr=False)  # DataFrame
    covariance: np.ndarray | None = field(repr=False)
    covariance_method: str | None = None
    correlation: np.ndarray | None = field(default=None, repr=False)
    eigenvalues: np.ndarray | None = field(default=None, repr=False)
    R: np.ndarray | None = field(default=None, repr=False)
    S: np.ndarray | None = field(default=None, repr=False)
    success: bool = True
    message: str = ""
    n_iterations: int = 0
    n_evaluations: int = 0
    n_failures: int = 0
    failure_messages: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    params: object = field(default=None, repr=False)  # lmfit.Parameters, natural scale
    synthetic: bool = False

    @property
    def n_estimated(self) -> int:
        return int((~self.parameters["fixed"]).sum())

    @property
    def ofv_with_constant(self) -> float:
        """-2 log-likelihood including ``N log(2 pi)`` (N = uncensored observations)."""
        return self.ofv + (self.n_observations - self.n_censored) * LOG_2PI

    @property
    def aic(self) -> float:
        return self.ofv_with_constant + 2 * self.n_estimated

    @property
    def bic(self) -> float:
        return self.ofv_with_constant + self.n_estimated * math.log(self.n_observations)

    @property
    def condition_number(self) -> float | None:
        if self.eigenvalues is None or not len(self.eigenvalues):
            return None
        return float(self.eigenvalues.max() / self.eigenvalues.min())

    def theta(self):
        return self.parameters[self.parameters["kind"] == "theta"]

    def omega(self):
        return self.parameters[self.parameters["kind"] == "omega"]

    def sigma(self):
        return self.parameters[self.parameters["kind"] == "sigma"]

    def summary(self) -> str:
        """A text table as a pharmacometrician reads it."""
        lines = [
            f"Population fit of '{self.population.name}' by {self.method}"
            + (" (SYNTHETIC data)" if self.synthetic else ""),
            f"OFV {self.ofv:.4f} (without N log 2pi); -2LL {self.ofv_with_constant:.4f}; "
            f"AIC {self.aic:.3f}; BIC {self.bic:.3f} ({self.n_estimated} estimated "
            f"parameters, {self.n_observations} observations, {self.n_subjects} subjects)",
            f"{'parameter':28s} {'estimate':>12s} {'SE':>11s} {'RSE%':>7s}",
        ]
        for r in self.parameters.itertuples():
            se = "fixed" if r.fixed else (f"{r.se:11.4g}" if np.isfinite(r.se) else "-")
            rse = "" if r.fixed or not np.isfinite(r.rse_pct) else f"{r.rse_pct:7.1f}"
            lines.append(f"{r.name:28s} {r.estimate:12.6g} {se:>11s} {rse:>7s}")
        if self.covariance_method:
            lines.append(
                f"covariance: {self.covariance_method}; condition number "
                f"{self.condition_number:.4g}"
            )
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# -- the outer optimiser ----------------------------------------------------------------------
def quasi_newton(
    ofv_at, gradient_at, u0: np.ndarray, max_iterations: int, ofv_tolerance: float
) -> tuple[np.ndarray, int, bool, str]:
    """BFGS on the unconstrained outer vector with an Armijo backtracking line search.

    Why not scipy's BFGS (lmfit ``method="bfgs"``): its Wolfe line search asks for the
    gradient at every trial point, and here a gradient is ``2n`` OFV evaluations, each
    re-optimising every subject's EBEs. Measured on a 30-subject M3 problem it took 1088
    OFV evaluations in 15 iterations; this loop needs one gradient per iteration and
    usually one trial. The first inverse Hessian is the diagonal of second differences
    that the first gradient gives for one more evaluation.

    Stops when the OFV decrease the quasi-Newton model predicts, ``g' H^-1 g / 2``, is
    below ``ofv_tolerance`` (OFV units), or when no step decreases the OFV any more.
    """
    u = np.array(u0, dtype=float)
    f = ofv_at(u)
    if not math.isfinite(f):
        return u, 0, False, "the OFV is not finite at the initial estimates"
    g, curv = gradient_at(u, with_curvature=True)
    usable = np.isfinite(curv) & (curv > 0)
    Hinv = np.diag(np.where(usable, 1 / np.maximum(curv, 1e-300), 1 / (10 * np.abs(g) + 1)))
    for it in range(1, max_iterations + 1):
        d = -Hinv @ g
        expected = -float(g @ d)
        if not (expected > 0 and np.all(np.isfinite(d))):  # lost positive definiteness
            Hinv = np.diag(np.where(usable, 1 / np.maximum(curv, 1e-300), 1.0))
            d = -Hinv @ g
            expected = -float(g @ d)
        if expected / 2 < ofv_tolerance:
            return u, it - 1, True, f"converged: predicted OFV decrease {expected / 2:.2g}"
        longest = np.max(np.abs(d))
        if longest > 2.0:  # at most a factor e^2 per step on log-scale parameters
            d *= 2.0 / longest
        lam, accepted = 1.0, False
        for _ in range(40):
            trial = u + lam * d
            f_trial = ofv_at(trial)
            if math.isfinite(f_trial) and f_trial <= f + 1e-4 * lam * float(g @ d):
                accepted = True
                break
            lam *= 0.5
        if not accepted:
            return (
                u,
                it - 1,
                expected / 2 < 100 * ofv_tolerance,
                (
                    f"no step decreases the OFV (predicted decrease {expected / 2:.2g}); "
                    "stopped at rounding level"
                ),
            )
        g_new, _ = gradient_at(trial)
        s_vec, y_vec = trial - u, g_new - g
        sy = float(s_vec @ y_vec)
        if sy > 1e-12 * float(np.linalg.norm(s_vec) * np.linalg.norm(y_vec)):
            rho = 1.0 / sy
            eye = np.eye(len(u))
            Hinv = (eye - rho * np.outer(s_vec, y_vec)) @ Hinv @ (
                eye - rho * np.outer(y_vec, s_vec)
            ) + rho * np.outer(s_vec, s_vec)
        u, f, g = trial, f_trial, g_new
    return u, max_iterations, False, f"stopped after max_iterations={max_iterations}"


# -- the fit -----------------------------------------------------------------------------------
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
    covariance : ``"sandwich"`` (R^-1 S R^-1, NONMEM's default), ``"R"``, ``"S"`` or None.
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
            f"unknown covariance method {covariance!r}; choose one of 'sandwich', 'R', 'S' or None"
        )
    if not isinstance(population, PopulationModel):
        raise FitError(f"fit_population needs a PopulationModel, not {type(population).__name__}")
    if not isinstance(data, Dataset):
        raise FitError(
            f"fit_population needs a Dataset (pk.read_dataset), not {type(data).__name__}"
        )
    if not isinstance(max_iterations, int) or max_iterations < 0:
        raise FitError(f"max_iterations must be a non-negative integer, not {max_iterations!r}")
    from pkpd_cart.errors import ModelDefinitionError

    try:
        population.validate()
    except ModelDefinitionError as exc:
        raise FitError(str(exc)) from None
    options = options or DEFAULT_OPTIONS
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
            """OFV at u; the EBEs found become the next warm start."""
            total, results = objective.evaluate(layout.from_u(u, x0))
            if not results or not math.isfinite(total):
                return math.inf
            objective.etas = np.array([r.eta for r in results])
            return total

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
            f_plus = np.array([o[0].sum() for o in up])
            f_minus = np.array([o[0].sum() for o in down])
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
        if covariance is not None and layout.free and max_iterations > 0:
            cov, R, S, cov_used, cov_warn = covariance_step(objective, x_hat, covariance)
            fit_warnings += cov_warn
        timings["covariance"] = time.perf_counter() - t1

        result = _assemble(objective, x_hat, total, results, cov, R, S, cov_used, method)
        result.success = success
        result.message = message
        result.n_iterations = n_iter
        result.n_evaluations = objective.n_evaluations
        result.n_failures = objective.failures
        result.failure_messages = list(objective.failure_messages)
        result.warnings = fit_warnings
        result.timings = timings
        result.params = _lmfit_parameters(result.parameters, objective.layout)
        result.synthetic = bool(getattr(data, "synthetic", False))
        for w in fit_warnings:
            warnings.warn(w, PkpdCartWarning, stacklevel=3)
        return result
    finally:
        objective.close()  # worker processes of this fit, if any


def covariance_step(objective: PopulationObjective, x: np.ndarray, method: str):
    """``(covariance, R, S, method used, warnings)`` in the free natural parameters."""
    layout = objective.layout
    free = layout.free
    n = len(free)
    h = np.array([1e-3 * max(abs(x[k]), 1e-3) for k in free])
    etas = objective.etas.copy()

    def shifted(*moves):
        z = x.copy()
        for k, s in moves:
            z[free[k]] += s * h[k]
        return z

    pairs = [(j, k) for j in range(n) for k in range(j)]
    plus = [shifted((k, 1)) for k in range(n)] + [shifted((j, 1), (k, 1)) for j, k in pairs]
    minus = [shifted((k, -1)) for k in range(n)] + [shifted((j, -1), (k, -1)) for j, k in pairs]
    # Second differences of the OFV amplify any slack in the EBEs: converge them to
    # rounding (a Newton decrement of 1e-16; at 1e-12 the pheno SE of OMEGA(1,1) was 4%
    # off NONMEM's, at 1e-16 all six agree to 0.2%)
    so = objective.subject_objective
    saved, so.inner_tolerance = so.inner_tolerance, COVARIANCE_INNER_TOLERANCE
    try:
        centre = objective.evaluate_many([shifted()], etas)[0][0]
        up, down = objective.evaluate_pairs(plus, minus, etas)
    finally:
        so.inner_tolerance = saved
    per_plus = np.array([o[0] for o in up])  # (points, subjects)
    per_minus = np.array([o[0] for o in down])
    f0 = centre.sum()
    t_plus, t_minus = per_plus.sum(axis=1), per_minus.sum(axis=1)
    G = ((per_plus[:n] - per_minus[:n]) / (2 * h[:, None])).T  # (subjects, n)
    S = G.T @ G
    R = np.zeros((n, n))
    for k in range(n):
        R[k, k] = (t_plus[k] - 2 * f0 + t_minus[k]) / h[k] ** 2
    for m, (j, k) in enumerate(pairs):  # diagonal moves, with the axis points: O(h^2)
        pp, mm = t_plus[n + m], t_minus[n + m]
        axes = t_plus[j] + t_plus[k] + t_minus[j] + t_minus[k]
        R[j, k] = R[k, j] = (pp + mm - axes + 2 * f0) / (2 * h[j] * h[k])
    warn = []
    used = method
    r_ok = bool(np.all(np.isfinite(R))) and np.all(np.linalg.eigvalsh(R) > 0)
    if method in ("sandwich", "R") and not r_ok:
        warn.append(
            "R matrix (Hessian of the OFV) is not positive definite: the covariance "
            "falls back to 4 S^-1, as NONMEM does; the estimates may not be a minimum"
        )
        used = "S"
    try:
        if used == "sandwich":
            Ri = np.linalg.inv(R)
            cov = Ri @ S @ Ri
        elif used == "R":
            cov = 2 * np.linalg.inv(R)
        else:
            cov = 4 * np.linalg.inv(S)
    except np.linalg.LinAlgError:
        warn.append(f"the {used} matrix is singular: no standard errors")
        cov = np.full((n, n), np.nan)
    return cov, R, S, used, warn


def _assemble(
    objective: PopulationObjective, x, total, results, cov, R, S, cov_used, method
) -> PopulationFitResult:
    import pandas as pd

    layout = objective.layout
    pop = objective.pop
    theta, omega, sig = layout.parts(x)
    fitted = pop.with_values(
        theta=dict(zip(pop.thetas, theta)),
        omega=omega,
        sigma={e.index: x[k] for k, e in enumerate(layout.entries) if e.kind == "sigma"},
    )
    se = np.full(len(x), np.nan)
    corr = eig = None
    if cov is not None:
        d = np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.nan))
        se[layout.free] = d
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(d, d)
        if np.all(np.isfinite(corr)):
            eig = np.linalg.eigvalsh(corr)
    rows = []
    for k, e in enumerate(layout.entries):
        est = float(x[k])
        row = {
            "kind": e.kind,
            "name": e.name,
            "estimate": est,
            "se": se[k],
            "rse_pct": 100 * se[k] / abs(est) if est != 0 else np.nan,
            "lower_95": est - 1.959964 * se[k],
            "upper_95": est + 1.959964 * se[k],
            "fixed": e.fixed,
            "sd": np.nan,
            "cv_pct": np.nan,
            "variance": np.nan,
            "se_variance": np.nan,
        }
        if e.kind == "omega" and e.index[0] == e.index[1]:
            row["sd"] = math.sqrt(est)
            row["cv_pct"] = 100 * math.sqrt(math.expm1(est))
            row["variance"] = est
            row["se_variance"] = se[k]
        if e.kind == "sigma":
            row["variance"] = est**2
            row["se_variance"] = 2 * est * se[k]
            row["sd"] = est
        rows.append(row)
    parameters = pd.DataFrame(rows)

    ctx = objective.context(x)
    so = objective.subject_objective
    etas = np.array([r.eta for r in results]).reshape(len(results), len(pop.etas))
    ebe_rows, ind_rows, diag_frames = [], [], []
    iwres_all = []
    for subj, res in zip(objective.subjects, results):
        etc = np.linalg.inv(res.information) if len(res.eta) else np.zeros((0, 0))
        row = {"ID": subj.id, **{n: res.eta[i] for i, n in enumerate(pop.etas)}}
        for i, a in enumerate(pop.etas):
            for j, b in enumerate(pop.etas[: i + 1]):
                row[f"ETC({a},{b})"] = etc[i, j]
        row["OBJ"] = res.obj
        ebe_rows.append(row)
        try:
            ipred = so.predict(subj, ctx, res.eta)
            ppred = so.predict(subj, ctx, np.zeros(len(pop.etas)), derivatives=False)
        except Exception:  # noqa: BLE001 - a failed subject gets NaN diagnostics
            ind_rows.append({"ID": subj.id})
            continue
        ind_rows.append({"ID": subj.id, **dict(zip(pop.model.parameters, ipred.parameters))})
        r = subj.y - ipred.f
        iwres = np.where(subj.censored, np.nan, r / np.sqrt(ipred.V))
        iwres_all.append(iwres[~subj.censored])
        # CWRES (Hooker et al. 2007): FOCE linearisation at eta_hat, V at eta_hat
        G = ipred.g if ipred.g is not None else np.zeros((len(r), 0))
        cpred = ipred.f - G @ res.eta
        unc = ~subj.censored
        cwres = np.full(len(r), np.nan)
        if unc.any():
            Gu = G[unc]
            C = Gu @ ctx.omega @ Gu.T + np.diag(ipred.V[unc])
            w, vecs = np.linalg.eigh(C)
            inv_sqrt = vecs @ np.diag(1 / np.sqrt(w)) @ vecs.T
            cwres[unc] = inv_sqrt @ (subj.y[unc] - cpred[unc])
        frame = subj.records[["ROW", "ID", "TIME", "DVID", "DV", "CENS", "LIMIT"]].copy()

        def natural(v: np.ndarray, logged: np.ndarray = subj.lognormal) -> np.ndarray:
            out = np.array(v, dtype=float)  # back from the log scale where it was used
            out[logged] = np.exp(out[logged])
            return out

        back = natural(ipred.f)
        frame["PRED"] = natural(ppred.f)
        frame["IPRED"] = back
        frame["RES"] = frame["DV"] - frame["PRED"]
        frame["IRES"] = frame["DV"] - frame["IPRED"]
        frame["IWRES"] = iwres
        frame["CPRED"] = natural(cpred)
        frame["CWRES"] = cwres
        diag_frames.append(frame)
    ebes = pd.DataFrame(ebe_rows)
    individual = pd.DataFrame(ind_rows)
    diagnostics = pd.concat(diag_frames, ignore_index=True) if diag_frames else pd.DataFrame()
    shrink = []
    for i, n in enumerate(pop.etas):  # NONMEM's ETASHRINKSD: the sample SD (n - 1) of EBEs
        w = math.sqrt(omega[i, i])
        shrink.append(
            {
                "eta": n,
                "etabar": float(etas[:, i].mean()),
                "shrinkage_sd_pct": 100 * (1 - float(np.std(etas[:, i], ddof=1)) / w),
            }
        )
    if iwres_all:
        allw = np.concatenate(iwres_all)
        shrink.append(
            {
                "eta": "EPS (IWRES)",
                "etabar": float(np.mean(allw)),
                # EPSSHRINKSD: the root mean square of IWRES (about 0)
                "shrinkage_sd_pct": 100 * (1 - math.sqrt(float(np.mean(allw**2)))),
            }
        )
    n_obs = sum(len(s.y) for s in objective.subjects)
    n_cens = sum(int(s.censored.sum()) for s in objective.subjects)
    log_y = sum(s.log_y_sum for s in objective.subjects)
    return PopulationFitResult(
        population=fitted,
        method=method,
        ofv=total + 2 * log_y,
        n_observations=n_obs,
        n_censored=n_cens,
        n_subjects=len(objective.subjects),
        parameters=parameters,
        ebes=ebes,
        individual=individual,
        diagnostics=diagnostics,
        shrinkage=pd.DataFrame(shrink),
        covariance=cov,
        covariance_method=cov_used,
        correlation=corr,
        eigenvalues=eig,
        R=R,
        S=S,
    )


def _lmfit_parameters(table, layout: Layout):
    """The estimates as ``lmfit.Parameters`` (natural scale, bounds, ``vary``, ``stderr``),
    the form the fixed-effects fit and lmfit users already read."""
    import re

    import lmfit

    params = lmfit.Parameters()
    for row, entry in zip(table.itertuples(), layout.entries):
        name = re.sub(r"\W+", "_", row.name).strip("_")
        lower = (
            entry.lower if entry.kind == "theta" else (0.0 if entry.kind == "sigma" else -np.inf)
        )
        if entry.kind == "omega" and entry.index[0] == entry.index[1]:
            lower = 0.0
        params.add(
            name,
            value=row.estimate,
            vary=not row.fixed,
            min=lower,
            max=entry.upper if entry.kind == "theta" else np.inf,
        )
        params[name].stderr = None if not np.isfinite(row.se) else float(row.se)
    return params
