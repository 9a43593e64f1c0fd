"""Compiled variable-order BDF integrator, shared by every model.

The integrator calls a model only through its table ``M`` (see :mod:`.model_calls`): under
numba, indirect calls to the model's compiled functions, so this module is compiled once
per machine and a new model compiles only its own functions; in pure Python, the same text
calling plain functions. The whole integration, every step, Newton iteration and dense
output, runs as machine code: no Python between steps (scipy's ``odeint`` and
``solve_ivp`` return to Python for every right-hand-side and Jacobian call).

Method. The state integration is the algorithm of ``scipy.integrate.BDF``, line for line:
the variable-order (1-5), quasi-constant step size numerical differentiation formulas
(NDF) of Shampine & Reichelt, "The MATLAB ODE suite", SIAM J. Sci. Comput. 18:1-22 (1997),
with a simplified Newton iteration on a reused Jacobian and modified divided differences
``D``. Tests check that both take the same steps.

Forward sensitivities use the staggered direct method of Caracotsios & Stewart,
Comput. Chem. Eng. 9:359-365 (1985), as in CVODES: once the state corrector of a step has
converged, the sensitivity corrector, which is linear, is solved exactly with the Newton
matrix ``I - c J(t_new, x_new)``, one LU factorisation shared by all directions. It is
solved for the new sensitivities themselves, whose right-hand side needs df/dp but no
product J S (the product cancels). By
default the sensitivities are kept out of the local error test (CVODES'
``errconS = False``); ``errcon`` puts them in.
"""

import math

import numpy as np

from .bdf_steps import (
    _BDF_ALPHA,
    _BDF_ERROR_CONST,
    _BDF_MAX_FACTOR,
    _BDF_MAX_ORDER,
    _BDF_MIN_FACTOR,
    _BDF_NEWTON_MAXITER,
    _bdf_change_D,
    _bdf_interpolate,
    _bdf_lu_solve,
    _bdf_lu_solve_many,
    _bdf_newton_matrix,
    _bdf_predict,
    _bdf_rms,
    _bdf_sensitivity_slopes,
    _bdf_to_internal,
    _bdf_update,
    _bdf_update_predict,
)
from .jit import call, call_selects, jit, jit_leaf
from .model_calls import (
    JAC_DFDP,
    LU_FACTOR,
    LU_SOLVE,
    LU_SOLVE4,
    N_X,
    RHS,
    initial,
    initial_dp,
    jacobian_into,
    observe_all,
    observe_sens_all,
    rhs,
    switch_times,
    switch_times_dp,
)

# Status codes returned by bdf_segment (see pkpd_cart.simulation.solver for their messages).
BDF_SUCCESS = 0
BDF_TOO_MANY_STEPS = 1
BDF_STEP_TOO_SMALL = 2


@jit_leaf
def _rhs_u(M, x, t, p, sw, u, out):
    """The model's right-hand side plus the infusion input ``u`` (amount per time), into
    ``out`` (n); ``x`` may be longer than n (only its first n entries are read)."""
    call(M[RHS], x, t, p, sw, out, out)
    for i in range(out.shape[0]):
        out[i] += u[i]


@jit_leaf
def _factor(M, J, c, p, sw, A, LU, piv, info):
    """Factorise I - c J. First the model's own sparse LU with static pivots (into ``A``;
    see :mod:`pkpd_cart.compile.sparse_lu`); if a pivot fails its check, the dense LU
    with partial pivoting (into ``LU``, ``piv``). Returns ``(factorised, sparse)``."""
    call(M[LU_FACTOR], J, c, p, sw, A, info)
    if info[0] == 1.0:
        return True, True
    return _bdf_newton_matrix(J, c, LU, piv), False


@jit_leaf
def _solve(M, sparse, A, LU, piv, b, offset, k, p, sw):
    """Solve with the factors of :func:`_factor` for the k right-hand sides stored
    component-major in b[offset:offset + n k], in place."""
    if not sparse:
        if k == 1:
            _bdf_lu_solve(LU, piv, b, offset)
        else:
            _bdf_lu_solve_many(LU, piv, b, offset, k)
        return
    if k == 1 and offset == 0:  # the states' Newton solve: no view to make
        call(M[LU_SOLVE], A, 1.0, p, sw, b, b)
        return
    col = 0
    while col + 4 <= k:  # four directions at once (vector registers)
        call(M[LU_SOLVE4], A, float(k), p, sw, b[offset + col :], b)
        col += 4
    while col < k:
        call(M[LU_SOLVE], A, float(k), p, sw, b[offset + col :], b)
        col += 1


