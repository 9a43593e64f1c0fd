"""Per-subject pieces of the population likelihood: predictions, EBEs and OBJ contributions.

For a subject with predictions ``f(eta)``, residual variances ``V(eta)``, ``g = df/deta``
and ``h = dV/deta`` (from forward sensitivities through the population model's exact
``dP/deta``), the empirical Bayes estimate ``eta_hat`` minimises

    q(eta) = sum_j [log V_j + (y_j - f_j)^2 / V_j] + sum_c -2 log Phi(z_c) + eta' Omega^-1 eta

(``z_c = (LLOQ - f_c) / sqrt(V_c)`` for records below the limit, Beal's M3), and each
method's objective contribution is (NONMEM's OBJ of the ``.phi`` file):

* ``FOCEI``: ``q(eta_hat) + log|Omega| + log|Omega^-1 + sum [g g'/V + h h'/(2 V^2)]|``,
  all at ``eta_hat`` (NONMEM ``METHOD=1 INTERACTION``);
* ``FOCE``: the same with ``V`` frozen at the population prediction ``V(f(0))`` and
  ``h = 0`` (``METHOD=1``);
* ``FO``: ``eta = 0``; ``log|C| + e' C^-1 e`` with ``C = G Omega G' + diag(V)``,
  ``e = y - f(0)`` (``METHOD=0``);
* ``LAPLACE``: ``q(eta_hat) + log|Omega| + log|H/2|`` with ``H`` the exact Hessian of
  ``q``, by central differences of its analytic gradient (NONMEM ``METHOD=1 LAPLACE``
  also differentiates numerically).

Censored records under FOCE-I and FOCE enter the information matrix through the
Gauss-Newton term of ``-2 log Phi(z)``: ``2 m (z + m) dz dz'`` with ``m = phi(z)/Phi(z)``,
the same first-order approximation FOCE-I makes for the observed records. NONMEM demands
LAPLACE for M3; use ``method="LAPLACE"`` for that exact treatment.

The inner problem is solved by Newton steps with that information matrix (Fisher
scoring: positive definite, no second-order sensitivities), a backtracking line search
and a warm start from the previous outer iterate's EBEs. :class:`BatchConditional` (all
subjects at once, the default path) adds a structured secant (SR1) estimate of the
curvature the information matrix leaves out, which makes the iteration superlinear; both
stop on the same Newton decrement, and the objective always uses the information matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pkpd_cart.errors import SimulationError
from pkpd_cart.simulation.solver import BatchRun, Dose, SolverOptions, simulate

LOG_2PI = math.log(2 * math.pi)
METHODS = ("FOCEI", "FOCE", "FO", "LAPLACE")
# An EBE step smaller than this ends the iteration even if the Newton decrement is not below
# its tolerance: q is then at its rounding level (seen on stein2019 with a log-normal error at
# the covariance step's 1e-16, where Gauss-Newton otherwise ran to its iteration limit)
STEP_FLOOR = 1e-11


@dataclass
class SubjectData:
    """One subject's records, as the population objective uses them."""

    id: str
    times: np.ndarray  # distinct observation times (sorted)
    t_index: np.ndarray  # record -> index into times
    o_index: np.ndarray  # record -> observable index
    y: np.ndarray  # observed value (log for log-normal observables)
    censored: np.ndarray  # bool: below the limit (M3)
    limit: np.ndarray  # LLOQ (log for log-normal observables)
    log_y_sum: float  # sum of log y over uncensored log-normal records (Jacobian term)
    lognormal: np.ndarray  # bool per record
    doses: list[Dose]
    covariates: np.ndarray
    records: object = field(repr=False)  # the dataset rows (DataFrame)


@dataclass
class Context:
    """Everything the per-subject objective needs at one outer iterate."""

    theta: np.ndarray
    omega: np.ndarray
    omega_inv: np.ndarray
    omega_logdet: float
    sigma: dict  # observable -> list of sigma values (error-model order)
    method: str


@dataclass
class Prediction:
    """Predictions, variances and their eta-derivatives at one eta."""

    f: np.ndarray
    V: np.ndarray
    g: np.ndarray | None  # (n_rec, n_eta)
    h: np.ndarray | None  # (n_rec, n_eta)
    parameters: np.ndarray


