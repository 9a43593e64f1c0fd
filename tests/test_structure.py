"""Structurally zero sensitivities: which entries can leave 0, and the integrator that keeps
no history for the others gives the same numbers as the one that integrates them all."""

from __future__ import annotations

import numpy as np
import pytest
from pkpd_cart.models.sle_cart import mackensen_doses

import pkpd_cart as pk
from pkpd_cart.simulation.solver import _sensitivity_directions
from pkpd_cart.simulation.structure import reachable_states, sensitivity_columns


def chain() -> pk.Model:
    """A feeds B; C is on its own; a switch at time T_on starts C's input."""
    m = pk.ModelBuilder("chain_probe", description="A -> B, and C alone")
    ka = m.parameter("ka", 0.5, "1/h")
    kb = m.parameter("kb", 0.2, "1/h")
    kc = m.parameter("kc", 0.1, "1/h")
    on = m.parameter("T_on", 2.0, "h")
    scale = m.parameter("scale", 3.0, "1")
    a = m.state("A", "mg", initial=10.0)
    b = m.state("B", "mg", initial=0.0)
    c = m.state("C", "mg", initial=1.0)
    started = m.switch("started", at=on)
    m.add_term(a, -ka * a)
    m.add_term(b, ka * a - kb * b)
    m.add_term(c, started - kc * c)
    m.observable("B_obs", scale * b, "mg")
    m.observable("C_obs", c, "mg")
    return m.build()


def test_reachable_states_follow_the_graph_of_the_jacobian():
    model = chain()
    compiled = model.compile()
    names, pidx, sidx = _sensitivity_directions(
        model, ["ka", "kb", "kc", "T_on", "scale", "A(0)", "C(0)"]
    )
    reach = reachable_states(compiled, pidx, sidx)
    got = {name: [s for s, r in zip(model.states, mask) if r] for name, mask in zip(names, reach)}
    assert got == {
        "ka": ["A", "B"],
        "kb": ["B"],
        "kc": ["C"],
        "T_on": ["A", "B", "C"],  # a moved switch jumps every state
        "scale": [],  # observation only
        "A(0)": ["A", "B"],
        "C(0)": ["C"],
    }
    cols = sensitivity_columns(compiled, pidx, sidx)
    n, k = 3, len(names)
    assert list(cols) == sorted(
        n + i * k + c for c, mask in enumerate(reach) for i in range(n) if mask[i]
    )


@pytest.mark.parametrize("backend", ["llvm", "python"])
def test_chain_sensitivities_are_exact_zeros_where_structural(backend):
    model = chain()
    traj = pk.simulate(model, [1.0, 3.0, 6.0], sensitivities=["kc", "scale"], backend=backend)
    kc, scale = 0, 1
    assert np.all(traj.state_sensitivities[:, :2, kc] == 0.0)  # A and B do not see kc
    assert np.all(traj.state_sensitivities[:, :, scale] == 0.0)
    # C' = [t > 2] - kc C, C(0) = 1: dC/dkc = -t exp(-kc t) before the switch
    assert traj.state_sensitivities[0, 2, kc] == pytest.approx(-np.exp(-0.1), rel=1e-6)
    # B_obs = scale * B: its sensitivity to scale is B itself
    np.testing.assert_allclose(
        traj.observable_sensitivities[:, 0, scale], traj.states[:, 1], rtol=1e-12
    )


def test_kept_entries_match_an_integration_of_every_entry():
    """sle_cart, all 40 parameters, a year: the history of the 381 entries that can be
    non-zero (of 680) gives the numbers of the full integration; the rest are exactly 0."""
    model = pk.load_model("sle_cart")
    c = model.compile()
    pre = pk.simulate(model, [6.5], doses=mackensen_doses(60.0))
    x, sw, p = pre.states[0], pre.switch_flags[0].astype(float), pre.parameters
    n = len(x)
    names, pidx, sidx = _sensitivity_directions(model, True)
    k = len(names)
    kept = sensitivity_columns(c, pidx, sidx)
    assert 0 < len(kept) < n * k
    every = np.arange(n, n * (1 + k), dtype=np.int64)
    y0 = np.zeros(n * (1 + k))
    y0[:n] = x
    grid = np.linspace(6.5, 365.0, 30)
    args = (np.zeros(n), 1e-8, 1e-8, False, 100_000, np.inf)
    full = c.bdf_segment(y0, 6.5, grid, p, sw, pidx, every, *args)[0]
    compressed = c.bdf_segment(y0, 6.5, grid, p, sw, pidx, kept, *args)[0]
    external = {n * (1 + (q - n) % k) + (q - n) // k for q in kept}
    zero = [col for col in range(n, n * (1 + k)) if col not in external]
    assert np.all(compressed[:, zero] == 0.0)
    # the full solve leaves round-off there, small against the sensitivities' size
    assert np.max(np.abs(full[:, zero])) < 1e-20 * np.max(np.abs(full[:, n:]))
    compared = list(range(n)) + sorted(external)
    a, b = compressed[:, compared], full[:, compared]
    scale = np.max(np.abs(b), axis=0)  # 0 for a switch time already passed (kept: moved
    assert np.all(a[:, scale == 0] == 0.0)  # switches are kept whole, conservatively)
    assert np.max(np.abs(a - b)[:, scale > 0] / scale[scale > 0]) < 1e-9


def test_few_and_many_directions_give_the_same_sensitivities():
    """The directions do not interact: the steps are the same (sensitivities outside the
    error test), so three parameters alone and within all 40 agree to round-off."""
    model = pk.load_model("sle_cart")
    times = np.linspace(model.start_time, 200.0, 41)
    doses = mackensen_doses(60.0)
    few = ["k_exp", "T_exp", "Ab0"]
    alone = pk.simulate(model, times, doses=doses, sensitivities=few)
    within = pk.simulate(model, times, doses=doses, sensitivities=True)
    pick = [within.sensitivity_names.index(name) for name in few]
    np.testing.assert_allclose(within.states, alone.states, rtol=0, atol=0)
    for a, b in (
        (alone.state_sensitivities, within.state_sensitivities[:, :, pick]),
        (alone.observable_sensitivities, within.observable_sensitivities[:, :, pick]),
    ):
        scale = np.max(np.abs(a), axis=0)
        assert np.max(np.abs(a - b) / np.where(scale > 0, scale, 1.0)) < 1e-10
