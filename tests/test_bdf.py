"""The compiled BDF integrator (pkpd_cart/compile/kernels/bdf.py) against scipy's BDF,
closed forms and its own failure reports."""

import numpy as np
import pytest
from helpers import BACKENDS
from scipy.integrate import solve_ivp

import pkpd_cart as pk

NO_DIRECTIONS = np.zeros(0, dtype=np.int64)


def robertson() -> pk.Model:
    """Robertson's stiff chemical kinetics (Hairer & Wanner, problem ROBER)."""
    m = pk.ModelBuilder("robertson")
    k1 = m.parameter("k1", 0.04, "1/d", source="test")
    k2 = m.parameter("k2", 3e7, "1/d", source="test")
    k3 = m.parameter("k3", 1e4, "1/d", source="test")
    y1 = m.state("y1", initial=1.0)
    y2 = m.state("y2", initial=0.0)
    y3 = m.state("y3", initial=0.0)
    m.add_term(y1, -k1 * y1 + k3 * y2 * y3)
    m.add_term(y2, k1 * y1 - k3 * y2 * y3 - k2 * y2**2)
    m.add_term(y3, k2 * y2**2)
    return m.build()


@pytest.mark.parametrize("backend", BACKENDS)
def test_follows_scipy_bdf_on_a_stiff_problem(backend):
    """Same algorithm as scipy.integrate.BDF: the same steps, so the same numbers up to
    rounding (the sensitivity-free path is scipy's, line for line)."""
    model = robertson()
    c = model.compile(backend)
    p = model.resolve_parameters()
    y0 = np.asarray(c.initial(p), dtype=float)
    sw = np.zeros(0)
    tout = np.array([0.0, 0.4, 4.0, 40.0, 400.0, 4000.0, 40000.0])
    Y, status, reached, n_steps = c.bdf_segment(
        y0,
        0.0,
        tout,
        p,
        sw,
        NO_DIRECTIONS,
        NO_DIRECTIONS,
        np.zeros(3),
        1e-8,
        1e-12,
        False,
        100_000,
        np.inf,
    )
    assert status == 0 and reached == 40000.0
    ref = solve_ivp(
        lambda t, y: c.rhs(y, t, p, sw),
        (0.0, 40000.0),
        y0,
        method="BDF",
        t_eval=tout,
        rtol=1e-8,
        atol=1e-12,
        jac=lambda t, y: c.jac_solver(y, t, p, sw),
    )
    np.testing.assert_allclose(Y, ref.y.T, rtol=1e-10, atol=1e-20)
    # mass is conserved exactly by the equations
    np.testing.assert_allclose(Y.sum(axis=1), 1.0, rtol=1e-9)
    assert 50 < n_steps < 2000


def test_linear_decay_and_its_sensitivity_match_closed_form(onecmt):
    """A(t) = A0 exp(-k t), dA/dk = -t A(t), dA/dA0 = exp(-k t); at rtol 1e-10 the global
    error after 20 days (6 half-lives) is below 1e-7."""
    times = np.linspace(0.0, 20.0, 41)
    traj = pk.simulate(
        onecmt,
        times,
        initial={"A": 100.0},
        sensitivities=["k", "A(0)"],
        options=pk.SolverOptions(rtol=1e-10, atol=1e-12),
    )
    exact = 100.0 * np.exp(-0.3 * times)
    np.testing.assert_allclose(traj.states[:, 0], exact, rtol=1e-7)
    np.testing.assert_allclose(traj.state_sensitivities[:, 0, 0], -times * exact, rtol=1e-6)
    np.testing.assert_allclose(traj.state_sensitivities[:, 0, 1], exact / 100.0, rtol=1e-7)


def test_sensitivity_error_control_agrees_with_the_default():
    model = pk.load_model("kirouac2023")
    times = [1.0, 7.0, 28.0, 90.0]
    doses = [pk.Dose(0.0, 1e8, "dose")]
    runs = [
        pk.simulate(
            model,
            times,
            doses=doses,
            sensitivities=True,
            options=pk.SolverOptions(sensitivity_error_control=flag),
        )
        for flag in (False, True)
    ]
    ref = runs[1]
    scale = np.max(np.abs(ref.state_sensitivities), axis=0)  # (n, nsens)
    err = np.max(np.abs(runs[0].state_sensitivities - ref.state_sensitivities), axis=0)
    # skip sensitivities whose effect is below 1e-6 of the state's range (or 100 atol) per
    # unit relative parameter change: numerical noise, not a number anyone uses
    floor = np.maximum(1e-6 * np.max(np.abs(ref.states), axis=0), 100 * 1e-10)
    relevant = scale * np.abs(ref.parameters) > floor[:, None]
    assert relevant.sum() > 100
    assert np.max(err[relevant] / scale[relevant]) < 1e-4


