"""Each model's generated LU of I - c J (static pivots in block-triangular order) and its
solve, on every backend, against numpy; the pivot check and the dense fallback."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from helpers import BACKENDS, generated
from scipy.integrate import solve_ivp

import pkpd_cart as pk
from pkpd_cart.compile.sparse_lu import block_triangular_order, lu_program


def chain_and_loop() -> pk.Model:
    """A -> B <-> C (a loop), D alone, E fed by C: blocks {A}, {B, C}, {D}, {E}."""
    m = pk.ModelBuilder("lu_probe", description="a chain with a loop")
    k = [m.parameter(f"k{i}", 0.1 * (i + 1), "1/h") for i in range(5)]
    a, b, c, d, e = (m.state(s, "mg", initial=1.0) for s in "ABCDE")
    m.add_term(a, -k[0] * a)
    m.add_term(b, k[0] * a - k[1] * b + k[2] * c**2)
    m.add_term(c, k[1] * b - k[2] * c**2)
    m.add_term(d, -k[3] * d)
    m.add_term(e, k[4] * c - k[4] * e)
    return m.build()


def test_the_order_is_block_triangular():
    """Each strongly connected component comes after the components it depends on, its
    states together: A -> B <-> C -> E, D alone (pairs are (row i, column j) of J)."""
    pairs = np.array([[1, 0], [1, 2], [2, 1], [4, 2], [0, 0], [3, 3]])
    order, block = block_triangular_order(5, pairs)
    assert sorted(order) == [0, 1, 2, 3, 4]
    position = {s: k for k, s in enumerate(order)}
    assert position[0] < position[1] and position[2] < position[4]
    assert abs(position[1] - position[2]) == 1 and block[position[1]] == block[position[2]]
    assert len(set(block)) == 4
    program = lu_program(5, pairs)
    # the only pivot checked against a row is B's (or C's) against its partner
    assert sum(len(rows) for rows in program.checked) == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["lu_probe", "sle_cart", "kirouac2023"])
def test_generated_lu_and_solve_equal_numpy(backend, name):
    model = chain_and_loop() if name == "lu_probe" else pk.load_model(name)
    c = model.compile(backend)
    n = len(model.states)
    rng = np.random.default_rng(7)
    pattern = np.zeros((n, n), dtype=bool)
    for i, j in c.PATTERNS["J"]:
        pattern[i, j] = True
    accepted = 0
    for step in (1e-3, 0.3, 30.0):
        J = np.where(pattern, rng.normal(size=(n, n)), 0.0)
        J[np.diag_indices(n)] = -np.abs(J[np.diag_indices(n)]) - 1.0  # decaying states
        A, info = np.full(n * n, np.nan), np.zeros(1)
        generated(c, "lu", J, step, A, info)
        reference = np.eye(n) - step * J
        rhs = rng.normal(size=(n, 3))
        if info[0] == 0.0:  # a pivot failed the check: the integrator falls back
            continue
        accepted += 1
        expected = np.linalg.solve(reference, rhs)
        for col in range(3):
            block = np.ascontiguousarray(rhs)  # component-major, stride 3, as in the kernel
            flat = block.reshape(-1)[col:].copy()
            generated(c, "lu_solve", A, 3.0, flat, flat)
            np.testing.assert_allclose(flat[::3][:n], expected[:, col], rtol=1e-10)
        # four adjacent directions at once, from the second of six
        wide = rng.normal(size=(n, 6))
        flat = wide.reshape(-1)[1:].copy()
        generated(c, "lu_solve4", A, 6.0, flat, flat)
        got = np.concatenate(([0.0], flat)).reshape(n, 6)
        np.testing.assert_allclose(
            got[:, 1:5], np.linalg.solve(reference, wide[:, 1:5]), rtol=1e-10
        )
        np.testing.assert_array_equal(got[:-1, 5], wide[:-1, 5])  # its neighbours untouched
    assert accepted >= 2


def overdamped() -> pk.Model:
    """x' = y, y' = K (sin t - x) - d y with K = 1e6, d = 1e4 per day: real eigenvalues
    near -100 and -9900, so after the transient the steps are long while x follows sin t.
    I - cJ = [[1, -c], [cK, 1 + cd]]: for cK > 1000 the first pivot (1) is below KLU's
    tolerance against the entry under it."""
    m = pk.ModelBuilder("overdamped", description="a stiff overdamped oscillator, driven")
    K = m.parameter("K", 1e6, "1/d^2")
    d = m.parameter("d", 1e4, "1/d")
    x = m.state("x", "1", initial=0.0)
    y = m.state("y", "1/d", initial=0.0)
    m.add_term(x, y)
    m.add_term(y, K * (sp.sin(pk.t) - x) - d * y)
    return m.build()


def overdamped_with_a_follower() -> pk.Model:
    """The oscillator, and z' = x - k z: z follows x, nothing follows z, so the sensitivity
    to k is structurally 0 in x and y (the integrator keeps no history for those entries)."""
    m = pk.ModelBuilder("overdamped_z", description="a stiff overdamped oscillator, followed")
    K = m.parameter("K", 1e6, "1/d^2")
    d = m.parameter("d", 1e4, "1/d")
    k = m.parameter("k", 0.5, "1/d")
    x = m.state("x", "1", initial=0.0)
    y = m.state("y", "1/d", initial=0.0)
    z = m.state("z", "1", initial=1.0)
    m.add_term(x, y)
    m.add_term(y, K * (sp.sin(pk.t) - x) - d * y)
    m.add_term(z, x - k * z)
    return m.build()


def test_sensitivities_through_the_dense_fallback_match_radau():
    """Steps alternate between the model's sparse LU and the dense fallback (cK crosses
    1000 as the steps grow), and the sensitivity corrector's block is not cleared between
    them: the sensitivities still match scipy's Radau on the whole sensitivity system at
    rtol 1e-12, and those that cannot leave 0 are exactly 0. (Central differences are too
    noisy a reference here: a step sequence that changes with the parameter moves this
    stiff solution by more than the difference.)"""
    model = overdamped_with_a_follower()
    times = np.linspace(0.0, 20.0, 11)
    opts = pk.SolverOptions(rtol=1e-10, atol=1e-12)
    traj = pk.simulate(model, times, options=opts, sensitivities=True)
    assert traj.sensitivity_names == ("K", "d", "k")
    # x and y do not depend on k: exactly 0, not merely small
    assert np.all(traj.state_sensitivities[:, :2, 2] == 0.0)
    radau = pk.SolverOptions(method="Radau", rtol=1e-12, atol=1e-16)
    ref = pk.simulate(model, times, options=radau, sensitivities=True).state_sensitivities
    scale = np.abs(ref).max(axis=0)
    scale[scale == 0.0] = 1.0
    np.testing.assert_allclose(traj.state_sensitivities / scale, ref / scale, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_small_pivot_is_refused_and_the_integration_falls_back(backend):
    """``lu`` refuses the oscillator's matrix once cK > 1000; the integrator then
    factorises with its dense LU and partial pivoting, and follows scipy's BDF."""
    model = overdamped()
    c = model.compile(backend)
    J = np.array([[0.0, 1.0], [-1e6, -1e4]])
    A, info = np.zeros(4), np.zeros(1)
    generated(c, "lu", J, 1.0, A, info)
    assert info[0] == 0.0
    generated(c, "lu", J, 1e-4, A, info)
    assert info[0] == 1.0
    p = model.resolve_parameters()
    y0 = np.zeros(2)
    sw = np.zeros(0)
    tout = np.linspace(0.0, 20.0, 11)
    args = (p, sw, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(2), 1e-8, 1e-10)
    Y, status, _, n_steps = c.bdf_segment(y0, 0.0, tout, *args, False, 100_000, np.inf)
    # mean step >= 0.005 d, so cK >> 1000 on most steps: the fallback at work
    assert status == 0 and 20.0 / n_steps >= 0.005
    ref = solve_ivp(
        lambda t, y: c.rhs(y, t, p, sw), (0.0, 20.0), y0, method="BDF", t_eval=tout,
        rtol=1e-8, atol=1e-10, jac=lambda t, y: c.jac_solver(y, t, p, sw),
    )  # fmt: skip
    # the same algorithm; the pivots of the first steps differ, so steps differ by rounding
    np.testing.assert_allclose(Y, ref.y.T, rtol=1e-6, atol=1e-9)
