"""The covariance step of a population fit (NONMEM's ``$COV``).

In the natural parameters (thetas, Omega elements, sigma SDs): ``R`` is the Hessian of the
OFV and ``S`` the sum over subjects of the outer products of the gradients of their OBJ
contributions, both by central differences with re-optimised EBEs; the covariance is
``R^-1 S R^-1`` (``"sandwich"``, NONMEM's default), ``2 R^-1`` (``"R"``) or ``4 S^-1``
(``"S"``). When ``R`` is not positive definite the step falls back to ``S`` and says so.
"""

from __future__ import annotations

import numpy as np

from pkpd_cart.estimation.population_objective import PopulationObjective

COVARIANCE_METHODS = ("sandwich", "R", "S", "lin", None)
COVARIANCE_INNER_TOLERANCE = 1e-16  # Newton decrement of the EBEs in the covariance step


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
    # R is the curvature of the whole objective, priors included; S the data's scores only
    f0 = centre.sum() + objective.prior(x)
    t_plus = per_plus.sum(axis=1) + np.array([objective.prior(z) for z in plus])
    t_minus = per_minus.sum(axis=1) + np.array([objective.prior(z) for z in minus])
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
