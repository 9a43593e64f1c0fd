"""Compiled Jacobians and forward sensitivities against central finite differences."""

import dataclasses

import numpy as np
import pytest
from helpers import BACKENDS, one_compartment

import pkpd_cart as pk
from pkpd_cart.simulation.solver import simulate

TIGHT = pk.SolverOptions(rtol=1e-12, atol=1e-10)
# Kirouac states are cell counts up to 1e10: an absolute tolerance of 1e-6 cells is tight.
TIGHT_CELLS = pk.SolverOptions(rtol=1e-12, atol=1e-6)


def cases():
    stein = pk.load_model("stein2019")
    kir = pk.load_model("kirouac2023")
    one = one_compartment()
    return {
        "onecmt": (
            one,
            np.array([0.5, 1.0, 3.0, 8.0]),
            [pk.Dose(0, 100, "A"), pk.Dose(2, 50, "A")],
            TIGHT,
        ),
        # t = Tmax itself is a kink in p (left and right derivatives differ): not sampled
        "stein2019": (stein, np.array([2.0, 9.0, 9.5, 12.0, 28.0, 200.0]), [], TIGHT),
        "kirouac2023": (
            kir,
            np.array([1.0, 7.0, 20.0, 60.0, 200.0]),
            [pk.Dose(0, 1e8, "dose")],
            TIGHT_CELLS,
        ),
    }


CASES = cases()


def assert_fd_close(exact, fd, fp, fm, h, where):
    """Relative 1e-5, with a floor at the central difference's own round-off error."""
    roundoff = 1e3 * np.finfo(float).eps * np.maximum(np.abs(fp), np.abs(fm)) / h
    assert np.all(np.abs(exact - fd) <= 1e-5 * np.abs(fd) + roundoff), where


def state_points(model, times, doses):
    traj = simulate(model, times, doses=doses)
    p = traj.parameters
    return traj.states, traj.switch_flags, p


@pytest.mark.parametrize("name", list(CASES))
def test_jacobian_and_dfdp_match_finite_differences(name):
    model, times, doses, _ = CASES[name]
    c = model.compile()
    X, SW, p = state_points(model, times, doses)
    for x, sw, t in zip(X, SW, times):
        J = c.jac(x, t, p, sw)
        D = c.dfdp(x, t, p, sw)
        for j in range(len(x)):
            h = 1e-6 * max(abs(x[j]), 1e-3 * np.max(np.abs(x)), 1e-12)
            xp, xm = x.copy(), x.copy()
            xp[j] += h
            xm[j] -= h
            fp, fm = c.rhs(xp, t, p, sw), c.rhs(xm, t, p, sw)
            assert_fd_close(J[:, j], (fp - fm) / (2 * h), fp, fm, h, (name, t, j))
        for j in range(len(p)):
            h = 1e-6 * max(abs(p[j]), 1e-8)
            pp, pm = p.copy(), p.copy()
            pp[j] += h
            pm[j] -= h
            fp, fm = c.rhs(x, t, pp, sw), c.rhs(x, t, pm, sw)
            assert_fd_close(D[:, j], (fp - fm) / (2 * h), fp, fm, h, (name, t, p[j]))


def fd_sensitivity(model, times, doses, p, j, initial_state=None, opts=TIGHT):
    """Fourth-order central difference (h = 1e-3 relative) of states and observables,
    integrated by LSODA: a reference independent of the default BDF integrator."""
    opts = dataclasses.replace(opts, method="LSODA")
    x0 = model.compile().initial(p)
    if initial_state is None:
        h = 1e-3 * abs(p[j])
    else:
        i = list(model.states).index(initial_state)
        h = 1e-3 * max(abs(x0[i]), 1.0)

    def run(step):
        if initial_state is None:
            q = p.copy()
            q[j] += step
            return simulate(model, times, params=q, doses=doses, options=opts)
        init = dict(zip(model.states, x0))
        init[initial_state] = x0[i] + step
        return simulate(model, times, params=p, doses=doses, options=opts, initial=init)

    runs = [run(k * h) for k in (2, 1, -1, -2)]
    weights = np.array([-1.0, 8.0, -8.0, 1.0]) / (12 * h)
    dx = sum(w * r.states for w, r in zip(weights, runs))
    dh = sum(w * r.observables for w, r in zip(weights, runs))
    return dx, dh


