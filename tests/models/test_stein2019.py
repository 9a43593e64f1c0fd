"""Stein 2019 typical patient against its closed form (Stein et al. CPT Pharmacometrics
Syst Pharmacol 2019;8:285, Table 1)."""

import numpy as np
import pytest
from scipy.integrate import simpson


def closed_form(t, foldx=3900, Tmax=9.3, Cmax=24000, alpha=0.16, FB=0.0079, beta=0.0032):
    t = np.asarray(t, float)
    R0, rho = Cmax / foldx, np.log(foldx) / Tmax
    s = t - Tmax
    return np.where(
        t < Tmax,
        R0 * np.exp(rho * t),
        (1 - FB) * Cmax * np.exp(-alpha * s) + FB * Cmax * np.exp(-beta * s),
    )


def test_table1_defaults_and_metadata(stein):
    assert stein.parameters["alpha"].value == 0.16
    assert stein.parameters["alpha"].unit == "1/d"
    assert stein.parameters["alpha"].scale == "log"
    assert stein.parameters["Tmax"].source == "Stein 2019, Table 1"
    assert list(stein.states) == ["E", "M"]
    assert list(stein.observables) == ["C"]


def test_typical_patient_matches_closed_form(stein):
    times = np.array([0, 5, 9.3, 14, 28, 56, 90, 180, 365])
    df = stein.simulate(times)
    np.testing.assert_allclose(df["C"], closed_form(times), rtol=1e-6)


def test_published_reference_numbers(stein):
    df = stein.simulate([28.0])
    assert df["C"].iloc[0] == pytest.approx(1373.6, rel=1e-3)
    early = np.linspace(0, 9.3, 2001)
    late = np.linspace(9.3, 28, 4001)
    auc = simpson(stein.simulate(early)["C"], x=early) + simpson(stein.simulate(late)["C"], x=late)
    assert auc == pytest.approx(171774, rel=1e-3)


def test_switch_time_moves_with_tmax(stein):
    df = stein.simulate([12.0], params={"Tmax": 12.0})
    assert df["C"].iloc[0] == pytest.approx(24000, rel=1e-6)
