"""Kirouac 2023 published parameter sets and reference outputs (the MATLAB runs of
mstadt/CART2, sims_patients/)."""

import numpy as np
import pytest

import pkpd_cart as pk

DOSE = [pk.Dose(0.0, 1e8, "dose")]
TIGHT = pk.SolverOptions(rtol=1e-10, atol=1e-6)


def test_parameter_sets_cr_pr_nr(kirouac):
    sets = kirouac.parameter_sets
    expected = [f"{g}{i}" for g in ("CR", "PR", "NR") for i in range(1, 13)]
    assert list(sets.index) == ["default", *expected]
    assert sets.loc["CR1", "B50"] == pytest.approx(3236080324.0)
    assert sets.loc["NR12"].notna().all()
    assert len(kirouac.states) == 8


def test_cr1_reference_outputs(kirouac):
    times = np.round(np.arange(0, 365.0001, 0.05), 10)
    df = kirouac.simulate(times, params="CR1", doses=DOSE, options=TIGHT)
    peak = df["CAR_total"].idxmax()
    assert df["CAR_total"][peak] == pytest.approx(1.143e8, rel=1e-2)
    assert df["time"][peak] == pytest.approx(22.8, abs=0.05)
    b28 = df.loc[np.isclose(df["time"], 28.0), "B_cells"].iloc[0]
    assert b28 == pytest.approx(6.877e6, rel=1e-2)
    assert df["B_cells"].iloc[-1] == pytest.approx(9.78e7, rel=1e-2)


def test_pr1_and_nr1_reference_outputs(kirouac):
    times = np.round(np.arange(0, 60.0001, 0.05), 10)
    pr = kirouac.simulate(times, params="PR1", doses=DOSE, options=TIGHT)
    assert pr["CAR_total"].max() == pytest.approx(5.69e7, rel=1e-2)
    nr = kirouac.simulate(times, params="NR1", doses=DOSE, options=TIGHT)
    assert nr["CAR_total"].max() == pytest.approx(6.09e5, rel=1e-2)
    assert nr.loc[np.isclose(nr["time"], 28.0), "B_cells"].iloc[0] == pytest.approx(
        1.31e10, rel=1e-2
    )