@dataclass
class SubjectResult:
    """The conditional estimate of one subject at one outer iterate."""

    eta: np.ndarray
    obj: float
    information: np.ndarray  # the matrix inside FOCE-I's log-determinant (inverse of ETC)
    iterations: int
    failed: str = ""


class SubjectObjective:
    """Predictions and the conditional objective of subjects under a population model."""

    def __init__(self, population, options: SolverOptions, penalty: float = 1e10):
        self.population = population
        self.model = population.model
        self.compiled_pop = population.compile()
        self.compiled = self.model.compile()
        self.options = options
        self.observables = list(self.model.observables)
        self.varying = list(self.compiled_pop.varying)
        self.n_eta = len(population.etas)
        self.penalty = penalty
        self.n_simulations = 0
        self.inner_tolerance = 1e-12
        self._runs: dict = {}  # (subject id, with sensitivities) -> BatchRun

    def __getstate__(self) -> dict:  # numeric functions are rebuilt where unpickled
        state = dict(self.__dict__)
        for key in ("compiled_pop", "compiled", "_runs"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.compiled_pop = self.population.compile()
        self.compiled = self.model.compile()
        self._runs = {}

    # -- predictions -----------------------------------------------------------------
    def predict(
        self,
        subj: SubjectData,
        ctx: Context,
        eta: np.ndarray,
        derivatives: bool = True,
        frozen_V: np.ndarray | None = None,
    ) -> Prediction:
        """``f``, ``V`` and (if asked) ``g = df/deta``, ``h = dV/deta`` of every record."""
        cp = self.compiled_pop
        th, et, cv = list(ctx.theta), list(eta), list(subj.covariates)
        try:
            p = np.asarray(cp.individual(th, et, cv), dtype=float)
        except (ArithmeticError, ValueError) as exc:  # e.g. exp overflow far from the optimum
            raise SimulationError(
                self.model.name, 0.0, {}, f"individual parameters: {exc}"
            ) from None
        wrt = self.varying if (derivatives and self.n_eta) else []
        self.n_simulations += 1
        obs_all, obs_sens = self._simulate(subj, p, wrt)
        O = obs_all[subj.t_index]  # (n_rec, n_obs)
        rec = np.arange(len(subj.y))
        f = O[rec, subj.o_index]
        dO = None
        if wrt:
            dpdeta = np.asarray(cp.d_individual(th, et, cv), dtype=float)  # (n_var, n_eta)
            dO = obs_sens[subj.t_index] @ dpdeta  # (n_rec, n_obs, n_eta)
        V = np.empty_like(f)
        if dO is None and derivatives:  # no random effects: derivatives are empty
            dO = np.zeros((len(f), O.shape[1], self.n_eta))
        g = dO[rec, subj.o_index] if dO is not None else None
        h = np.zeros_like(g) if g is not None else None
        for k, obs in enumerate(self.observables):
            sel = subj.o_index == k
            if not sel.any():
                continue
            Vf, dVdF, dVdO, _ = cp.variance[obs]
            sig = ctx.sigma[obs]
            logn = subj.lognormal[sel]
            F = np.where(logn, np.log(np.maximum(f[sel], 1e-300)), f[sel])
            cols = [O[sel, m] for m in range(O.shape[1])]
            V[sel] = np.broadcast_to(np.asarray(Vf(F, cols, sig), dtype=float), F.shape)
            if g is None:
                continue
            gk = g[sel]
            if logn.any():
                gk = np.where(logn[:, None], gk / np.maximum(f[sel], 1e-300)[:, None], gk)
                g[sel] = gk
            if frozen_V is None:
                dF = np.broadcast_to(np.asarray(dVdF(F, cols, sig), dtype=float), F.shape)
                hk = dF[:, None] * gk
                dOk = dVdO(F, cols, sig)
                for m, dv in enumerate(dOk):
                    dv = np.broadcast_to(np.asarray(dv, dtype=float), F.shape)
                    if np.any(dv != 0):
                        hk = hk + dv[:, None] * dO[sel][:, m, :]
                h[sel] = hk
        f = np.where(subj.lognormal, np.log(np.maximum(f, 1e-300)), f)
        if frozen_V is not None:
            V = frozen_V
            if h is not None:
                h = np.zeros_like(h)
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(V)) and np.all(V > 0)):
            raise SimulationError(
                self.model.name,
                float(subj.times[-1]),
                dict(zip(self.model.parameters, p)),
                "non-finite prediction or non-positive residual variance",
            )
        return Prediction(f, V, g, h, p)

    def _simulate(self, subj: SubjectData, p: np.ndarray, wrt: list[str]):
        """Observables (and their sensitivities to ``wrt``) at the subject's times."""
        if self.options.method == "BDF":  # the compiled batch driver, one subject
            key = (subj.id, bool(wrt))
            run = self._runs.get(key)
            if run is None:
                run = BatchRun(self.compiled, [(subj.times, subj.doses)], self.options, wrt)
                self._runs[key] = run
            obs, sens, status = run.run(p[None, :], np.zeros(1, dtype=np.int64))
            if status[0] or not np.all(np.isfinite(obs)):
                reason = run.failure(int(status[0])) if status[0] else "non-finite outputs"
                raise SimulationError(
                    self.model.name,
                    float(subj.times[-1]),
                    dict(zip(self.model.parameters, p)),
                    reason,
                )
            return obs, sens
        traj = simulate(
            self.model,
            subj.times,
            params=p,
            doses=subj.doses,
            options=self.options,
            sensitivities=wrt or False,
            compiled=self.compiled,
        )
        return traj.observables, traj.observable_sensitivities

    # -- the conditional objective ---------------------------------------------------
    def q_terms(
        self, subj: SubjectData, ctx: Context, eta: np.ndarray, pred: Prediction, need: str = "all"
    ):
        """``q(eta)``, its gradient and its information (Gauss-Newton) matrix (x 2).

        Far from the mode a variance can underflow: the values are then not finite, which
        the line search rejects (no warning is raised for that).
        """
        with np.errstate(all="ignore"):
            return self._q_terms(subj, ctx, eta, pred, need)

    def _q_terms(self, subj, ctx, eta, pred, need):
        from scipy.special import log_ndtr

        unc, cen = ~subj.censored, subj.censored
        r = subj.y - pred.f
        V = pred.V
        q = float(np.sum(np.log(V[unc]) + r[unc] ** 2 / V[unc]))
        sd = np.sqrt(V[cen])
        z = (subj.limit[cen] - pred.f[cen]) / sd
        q += float(np.sum(-2.0 * log_ndtr(z)))
        Oi_eta = ctx.omega_inv @ eta
        q += float(eta @ Oi_eta)
        if need == "value":
            return q, None, None
        g, h = pred.g, pred.h
        gu, hu, Vu, ru = g[unc], h[unc], V[unc], r[unc]
        grad = (hu / Vu[:, None] - 2 * (ru / Vu)[:, None] * gu - (ru**2 / Vu**2)[:, None] * hu).sum(
            axis=0
        ) + 2 * Oi_eta
        info = (
            2 * ctx.omega_inv
            + 2 * (gu / Vu[:, None]).T @ gu
            + (hu / Vu[:, None]).T @ (hu / Vu[:, None])
        )
        if cen.any():
            m = np.exp(-0.5 * z**2 - 0.5 * LOG_2PI - log_ndtr(z))
            dz = -g[cen] / sd[:, None] - (z / (2 * V[cen]))[:, None] * h[cen]
            grad += (-2 * m) @ dz
            w = 2 * m * (z + m)
            info += (dz * w[:, None]).T @ dz
        return q, grad, info

    def fo(self, subj: SubjectData, ctx: Context) -> SubjectResult:
        """FO: the objective linearised at eta = 0."""
        if subj.censored.any():
            raise SimulationError(
                self.model.name, 0.0, {}, "M3 censoring needs FOCEI, FOCE or LAPLACE, not FO"
            )
        pred = self.predict(subj, ctx, np.zeros(self.n_eta))
        G = pred.g
        C = G @ ctx.omega @ G.T + np.diag(pred.V)
        e = subj.y - pred.f
        sign, logdet = np.linalg.slogdet(C)
        obj = logdet + float(e @ np.linalg.solve(C, e))
        info = ctx.omega_inv + (G / pred.V[:, None]).T @ G
        return SubjectResult(np.zeros(self.n_eta), obj, info, 0)

    def conditional(
        self,
        subj: SubjectData,
        ctx: Context,
        eta0: np.ndarray,
        tol: float | None = None,
        max_iter: int = 200,
    ) -> SubjectResult:
        """The EBE and the objective contribution of one subject (all methods).

        ``tol`` bounds the Newton decrement ``g' I^-1 g`` (q units) at convergence.
        """
        tol = self.inner_tolerance if tol is None else tol
        try:
            if ctx.method == "FO":
                return self.fo(subj, ctx)
            return self._conditional(subj, ctx, eta0, tol, max_iter)
        except (SimulationError, np.linalg.LinAlgError, ArithmeticError, ValueError) as exc:
            return SubjectResult(
                np.asarray(eta0, dtype=float), self.penalty, np.eye(self.n_eta), 0, str(exc)
            )

    def _conditional(self, subj, ctx, eta0, tol, max_iter) -> SubjectResult:
        n = self.n_eta
        frozen = None
        if ctx.method == "FOCE":
            frozen = self.predict(subj, ctx, np.zeros(n), derivatives=False).V
        eta = np.asarray(eta0, dtype=float).copy()
        if not np.all(np.isfinite(eta)):
            eta = np.zeros(n)
        try:
            pred = self.predict(subj, ctx, eta, frozen_V=frozen)
            q, grad, info = self.q_terms(subj, ctx, eta, pred)
            if not math.isfinite(q):
                raise SimulationError(self.model.name, 0.0, {}, "non-finite objective")
        except SimulationError:
            if not np.any(eta != 0):
                raise
            eta = np.zeros(n)  # the warm start failed: start from the population value
            pred = self.predict(subj, ctx, eta, frozen_V=frozen)
            q, grad, info = self.q_terms(subj, ctx, eta, pred)
        it = 0
        for it in range(1, max_iter + 1):  # noqa: B007 (it is reported)
            step = -np.linalg.solve(info, grad)
            if not np.all(np.isfinite(step)):
                raise np.linalg.LinAlgError("singular information matrix")
            slope = float(grad @ step)
            # Newton decrement: q is within about -slope/2 of its minimum
            if -slope < tol:
                break
            lam = 1.0
            while True:
                trial = eta + lam * step
                try:
                    ptrial = self.predict(subj, ctx, trial, frozen_V=frozen)
                    qt, gt, it_info = self.q_terms(subj, ctx, trial, ptrial)
                    ok = math.isfinite(qt) and qt <= q + 1e-4 * lam * slope + 1e-12 * abs(q)
                except SimulationError:
                    ok = False
                if ok or lam < 1e-8:
                    break
                lam *= 0.5
            if not ok:
                break
            moved = float(np.max(np.abs(trial - eta)))
            eta, pred, q, grad, info = trial, ptrial, qt, gt, it_info
            if moved < STEP_FLOOR:  # at the rounding level of q: no further progress
                break
        if ctx.method == "LAPLACE":
            info = self.hessian(subj, ctx, eta)
        logdet_info = _logdet_pd(info / 2)
        obj = q + ctx.omega_logdet + logdet_info
        return SubjectResult(eta, obj, info / 2, it)

    def hessian(self, subj: SubjectData, ctx: Context, eta: np.ndarray) -> np.ndarray:
        """Exact Hessian of q at eta: central differences of the analytic gradient."""
        n = self.n_eta
        H = np.empty((n, n))
        for k in range(n):
            d = 1e-4 * max(1.0, abs(eta[k]))
            e = np.zeros(n)
            e[k] = d
            gp = self.q_terms(subj, ctx, eta + e, self.predict(subj, ctx, eta + e))[1]
            gm = self.q_terms(subj, ctx, eta - e, self.predict(subj, ctx, eta - e))[1]
            H[:, k] = (gp - gm) / (2 * d)
        return 0.5 * (H + H.T)


