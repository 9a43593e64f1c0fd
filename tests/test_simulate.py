"""Simulator against closed forms: repeated bolus doses, output ordering, batch, failures."""

import numpy as np
import pandas as pd
import pytest
import sympy as sp
from helpers import BACKENDS, relative_error

import pkpd_cart as pk

DOSES = [pk.Dose(0.0, 100.0, "A"), pk.Dose(2.5, 50.0, "A"), pk.Dose(7.0, 80.0, "A")]


def superposition(times, k, V):
    c = np.zeros_like(times)
    for d in DOSES:
        after = times >= d.time
        c[after] += d.amount / V * np.exp(-k * (times[after] - d.time))
    return c


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_boluses_match_superposition(onecmt, backend):
    times = np.linspace(0, 14, 141)
    df = onecmt.simulate(times, doses=DOSES, backend=backend)
    assert relative_error(df["C"], superposition(times, 0.3, 5.0)) < 1e-6


@pytest.mark.parametrize("method", ["LSODA", "BDF", "Radau", "DOP853"])
def test_every_method_matches_superposition(onecmt, method):
    times = np.array([0.5, 2.5, 3.0, 7.0, 10.0])
    opts = pk.SolverOptions(method=method, rtol=1e-10, atol=1e-12)
    df = onecmt.simulate(times, doses=DOSES, options=opts)
    assert relative_error(df["C"], superposition(times, 0.3, 5.0)) < 1e-6


def test_value_at_dose_time_is_after_the_dose(onecmt):
    df = onecmt.simulate([2.5], doses=DOSES)
    before = 100 * np.exp(-0.3 * 2.5)
    assert df["A"].iloc[0] == pytest.approx(before + 50.0, rel=1e-7)


def test_duplicate_and_pre_dose_times(onecmt):
    doses = [pk.Dose(1.0, 10.0, "A")]
    df = onecmt.simulate([-1.0, 0.0, 1.0, 1.0, 2.0], doses=doses)
    assert list(df["A"][:2]) == [0.0, 0.0]
    assert df["A"].iloc[2] == df["A"].iloc[3] == pytest.approx(10.0)
    assert df["A"].iloc[4] == pytest.approx(10 * np.exp(-0.3), rel=1e-7)


def test_parameters_by_mapping_and_initial_override(onecmt):
    df = onecmt.simulate([0, 1], params={"k": 1.0}, initial={"A": 2.0})
    assert df["A"].iloc[1] == pytest.approx(2 * np.exp(-1.0), rel=1e-7)


def test_batch_equals_one_by_one(onecmt):
    sets = pd.DataFrame({"k": [0.1, 0.2, 0.5]}, index=["a", "b", "c"])
    times = [0.0, 1.0, 5.0]
    batch = onecmt.simulate_batch(times, sets, doses=DOSES[:1])
    assert list(batch["set"].unique()) == ["a", "b", "c"]
    for label, row in sets.iterrows():
        one = onecmt.simulate(times, params=row.to_dict(), doses=DOSES[:1])
        got = batch[batch["set"] == label].reset_index(drop=True).drop(columns="set")
        pd.testing.assert_frame_equal(got, one, rtol=1e-12)


def test_solver_failure_raises_simulation_error():
    m = pk.ModelBuilder("blowup")
    a = m.parameter("a", 1.0, source="test")
    x = m.state("x", initial=1.0)
    m.add_term(x, a * x**2)  # x = 1/(1 - a t) explodes at t = 1
    model = m.build()
    with pytest.raises(pk.SimulationError) as info:
        model.simulate([0.0, 2.0])
    err = info.value
    assert err.model == "blowup"
    assert 0.9 < err.time <= 1.0 + 1e-6
    assert err.parameters == {"a": 1.0}
    assert str(err).startswith("model 'blowup': solver failed at t=")
    assert "(parameters: a=1)" in str(err)


def test_bad_inputs_are_clear(onecmt):
    with pytest.raises(pk.InputError, match="^model 'onecmt': times must be sorted"):
        onecmt.simulate([1.0, 0.0])
    with pytest.raises(pk.InputError, match="dose target 'B' is not a state"):
        onecmt.simulate([1.0], doses=[pk.Dose(0, 1, "B")])
    with pytest.raises(pk.ModelDefinitionError, match="unknown parameter 'kk'"):
        onecmt.simulate([1.0], params={"kk": 1})
    with pytest.raises(pk.InputError, match="unknown method 'euler'"):
        pk.SolverOptions(method="euler")
    with pytest.raises(pk.InputError, match="Dose amount nan is not a finite number"):
        pk.Dose(0.0, float("nan"), "A")


