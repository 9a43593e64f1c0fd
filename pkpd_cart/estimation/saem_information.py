"""Standard errors and the linearised likelihood of a SAEM fit (and, through
:func:`linearised_covariance`, the ``covariance="lin"`` of FOCE-family fits).

The Fisher information of the population parameters (the free entries of
:class:`~pkpd_cart.estimation.outer.Layout`: thetas on their natural scale, Omega
elements as variances and covariances, sigmas as SDs), three ways:

* ``"lin"`` (saemix and Monolix "lin", nlmixr2 ``covMethod = "linFim"``): each subject's
  predictions are linearised in its individual parameters ``phi`` around the conditional
  mode ``phi_i``, so that ``y_i ~ N(m_i, V_i)`` with ``m_i = f(phi_i) + J_i (mu_i - phi_i)``
  and ``V_i = J_i Omega J_i' + R_i``; the information is that Gaussian's expected one,
  ``sum_i dm' V^-1 dm + tr(V^-1 dV V^-1 dV) / 2``, and its -2 log-likelihood is the
  linearised -2LL. ``J_i`` comes from central differences at tight tolerances.
  Censored records are left out (the linearisation is Gaussian), as saemix does.
* ``"sa"``: Louis' (1982, J R Stat Soc B 44:226) observed information, with the
  conditional expectations averaged over the samples of the smoothing iterations (Monolix
  "sa"): ``I = -sum_i (E[H_i] + E[D_i D_i'] - E[D_i] E[D_i]')`` where ``D_i`` and ``H_i``
  are the gradient and Hessian of the complete-data log-likelihood
  ``log p(y_i | phi_i; sigma) + log N(phi_i; mu_i(theta), Omega)``. Censored records count
  through ``log P(y < LLOQ)``.
* ``"S"``: ``sum_i E[D_i] E[D_i]'``, the outer products of the subjects' scores (by
  Fisher's identity ``E[D_i]`` is the gradient of subject i's marginal log-likelihood):
  NONMEM's S matrix, which its ``$COV`` reports after SAEM.

Only the prior term depends on theta and Omega, and only the residual term on sigma, so
the complete-data derivatives need no simulation: the prior's are analytic, the
residual term's are central differences in sigma on the stored predictions.
"""

from __future__ import annotations

import numpy as np

from pkpd_cart.errors import FitError
from pkpd_cart.estimation.conditional import LOG_2PI
from pkpd_cart.estimation.outer import Layout
from pkpd_cart.estimation.records import residual_variance
from pkpd_cart.simulation.solver import BatchRun, SolverOptions

SE_METHODS = ("lin", "sa", "S")
# The Jacobian J_i by central differences of step LIN_STEP in phi at these tolerances:
# truncation ~1e-6 and integration noise ~1e-7 relative.
LIN_SOLVER = SolverOptions(rtol=1e-10, atol=1e-12)
LIN_STEP = 1e-3
SIGMA_STEP = 1e-4  # relative step of the central differences in sigma


def _unit(q: int, a: int, b: int) -> np.ndarray:
    E = np.zeros((q, q))
    E[a, b] = E[b, a] = 1.0
    return E


class _Free:
    """The free entries of a layout, by kind: (position in the free vector, index)."""

    def __init__(self, layout: Layout):
        entries = [layout.entries[k] for k in layout.free]
        self.n = len(entries)
        self.theta = [(p, e.index[0]) for p, e in enumerate(entries) if e.kind == "theta"]
        self.omega = [(p, e.index) for p, e in enumerate(entries) if e.kind == "omega"]
        self.sigma = [(p, e.index) for p, e in enumerate(entries) if e.kind == "sigma"]