def test_failures_are_reported_with_the_time_reached(onecmt):
    with pytest.raises(pk.SimulationError) as info:
        onecmt.simulate(
            [0.0, 50.0], doses=[pk.Dose(0.0, 1.0, "A")], options=pk.SolverOptions(max_steps=3)
        )
    message = str(info.value)
    assert "BDF: more than max_steps steps between two output times" in message
    assert 0.0 < info.value.time < 50.0


def test_step_size_collapse_is_reported():
    m = pk.ModelBuilder("blowup_cubic")
    x = m.state("x", initial=1.0)
    m.add_term(x, x**3)  # x = 1/sqrt(1 - 2t): infinite at t = 0.5
    with pytest.raises(pk.SimulationError, match="BDF: step size became too small") as info:
        m.build().simulate([0.0, 1.0])
    assert 0.45 < info.value.time <= 0.5


def test_max_step_is_honoured(onecmt):
    """A 10-day linear decay takes a handful of steps unless max_step caps them."""
    c = onecmt.compile()
    p = onecmt.resolve_parameters()
    y0 = np.array([100.0])
    tout = np.array([0.0, 10.0])
    args = (p, np.zeros(0), NO_DIRECTIONS, NO_DIRECTIONS, np.zeros(1), 1e-6, 1e-10, False, 100_000)
    free = c.bdf_segment(y0, 0.0, tout, *args, np.inf)
    capped = c.bdf_segment(y0, 0.0, tout, *args, 0.1)
    assert free[1] == capped[1] == 0
    assert capped[3] >= 100 > free[3]
    np.testing.assert_allclose(capped[0][-1], 100.0 * np.exp(-3.0), rtol=1e-5)
    np.testing.assert_allclose(free[0][-1], 100.0 * np.exp(-3.0), rtol=1e-4)


def test_outputs_written_into_the_callers_rows_are_those_of_a_whole_segment():
    """``bdf_segment_into`` (what simulate and the batches call) writes the outputs into
    rows the caller owns, leaves its other rows alone, and still integrates to the end of
    the segment when no output lies inside: the same numbers as ``bdf_segment``, whose
    output times end at the segment's end. With sensitivities the entries that cannot
    leave 0 are written as 0 into an array that held something else."""
    model = robertson()
    c = model.compile()
    p = model.resolve_parameters()
    n = 3
    pidx = np.array([0, 2], dtype=np.int64)
    y0 = np.zeros(n * 3)
    y0[:n] = c.initial(p)
    cols = np.arange(n, 3 * n, dtype=np.int64)
    args = (p, np.zeros(0), pidx, cols, np.zeros(n), 1e-8, 1e-12, False, 100_000, np.inf)
    tout = np.array([0.0, 0.0, 0.4, 4.0, 40.0])
    Y, status, reached, steps = c.bdf_segment(y0, 0.0, tout, *args)
    assert status == 0 and reached == 40.0
    out = np.full((6, 3 * n), -7.0)  # rows 1-4 get the outputs at 0, 0, 0.4, 4
    y_end = np.full(3 * n, -7.0)
    status, reached, steps_into = c.bdf_segment_into(
        y0, 0.0, tout[:-1], 40.0, *args, out[1:5], y_end
    )
    assert status == 0 and reached == 40.0 and steps_into == steps
    np.testing.assert_array_equal(out[1:5], Y[:-1])
    np.testing.assert_array_equal(y_end, Y[-1])
    assert np.all(out[0] == -7.0) and np.all(out[5] == -7.0)
    nothing_inside = np.full(3 * n, -7.0)
    status, _, _ = c.bdf_segment_into(
        y0, 0.0, np.zeros(0), 40.0, *args, np.empty((0, 3 * n)), nothing_inside
    )
    np.testing.assert_array_equal(nothing_inside, Y[-1])
    # keep the entries of the first direction only (as if the second could not leave 0):
    # the second's block is written as 0 over what the array held
    kept_fewer = np.array([n + 0 * 2 + 0, n + 1 * 2 + 0, n + 2 * 2 + 0], dtype=np.int64)
    out = np.full((4, 3 * n), -7.0)
    c.bdf_segment_into(
        y0, 0.0, tout[:-1], 40.0, p, np.zeros(0), pidx, kept_fewer, np.zeros(n), 1e-8,
        1e-12, False, 100_000, np.inf, out, y_end,
    )  # fmt: skip
    assert np.all(out[:, 2 * n :] == 0.0) and np.all(y_end[2 * n :] == 0.0)