@jit
def _bdf_initial_step(M, x0, f0, t0, p, sw, u, interval, max_step, rtol, atol):
    """scipy's ``select_initial_step`` for order 1, on the states."""
    n = x0.shape[0]
    weight = np.empty(n)
    x1 = np.empty(n)
    for i in range(n):
        weight[i] = 1.0 / (atol + rtol * abs(x0[i]))
    d0 = _bdf_rms(x0, weight, n)
    d1 = _bdf_rms(f0, weight, n)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    h0 = min(h0, interval)
    for i in range(n):
        x1[i] = x0[i] + h0 * f0[i]
    f1 = np.empty(n)
    _rhs_u(M, x1, t0 + h0, p, sw, u, f1)
    for i in range(n):
        x1[i] = f1[i] - f0[i]
    d2 = _bdf_rms(x1, weight, n) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** 0.5
    return min(100 * h0, h1, interval, max_step)


@jit
def bdf_segment(M, y0, t0, tout, p, sw, pidx, cols, u, rtol, atol, errcon, max_steps, max_step):
    """Integrate the (augmented) state y0 from t0 over the output times ``tout``, which
    are increasing, ``tout[-1]`` being the end of the segment. Returns ``(Y, status,
    t_reached, n_steps)`` with ``Y[i]`` the solution at ``tout[i]`` (rows after a failure
    are undefined). See :func:`bdf_segment_into` for the layout and the arguments."""
    Y = np.empty((tout.shape[0], y0.shape[0]))
    y_end = np.empty(y0.shape[0])
    status, reached, n_steps = bdf_segment_into(
        M, y0, t0, tout, tout[tout.shape[0] - 1], p, sw, pidx, cols, u, rtol, atol, errcon,
        max_steps, max_step, Y, y_end,
    )  # fmt: skip
    return Y, status, reached, n_steps


