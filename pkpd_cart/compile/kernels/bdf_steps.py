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
def _bdf_change_D(D, order, factor, RW):
    """Rescale the differences D[:order + 1] to a step ``factor`` times the current one.

    ``RW`` is a workspace of shape (3, 6, 6) for R, U and RU (no allocation: this runs at
    every change of the step size). D[i] becomes sum over k of RU[k, i] D[k], k = 1 ..
    order; RU's first row and column are (1, 0, ..., 0) (R[i, 0] = 0 for i > 0, and the
    entries of U's columns j > 0 are signed binomial coefficients C(j, m) that sum to 0,
    exactly), so D[0] keeps its value and takes no part.

    One pass over the columns per order, each reading its ``order`` differences once into
    registers and writing them once: 2.2-2.7x faster than ``order`` ^ 2 passes over whole
    rows for sle_cart's 398 columns with 40 directions (measured), and the same sums in
    the same order (bit-identical). The rows are views made once (free in a kernel without
    reference counting). The loop runs scalar: numba tells LLVM nothing about overlap, and
    it cannot prove that five rows of one array do not overlap.
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
    m = D.shape[1]
    D1, D2, D3, D4, D5 = D[1], D[2], D[3], D[4], D[5]
    if order == 1:
        a11 = RU[1, 1]
        for c in range(m):
            D1[c] = 0.0 + a11 * D1[c]
    elif order == 2:
        a11, a12 = RU[1, 1], RU[1, 2]
        a21, a22 = RU[2, 1], RU[2, 2]
        for c in range(m):
            w1, w2 = D1[c], D2[c]
            D1[c] = 0.0 + a11 * w1 + a21 * w2
            D2[c] = 0.0 + a12 * w1 + a22 * w2
    elif order == 3:
        a11, a12, a13 = RU[1, 1], RU[1, 2], RU[1, 3]
        a21, a22, a23 = RU[2, 1], RU[2, 2], RU[2, 3]
        a31, a32, a33 = RU[3, 1], RU[3, 2], RU[3, 3]
        for c in range(m):
            w1, w2, w3 = D1[c], D2[c], D3[c]
            D1[c] = 0.0 + a11 * w1 + a21 * w2 + a31 * w3
            D2[c] = 0.0 + a12 * w1 + a22 * w2 + a32 * w3
            D3[c] = 0.0 + a13 * w1 + a23 * w2 + a33 * w3
    elif order == 4:
        a11, a12, a13, a14 = RU[1, 1], RU[1, 2], RU[1, 3], RU[1, 4]
        a21, a22, a23, a24 = RU[2, 1], RU[2, 2], RU[2, 3], RU[2, 4]
        a31, a32, a33, a34 = RU[3, 1], RU[3, 2], RU[3, 3], RU[3, 4]
        a41, a42, a43, a44 = RU[4, 1], RU[4, 2], RU[4, 3], RU[4, 4]
        for c in range(m):
            w1, w2, w3, w4 = D1[c], D2[c], D3[c], D4[c]
            D1[c] = 0.0 + a11 * w1 + a21 * w2 + a31 * w3 + a41 * w4
            D2[c] = 0.0 + a12 * w1 + a22 * w2 + a32 * w3 + a42 * w4
            D3[c] = 0.0 + a13 * w1 + a23 * w2 + a33 * w3 + a43 * w4
            D4[c] = 0.0 + a14 * w1 + a24 * w2 + a34 * w3 + a44 * w4
    else:
        a11, a12, a13, a14, a15 = RU[1, 1], RU[1, 2], RU[1, 3], RU[1, 4], RU[1, 5]
        a21, a22, a23, a24, a25 = RU[2, 1], RU[2, 2], RU[2, 3], RU[2, 4], RU[2, 5]
        a31, a32, a33, a34, a35 = RU[3, 1], RU[3, 2], RU[3, 3], RU[3, 4], RU[3, 5]
        a41, a42, a43, a44, a45 = RU[4, 1], RU[4, 2], RU[4, 3], RU[4, 4], RU[4, 5]
        a51, a52, a53, a54, a55 = RU[5, 1], RU[5, 2], RU[5, 3], RU[5, 4], RU[5, 5]
        for c in range(m):
            w1, w2, w3, w4, w5 = D1[c], D2[c], D3[c], D4[c], D5[c]
            D1[c] = 0.0 + a11 * w1 + a21 * w2 + a31 * w3 + a41 * w4 + a51 * w5
            D2[c] = 0.0 + a12 * w1 + a22 * w2 + a32 * w3 + a42 * w4 + a52 * w5
            D3[c] = 0.0 + a13 * w1 + a23 * w2 + a33 * w3 + a43 * w4 + a53 * w5
            D4[c] = 0.0 + a14 * w1 + a24 * w2 + a34 * w3 + a44 * w4 + a54 * w5
            D5[c] = 0.0 + a15 * w1 + a25 * w2 + a35 * w3 + a45 * w4 + a55 * w5


@_jit
def _bdf_update(D, d, order):
    """Take the accepted step's correction ``d`` into the differences D, scipy's update:
    D[order + 2] = d - D[order + 1], D[order + 1] = d, then D[i] += D[i + 1] downwards.
    For a step after which the order or the step size changes; otherwise
    :func:`_bdf_update_predict` does this and the next prediction in one pass."""
    m = D.shape[1]
    for col in range(m):
        D[order + 2, col] = d[col] - D[order + 1, col]
        D[order + 1, col] = d[col]
    for i in range(order, -1, -1):
        for col in range(m):
            D[i, col] += D[i + 1, col]


@_jit
def _bdf_predict(D, order, y_predict, psi):
    """The prediction of the next step from the differences: ``y_predict`` = D[0] + ... +
    D[order], ``psi`` = sum of gamma_k / alpha_order D[k], k = 1 .. order. Row by row
    (each pass vectorised); :func:`_bdf_update_predict` computes the same sums in the same
    order, one column at a time, right after an update."""
    m = D.shape[1]
    for col in range(m):
        y_predict[col] = D[0, col]
        psi[col] = 0.0
    for k in range(1, order + 1):
        w = _BDF_GAMMA[k] / _BDF_ALPHA[order]
        for col in range(m):
            y_predict[col] += D[k, col]
            psi[col] += w * D[k, col]


@_jit
def _bdf_update_predict(D, d, order, y_predict, psi):
    """Take the accepted step's correction ``d`` into the differences D (scipy's update:
    D[order + 2] = d - D[order + 1], D[order + 1] = d, then D[i] += D[i + 1] downwards)
    and, in the same pass, predict the next step at the same order and step size:
    ``y_predict`` = D[0] + ... + D[order], ``psi`` = sum of gamma_k / alpha_order D[k].

    The integrator calls this when neither the order nor the step size changes before the
    next step (most steps). One pass over the columns, each column's differences held in
    registers, against the 2 order + 4 passes of :func:`_bdf_update` and
    :func:`_bdf_predict`; the same sums in the same order (bit-identical).
    """
    m = D.shape[1]
    D0, D1, D2, D3, D4, D5, D6, D7 = D[0], D[1], D[2], D[3], D[4], D[5], D[6], D[7]
    alpha = _BDF_ALPHA[order]
    w1, w2, w3 = _BDF_GAMMA[1] / alpha, _BDF_GAMMA[2] / alpha, _BDF_GAMMA[3] / alpha
    w4, w5 = _BDF_GAMMA[4] / alpha, _BDF_GAMMA[5] / alpha
    if order == 1:
        for c in range(m):
            dc = d[c]
            D3[c] = dc - D2[c]
            D2[c] = dc
            a1 = D1[c] + dc
            a0 = D0[c] + a1
            D1[c], D0[c] = a1, a0
            y_predict[c] = a0 + a1
            psi[c] = 0.0 + w1 * a1
    elif order == 2:
        for c in range(m):
            dc = d[c]
            D4[c] = dc - D3[c]
            D3[c] = dc
            a2 = D2[c] + dc
            a1 = D1[c] + a2
            a0 = D0[c] + a1
            D2[c], D1[c], D0[c] = a2, a1, a0
            y_predict[c] = a0 + a1 + a2
            psi[c] = 0.0 + w1 * a1 + w2 * a2
    elif order == 3:
        for c in range(m):
            dc = d[c]
            D5[c] = dc - D4[c]
            D4[c] = dc
            a3 = D3[c] + dc
            a2 = D2[c] + a3
            a1 = D1[c] + a2
            a0 = D0[c] + a1
            D3[c], D2[c], D1[c], D0[c] = a3, a2, a1, a0
            y_predict[c] = a0 + a1 + a2 + a3
            psi[c] = 0.0 + w1 * a1 + w2 * a2 + w3 * a3
    elif order == 4:
        for c in range(m):
            dc = d[c]
            D6[c] = dc - D5[c]
            D5[c] = dc
            a4 = D4[c] + dc
            a3 = D3[c] + a4
            a2 = D2[c] + a3
            a1 = D1[c] + a2
            a0 = D0[c] + a1
            D4[c], D3[c], D2[c], D1[c], D0[c] = a4, a3, a2, a1, a0
            y_predict[c] = a0 + a1 + a2 + a3 + a4
            psi[c] = 0.0 + w1 * a1 + w2 * a2 + w3 * a3 + w4 * a4
    else:
        for c in range(m):
            dc = d[c]
            D7[c] = dc - D6[c]
            D6[c] = dc
            a5 = D5[c] + dc
            a4 = D4[c] + a5
            a3 = D3[c] + a4
            a2 = D2[c] + a3
            a1 = D1[c] + a2
            a0 = D0[c] + a1
            D5[c], D4[c], D3[c], D2[c], D1[c], D0[c] = a5, a4, a3, a2, a1, a0
            y_predict[c] = a0 + a1 + a2 + a3 + a4 + a5
            psi[c] = 0.0 + w1 * a1 + w2 * a2 + w3 * a3 + w4 * a4 + w5 * a5


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
