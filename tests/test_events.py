"""Model events: firing times found by root-finding, state resets, and the forward
sensitivities across them (jump conditions) checked against closed forms and central
finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import pkpd_cart as pk
from pkpd_cart.model.modelling import t

TIGHT = pk.SolverOptions(rtol=1e-11, atol=1e-13)
TIMES = np.linspace(0.0, 6.0, 25)


def refill_model() -> pk.Model:
    """dA/dt = -k A; whenever A falls below thr, D is added (a state-dependent event)."""
    b = pk.ModelBuilder("refill", time_unit="h")
    k = b.parameter("k", 0.7, "1/h", source="test")
    thr = b.parameter("thr", 0.4, "mg", source="test")
    D = b.parameter("D", 0.9, "mg", source="test")
    A = b.state("A", "mg", initial=1.0)
    b.add_term(A, -k * A)
    b.event("refill", A < thr, {A: A + D})
    b.observable("A_obs", A, "mg")
    return b.build()


def lagged_model() -> pk.Model:
    """A time event at t = tlag (a parameter) sets B to D * A: B jumps, A keeps decaying."""
    b = pk.ModelBuilder("lagged", time_unit="h")
    k = b.parameter("k", 0.5, "1/h", source="test")
    kb = b.parameter("kb", 1.3, "1/h", source="test")
    tlag = b.parameter("tlag", 1.7, "h", source="test")
    D = b.parameter("D", 2.0, "1", source="test")
    A = b.state("A", "mg", initial=3.0)
    B = b.state("B", "mg", initial=0.0)
    b.add_term(A, -k * A)
    b.add_term(B, -kb * B)
    b.event("transfer", t >= tlag, {B: D * A})
    b.observable("B_obs", B, "mg")
    return b.build()


def central_differences(model, name, times, h=1e-6):
    p = model.parameter_values
    up = pk.simulate(model, times, params={**p, name: p[name] * (1 + h)}, options=TIGHT)
    down = pk.simulate(model, times, params={**p, name: p[name] * (1 - h)}, options=TIGHT)
    return (up.states - down.states) / (2 * h * p[name])


def test_state_event_fires_where_the_closed_form_says():
    """A(t) = exp(-k t) until A = thr at t1 = ln(1/thr)/k; then from thr + D it decays
    to thr again every period P = ln((thr + D)/thr)/k."""
    model = refill_model()
    k, thr, D = 0.7, 0.4, 0.9
    traj = pk.simulate(model, TIMES, options=TIGHT)
    t1 = np.log(1 / thr) / k
    period = np.log((thr + D) / thr) / k
    since = np.mod(TIMES - t1, period)
    expected = np.where(TIMES < t1, np.exp(-k * TIMES), (thr + D) * np.exp(-k * since))
    assert t1 + 2 * period < TIMES[-1]  # the event fires three times in the window
    assert np.allclose(traj.states[:, 0], expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["k", "thr", "D"])
def test_state_event_sensitivities_match_finite_differences(name):
    model = refill_model()
    times = TIMES[~np.isclose(TIMES, 0.0)]
    traj = pk.simulate(model, times, sensitivities=[name], options=TIGHT)
    fd = central_differences(model, name, times)
    assert np.allclose(traj.state_sensitivities[:, :, 0], fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["BDF", "LSODA"])
@pytest.mark.parametrize("name", ["k", "kb", "tlag", "D"])
def test_time_event_sensitivities_match_finite_differences(name, method):
    """Time events run at a known time (no root-finding), with the compiled BDF too."""
    model = lagged_model()
    options = pk.SolverOptions(method=method, rtol=1e-11, atol=1e-13)
    traj = pk.simulate(model, TIMES, sensitivities=[name], options=options)
    fd = central_differences(model, name, TIMES)
    assert np.allclose(traj.state_sensitivities[:, :, 0], fd, rtol=1e-5, atol=1e-7)


def test_time_event_closed_form():
    model = lagged_model()
    traj = pk.simulate(model, TIMES, options=TIGHT)
    a_at = 3.0 * np.exp(-0.5 * 1.7)
    expected_b = np.where(TIMES >= 1.7, 2.0 * a_at * np.exp(-1.3 * (TIMES - 1.7)), 0.0)
    assert np.allclose(traj.states[:, 1], expected_b, rtol=1e-8, atol=1e-12)


def test_initial_value_false_fires_at_the_start():
    b = pk.ModelBuilder("t0")
    x = b.state("x", "1", initial=1.0)
    b.add_term(x, 0)
    b.event("at_start", x > 0.5, {x: 5.0}, initial_value=False)
    b.event("never", x > 0.5, {x: 7.0})  # true at t0, but it was true "before": no firing
    traj = pk.simulate(b.build(), [0.0, 1.0])
    assert traj.states[:, 0].tolist() == [5.0, 5.0]


def test_bad_events_are_refused():
    b = pk.ModelBuilder("bad")
    x = b.state("x", "1", initial=1.0)
    b.add_term(x, 0)
    with pytest.raises(pk.ModelDefinitionError, match="trigger 2 is not a condition"):
        b.event("e", 2, {x: 1})
    b.event("e2", x > 1, {x: sp_symbol("nope")})
    with pytest.raises(pk.ModelDefinitionError, match=r"undefined symbol\(s\) nope in event 'e2'"):
        b.build()


def sp_symbol(name):
    import sympy as sp

    return sp.Symbol(name, real=True)


@pytest.mark.parametrize("build", [refill_model, lagged_model])
def test_events_survive_an_sbml_round_trip(build):
    """Model events are written as SBML events and read back to the same trajectory."""
    pytest.importorskip("libsbml")
    model = build()
    back = pk.from_sbml(model.to_sbml())
    assert [e.name for e in back.events] == [e.name for e in model.events]
    a = pk.simulate(model, TIMES, options=TIGHT).states
    b = pk.simulate(back, TIMES, options=TIGHT)
    cols = [list(back.states).index(s) for s in model.states]
    assert np.allclose(a, b.states[:, cols], rtol=1e-9, atol=1e-12)


def test_a_dose_can_trigger_an_event():
    """Doses at a time come first; events then see the dosed states (here: a bolus
    pushes A over a threshold, and a flag records it at the dose time)."""
    b = pk.ModelBuilder("dosed")
    A = b.state("A", "mg", initial=0.0, dose_target=True)
    flag = b.state("flag", "1", initial=0.0)
    b.add_term(A, 0)
    b.add_term(flag, 0)
    b.event("over", A > 5, {flag: 1.0})
    traj = pk.simulate(b.build(), [0.0, 0.5, 1.0, 2.0], doses=[pk.Dose(1.0, 10.0, "A")])
    assert traj.states[:, 1].tolist() == [0.0, 0.0, 1.0, 1.0]
