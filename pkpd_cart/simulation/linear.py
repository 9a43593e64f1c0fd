"""Exact solutions of models that are linear in their states.

A model whose right-hand side is affine in its states, with coefficients free of time,

    dx/dt = A(p) x + b(p) + u(t)        (u: infusion rates, constant between doses),

has an exact solution on every interval between doses and outputs. With the
eigendecomposition ``A = V diag(lambda) V^-1`` and ``w = V^-1 x``,

    w(t + h) = exp(lambda h) w(t) + h phi1(lambda h) V^-1 (b + u),   phi1(z) = (e^z - 1)/z,

which is what NONMEM's ADVAN1-4/11/12, mrgsolve's closed forms and nlmixr2's ``linCmt``
compute for compartment models, here for any linear model. All subjects of a
:class:`LinearBatch` advance together, one interval at a time, in numpy. A subject whose
``A`` is defective or nearly so (an eigenvector matrix with condition number above
:data:`MAX_CONDITION`, e.g. ka = k) is advanced by ``scipy.linalg.expm`` of the augmented
matrix ``[[A, b + u], [0, 0]]`` instead.

Only plain simulations are served (no sensitivities, no switches or events); the
population code uses it for the MCMC of SAEM and for simulated replicates.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from pkpd_cart.model.modelling import Model, t
from pkpd_cart.simulation.solver import dose_events

MAX_CONDITION = 1e8
_UNSAFE = (sp.Piecewise, sp.Heaviside, sp.Min, sp.Max, sp.Abs, sp.sign, sp.floor, sp.ceiling)


_STRUCTURES: dict[str, object] = {}


def linear_structure(model: Model):
    """``(A, b)`` as sympy matrices of the parameters if ``model`` is linear in its states
    with time-free coefficients and has no switches or events; otherwise None (cached
    by the model's hash)."""
    if model.hash not in _STRUCTURES:
        _STRUCTURES[model.hash] = _structure(model)
    return _STRUCTURES[model.hash]


def _structure(model: Model):
    if model.switches or model.events:
        return None
    X = [sp.Symbol(name, real=True) for name in model.states]
    rhs = model.rhs()
    exprs = [sp.sympify(rhs.get(name, 0)) for name in model.states]
    if any(e.has(*_UNSAFE) for e in exprs):
        return None
    A = sp.Matrix([[sp.diff(e, x) for x in X] for e in exprs])
    if any(a.free_symbols & (set(X) | {t}) for a in A):
        return None
    b = sp.Matrix([e.xreplace(dict.fromkeys(X, 0)) for e in exprs])
    if any(t in v.free_symbols for v in b):
        return None
    if any(sp.expand(e - (A[i, :] * sp.Matrix(X))[0] - b[i]) != 0 for i, e in enumerate(exprs)):
        return None
    return A, b


class LinearBatch:
    """The exact counterpart of :class:`~pkpd_cart.simulation.solver.BatchRun` for a
    linear model: the same subjects, ``row_ptr`` and ``run(P, active)``."""

    def __init__(self, model: Model, subjects: list, structure) -> None:
        A, b = structure
        params = [sp.Symbol(n, real=True) for n in model.parameters]
        states = [sp.Symbol(n, real=True) for n in model.states]
        self.n = len(states)
        self.n_obs = len(model.observables)
        self._A = sp.lambdify([params], list(A), modules="numpy")
        self._b = sp.lambdify([params], list(b), modules="numpy")
        initial = [model.expand(s.initial) for s in model.states.values()]
        self._x0 = sp.lambdify([params], initial, modules="numpy")
        outputs = [model.expand(o.expr) for o in model.observables.values()]
        self._g = sp.lambdify([states, params, t], outputs, modules="numpy")
        index = {name: i for i, name in enumerate(model.states)}
        self.n_subjects = len(subjects)
        stops, rows, out_ptr, bolus, rate = [], [], [0], [], []
        for times, doses in subjects:
            times = np.asarray(times, dtype=float)
            events = dose_events(doses, index)
            start = min([model.start_time, float(times[0])] + list(events))
            grid = np.unique(np.concatenate([[start], list(events), times]))
            stops.append(grid)
            rows.append(np.searchsorted(grid, times))
            out_ptr.append(out_ptr[-1] + len(times))
            add = np.zeros((len(grid), self.n))  # bolus amounts at each stop
            du = np.zeros((len(grid), self.n))  # change of infusion rate at each stop
            for at, entries in events.items():
                j = int(np.searchsorted(grid, at))
                for i, amount, change in entries:
                    add[j, i] += amount
                    du[j, i] += change
            bolus.append(add)
            rate.append(du)
        self.row_ptr = np.asarray(out_ptr, dtype=np.int64)
        self.times = np.concatenate([np.asarray(s[0], dtype=float) for s in subjects])
        L = max(len(g) for g in stops)
        S = self.n_subjects
        self.h = np.zeros((S, L))  # interval ending at stop j (0: padding and the start)
        self.bolus = np.zeros((S, L, self.n))
        self.rate = np.zeros((S, L, self.n))
        self.stop_of_row = np.concatenate(rows)
        self.subject_of_row = np.repeat(np.arange(S), np.diff(self.row_ptr))
        for s, grid in enumerate(stops):
            self.h[s, 1 : len(grid)] = np.diff(grid)
            self.bolus[s, : len(grid)] = bolus[s]
            self.rate[s, : len(grid)] = rate[s]
        self.L = L

    def _matrices(self, P: np.ndarray):
        m = len(P)

        def stack(values, shape):
            cols = [np.broadcast_to(np.asarray(v, dtype=float), (m,)) for v in values]
            return np.stack(cols, axis=-1).reshape(m, *shape)

        cols = list(P.T)
        return (
            stack(self._A(cols), (self.n, self.n)),
            stack(self._b(cols), (self.n,)),
            stack(self._x0(cols), (self.n,)),
        )

    def states(self, P: np.ndarray, subjects: np.ndarray) -> np.ndarray:
        """The states at every stop of ``subjects``, (len(subjects), L, n)."""
        A, b, x0 = self._matrices(P)
        finite = np.all(np.isfinite(A), axis=(1, 2)) & np.all(np.isfinite(b) & np.isfinite(x0), 1)
        if not finite.all():  # such subjects get NaN states (and fail in run)
            X = np.full((len(P), self.L, self.n), np.nan)
            if finite.any():
                X[finite] = self.states(P[finite], subjects[finite])
            return X
        lam, V = np.linalg.eig(A)
        with np.errstate(all="ignore"):
            Vinv = np.linalg.inv(V)
            # condition number in the Frobenius norm (cheaper than the SVD's, same use)
            cond = np.linalg.norm(V, axis=(1, 2)) * np.linalg.norm(Vinv, axis=(1, 2))
        safe = np.isfinite(cond) & (cond < MAX_CONDITION) & np.all(np.isfinite(lam), axis=1)
        X = np.zeros((len(P), self.L, self.n))
        if safe.all():
            X = self._by_eigenvectors(lam, V, Vinv, b, x0, subjects)
        elif safe.any():
            X[safe] = self._by_eigenvectors(
                lam[safe], V[safe], Vinv[safe], b[safe], x0[safe], subjects[safe]
            )
        for k in np.flatnonzero(~safe):
            X[k] = self._by_expm(A[k], b[k], x0[k], subjects[k])
        return X

    def _by_eigenvectors(self, lam, V, Vinv, b, x0, subjects):
        """Every mode ``w = V^-1 x`` follows ``w_j = a_j w_(j-1) + c_j`` from stop to stop:
        the coefficients of all stops at once, then one elementwise pass over the stops."""
        h, bolus, rate = self.h[subjects], self.bolus[subjects], self.rate[subjects]
        Vinv = Vinv.astype(complex)
        # forcing on the interval ending at stop j: b plus the rates set at stops < j
        u = b[:, None, :] + np.cumsum(rate, axis=1) - rate
        z = lam[:, None, :] * h[:, :, None]
        small = np.abs(z) < 1e-8
        with np.errstate(all="ignore"):
            phi1 = np.where(small, 1 + z / 2, np.expm1(z) / np.where(small, 1, z))
        a = np.exp(z)
        c = h[:, :, None] * phi1 * np.einsum("sij,slj->sli", Vinv, u) + np.einsum(
            "sij,slj->sli", Vinv, bolus
        )
        W = np.empty_like(c)
        w = np.einsum("sij,sj->si", Vinv, x0)
        for j in range(self.L):
            w = a[:, j] * w + c[:, j]
            W[:, j] = w
        return np.einsum("sij,slj->sli", V, W).real

    def _by_expm(self, A, b, x0, subject):
        from scipy.linalg import expm

        n = self.n
        M = np.zeros((n + 1, n + 1))
        M[:n, :n] = A
        x, u = x0.copy(), b.copy()
        out = np.zeros((self.L, n))
        for j in range(self.L):
            if self.h[subject, j] > 0:
                M[:n, n] = u
                x = (expm(M * self.h[subject, j]) @ np.append(x, 1.0))[:n]
            x = x + self.bolus[subject, j]
            u = u + self.rate[subject, j]
            out[j] = x
        return out

    def run(self, P: np.ndarray, active: np.ndarray):
        """``(observables, None, status)`` as ``BatchRun.run``: outputs of the ``active``
        rows of ``P``; status -1 for a subject with non-finite outputs."""
        active = np.asarray(active, dtype=np.int64)
        OBS = np.full((len(self.times), self.n_obs), np.nan)
        status = np.zeros(self.n_subjects, dtype=np.int64)
        if not len(active):
            return OBS, None, status
        P = np.asarray(P, dtype=float)
        with np.errstate(all="ignore"):
            X = self.states(P[active], active)
        where = np.full(self.n_subjects, -1)
        where[active] = np.arange(len(active))
        rows = np.flatnonzero(where[self.subject_of_row] >= 0)
        k = where[self.subject_of_row[rows]]
        x_rows = X[k, self.stop_of_row[rows]]
        p_rows = P[self.subject_of_row[rows]]
        with np.errstate(all="ignore"):
            values = self._g(list(x_rows.T), list(p_rows.T), self.times[rows])
        for i, v in enumerate(values):
            OBS[rows, i] = np.broadcast_to(np.asarray(v, dtype=float), (len(rows),))
        bad = ~np.all(np.isfinite(OBS[rows]), axis=1)
        status[np.unique(self.subject_of_row[rows[bad]])] = -1
        return OBS, None, status