def assert_close_columnwise(got, ref, values, pj, atol, rel=1e-5):
    """Each sensitivity trajectory relative to its own largest magnitude; a sensitivity
    below 1e-5 of the output's range per unit relative change of the parameter counts as
    zero (finite differences of a solution with tolerance 1e-11 cannot resolve it)."""
    scale = np.max(np.abs(ref), axis=0)
    floor = np.maximum(1e-5 * np.max(np.abs(values), axis=0), 1e5 * atol) / abs(pj)
    err = np.abs(got - ref) / np.maximum(rel * scale, floor)
    assert np.max(err) < 1.0, np.max(err)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_sensitivities_match_finite_differences(name):
    model, times, doses, opts = CASES[name]
    first_state = list(model.states)[0]
    wrt = [*model.parameters, f"{first_state}(0)"]
    traj = simulate(model, times, doses=doses, options=opts, sensitivities=wrt)
    p = traj.parameters
    assert traj.sensitivity_names == tuple(wrt)
    for k in range(len(model.parameters)):
        fd_x, fd_h = fd_sensitivity(model, times, doses, p, k, opts=opts)
        assert_close_columnwise(
            traj.state_sensitivities[:, :, k], fd_x, traj.states, p[k], opts.atol
        )
        assert_close_columnwise(
            traj.observable_sensitivities[:, :, k], fd_h, traj.observables, p[k], opts.atol
        )
    fd_x, fd_h = fd_sensitivity(model, times, doses, p, None, initial_state=first_state, opts=opts)
    x0 = model.compile().initial(p)[0]
    assert_close_columnwise(
        traj.state_sensitivities[:, :, -1], fd_x, traj.states, max(x0, 1), opts.atol
    )


@pytest.mark.parametrize("name", list(CASES))
def test_backends_agree(name):
    model, times, doses, opts = CASES[name]
    runs = [
        simulate(model, times, doses=doses, backend=b, sensitivities=True, options=opts)
        for b in BACKENDS
    ]
    reference = runs[0]
    for other in runs[1:]:
        np.testing.assert_allclose(
            other.states,
            reference.states,
            rtol=1e-10,
            atol=1e-10 * np.max(np.abs(reference.states)),
        )
        np.testing.assert_allclose(
            other.observable_sensitivities,
            reference.observable_sensitivities,
            rtol=1e-10,
            atol=1e-10 * np.max(np.abs(reference.observable_sensitivities)),
        )
    compiled = [model.compile(b) for b in BACKENDS]
    assert [c.backend for c in compiled] == BACKENDS
    x, sw, p = reference.states[-1], reference.switch_flags[-1], reference.parameters
    for fn in ("rhs", "jac", "dfdp", "observables_dx", "observables_dp", "initial_dp"):
        args = (p,) if fn == "initial_dp" else (x, times[-1], p, sw)
        for c in compiled[1:]:
            np.testing.assert_allclose(
                getattr(c, fn)(*args), getattr(compiled[0], fn)(*args), rtol=1e-12, atol=1e-300
            )


def test_sensitivity_columns_in_frame(stein):
    df = stein.simulate([1.0, 20.0], sensitivities=["alpha", "E(0)"])
    assert "d(C)/d(alpha)" in df.columns and "d(E)/d(E(0))" in df.columns
    # Before Tmax C = E(0) * exp(rho t): dC/dE(0) = exp(rho t), dC/dalpha = 0.
    rho = np.log(3900) / 9.3
    assert df["d(C)/d(E(0))"].iloc[0] == pytest.approx(np.exp(rho), rel=1e-6)
    assert df["d(C)/d(alpha)"].iloc[0] == 0.0


def test_stein_sensitivities_match_the_closed_form_derivative(stein):
    """dC/dtheta from the compiled sensitivities against sympy's derivative of the closed form
    (including the jump at the parameter-dependent switch time Tmax)."""
    import sympy as sp

    names = list(stein.parameters)
    syms = sp.symbols(names, positive=True)
    foldx, Tmax, Cmax, alpha, FB, beta = syms
    tt = sp.Symbol("t", positive=True)
    late = (1 - FB) * Cmax * sp.exp(-alpha * (tt - Tmax)) + FB * Cmax * sp.exp(-beta * (tt - Tmax))
    early = Cmax / foldx * sp.exp(sp.log(foldx) / Tmax * tt)
    values = dict(zip(syms, stein.resolve_parameters()))
    times = np.array([3.0, 9.0, 10.0, 28.0, 180.0])
    traj = simulate(stein, times, options=TIGHT, sensitivities=True)
    for r, ti in enumerate(times):
        expr = early if ti < values[Tmax] else late
        for k, s in enumerate(syms):
            exact = float(sp.diff(expr, s).subs(values).subs(tt, ti))
            got = traj.observable_sensitivities[r, 0, k]
            assert got == pytest.approx(
                exact, rel=1e-6, abs=1e-9 * abs(float(expr.subs(values).subs(tt, ti)))
            ), (ti, names[k])
