"""Exact solutions of linear models (simulation/linear.py) against closed forms and the
compiled BDF at tight tolerances: bolus and infusion doses, an output at a dose time, a
defective system matrix (ka = k), and the models it must refuse."""

from __future__ import annotations

import numpy as np

import pkpd_cart as pk
from pkpd_cart.simulation.linear import LinearBatch, linear_structure
from pkpd_cart.simulation.solver import BatchRun, SolverOptions

TIGHT_BDF = SolverOptions(rtol=1e-11, atol=1e-13, exact_linear=False)


def two_compartment_oral() -> pk.Model:
    """Depot -> central <-> peripheral, first-order elimination, and a zero-order
    production R0 into the central compartment (so b != 0)."""
    m = pk.ModelBuilder("oral_2cmt", description="two compartments, first-order absorption")
    ka = m.parameter("ka", 1.2, "1/h", lower=0)
    CL = m.parameter("CL", 3.0, "L/h", lower=0)
    V = m.parameter("V", 30.0, "L", lower=0)
    Q = m.parameter("Q", 2.0, "L/h", lower=0)
    V2 = m.parameter("V2", 50.0, "L", lower=0)
    R0 = m.parameter("R0", 0.5, "mg/h", lower=0)
    depot = m.state("depot", "mg", dose_target=True)
    central = m.state("central", "mg", initial=1.0, dose_target=True)
    periph = m.state("periph", "mg")
    m.add_term(depot, -ka * depot)
    m.add_term(central, ka * depot - CL / V * central - Q / V * central + Q / V2 * periph + R0)
    m.add_term(periph, Q / V * central - Q / V2 * periph)
    m.observable("C", central / V, "mg/L")
    m.observable("total", depot + central + periph, "mg")
    return m.build()


def one_compartment_oral() -> pk.Model:
    m = pk.ModelBuilder("oral_1cmt", description="one compartment, first-order absorption")
    ka = m.parameter("ka", 0.25, "1/h", lower=0)
    k = m.parameter("k", 0.1, "1/h", lower=0)
    depot = m.state("depot", "mg", dose_target=True)
    central = m.state("central", "mg")
    m.add_term(depot, -ka * depot)
    m.add_term(central, ka * depot - k * central)
    m.observable("A", central, "mg")
    return m.build()


SUBJECTS = [
    (np.array([0.0, 0.5, 1.0, 2.0, 4.0, 6.0, 12.0, 24.0]), [pk.Dose(0.0, 100.0, "depot")]),
    (  # a dose at an output time (6 h), an infusion over 2 h starting at 12 h
        np.array([1.0, 3.0, 6.0, 6.0, 13.0, 14.0, 20.0, 48.0]),
        [
            pk.Dose(0.0, 50.0, "depot"),
            pk.Dose(6.0, 50.0, "central"),
            pk.Dose(12.0, 40.0, "central", duration=2.0),
        ],
    ),
    (np.array([2.0, 30.0]), []),  # no dose: only the initial value and R0
]


def test_structure_is_read_from_the_equations():
    A, b = linear_structure(two_compartment_oral())
    assert A.shape == (3, 3) and b.shape == (3, 1)
    assert str(b[1]) == "R0"
    assert linear_structure(pk.load_model("stein2019")) is None  # nonlinear expansion
    m = pk.ModelBuilder("switched", description="a switch makes it time-dependent")
    k = m.parameter("k", 0.1, "1/h")
    x = m.state("x", "mg", initial=1.0)
    on = m.switch("on", 5.0)
    m.add_term(x, -k * on * x)
    m.observable("x_obs", x, "mg")
    assert linear_structure(m.build()) is None


def test_two_compartment_doses_and_infusion_match_the_bdf_integration():
    model = two_compartment_oral()
    rng = np.random.default_rng(3)
    P = np.array([list(model.parameter_values.values())] * 3) * rng.uniform(0.7, 1.3, (3, 6))
    exact = BatchRun(model.compile(), SUBJECTS, SolverOptions())
    assert isinstance(exact.linear, LinearBatch)
    reference = BatchRun(model.compile(), SUBJECTS, TIGHT_BDF)
    assert reference.linear is None
    active = np.arange(3)
    got, _, status = exact.run(P, active)
    want, _, ref_status = reference.run(P, active)
    assert not status.any() and not ref_status.any()
    assert np.allclose(got, want, rtol=1e-8, atol=1e-10)
    # the output at 6 h is recorded after the bolus given at 6 h, as by simulate()
    rows = slice(exact.row_ptr[1], exact.row_ptr[2])
    single = pk.simulate(model, SUBJECTS[1][0], params=P[1], doses=SUBJECTS[1][1])
    assert np.allclose(got[rows], single.observables, rtol=1e-7)
    # only the requested subjects are simulated
    part, _, _ = exact.run(P, np.array([2]))
    assert np.isnan(part[: exact.row_ptr[2]]).all()
    assert np.array_equal(part[exact.row_ptr[2] :], got[exact.row_ptr[2] :])


def test_defective_matrix_uses_the_matrix_exponential():
    """ka = k makes A defective (one eigenvector): A(t) = D ka t exp(-k t) exactly."""
    model = one_compartment_oral()
    times = np.array([0.5, 1.0, 5.0, 10.0, 40.0])
    subjects = [(times, [pk.Dose(0.0, 100.0, "depot")])] * 2
    batch = BatchRun(model.compile(), subjects, SolverOptions())
    P = np.array([[0.1, 0.1], [0.25, 0.1]])
    out, _, status = batch.run(P, np.arange(2))
    assert not status.any()
    assert np.allclose(out[:5, 0], 100 * 0.1 * times * np.exp(-0.1 * times), rtol=1e-10)
    bateman = 100 * 0.25 / (0.25 - 0.1) * (np.exp(-0.1 * times) - np.exp(-0.25 * times))
    assert np.allclose(out[5:, 0], bateman, rtol=1e-10)


def test_non_finite_parameters_fail_the_subject_only():
    model = one_compartment_oral()
    times = np.array([1.0, 2.0])
    subjects = [(times, [pk.Dose(0.0, 1.0, "depot")])] * 2
    batch = BatchRun(model.compile(), subjects, SolverOptions())
    out, _, status = batch.run(np.array([[np.nan, 0.1], [0.2, 0.1]]), np.arange(2))
    assert status.tolist() == [-1, 0]
    assert np.all(np.isfinite(out[2:]))