class LouisAccumulator:
    """Sums, per subject over the smoothing iterations' samples, of the complete-data
    gradient ``D`` and of ``H + D D'`` (see the module docstring)."""

    def __init__(self, saem, layout: Layout):
        if saem.annealed:
            names = ", ".join(saem.pop.etas[j].removeprefix("vanishing_") for j in saem.annealed)
            raise FitError(
                f"SAEM standard errors 'sa' and 'S' need a random effect on every estimated "
                f"theta ({names} has none); use covariance='lin'"
            )
        self.saem = saem
        self.free = _Free(layout)
        p = self.free.n
        self.sum_d = np.zeros((saem.n_sub, p))
        self.sum_m = np.zeros((saem.n_sub, p, p))
        self.count = 0

    def add(self, phi: np.ndarray, F: np.ndarray, O: np.ndarray) -> None:
        """Add the samples ``phi`` of every pseudo-subject, with their predictions."""
        s, free = self.saem, self.free
        D, H = self._prior_terms(phi)
        self._residual_terms(F, O, D, H)
        M = H + np.einsum("np,nr->npr", D, D)
        shape = (s.chains, s.n_sub)
        self.sum_d += D.reshape(*shape, free.n).sum(axis=0)
        self.sum_m += M.reshape(*shape, free.n, free.n).sum(axis=0)
        self.count += s.chains

    def _prior_terms(self, phi: np.ndarray):
        """Gradient and Hessian of ``log N(phi; mu(theta), Omega)`` in theta and Omega."""
        s, free = self.saem, self.free
        n, q = phi.shape
        W = np.linalg.inv(s.omega)
        e = phi - s.mu(s.theta)
        Z = e @ W
        d1, d2 = s.mu_derivatives(s.theta)
        D = np.zeros((n, free.n))
        H = np.zeros((n, free.n, free.n))
        units = [(p, _unit(q, *ab)) for p, ab in free.omega]
        for p, k in free.theta:
            D[:, p] = np.einsum("nq,nq->n", d1[:, :, k], Z)
            for r, m in free.theta:
                H[:, p, r] = -np.einsum("nq,qr,nr->n", d1[:, :, k], W, d1[:, :, m]) + np.einsum(
                    "nq,nq->n", d2[:, :, k, m], Z
                )
            for r, E in units:
                H[:, p, r] = H[:, r, p] = -np.einsum("nq,qr,nr->n", d1[:, :, k], W @ E @ W, e)
        for p, E in units:
            D[:, p] = -0.5 * np.trace(W @ E) + 0.5 * np.einsum("nq,qr,nr->n", e, W @ E @ W, e)
            for r, E2 in units:
                A = W @ E2 @ W @ E @ W
                H[:, p, r] = 0.5 * np.trace(W @ E2 @ W @ E) - 0.5 * np.einsum(
                    "nq,qr,nr->n", e, A + A.T, e
                )
        return D, H

    def _residual_terms(self, F, O, D, H) -> None:
        """Gradient and Hessian of ``log p(y | phi; sigma)`` in the sigmas (central
        differences; sigmas of different observables do not interact)."""
        s, free = self.saem, self.free
        if not free.sigma:
            return
        base = dict(s.sigma)

        def at(changes: dict) -> np.ndarray:
            sigma = dict(base)
            for key, delta in changes.items():
                sigma[key] = base[key] + delta
            return s.subject_loglik(F, O, sigma)

        f0 = at({})
        steps = {key: SIGMA_STEP * base[key] for _, key in free.sigma}
        for p, key in free.sigma:
            h = steps[key]
            up, down = at({key: h}), at({key: -h})
            D[:, p] = (up - down) / (2 * h)
            H[:, p, p] = (up - 2 * f0 + down) / h**2
        for a, (p, key) in enumerate(free.sigma):
            for r, other in free.sigma[a + 1 :]:
                if other[0] != key[0]:
                    continue
                h, g = steps[key], steps[other]
                cross = (
                    at({key: h, other: g})
                    - at({key: h, other: -g})
                    - at({key: -h, other: g})
                    + at({key: -h, other: -g})
                ) / (4 * h * g)
                H[:, p, r] = H[:, r, p] = cross

    def information(self, method: str) -> np.ndarray:
        """Louis' observed information (``"sa"``) or the scores' outer products (``"S"``)."""
        if not self.count:
            raise FitError("SAEM standard errors: no smoothing iteration was run")
        mean_d = self.sum_d / self.count  # count: samples per subject (iterations x chains)
        mean_m = self.sum_m / self.count
        S = np.einsum("np,nr->pr", mean_d, mean_d)
        if method == "S":
            return S
        return -(mean_m.sum(axis=0) - S)