@pytest.mark.parametrize("name", ["stein2019", "sle_cart", "pk_1cmt_iv"])
def test_batch_run_equals_simulate_through_doses_and_switches(name):
    """BatchRun (all subjects in one compiled call, used by population fits) takes the same
    steps as simulate(): doses, parameter-dependent switches and sensitivity jumps, with
    the same compiled functions (both evaluate only the wanted columns of df/dp), so the
    same numbers to the last bit."""
    from pkpd_cart.simulation.solver import BatchRun

    model = pk.load_model(name)
    if name == "sle_cart":
        from pkpd_cart.models.sle_cart import mackensen_doses

        doses = mackensen_doses(weight_kg=60)
    else:
        doses = [pk.Dose(0, 100, model.dose_targets[0])] if model.dose_targets else []
    times = np.array([1.0, 4, 9.3, 10, 12, 14, 28, 90])
    P = np.array([model.resolve_parameters(None) * f for f in (1.0, 1.05)])
    wrt = list(model.parameters)[:3]
    batch = BatchRun(model.compile(), [(times, doses), (times[2:], doses)], pk.SolverOptions(), wrt)
    OBS, SENS, status = batch.run(P, np.array([0, 1]))
    assert list(status) == [0, 0]
    for s, (tt, pp) in enumerate(((times, P[0]), (times[2:], P[1]))):
        traj = pk.simulate(model, tt, params=pp, doses=doses, sensitivities=wrt)
        rows = slice(batch.row_ptr[s], batch.row_ptr[s + 1])
        np.testing.assert_array_equal(OBS[rows], traj.observables)
        np.testing.assert_array_equal(SENS[rows], traj.observable_sensitivities)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"rtol": "1e-6"}, "SolverOptions: rtol must be a number, not '1e-6'"),
        ({"max_steps": 1.5}, "SolverOptions: max_steps must be a whole number, not 1.5"),
        ({"max_steps": float("inf")}, "SolverOptions: max_steps must be a whole number, not inf"),
        ({"exact_linear": 1}, "SolverOptions: exact_linear must be True or False, not 1"),
        ({"max_step": float("nan")}, "SolverOptions: max_steps must be >= 1 and max_step >= 0"),
        ({"atol": 0.0}, "SolverOptions: tolerances must be positive (rtol=1e-08, atol=0.0)"),
    ],
)
def test_solver_options_refuse_bad_values_in_one_line(settings, message):
    with pytest.raises(pk.InputError) as err:
        pk.SolverOptions(**settings)
    assert str(err.value) == message


def test_solver_options_take_fixed_types_so_the_integrator_compiles_once():
    o = pk.SolverOptions(rtol=1, atol=np.float32(1e-6), max_steps=1e5, max_step=2)
    assert (type(o.rtol), type(o.atol), type(o.max_steps), type(o.max_step)) == (
        float,
        float,
        int,
        float,
    )
    assert o.max_steps == 100_000 and o.atol == pytest.approx(1e-6)


def test_a_non_finite_output_is_refused_and_a_large_one_is_not(onecmt, monkeypatch):
    """The output block of a segment is screened by its sum (one pass): a nan in a
    sensitivity column is reported at its output time, or at the segment's end if only the
    final state has one; finite values whose sum overflows are not mistaken for a failure."""
    from pkpd_cart.simulation import solver

    grid = np.array([0.0, 1.0, 2.0])
    run = solver._Integrator(
        onecmt.compile(), onecmt.resolve_parameters(), pk.SolverOptions(),
        np.array([0]), 1, np.zeros(0, np.int64),
    )  # fmt: skip
    y0 = np.array([1.0, 0.0])
    sw, u = np.zeros(0), np.zeros(1)

    def integrator_giving(block):
        def fake(self, y0, t0, times, t_end, sw, u, out):
            out[:] = block[: len(out)]
            return block[-1].copy()

        monkeypatch.setattr(solver._Integrator, "_bdf_into", fake)

    block = np.ones((3, 2))
    block[2, 1] = np.nan
    integrator_giving(block)
    with pytest.raises(pk.SimulationError) as err:
        run.segment(y0, grid, sw, u)
    assert err.value.time == 2.0 and err.value.reason == "non-finite state values"
    with pytest.raises(pk.SimulationError) as err:  # only the end state is not finite
        run.segment_into(y0, 0.0, grid[:2], 2.0, sw, u, np.empty((2, 2)))
    assert err.value.time == 2.0 and err.value.reason == "non-finite state values"
    block[1, 0] = np.inf
    with pytest.raises(pk.SimulationError) as err:
        run.segment_into(y0, 0.0, grid[:2], 2.0, sw, u, np.empty((2, 2)))
    assert err.value.time == 1.0 and err.value.reason == "non-finite state values"
    large = np.full((3, 2), 1e308)
    integrator_giving(large)
    np.testing.assert_array_equal(run.segment(y0, grid, sw, u), large)
    out = np.empty((2, 2))
    np.testing.assert_array_equal(run.segment_into(y0, 0.0, grid[:2], 2.0, sw, u, out), large[2])
    np.testing.assert_array_equal(out, large[:2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_infinite_output_derivative_times_a_zero_sensitivity_is_zero(backend):
    """h = sqrt(x) with x(0) = 0 and x' = k: at t = 0, dh/dx is infinite and dx/dk is 0;
    the limit of dh/dk along the trajectory is 0, not nan. Later dh/dk = sqrt(t/k) / 2."""
    m = pk.ModelBuilder("root_output", description="an output with an infinite slope at 0")
    k = m.parameter("k", 4.0, "1/h")
    x = m.state("x", "1", initial=0.0)
    m.add_term(x, k)
    m.observable("h", sp.sqrt(x), "1")
    traj = pk.simulate(m.build(), [0.0, 1.0, 9.0], sensitivities=["k"], backend=backend)
    got = traj.observable_sensitivities[:, 0, 0]
    assert got[0] == 0.0
    np.testing.assert_allclose(got[1:], np.sqrt(np.array([1.0, 9.0]) / 4.0) / 2, rtol=1e-6)
