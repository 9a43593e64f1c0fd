"""The outer problem of a population fit: its parameter vector and its optimiser.

:class:`Layout` maps the natural parameters (thetas, Omega elements, sigma SDs) to an
unconstrained vector: bounded thetas through log or logit transforms, each free Omega block
through its Cholesky factor with a log diagonal, sigmas on the log scale.
:func:`quasi_newton` minimises the OFV over that vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pkpd_cart.model.population_model import PopulationModel


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