def _logdet_pd(matrix: np.ndarray) -> float:
    """log-determinant of a symmetric positive definite matrix (LinAlgError otherwise)."""
    L = np.linalg.cholesky(matrix)
    return 2.0 * float(np.sum(np.log(np.diag(L))))


class BatchConditional:
    """The conditional (EBE) problems of all subjects solved together (FOCE-I and FOCE).

    The same Newton iterations, line search, stopping rule and objective as
    :meth:`SubjectObjective.conditional`, but each iteration simulates every subject still
    iterating in one compiled call (:class:`~pkpd_cart.simulation.solver.BatchRun`) and
    does the algebra for all records at once with numpy, so no Python runs per subject or
    per dose segment. Used when the model has no switches and the BDF method is chosen.
    """

    def __init__(self, so: SubjectObjective, subjects: list[SubjectData]):
        from pkpd_cart.simulation.solver import BatchRun

        self.so = so
        self.pop = so.population
        self.subjects = subjects
        self.n_sub = len(subjects)
        self.n_eta = so.n_eta
        self.n_obs = len(so.observables)
        records = [(s.times, s.doses) for s in subjects]
        self.batch = BatchRun(so.compiled, records, so.options, so.varying)

        row_ptr = self.batch.row_ptr
        self.rec_subject = np.concatenate(
            [np.full(len(s.y), i, dtype=np.int64) for i, s in enumerate(subjects)]
        )
        self.rec_row = np.concatenate([row_ptr[i] + s.t_index for i, s in enumerate(subjects)])
        self.rec_obs = np.concatenate([s.o_index for s in subjects])
        self.y = np.concatenate([s.y for s in subjects])
        self.cens = np.concatenate([s.censored for s in subjects])
        self.limit = np.concatenate([s.limit for s in subjects])
        self.logn = np.concatenate([s.lognormal for s in subjects])
        self.cov = np.array([s.covariates for s in subjects]).reshape(self.n_sub, -1)
        self.n_par = len(self.pop.model.parameters)

    # -- per-record pieces -------------------------------------------------------------
    def _sum(self, values: np.ndarray) -> np.ndarray:
        """Sum record values per subject (values: (n_rec,) or (n_rec, ...))."""
        if values.ndim == 1:
            return np.bincount(self.rec_subject, weights=values, minlength=self.n_sub)
        flat = values.reshape(len(values), -1)
        if flat.shape[1] == 0:
            return np.zeros((self.n_sub,) + values.shape[1:])
        out = np.stack(
            [
                np.bincount(self.rec_subject, weights=flat[:, k], minlength=self.n_sub)
                for k in range(flat.shape[1])
            ],
            axis=1,
        )
        return out.reshape((self.n_sub,) + values.shape[1:])

    def _predict(
        self, ctx: Context, eta: np.ndarray, active: np.ndarray, frozen_V: np.ndarray | None
    ):
        """f, V, g, h of every record (rows of inactive subjects are NaN) and failures."""
        P = np.full((self.n_sub, self.n_par), np.nan)
        D = np.zeros((self.n_sub, len(self.so.varying), self.n_eta))
        failed = np.zeros(self.n_sub, dtype=bool)
        with np.errstate(all="ignore"):
            try:
                Pa, Da = self.pop.individual_matrix(ctx.theta, eta[active], self.cov[active])
            except (ArithmeticError, ValueError):
                Pa = np.full((len(active), self.n_par), np.nan)
                Da = np.zeros((len(active), len(self.so.varying), self.n_eta))
        P[active], D[active] = Pa, Da
        bad = ~np.all(np.isfinite(P[active]), axis=1)
        failed[active[bad]] = True
        run_on = active[~bad]
        self.so.n_simulations += len(run_on)
        OBS, SENS, status = self.batch.run(np.where(np.isfinite(P), P, 0.0), run_on)
        failed[run_on[status[run_on] != 0]] = True
        rec = np.arange(len(self.y))
        O = OBS[self.rec_row]  # (n_rec, n_obs)
        f = O[rec, self.rec_obs]
        if SENS is None:  # no random effect varies any parameter
            dO = np.zeros((len(self.y), self.n_obs, self.n_eta))
        else:
            dO = np.einsum("rov,rve->roe", SENS[self.rec_row], D[self.rec_subject])
        g = dO[rec, self.rec_obs]  # (n_rec, n_eta)
        V = np.full_like(f, np.nan)
        h = np.zeros_like(g)
        with np.errstate(all="ignore"):
            fpos = np.maximum(f, 1e-300)
            F = np.where(self.logn, np.log(fpos), f)
            g = np.where(self.logn[:, None], g / fpos[:, None], g)
            for k, obs in enumerate(self.so.observables):
                sel = self.rec_obs == k
                if not sel.any() or obs not in self.so.compiled_pop.variance:
                    continue
                Vf, dVdF, dVdO, _ = self.so.compiled_pop.variance[obs]
                sig = ctx.sigma[obs]
                cols = [O[sel, m] for m in range(self.n_obs)]
                Fk = F[sel]
                V[sel] = np.broadcast_to(np.asarray(Vf(Fk, cols, sig), dtype=float), Fk.shape)
                if frozen_V is None:
                    dF = np.broadcast_to(np.asarray(dVdF(Fk, cols, sig), dtype=float), Fk.shape)
                    hk = dF[:, None] * g[sel]
                    for m, dv in enumerate(dVdO(Fk, cols, sig)):
                        dv = np.broadcast_to(np.asarray(dv, dtype=float), Fk.shape)
                        if np.any(dv != 0):
                            hk = hk + dv[:, None] * dO[sel][:, m, :]
                    h[sel] = hk
        if frozen_V is not None:
            V = frozen_V
        bad_rec = ~(np.isfinite(F) & np.isfinite(V) & (V > 0) & np.all(np.isfinite(g), axis=1))
        failed |= np.bincount(self.rec_subject, weights=bad_rec, minlength=self.n_sub) > 0
        return F, V, g, h, failed

    def _q_terms(self, ctx: Context, eta: np.ndarray, F, V, g, h):
        """q, gradient and information matrix (x 2) of every subject."""
        from scipy.special import log_ndtr

        unc, cen = ~self.cens, self.cens
        with np.errstate(all="ignore"):
            r = self.y - F
            term = np.where(unc, np.log(V) + r**2 / V, 0.0)
            sd = np.sqrt(V)
            z = (self.limit - F) / sd
            term = np.where(cen, -2.0 * log_ndtr(z), term)
            Oi_eta = eta @ ctx.omega_inv  # (n_sub, n_eta), Omega^-1 symmetric
            q = self._sum(term) + np.einsum("se,se->s", eta, Oi_eta)
            gterm = h / V[:, None] - 2 * (r / V)[:, None] * g - (r**2 / V**2)[:, None] * h
            iterm = 2 * np.einsum("ri,rj->rij", g / V[:, None], g) + np.einsum(
                "ri,rj->rij", h / V[:, None], h / V[:, None]
            )
            if cen.any():
                m = np.exp(-0.5 * z**2 - 0.5 * LOG_2PI - log_ndtr(z))
                dz = -g / sd[:, None] - (z / (2 * V))[:, None] * h
                gterm = np.where(cen[:, None], (-2 * m)[:, None] * dz, gterm)
                w = 2 * m * (z + m)
                iterm = np.where(
                    cen[:, None, None], w[:, None, None] * np.einsum("ri,rj->rij", dz, dz), iterm
                )
            grad = self._sum(gterm) + 2 * Oi_eta
            info = self._sum(iterm) + 2 * ctx.omega_inv[None, :, :]
        return q, grad, info

    def solve(
        self, ctx: Context, eta0: np.ndarray, tol: float, max_iter: int = 200
    ) -> list[SubjectResult]:
        n, k = self.n_sub, self.n_eta
        frozen = None
        everyone = np.arange(n)
        fail_msg = [""] * n
        if ctx.method == "FOCE":  # V frozen at the population prediction
            frozen = self._predict(ctx, np.zeros((n, k)), everyone, None)[1]
        eta = np.where(np.isfinite(eta0), eta0, 0.0).astype(float).copy()
        F, V, g, h, failed = self._predict(ctx, eta, everyone, frozen)
        if k == 0:
            max_iter = 0
        q, grad, info = self._q_terms(ctx, eta, F, V, g, h)
        retry = failed & np.any(eta != 0, axis=1)  # a failed warm start: from eta = 0
        if retry.any():
            idx = np.flatnonzero(retry)
            eta[idx] = 0.0
            F2, V2, g2, h2, failed2 = self._predict(ctx, eta, idx, frozen)
            q2, grad2, info2 = self._q_terms(ctx, eta, F2, V2, g2, h2)
            q[idx], grad[idx], info[idx] = q2[idx], grad2[idx], info2[idx]
            failed[idx] = failed2[idx]
        failed |= ~np.isfinite(q)
        for i in np.flatnonzero(failed):
            fail_msg[i] = (
                f"model '{self.pop.model.name}': subject {self.subjects[i].id}: "
                "simulation failed or non-finite objective at the start"
            )
        done = failed.copy()
        iterations = np.zeros(n, dtype=int)
        # Newton matrix = information matrix + a symmetric rank-one (SR1) secant estimate
        # of what it leaves out (the residual-weighted second derivatives), as in
        # structured quasi-Newton methods (Dennis, Gay & Welsch 1981): the information
        # matrix alone converges linearly; the objective still uses the information matrix
        extra = np.zeros((n, k, k))
        for _ in range(max_iter):
            act = np.flatnonzero(~done)
            if not act.size:
                break
            M = info[act] + extra[act]
            plain = np.linalg.eigvalsh(M)[:, 0] <= 0  # not positive definite: drop the secant
            M[plain] = info[act][plain]
            try:
                step = -np.linalg.solve(M, grad[act][:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                step = np.stack([np.linalg.lstsq(info[i], -grad[i], rcond=None)[0] for i in act])
            slope = np.einsum("se,se->s", grad[act], step)
            conv = ~(-slope >= tol)  # also NaN
            done[act[conv]] = True
            act, step, slope = act[~conv], step[~conv], slope[~conv]
            iterations[act] += 1
            lam = np.ones(len(act))
            pending = np.ones(len(act), dtype=bool)
            for _ in range(40):
                if not pending.any():
                    break
                who = act[pending]
                trial = eta.copy()
                trial[who] = eta[who] + lam[pending, None] * step[pending]
                Ft, Vt, gt, ht, ft = self._predict(ctx, trial, who, frozen)
                qt, gradt, infot = self._q_terms(ctx, trial, Ft, Vt, gt, ht)
                ok = (
                    ~ft[who]
                    & np.isfinite(qt[who])
                    & (
                        qt[who]
                        <= q[who] + 1e-4 * lam[pending] * slope[pending] + 1e-12 * np.abs(q[who])
                    )
                )
                acc = who[ok]
                s_vec = trial[acc] - eta[acc]
                # at the rounding level of q (steps below STEP_FLOOR): no further progress
                done[acc[np.max(np.abs(s_vec), axis=1) < STEP_FLOOR]] = True
                y_sharp = gradt[acc] - grad[acc] - np.einsum("sij,sj->si", infot[acc], s_vec)
                r = y_sharp - np.einsum("sij,sj->si", extra[acc], s_vec)
                rs = np.einsum("si,si->s", r, s_vec)
                safe = np.abs(rs) > 1e-8 * np.linalg.norm(r, axis=1) * np.linalg.norm(s_vec, axis=1)
                upd = acc[safe]
                extra[upd] += np.einsum("si,sj->sij", r[safe], r[safe]) / rs[safe, None, None]
                eta[acc], q[acc], grad[acc], info[acc] = (
                    trial[acc],
                    qt[acc],
                    gradt[acc],
                    infot[acc],
                )
                pos = np.flatnonzero(pending)
                pending[pos[ok]] = False
                lam[pending] *= 0.5
                small = pending & (lam < 1e-8)
                done[act[small]] = True  # no decrease possible: at rounding level
                pending &= ~small
        results = []
        logdet_omega = ctx.omega_logdet
        for i in range(n):
            if failed[i]:
                results.append(SubjectResult(eta[i], self.so.penalty, np.eye(k), 0, fail_msg[i]))
                continue
            try:
                logdet = _logdet_pd(info[i] / 2)
            except np.linalg.LinAlgError:
                results.append(
                    SubjectResult(
                        eta[i],
                        self.so.penalty,
                        np.eye(k),
                        0,
                        f"subject {self.subjects[i].id}: the information "
                        "matrix is not positive definite",
                    )
                )
                continue
            results.append(
                SubjectResult(
                    eta[i].copy(),
                    float(q[i] + logdet_omega + logdet),
                    info[i] / 2,
                    int(iterations[i]),
                )
            )
        return results