@jit
def bdf_segment_into(
    M, y0, t0, tout, t_end, p, sw, pidx, cols, u, rtol, atol, errcon, max_steps, max_step, Y, y_end
):
    """Integrate the (augmented) state y0 from t0 to ``t_end``, writing the solution at
    the output times ``tout`` (increasing, within [t0, t_end]) into the rows of ``Y`` and
    the solution at ``t_end`` into ``y_end``. Returns ``(status, t_reached, n_steps)``;
    after a failure, rows not reached and ``y_end`` are undefined. The caller's own output
    array can be ``Y``: no array is allocated per output time, and none is copied after.

    ``y0`` holds the n states, then one block of n per sensitivity direction (parameters
    ``pidx`` first, then initial values), as in ``sens_rhs``. ``u`` (n) is the infusion
    input added to the states' derivatives (it does not depend on the parameters, so the
    sensitivity equations do not change). Inside, the sensitivities are stored
    component-major (all directions of state i together: entry ``n + i * k +
    direction``), so that J S and the corrector solves run along the directions. ``cols``
    lists, sorted, the entries that can be non-zero
    (:func:`pkpd_cart.simulation.structure.sensitivity_columns`); the difference table
    keeps only those (the others are exactly 0 for all time, and are written as 0), while
    J S and the solves run on the full block.
    """
    n = M[N_X]
    m = y0.shape[0]
    n_dir = m // n - 1
    k_out = 0
    while k_out < tout.shape[0] and tout[k_out] <= t0:
        for col in range(m):
            Y[k_out, col] = y0[col]
        k_out += 1
    t_bound = t_end
    if t_bound <= t0:
        for col in range(m):
            y_end[col] = y0[col]
        return BDF_SUCCESS, t0, 0
    newton_tol = max(10 * 2.220446049250313e-16 / rtol, min(0.03, rtol**0.5))
    mc = n + cols.shape[0] if n_dir else n  # compressed width: states + active entries
    err_size = mc if errcon else n
    err_factor = math.sqrt(mc / m) if errcon else 1.0

    t = t0
    yi = np.empty(m)  # y0 in the internal layout
    _bdf_to_internal(y0, yi, n, n_dir)
    x0 = yi[:n].copy()
    f0 = np.empty(n)
    _rhs_u(M, x0, t0, p, sw, u, f0)
    h_abs = _bdf_initial_step(M, x0, f0, t0, p, sw, u, t_bound - t0, max_step, rtol, atol)
    D = np.zeros((_BDF_MAX_ORDER + 3, mc))
    RW = np.empty((3, _BDF_MAX_ORDER + 1, _BDF_MAX_ORDER + 1))  # workspace of _bdf_change_D
    dfull = np.zeros(m)
    Js = np.zeros((n, n))  # Jacobian and df/dp at the new state (sensitivity corrector)
    n_fp = n * p.shape[0]
    Fp_ext = np.zeros(n_fp + 1)  # df/dp, row-major, then a 0 for directions of initial values
    Fp = Fp_ext[:n_fp].reshape((n, p.shape[0]))
    # the columns of df/dp the directions read: the others are not computed (their
    # entries stay 0). sle_cart's three random effects: 0.1 us less per step than all 40.
    sel = np.zeros(p.shape[0])
    for k in range(pidx.shape[0]):
        sel[pidx[k]] = 1.0
    g = np.empty(m)  # slopes at t0: f, then J S + dF/dp (internal layout, from index n)
    for i in range(n):
        g[i] = f0[i]
    if n_dir:
        # Sensitivity slopes are taken just inside the segment (the right limit): where the
        # state starts on a kink of the equations (say max(0, B_ref - B) at steady state
        # when lymphodepletion begins), J jumps at t0 and the left value would make the
        # first steps fail the error test of a sensitivity that starts at exactly 0.
        delta = 1e-3 * h_abs
        xz = x0 + delta * f0
        call_selects(M[JAC_DFDP], xz, t0 + delta, p, sw, Js, Fp, sel)
        _bdf_sensitivity_slopes(Js, Fp, pidx, yi, g, n, n_dir)
    for col in range(n):
        D[0, col] = yi[col]
        D[1, col] = g[col] * h_abs
    for j in range(mc - n):
        D[0, n + j] = yi[cols[j]]
        D[1, n + j] = g[cols[j]] * h_abs
    order = 1
    n_equal_steps = 0
    J = np.zeros((n, n))
    jacobian_into(M, x0, t0, p, sw, J)
    # the factors of I - c J: the model's sparse LU (A) or the dense fallback (LU, piv)
    A = np.empty(n * n)
    LU = np.empty((n, n))
    piv = np.empty(n, dtype=np.int64)
    lu_valid = False
    lu_sparse = False
    As = np.empty(n * n)
    LUs = np.empty((n, n))
    pivs = np.empty(n, dtype=np.int64)
    info = np.empty(1)
    # For each kept sensitivity entry j: its place in the full block (``at_full``), in a
    # row of the output (``at_out``) and in Fp_ext (its df/dp term; the final 0 for the
    # directions of initial values). Unsigned, and the loops below run over views from 0:
    # numba then emits no negative-index wraparound, which cost several instructions per
    # access and tripled the time of these gathers (measured: 1.1 -> 0.3 us per step for
    # sle_cart's 40 directions).
    n_active = mc - n
    at_full = np.empty(n_active, dtype=np.uint64)
    at_out = np.empty(n_active, dtype=np.uint64)
    at_fp = np.empty(n_active, dtype=np.uint64)
    for j in range(n_active):
        i = (cols[j] - n) // n_dir
        direction = (cols[j] - n) % n_dir
        at_full[j] = cols[j]
        at_out[j] = n * (direction + 1) + i
        at_fp[j] = i * p.shape[0] + pidx[direction] if direction < pidx.shape[0] else n_fp
    y_predict = np.empty(mc)
    psi = np.empty(mc)
    d = np.zeros(mc)
    y_new = np.empty(mc)
    dy = np.empty(n)
    f = np.empty(n)
    row = np.empty(mc)  # one output row, internal layout
    weight = np.empty(mc)  # 1 / (atol + rtol |y|), the weights of the norms
    error = np.empty(mc)
    predict_s = y_predict[n:]  # the sensitivity parts, as views from index 0
    psi_s = psi[n:]
    y_new_s = y_new[n:]
    d_s = d[n:]
    row_s = row[n:]
    # dfull is written only at ``cols`` and stays exactly 0 elsewhere: ``cols`` is closed
    # over the graph of J, so the right-hand side is 0 off it, and both LUs keep those
    # zeros (the sparse one's fill follows that graph; in the dense one an entry off
    # ``cols`` has 0 in every column of ``cols``, so it never becomes their pivot). Each
    # step used to zero the whole block anyway (680 entries for sle_cart's 40 directions);
    # now only a dense solve is followed by one, against non-finite factors.
    dfull_clean = True
    predicted = False  # y_predict and psi already hold the next step's prediction
    n_steps = 0
    steps_since_output = 0

    while t < t_bound:
        if steps_since_output >= max_steps:
            return BDF_TOO_MANY_STEPS, t, n_steps
        min_step = 10 * (np.nextafter(t, np.inf) - t)
        if h_abs > max_step:
            _bdf_change_D(D, order, max_step / h_abs, RW)
            h_abs = max_step
            n_equal_steps = 0
            predicted = False
        elif h_abs < min_step:
            _bdf_change_D(D, order, min_step / h_abs, RW)
            h_abs = min_step
            n_equal_steps = 0
            predicted = False
        current_jac = False
        step_accepted = False
        n_iter = 0
        error_norm = 0.0
        t_new = t
        while not step_accepted:
            if h_abs < min_step:
                return BDF_STEP_TOO_SMALL, t, n_steps
            t_new = t + h_abs
            if t_new > t_bound:
                t_new = t_bound
                _bdf_change_D(D, order, (t_new - t) / h_abs, RW)
                n_equal_steps = 0
                lu_valid = False
                predicted = False
            h = t_new - t
            h_abs = h
            if not predicted:
                _bdf_predict(D, order, y_predict, psi)
            predicted = False  # a retry of this step predicts again
            for i in range(n):
                weight[i] = 1.0 / (atol + rtol * abs(y_predict[i]))
            c = h / _BDF_ALPHA[order]

            # Simplified Newton iteration on the states (scipy's solve_bdf_system).
            converged = False
            while not converged:
                if not lu_valid:
                    lu_valid, lu_sparse = _factor(M, J, c, p, sw, A, LU, piv, info)
                    if not lu_valid:
                        break
                converged = False
                for i in range(n):
                    y_new[i] = y_predict[i]
                    d[i] = 0.0
                dy_norm_old = -1.0
                n_iter = 0
                for k in range(_BDF_NEWTON_MAXITER):
                    n_iter = k + 1
                    _rhs_u(M, y_new, t_new, p, sw, u, f)
                    finite = True
                    for i in range(n):
                        if not math.isfinite(f[i]):
                            finite = False
                    if not finite:
                        break
                    for i in range(n):
                        dy[i] = c * f[i] - psi[i] - d[i]
                    _solve(M, lu_sparse, A, LU, piv, dy, 0, 1, p, sw)
                    dy_norm = _bdf_rms(dy, weight, n)
                    rate = -1.0 if dy_norm_old < 0 else dy_norm / dy_norm_old
                    if rate >= 0 and (
                        rate >= 1
                        or rate ** (_BDF_NEWTON_MAXITER - k) / (1 - rate) * dy_norm > newton_tol
                    ):
                        break
                    for i in range(n):
                        y_new[i] += dy[i]
                        d[i] += dy[i]
                    if dy_norm == 0 or (rate >= 0 and rate / (1 - rate) * dy_norm < newton_tol):
                        converged = True
                        break
                    dy_norm_old = dy_norm
                if not converged:
                    if current_jac:
                        break
                    jacobian_into(M, y_predict, t_new, p, sw, J)
                    lu_valid = False
                    current_jac = True
            # Staggered sensitivity corrector, linear and solved exactly:
            # (I - c J_new) d_s = c (J_new s_pred + f_p) - psi_s, written for s_new = s_pred
            # + d_s as (I - c J_new) s_new = s_pred - psi_s + c f_p, which needs no J S.
            if converged and n_dir:
                call_selects(M[JAC_DFDP], y_new, t_new, p, sw, Js, Fp, sel)
                factorised, sparse_s = _factor(M, Js, c, p, sw, As, LUs, pivs, info)
                if factorised:
                    if not dfull_clean:
                        for col in range(n, m):
                            dfull[col] = 0.0
                    for j in range(n_active):
                        dfull[at_full[j]] = (predict_s[j] - psi_s[j]) + c * Fp_ext[at_fp[j]]
                    _solve(M, sparse_s, As, LUs, pivs, dfull, n, n_dir, p, sw)
                    dfull_clean = sparse_s
                    for j in range(n_active):
                        v = dfull[at_full[j]]
                        y_new_s[j] = v
                        d_s[j] = v - predict_s[j]
                else:
                    converged = False  # I - c J(x_new) singular: as a Newton failure
            if not converged:
                h_abs *= 0.5
                _bdf_change_D(D, order, 0.5, RW)
                n_equal_steps = 0
                lu_valid = False
                continue

            safety = 0.9 * (2 * _BDF_NEWTON_MAXITER + 1) / (2 * _BDF_NEWTON_MAXITER + n_iter)
            for i in range(err_size):
                weight[i] = 1.0 / (atol + rtol * abs(y_new[i]))
                error[i] = _BDF_ERROR_CONST[order] * d[i]
            error_norm = _bdf_rms(error, weight, err_size) * err_factor
            if error_norm > 1:
                factor = max(_BDF_MIN_FACTOR, safety * error_norm ** (-1.0 / (order + 1)))
                h_abs *= factor
                _bdf_change_D(D, order, factor, RW)
                n_equal_steps = 0
            else:
                step_accepted = True

        n_steps += 1
        steps_since_output += 1
        n_equal_steps += 1
        t_old = t
        t = t_new
        if n_equal_steps < order + 1:  # no change of order or step size follows
            _bdf_update_predict(D, d, order, y_predict, psi)
            predicted = True
        else:
            _bdf_update(D, d, order)
        while k_out < tout.shape[0] and tout[k_out] <= t:
            if tout[k_out] == t:
                for col in range(mc):
                    row[col] = D[0, col]
            else:
                _bdf_interpolate(D, order, t, h_abs, max(tout[k_out], t_old), row)
            for col in range(n):
                Y[k_out, col] = row[col]
            for col in range(n, m):
                Y[k_out, col] = 0.0
            for j in range(n_active):
                Y[k_out, at_out[j]] = row_s[j]
            k_out += 1
            steps_since_output = 0

        if n_equal_steps < order + 1:
            continue
        error_m_norm = math.inf
        error_p_norm = math.inf
        if order > 1:
            for i in range(err_size):
                error[i] = _BDF_ERROR_CONST[order - 1] * D[order, i]
            error_m_norm = _bdf_rms(error, weight, err_size) * err_factor
        if order < _BDF_MAX_ORDER:
            for i in range(err_size):
                error[i] = _BDF_ERROR_CONST[order + 1] * D[order + 2, i]
            error_p_norm = _bdf_rms(error, weight, err_size) * err_factor
        best = -1
        best_factor = 0.0
        for k, norm in enumerate((error_m_norm, error_norm, error_p_norm)):
            fac = math.inf if norm == 0.0 else norm ** (-1.0 / (order + k))
            if fac > best_factor:
                best_factor = fac
                best = k
        order += best - 1
        factor = min(_BDF_MAX_FACTOR, safety * best_factor)
        h_abs *= factor
        _bdf_change_D(D, order, factor, RW)
        n_equal_steps = 0
        lu_valid = False
    for col in range(n):
        y_end[col] = D[0, col]
    for col in range(n, m):
        y_end[col] = 0.0
    for j in range(n_active):
        y_end[at_out[j]] = D[0, n + j]
    return BDF_SUCCESS, t, n_steps