def linearised_information(saem, layout: Layout, phi_hat: np.ndarray) -> tuple[np.ndarray, float]:
    """The linearised Fisher information (free entries of ``layout``) and -2LL (with the
    constant, uncensored records) around ``phi_hat`` (n_subjects, n_eta): see the module
    docstring."""
    s = saem
    N, q = s.n_sub, s.n_eta
    compiled = s.pop.model.compile()
    batch = BatchRun(compiled, [(x.times, x.doses) for x in s.subjects], LIN_SOLVER)
    records = np.flatnonzero(s.rec_ps < N)  # chain 0: the subjects in their order
    rec_sub, rows, obs = s.rec_ps[records], s.rec_row[records], s.rec_obs[records]
    mu = s.mu(s.theta)[:N]
    cov = s.cov[:N]

    def predict(phi: np.ndarray):
        with np.errstate(all="ignore"):
            P, _ = s.pop.individual_matrix(s.theta, phi - mu, cov)
        OBS, _, status = batch.run(P, np.arange(N))
        if np.any(status != 0) or not np.all(np.isfinite(P)):
            bad = s.subjects[int(np.flatnonzero((status != 0) | ~np.isfinite(P).all(1))[0])]
            raise FitError(f"linearised SAEM information: subject {bad.id} cannot be simulated")
        O = OBS[rows]
        f = O[np.arange(len(rows)), obs]
        with np.errstate(all="ignore"):
            F = np.where(s.logn[records], np.log(np.maximum(f, 1e-300)), f)
        return F, O

    F0, O0 = predict(phi_hat)
    J = np.zeros((len(records), q))
    for j in range(q):
        shift = np.zeros(q)
        shift[j] = LIN_STEP
        J[:, j] = (predict(phi_hat + shift)[0] - predict(phi_hat - shift)[0]) / (2 * LIN_STEP)

    free = _Free(layout)
    R = residual_variance(s.pop, F0, O0, obs, s.sigma)
    dR = {}
    for _, key in free.sigma:
        h = SIGMA_STEP * s.sigma[key]
        plus, minus = dict(s.sigma), dict(s.sigma)
        plus[key] += h
        minus[key] -= h
        up = residual_variance(s.pop, F0, O0, obs, plus)
        dR[key] = (up - residual_variance(s.pop, F0, O0, obs, minus)) / (2 * h)
    omega = s.omega.copy()
    for j in s.annealed:  # a theta without random effect: exactly none
        omega[j, :] = omega[:, j] = 0.0
    d1, _ = s.mu_derivatives(s.theta)
    units = [(p, _unit(q, *ab)) for p, ab in free.omega]
    y = s.y[records]
    uncensored = ~s.cens[records]
    info = np.zeros((free.n, free.n))
    minus2ll = 0.0
    for i in range(N):
        idx = np.flatnonzero((rec_sub == i) & uncensored)
        if not len(idx):
            continue
        G = J[idx]
        m = F0[idx] + G @ (mu[i] - phi_hat[i])
        V = G @ omega @ G.T + np.diag(R[idx])
        L = np.linalg.cholesky(V)
        Vinv = np.linalg.inv(V)
        r = y[idx] - m
        minus2ll += len(idx) * LOG_2PI + 2 * np.sum(np.log(np.diag(L))) + float(r @ Vinv @ r)
        dm = np.zeros((free.n, len(idx)))
        dV = np.zeros((free.n, len(idx), len(idx)))
        for p, k in free.theta:
            dm[p] = G @ d1[i, :, k]
        for p, E in units:
            dV[p] = G @ E @ G.T
        for p, key in free.sigma:
            dV[p] = np.diag(dR[key][idx])
        A = np.einsum("ij,pjk->pik", Vinv, dV)  # V^-1 dV_p
        info += dm @ Vinv @ dm.T + 0.5 * np.einsum("pij,rji->pr", A, A)
    return info, minus2ll


def covariance_from(information: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """The inverse of an information matrix, or None with the reason."""
    if not np.all(np.isfinite(information)):
        return None, "the information matrix has non-finite entries"
    sym = 0.5 * (information + information.T)
    w = np.linalg.eigvalsh(sym)
    if w.min() <= 1e-12 * max(abs(w.max()), 1.0):
        return None, (
            f"the information matrix is not positive definite (smallest eigenvalue "
            f"{w.min():.3g}): some parameters are not identifiable from these data"
        )
    return np.linalg.inv(sym), None


def linearised_covariance(population, data, etas: np.ndarray, layout: Layout, prior=None):
    """The covariance of a FOCE-family fit's estimates from the linearised Fisher
    information (as ``"lin"`` above) at the EBEs ``etas`` (n_subjects, n_eta), plus half
    the Hessian of ``prior`` (a function of the natural vector: -2 log prior), if given.
    Returns ``(covariance or None, information, reason)``; the model must be mu-referenced
    (``P = theta exp(eta)`` and the like, as SAEM needs)."""
    from pkpd_cart.estimation.saem import SAMPLING_SOLVER, SaemOptions, _Saem

    s = _Saem(population, data, SaemOptions(chains=1), SAMPLING_SOLVER)
    N = s.n_sub
    keep = [j for j in range(s.n_eta) if j not in s.annealed]
    phi_hat = s.mu(s.theta)[:N].copy()
    phi_hat[:, keep] += etas
    info, _ = linearised_information(s, layout, phi_hat)
    if prior is not None:
        x = layout.natural()
        free = layout.free
        h = np.array([1e-4 * max(abs(x[k]), 1e-6) for k in free])
        n = len(free)
        H = np.zeros((n, n))

        def at(*moves):
            z = x.copy()
            for k, sign in moves:
                z[free[k]] += sign * h[k]
            return prior(z)

        for a in range(n):
            for b in range(a + 1):
                H[a, b] = H[b, a] = (
                    at((a, 1), (b, 1)) - at((a, 1), (b, -1)) - at((a, -1), (b, 1))
                    + at((a, -1), (b, -1))
                ) / (4 * h[a] * h[b])  # fmt: skip
        info = info + 0.5 * H
    cov, reason = covariance_from(info)
    return cov, info, reason
