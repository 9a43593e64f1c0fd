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

The inner problem is solved for all subjects at once (:class:`BatchConditional`) by Newton
steps with that information matrix (Fisher scoring: positive definite, no second-order
sensitivities) plus a structured secant (SR1) estimate of the curvature it leaves out,
a backtracking line search and a warm start from the previous outer iterate's EBEs. The
iteration stops on a Newton decrement; the objective always uses the information matrix
(LAPLACE: the exact Hessian).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pkpd_cart.estimation.records import RecordLayout
from pkpd_cart.simulation.solver import BatchRun, Dose, SolverOptions

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
class SubjectResult:
    """The conditional estimate of one subject at one outer iterate."""

    eta: np.ndarray
    obj: float
    information: np.ndarray  # the matrix inside FOCE-I's log-determinant (inverse of ETC)
    iterations: int
    failed: str = ""


class SubjectObjective:
    """What every subject's conditional problem shares: the compiled structural and
    population models, the solver options, the EBE tolerance and the failure penalty."""

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

    def __getstate__(self) -> dict:  # numeric functions are rebuilt where unpickled
        state = dict(self.__dict__)
        for key in ("compiled_pop", "compiled"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.compiled_pop = self.population.compile()
        self.compiled = self.model.compile()


def _logdet_pd(matrix: np.ndarray) -> float:
    """log-determinant of a symmetric positive definite matrix (LinAlgError otherwise)."""
    L = np.linalg.cholesky(matrix)
    return 2.0 * float(np.sum(np.log(np.diag(L))))


class BatchConditional:
    """The conditional (EBE) problems of all subjects, solved together, for every method.

    Each Newton iteration simulates every subject still iterating in one compiled call
    (:class:`~pkpd_cart.simulation.solver.BatchRun`; subject by subject through
    ``simulate`` for the non-BDF integrators) and does the algebra for all records at once
    with numpy. FO linearises at eta = 0 (:meth:`first_order`); LAPLACE replaces the
    information matrix by the exact Hessian at the mode (:meth:`hessian`).
    """

    def __init__(self, so: SubjectObjective, subjects: list[SubjectData]):

        self.so = so
        self.pop = so.population
        self.subjects = subjects
        self.n_sub = len(subjects)
        self.n_eta = so.n_eta
        self.n_obs = len(so.observables)
        records = [(s.times, s.doses) for s in subjects]
        self.batch = BatchRun(so.compiled, records, so.options, so.varying)

        lay = RecordLayout.of(subjects, self.batch.row_ptr)
        self.rec_subject, self.rec_row, self.rec_obs = lay.subject, lay.row, lay.obs
        self.y, self.cens, self.limit, self.logn = lay.y, lay.cens, lay.limit, lay.logn
        self.cov = lay.cov
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
        if ctx.method == "FO":
            return self.first_order(ctx)
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
        if ctx.method == "LAPLACE" and k:
            info = np.where(failed[:, None, None], info, self.hessian(ctx, eta, ~failed))
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

    def hessian(self, ctx: Context, eta: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """The exact Hessian of every subject's q at ``eta`` (for LAPLACE): central
        differences of the analytic gradient, 2 n_eta batched evaluations."""
        n, k = self.n_sub, self.n_eta
        who = np.flatnonzero(ok)
        H = np.zeros((n, k, k))
        for j in range(k):
            d = 1e-4 * np.maximum(1.0, np.abs(eta[:, j]))
            grads = []
            for sign in (1, -1):
                shifted = eta.copy()
                shifted[:, j] += sign * d
                F, V, g, h, _ = self._predict(ctx, shifted, who, None)
                grads.append(self._q_terms(ctx, shifted, F, V, g, h)[1])
            H[:, :, j] = (grads[0] - grads[1]) / (2 * d[:, None])
        return 0.5 * (H + H.transpose(0, 2, 1))

    def first_order(self, ctx: Context) -> list[SubjectResult]:
        """FO: every subject linearised at eta = 0: ``log|C| + e' C^-1 e`` with
        ``C = G Omega G' + diag(V)`` over its records."""
        n, k = self.n_sub, self.n_eta
        F, V, g, _, failed = self._predict(ctx, np.zeros((n, k)), np.arange(n), None)
        results = []
        for i, subj in enumerate(self.subjects):
            rows = self.rec_subject == i
            if failed[i]:
                results.append(
                    SubjectResult(
                        np.zeros(k),
                        self.so.penalty,
                        np.eye(k),
                        0,
                        f"subject {subj.id}: simulation failed at eta = 0",
                    )
                )
                continue
            G, e = g[rows], self.y[rows] - F[rows]
            C = G @ ctx.omega @ G.T + np.diag(V[rows])
            obj = np.linalg.slogdet(C)[1] + float(e @ np.linalg.solve(C, e))
            info = ctx.omega_inv + (G / V[rows][:, None]).T @ G
            results.append(SubjectResult(np.zeros(k), float(obj), info, 0))
        return results

    def predictions(self, ctx: Context, eta: np.ndarray):
        """Per record at ``eta`` (one row per subject): ``F, V, g`` (log scale where the
        error model is log-normal) and the subjects whose simulation failed."""
        F, V, g, _, failed = self._predict(ctx, eta, np.arange(self.n_sub), None)
        return F, V, g, failed