@jit
def _add_rate(u, i, rate):
    """Change the infusion input of state i (an infusion's end leaves no rounding residue)."""
    u[i] += rate
    if abs(u[i]) <= 1e-12 * abs(rate):
        u[i] = 0.0


@jit
def bdf_batch(
    M,
    P,
    pidx,
    cols,
    active,
    start,
    t_end,
    ev_ptr,
    ev_t,
    ev_lo,
    ev_hi,
    dose_state,
    dose_amount,
    dose_rate,
    out_ptr,
    times,
    rtol,
    atol,
    errcon,
    max_steps,
    max_step,
    OBS,
    OBS_SENS,
    status,
):
    """Simulate several subjects (rows ``active`` of ``P``) in one call, for population fits.

    Subject ``s`` starts at ``start[s]`` and ends at ``t_end[s]``; its bolus-dose times are
    ``ev_t[ev_ptr[s]:ev_ptr[s + 1]]`` (sorted, distinct), the doses at event ``e`` being
    ``ev_lo[e]:ev_hi[e]`` of ``dose_state``/``dose_amount``/``dose_rate`` (bolus amount
    and change of infusion rate, see ``solver.dose_events``); its outputs are the rows
    ``out_ptr[s]:out_ptr[s + 1]`` of ``times`` (sorted), ``OBS`` (observables) and
    ``OBS_SENS`` (their sensitivities to the parameters ``pidx``). Switch times depend on
    the subject's parameters, so segments end at doses and switches found as it goes; at a
    switch the sensitivities jump by ``(f_before - f_after) dtau/dp``, as in ``simulate``.
    ``status[s]`` gets the BDF status. The same steps as ``simulate`` with method BDF.
    """
    n = M[N_X]
    ns = pidx.shape[0]
    m = n * (1 + ns)
    for a in range(active.shape[0]):
        s = active[a]
        p = P[s]
        tau = switch_times(M, p)
        nsw = tau.shape[0]
        dtau = switch_times_dp(M, p)
        sw = np.zeros(nsw)
        t0 = start[s]
        for k in range(nsw):
            if tau[k] <= t0:
                sw[k] = 1.0
        y = np.empty(m)
        x0 = initial(M, p)
        for i in range(n):
            y[i] = x0[i]
        if ns > 0:
            dx0 = initial_dp(M, p)
            for k in range(ns):
                for i in range(n):
                    y[n * (1 + k) + i] = dx0[i, pidx[k]]
        u = np.zeros(n)
        e = ev_ptr[s]
        e_end = ev_ptr[s + 1]
        while e < e_end and ev_t[e] <= t0:
            if ev_t[e] == t0:
                for d in range(ev_lo[e], ev_hi[e]):
                    y[dose_state[d]] += dose_amount[d]
                    _add_rate(u, dose_state[d], dose_rate[d])
            e += 1
        r0 = out_ptr[s]
        nrow = out_ptr[s + 1] - r0
        T = times[r0 : r0 + nrow]
        Yout = np.empty((nrow, m))
        y_next = np.empty(m)
        SW = np.zeros((nrow, nsw))
        status[s] = 0
        current = t0
        o = 0
        while True:
            b = t_end[s]
            if e < e_end and ev_t[e] < b:
                b = ev_t[e]
            for k in range(nsw):
                if sw[k] == 0.0 and tau[k] > current and tau[k] < b:
                    b = tau[k]
            hi = o
            while hi < nrow and T[hi] < b:
                hi += 1
            if b > current:
                # outputs in [current, b) straight into this subject's rows
                st, reached, _ = bdf_segment_into(
                    M, y, current, T[o:hi], b, p, sw, pidx, cols, u, rtol, atol, errcon,
                    max_steps, max_step, Yout[o:hi], y_next,
                )  # fmt: skip
                if st != 0:
                    status[s] = st
                    break
                for c in range(m):
                    y[c] = y_next[c]
            else:
                for r in range(o, hi):
                    for c in range(m):
                        Yout[r, c] = y[c]
            for r in range(o, hi):
                for k in range(nsw):
                    SW[r, k] = sw[k]
            o = hi
            for k in range(nsw):  # switches at b: flip, sensitivities jump
                if tau[k] == b and sw[k] == 0.0:
                    if ns > 0:
                        x = y[:n].copy()
                        f_old = rhs(M, x, b, p, sw)
                        sw[k] = 1.0
                        f_new = rhs(M, x, b, p, sw)
                        for j in range(ns):
                            for i in range(n):
                                y[n * (1 + j) + i] += (f_old[i] - f_new[i]) * dtau[k, pidx[j]]
                    else:
                        sw[k] = 1.0
            if e < e_end and ev_t[e] == b:
                for d in range(ev_lo[e], ev_hi[e]):
                    y[dose_state[d]] += dose_amount[d]
                    _add_rate(u, dose_state[d], dose_rate[d])
                e += 1
            current = b
            if b >= t_end[s]:
                break
        if status[s] != 0:
            continue
        for r in range(o, nrow):
            for c in range(m):
                Yout[r, c] = y[c]
            for k in range(nsw):
                SW[r, k] = sw[k]
        states = np.ascontiguousarray(Yout[:, :n])
        obs = observe_all(M, states, T, p, SW)
        for r in range(nrow):
            for q in range(obs.shape[1]):
                OBS[r0 + r, q] = obs[r, q]
        if ns > 0:
            osens = observe_sens_all(M, Yout, T, p, SW, pidx)
            for r in range(nrow):
                for q in range(osens.shape[1]):
                    for k in range(ns):
                        OBS_SENS[r0 + r, q, k] = osens[r, q, k]
