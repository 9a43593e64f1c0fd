"""A model's table and the compiled calls that evaluate its functions.

A table ``M`` holds, at the indices below, the model's generated functions (machine
addresses under numba, the functions themselves in pure Python) and then its sizes. Every
generated function is called as ``fn(x, t, p, sw, out, out2)``, ``jac_dfdp`` with the column
flags ``sel`` (np) as a seventh argument (``call_selects``):

========== ===================================== ==========================================
index      writes ``out``                        writes ``out2``
========== ===================================== ==========================================
RHS        dx/dt (n)                             -
JAC        df/dx (n, n), as derived              -
JAC_DFDP   df/dx (n, n), non-finite -> 0         df/dp (n, np), columns k with sel[k] != 0
OBS        observables h (no)                    -
OBS_D      dh/dx (no, n)                         dh/dp (no, np)
X0         initial states (n), from ``p``        -
X0_DP      dx0/dp (n, np)                        -
TAU        switch times (ns), from ``p``         -
TAU_DP     d tau/dp (ns, np)                     -
LU_FACTOR  factors of I - c J (x = J, t = c)     1.0 if its static pivots passed, else 0.0
LU_SOLVE   solves for out[0], out[s], ... in     -
           place (x = factors, t = s)
LU_SOLVE4  the same for out[c], out[s + c], ...,  -
           c < 4, in vector registers
========== ===================================== ==========================================

Outputs must be zeroed by the caller only where noted by the generated code (they are
fully written). The functions here allocate and return numpy arrays, for callers in Python
and in the integrator alike.
"""

import math

import numpy as np

from .jit import call, call_selects, jit, jit_leaf
from .mathfns import _mul

RHS, JAC, JAC_DFDP, OBS, OBS_D, X0, X0_DP, TAU, TAU_DP, LU_FACTOR, LU_SOLVE, LU_SOLVE4 = range(12)
N_X, N_P, N_OBS, N_SW = range(12, 16)
TABLE_SIZE = 16
FUNCTIONS = (
    "rhs", "jac", "jac_dfdp", "obs", "obs_d", "x0", "x0_dp", "tau", "tau_dp",
    "lu", "lu_solve", "lu_solve4",
)  # fmt: skip


@jit
def rhs(M, y, t, p, sw):
    """dx/dt at (y, t), shape (n,)."""
    out = np.empty(M[N_X])
    call(M[RHS], y, t, p, sw, out, out)
    return out


@jit
def jac(M, y, t, p, sw):
    """df/dx, shape (n, n)."""
    n = M[N_X]
    out = np.zeros((n, n))
    call(M[JAC], y, t, p, sw, out, out)
    return out


@jit_leaf
def jacobian_into(M, y, t, p, sw, J):
    """df/dx for a Newton iteration into ``J`` (n, n), in place: non-finite entries set
    to 0 (a Newton matrix must stay finite). The generated function writes only J's
    structural non-zeros, so J starts zeroed; a buffer kept for this call stays valid.
    The integrator keeps one J and never reassigns it: an array variable reassigned in its
    step loop cost numba reference-count updates on every pass."""
    call(M[JAC], y, t, p, sw, J, J)
    for i in range(J.shape[0]):
        for j in range(J.shape[1]):
            if not math.isfinite(J[i, j]):
                J[i, j] = 0.0


@jit
def jac_solver(M, y, t, p, sw):
    """df/dx for a Newton iteration: non-finite entries set to 0."""
    n = M[N_X]
    J = np.zeros((n, n))
    jacobian_into(M, y, t, p, sw, J)
    return J


@jit
def dfdp(M, y, t, p, sw):
    """df/dp, shape (n, np)."""
    n = M[N_X]
    J = np.zeros((n, n))
    out = np.zeros((n, M[N_P]))
    call_selects(M[JAC_DFDP], y, t, p, sw, J, out, np.ones(M[N_P]))
    return out


