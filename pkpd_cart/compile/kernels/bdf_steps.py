"""The steps of the BDF integrator (:mod:`.bdf`) that do not touch the model: norms, LU
factorisation and solves, the rescaling of the difference array, dense output."""

import math

import numpy as np

from .jit import jit_leaf as _jit

_BDF_MAX_ORDER = 5
_BDF_NEWTON_MAXITER = 4
_BDF_MIN_FACTOR = 0.2
_BDF_MAX_FACTOR = 10.0
_BDF_KAPPA = np.array([0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0])
_BDF_GAMMA = np.concatenate((np.zeros(1), np.cumsum(1.0 / np.arange(1, _BDF_MAX_ORDER + 1))))
_BDF_ALPHA = (1.0 - _BDF_KAPPA) * _BDF_GAMMA
_BDF_ERROR_CONST = _BDF_KAPPA * _BDF_GAMMA + 1.0 / np.arange(1, _BDF_MAX_ORDER + 2)


@_jit
def _bdf_rms(x, weight, size):
    """Root-mean-square of x[:size] * weight[:size], the weights being the reciprocals of
    scipy's scales ``atol + rtol |y|`` (scipy's ``norm(x / scale) / sqrt(size)``): a step
    takes up to six norms with the same scales, and a division costs several times a
    multiplication (this loop was bound by them)."""
    acc = 0.0
    for i in range(size):
        v = x[i] * weight[i]
        acc += v * v
    return math.sqrt(acc / size)


@_jit
def _bdf_compute_R(order, factor, R):
    """Matrix R of Shampine & Reichelt (1997) that rescales differences by ``factor``,
    into R[:order + 1, :order + 1]."""
    for j in range(order + 1):
        R[0, j] = 1.0
    for i in range(1, order + 1):
        R[i, 0] = 0.0
        for j in range(1, order + 1):
            R[i, j] = (i - 1 - factor * j) / i
    for i in range(1, order + 1):
        for j in range(order + 1):
            R[i, j] *= R[i - 1, j]


@_jit
def _bdf_change_D(D, order, factor, W, RW):
    """Rescale the differences D[:order + 1] to a step ``factor`` times the current one.

    ``W`` is a workspace of D's shape, ``RW`` one of shape (3, 6, 6) for R, U and RU (no
    allocation: this runs at every change of the step size). Loops index the arrays
    directly: taking row views inside them costs two reference-count updates each
    (numba's NRT), which used to dominate this function for small systems.
    """
    R = RW[0]
    U = RW[1]
    RU = RW[2]
    _bdf_compute_R(order, factor, R)
    _bdf_compute_R(order, 1.0, U)
    for i in range(order + 1):
        for j in range(order + 1):
            acc = 0.0
            for k in range(order + 1):
                acc += R[i, k] * U[k, j]
            RU[i, j] = acc
    # RU's first row and column are (1, 0, ..., 0): R[i, 0] = 0 for i > 0, and the entries
    # of U's columns j > 0 are signed binomial coefficients C(j, m) that sum to 0, exactly.
    # So D[0] keeps its value and takes no part: order^2 passes instead of (order + 1)^2.
    m = D.shape[1]
    for i in range(1, order + 1):
        for c in range(m):
            W[i, c] = D[i, c]
            D[i, c] = 0.0
    for i in range(1, order + 1):
        for k in range(1, order + 1):
            w = RU[k, i]
            for c in range(m):  # innermost over contiguous columns: vectorised
                D[i, c] += w * W[k, c]


@_jit
def _bdf_lu(A, piv):
    """LU factorisation with partial pivoting, in place; False if A is singular."""
    n = A.shape[0]
    for k in range(n):
        p = k
        big = abs(A[k, k])
        for i in range(k + 1, n):
            if abs(A[i, k]) > big:
                big = abs(A[i, k])
                p = i
        piv[k] = p
        if big == 0.0 or not math.isfinite(big):
            return False
        if p != k:
            for j in range(n):
                A[k, j], A[p, j] = A[p, j], A[k, j]
        inv = 1.0 / A[k, k]
        for i in range(k + 1, n):
            A[i, k] *= inv
            f = A[i, k]
            if f != 0.0:
                for j in range(k + 1, n):
                    A[i, j] -= f * A[k, j]
    return True


