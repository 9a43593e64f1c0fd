"""The composed sle_cart model: qualitative course of Mackensen 2022 and non-negativity."""

import numpy as np
import pytest
from pkpd_cart.models.sle_cart import mackensen_doses, summarise

import pkpd_cart as pk

TIMES = np.concatenate((np.arange(-6.0, 0.0), np.arange(0.0, 731.0, 0.25)))


@pytest.fixture(scope="module")
def sle():
    return pk.load_model("sle_cart")


@pytest.fixture(scope="module")
def course(sle):
    return sle.simulate(TIMES, doses=mackensen_doses(60.0))


def test_every_parameter_has_unit_bounds_and_source(sle):
    for p in sle.parameters.values():
        assert p.source, p.name
        assert p.description, p.name
        assert np.isfinite(p.lower) and np.isfinite(p.upper), p.name
    assert sle.start_time == -6.0
    assert sle.dose_targets == ("CAR_D",)
    assert {"CAR_T", "CAR_T_pct_CD3", "B_cells", "anti_dsDNA", "vaccine_titre", "SLEDAI"} <= set(
        sle.observables
    )


def test_qualitative_course_of_the_five_patients(course):
    s = summarise(course)
    assert 7 <= s["CAR_T_peak_day"] <= 12  # peak near day 9 (8.6 +/- 0.8)
    assert 11.48 <= s["CAR_T_peak_pct_CD3"] <= 59.12  # published range of peaks
    assert s["B_aplasia_start_day"] <= 14  # B < 1/uL within two weeks
    assert 60 <= s["B_reappearance_day"] <= 180  # back after 110 +/- 32 d
    assert s["seroconverted_day90"] and s["anti_dsDNA_day90"] < 10
    assert course["anti_dsDNA"].iloc[0] == pytest.approx(100.0)  # a typical positive baseline
    assert course["SLEDAI"].iloc[0] == pytest.approx(16.0)
    assert s["SLEDAI_day90"] <= 2
    assert s["vaccine_titre_day365"] > 0.8


def test_no_drift_before_treatment(sle):
    df = sle.simulate([-6.0, -5.5, -5.0])  # before lymphodepletion starts on day -5
    states = list(sle.states)
    np.testing.assert_allclose(df[states].iloc[1], df[states].iloc[0], rtol=1e-10, atol=1e-12)
    # without chemotherapy and without a dose the pre-treatment state is a steady state
    never = sle.simulate([-6.0, 730.0], params={"t_LD_start": -1.0, "t_LD_end": -2.0})
    np.testing.assert_allclose(never[states].iloc[1], never[states].iloc[0], rtol=1e-8, atol=1e-9)


def test_states_stay_non_negative_for_defaults(sle, course):
    for name in sle.states:
        assert course[name].min() >= -1e-6 * max(1.0, course[name].abs().max()), name


def random_parameter_sets(model, n, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row = {}
        for p in model.parameters.values():
            if p.scale == "log":
                row[p.name] = float(
                    np.exp(rng.uniform(np.log(max(p.lower, 1e-300)), np.log(p.upper)))
                )
            else:
                row[p.name] = float(rng.uniform(p.lower, p.upper))
        rows.append(row)
    return rows


def test_states_stay_non_negative_for_random_parameters(sle):
    times = np.arange(-6.0, 731.0, 5.0)
    failures = 0
    for params in random_parameter_sets(sle, 200, seed=20221):
        try:
            df = sle.simulate(
                times,
                params=params,
                doses=mackensen_doses(60.0),
                options=pk.SolverOptions(rtol=1e-7, atol=1e-6),
            )
        except pk.SimulationError:
            failures += 1
            continue
        for name in sle.states:
            col = df[name]
            assert col.min() >= -1e-5 * max(1.0, col.abs().max()), (name, params)
    assert failures == 0