@jit
def sens_rhs(M, y, t, p, sw, pidx):
    """Augmented right-hand side ``[f, J s_k + df/dp_k]`` of ``y = [x, s_0, ...]``.

    Directions ``k < len(pidx)`` are parameters ``pidx[k]``; later ones are initial values.
    """
    n = M[N_X]
    x = y[:n].copy()
    out = np.empty(y.shape[0])
    f = rhs(M, x, t, p, sw)
    J = jac(M, x, t, p, sw)
    Fp = dfdp(M, x, t, p, sw)
    for i in range(n):
        out[i] = f[i]
    for k in range((y.shape[0] - n) // n):
        b = n * (k + 1)
        for i in range(n):
            acc = 0.0
            for j in range(n):
                if J[i, j] != 0.0:
                    acc += _mul(J[i, j], y[b + j])
            if k < pidx.shape[0]:
                acc += Fp[i, pidx[k]]
            out[b + i] = acc
    return out


@jit
def sens_jac_banded(M, y, t, p, sw, pidx):
    """Block-diagonal Jacobian of the augmented system in LSODA's banded layout
    (ml = mu = n - 1); the coupling d(J s)/dx is left out, as in CVODES."""
    n = M[N_X]
    J = jac(M, y[:n].copy(), t, p, sw)
    out = np.zeros((2 * n - 1, y.shape[0]))
    for b in range(0, y.shape[0], n):
        for i in range(n):
            for j in range(n):
                v = J[i, j]
                out[n - 1 + i - j, b + j] = v if math.isfinite(v) else 0.0
    return out


@jit
def observables(M, y, t, p, sw):
    """h(x, p), shape (no,)."""
    out = np.empty(M[N_OBS])
    call(M[OBS], y, t, p, sw, out, out)
    return out


@jit
def observables_dx(M, y, t, p, sw):
    """dh/dx, shape (no, n)."""
    hx = np.zeros((M[N_OBS], M[N_X]))
    hp = np.zeros((M[N_OBS], M[N_P]))
    call(M[OBS_D], y, t, p, sw, hx, hp)
    return hx


@jit
def observables_dp(M, y, t, p, sw):
    """dh/dp, shape (no, np)."""
    hx = np.zeros((M[N_OBS], M[N_X]))
    hp = np.zeros((M[N_OBS], M[N_P]))
    call(M[OBS_D], y, t, p, sw, hx, hp)
    return hp


@jit
def observe_all(M, Y, T, p, SW):
    """Observables at every row of the states ``Y`` (nt, n): (nt, no)."""
    out = np.empty((Y.shape[0], M[N_OBS]))
    h = np.empty(M[N_OBS])
    for r in range(Y.shape[0]):
        call(M[OBS], Y[r], T[r], p, SW[r], h, h)
        for o in range(h.shape[0]):
            out[r, o] = h[o]
    return out


@jit
def observe_sens_all(M, Y, T, p, SW, pidx):
    """Observable sensitivities ``dh/dx S + dh/dp`` at every row of the augmented states
    ``Y`` (nt, n (1 + nsens)): the states, then one block of n per direction, as the
    integrator returns them. Result (nt, no, nsens). Directions beyond ``len(pidx)`` are
    initial values. Zero entries of dh/dx are skipped (an observable reads few states); a
    finite one multiplies without the test of :func:`mathfns._mul` (finite times 0 is 0),
    and the indices are unsigned (no negative-index wraparound): 0.77x the time for
    sle_cart's 40 directions at 366 times."""
    n, no = M[N_X], M[N_OBS]
    ns = Y.shape[1] // n - 1
    npd = pidx.shape[0]
    out = np.empty((Y.shape[0], no, ns))
    hx = np.zeros((no, n))  # written at dh's structural non-zeros only
    hp = np.zeros((no, M[N_P]))
    x = np.empty(n)
    n_u = np.uint64(n)
    pidx_u = pidx.astype(np.uint64)
    for r in range(Y.shape[0]):
        for i in range(n):
            x[i] = Y[r, i]
        call(M[OBS_D], x, T[r], p, SW[r], hx, hp)
        for o in range(no):
            for k in range(npd):
                out[r, o, k] = hp[o, pidx_u[k]]
            for k in range(npd, ns):
                out[r, o, k] = 0.0
            for i in range(n):
                a = hx[o, i]
                if a == 0.0:
                    continue
                at = n_u + np.uint64(i)  # Y[r, n (1 + k) + i] for k = 0, 1, ...
                if math.isfinite(a):
                    for k in range(ns):
                        out[r, o, k] += a * Y[r, at]
                        at += n_u
                else:
                    for k in range(ns):
                        out[r, o, k] += _mul(a, Y[r, at])
                        at += n_u
    return out


@jit
def initial(M, p):
    """x(t0) from the initial expressions, shape (n,)."""
    out = np.empty(M[N_X])
    call(M[X0], p, 0.0, p, p, out, out)
    return out


@jit
def initial_dp(M, p):
    """dx(t0)/dp, shape (n, np)."""
    out = np.zeros((M[N_X], M[N_P]))
    call(M[X0_DP], p, 0.0, p, p, out, out)
    return out


@jit
def switch_times(M, p):
    """Switch times, shape (ns,)."""
    out = np.empty(M[N_SW])
    call(M[TAU], p, 0.0, p, p, out, out)
    return out


@jit
def switch_times_dp(M, p):
    """d(switch time)/dp, shape (ns, np)."""
    out = np.zeros((M[N_SW], M[N_P]))
    call(M[TAU_DP], p, 0.0, p, p, out, out)
    return out