@_jit
def _bdf_lu_solve(LU, piv, b, offset):
    """Solve LU x = b[offset:offset + n] in place (zero factors of a sparse LU skipped)."""
    n = LU.shape[0]
    for k in range(n):
        p = piv[k]
        if p != k:
            b[offset + k], b[offset + p] = b[offset + p], b[offset + k]
    for j in range(n):
        v = b[offset + j]
        if v != 0.0:
            for i in range(j + 1, n):
                b[offset + i] -= LU[i, j] * v
    for j in range(n - 1, -1, -1):
        v = b[offset + j] / LU[j, j]
        b[offset + j] = v
        if v != 0.0:
            for i in range(j):
                b[offset + i] -= LU[i, j] * v


@_jit
def _bdf_lu_solve_many(LU, piv, b, offset, k):
    """Solve LU X = B in place, B being the (n, k) block stored row-major in
    b[offset:offset + n * k]: row operations run along the k right-hand sides, and zero
    factors of a sparse LU are skipped. The block is reshaped once and indexed in two
    dimensions: no row views in the loops (each would cost reference-count updates), and
    LLVM vectorises the contiguous inner loops (3x faster than flat offsets for 40
    directions, measured)."""
    n = LU.shape[0]
    B = b[offset : offset + n * k].reshape((n, k))
    for r in range(n):
        q = piv[r]
        if q != r:
            for c in range(k):
                B[r, c], B[q, c] = B[q, c], B[r, c]
    for i in range(n):
        for j in range(i):
            f = LU[i, j]
            if f != 0.0:
                for c in range(k):
                    B[i, c] -= f * B[j, c]
    for i in range(n - 1, -1, -1):
        for j in range(i + 1, n):
            f = LU[i, j]
            if f != 0.0:
                for c in range(k):
                    B[i, c] -= f * B[j, c]
        inv = 1.0 / LU[i, i]
        for c in range(k):
            B[i, c] *= inv


@_jit
def _bdf_sensitivity_slopes(J, Fp, pidx, s, out, n, k):
    """out = J S + dF/dp for the (n, k) sensitivity block S stored row-major in s[n:]
    (component-major: S[i, dir] at n + i * k + dir), written to out[n:] likewise.

    Directions beyond len(pidx) are initial values (no dF/dp term). J's non-finite entries
    are already 0 (the model's ``jac_dfdp`` writes them so); products run along the
    directions, skipping J's zeros.
    """
    npd = pidx.shape[0]
    for i in range(n):
        row_i = n + i * k
        for c in range(k):
            out[row_i + c] = Fp[i, pidx[c]] if c < npd else 0.0
        for j in range(n):
            a = J[i, j]
            if a != 0.0:
                row_j = n + j * k
                for c in range(k):
                    out[row_i + c] += a * s[row_j + c]


@_jit
def _bdf_to_internal(y, out, n, k):
    """[x, s_1, ..., s_k] (direction-major, as in ``sens_rhs``) -> [x, S row-major]."""
    for i in range(n):
        out[i] = y[i]
    for c in range(k):
        for i in range(n):
            out[n + i * k + c] = y[n * (c + 1) + i]


@_jit
def _bdf_newton_matrix(J, c, A, piv):
    """A <- LU(I - c J); False if singular."""
    n = J.shape[0]
    for i in range(n):
        for j in range(n):
            A[i, j] = -c * J[i, j]
        A[i, i] += 1.0
    return _bdf_lu(A, piv)


@_jit
def _bdf_interpolate(D, order, t_new, h, t, out):
    """Dense output of the last step at t into out (scipy's BdfDenseOutput)."""
    m = D.shape[1]
    for c in range(m):
        out[c] = D[0, c]
    prod = 1.0
    for j in range(order):
        prod *= (t - (t_new - h * j)) / (h * (j + 1))
        for c in range(m):
            out[c] += D[j + 1, c] * prod
