"""Population-summary calibration recovers known population values."""

import math

import numpy as np
import pytest
from pkpd_cart.models.sle_cart import mackensen_doses

import pkpd_cart as pk
from pkpd_cart.estimation.summary_fit import Estimate, Target, fit_population_summaries
from pkpd_cart.simulation.population import (
    individual_parameters,
    observable_matrix,
    simulate_population,
    standard_normal_draws,
)

GRID = np.arange(0.0, 25.0, 0.05)
TRUE_TYPICAL = {"k_exp": 1.45, "T_exp": 7.4}
TRUE_OMEGA = {"T_exp": 0.12}
N = 80


def refined_peak_day(values):
    """Parabola through the grid maximum: a smooth function of the parameters."""
    i = int(np.argmax(values))
    y0, y1, y2 = values[i - 1 : i + 2]
    return GRID[i] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) * (GRID[1] - GRID[0])


def peak_summaries(run):
    _, car = observable_matrix(run, "CAR_T")
    _, pct = observable_matrix(run, "CAR_T_pct_CD3")
    day = np.array([refined_peak_day(row) for row in car])
    return {
        "day_mean": float(day.mean()),
        "day_sd": float(day.std(ddof=1)),
        "log_pct_median": math.log(float(np.median(pct.max(axis=1)))),
    }


def test_individual_parameters_are_log_normal():
    model = pk.load_model("sle_cart")
    eta = standard_normal_draws(5000, ["k_exp"], seed=1)
    frame = individual_parameters(model, {"k_exp": 1.2}, {"k_exp": 0.2}, eta)
    logs = np.log(frame["k_exp"])
    assert logs.mean() == pytest.approx(math.log(1.2), abs=0.01)
    assert logs.std() == pytest.approx(0.2, rel=0.03)
    assert (frame["T_exp"] == model.parameters["T_exp"].value).all()
    again = standard_normal_draws(5000, ["k_exp"], seed=1)
    assert again.equals(eta)


def test_population_failures_are_reported_and_the_rest_kept():
    model = pk.load_model("sle_cart")
    params = individual_parameters(model, {}, {}, standard_normal_draws(3, ["k_exp"], 0))
    params.loc[1, "k_exp"] = 1e6  # explodes
    run = simulate_population(
        model,
        params,
        [0.0, 30.0],
        doses=mackensen_doses(60.0),
        options=pk.SolverOptions(max_steps=5000),
    )
    assert sorted(run.trajectories) == [0, 2]
    assert list(run.failures) == [1] and "solver failed" in run.failures[1]


def calibrate_to_truth(seed_truth, seed_fit, n_fit):
    model = pk.load_model("sle_cart")
    doses = mackensen_doses(60.0)
    opts = pk.SolverOptions(rtol=1e-6, atol=1e-6)
    # "published" summaries computed on a simulated population with known values
    truth = individual_parameters(
        model, TRUE_TYPICAL, TRUE_OMEGA, standard_normal_draws(N, ["T_exp"], seed=seed_truth)
    )
    observed = peak_summaries(simulate_population(model, truth, GRID, doses, opts))
    sd = observed["day_sd"]
    targets = [
        Target("day_mean", observed["day_mean"], sd / math.sqrt(N)),
        Target("day_sd", sd, sd / math.sqrt(2 * (N - 1))),
        Target("log_pct_median", observed["log_pct_median"], 0.05),
    ]
    return fit_population_summaries(
        model,
        {"k_exp": Estimate(1.2, 0.5, 3.0), "T_exp": Estimate(9.0, 4.0, 16.0)},
        {"T_exp": Estimate(0.3, 0.01, 1.0)},
        peak_summaries,
        targets,
        GRID,
        doses=doses,
        n=n_fit,
        seed=seed_fit,
        options=opts,
    )


TRUTH = (("typical k_exp", 1.45), ("typical T_exp", 7.4), ("omega T_exp", 0.12))


def test_calibration_with_the_same_draws_recovers_the_truth_exactly():
    result = calibrate_to_truth(seed_truth=7, seed_fit=7, n_fit=N)
    est = result.estimates.set_index("quantity")
    for quantity, true in TRUTH:
        assert est.loc[quantity, "estimate"] == pytest.approx(true, rel=2e-3), quantity


def test_calibration_recovers_known_values_within_their_uncertainty():
    # independent draws for the "published" population and the calibration population
    result = calibrate_to_truth(seed_truth=99, seed_fit=7, n_fit=4 * N)
    est = result.estimates.set_index("quantity")
    assert result.covariance_ok and not result.warnings
    for quantity, true in TRUTH:
        row = est.loc[quantity]
        assert abs(row["estimate"] - true) <= 3 * row["se"], (quantity, row.to_dict())
        assert row["estimate"] == pytest.approx(true, rel=0.1)
    assert result.n_failed_simulations == 0
    assert set(result.comparison["summary"]) == {"day_mean", "day_sd", "log_pct_median"}


def test_cohort_calibration_script_writes_a_complete_report(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "fits" / "mackensen2022_cohort_calibration.py"
    spec = importlib.util.spec_from_file_location("calibration", path)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    model, result = job.calibrate(n=12, seed=1, max_nfev=4)  # a short run: plumbing only
    out = tmp_path / "calib"
    job.write_report(out, model, result, 12, 1)
    assert {
        "report.md",
        "estimates.csv",
        "comparison.csv",
        "population.json",
        "population_bands.png",
    } <= {p.name for p in out.iterdir()}
    md = (out / "report.md").read_text()
    assert "published cohort summaries only (real data" in md
    assert "| B_return_mean | 110 |" in md and "nan" not in md.split("## Published")[1]
    population = json.loads((out / "population.json").read_text())
    assert set(population["typical"]) == {"k_exp", "T_exp", "k_M"}
