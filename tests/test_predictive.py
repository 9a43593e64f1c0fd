"""VPC and NPDE on data simulated from the model itself (SYNTHETIC): the NPDE are then
N(0, 1) and the observed percentiles fall inside the simulated prediction intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pkpd_cart as pk
from pkpd_cart.errors import InputError
from pkpd_cart.estimation.predictive import Replicates, npde, simulate_design, vpc
from pkpd_cart.model.population_model import PopulationModel

TIMES = [0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0]


def population() -> PopulationModel:
    pop = PopulationModel(pk.load_model("pk_1cmt_iv"))
    pop.log_normal("CL", 2.0, omega=0.09)
    pop.log_normal("V", 20.0, omega=0.04)
    pop.error("C", pk.ErrorModel.proportional(0.1))
    return pop


def design(values=None) -> pk.Dataset:
    rows = []
    for i in range(40):
        rows.append({"ID": i + 1, "TIME": 0.0, "EVID": 1, "AMT": 100.0, "CMT": "A",
                     "DV": "", "DVID": "", "SYNTHETIC": 1})  # fmt: skip
        for t in TIMES:
            rows.append({"ID": i + 1, "TIME": t, "EVID": 0, "AMT": "", "CMT": "",
                         "DV": 1.0, "DVID": "C", "SYNTHETIC": 1})  # fmt: skip
    frame = pd.DataFrame(rows)
    if values is not None:
        frame.loc[frame["EVID"] == 0, "DV"] = values
    return pk.dataset_from_frame(frame, source="design (SYNTHETIC)")


@pytest.fixture(scope="module")
def replicates():
    pop = population()
    observed = simulate_design(pop, design(), n=2, seed=99).simulated[0]
    return simulate_design(pop, design(observed), n=300, seed=1)


def test_npde_of_data_from_the_model_are_standard_normal(replicates):
    table = npde(replicates)
    z = table["NPDE"].to_numpy()
    assert len(z) == 40 * len(TIMES)
    assert abs(z.mean()) < 3 / np.sqrt(len(z))
    assert 0.8 < z.var() < 1.2
    assert table["ID"].iloc[0] == "1"


def test_vpc_observed_percentiles_lie_in_the_simulated_intervals(replicates):
    v = vpc(replicates, "C", bins=np.array([0, 0.75, 1.5, 3, 6, 10, 18, 30]))
    assert v.observed.shape == (7, 3) and v.simulated.shape == (7, 3, 3)
    inside = (v.observed >= v.simulated[..., 0]) & (v.observed <= v.simulated[..., 2])
    assert inside[:, 1].mean() >= 0.85  # the median in (almost) every bin
    assert v.synthetic and v.n == 300
    pc = vpc(replicates, "C", bins=7, prediction_corrected=True)
    assert pc.prediction_corrected and np.all(np.isfinite(pc.simulated))


def test_without_variability_the_vpc_is_the_prediction():
    pop = population().with_values(omega=np.diag([1e-16, 1e-16]),
                                   sigma={("C", "prop"): 1e-9})  # fmt: skip
    r = simulate_design(pop, design(), n=20, seed=0)
    np.testing.assert_allclose(r.simulated, np.broadcast_to(r.pred, r.simulated.shape), rtol=1e-5)
    C = 100 / 20 * np.exp(-2 / 20 * np.array(TIMES))  # closed form at the typical values
    np.testing.assert_allclose(r.pred[: len(TIMES)], C, rtol=1e-6)


def test_vpc_plot_and_bad_requests(replicates, tmp_path):
    v = vpc(replicates, "C")
    v.plot(tmp_path / "vpc.png", unit="mg/L")
    assert (tmp_path / "vpc.png").stat().st_size > 10_000
    with pytest.raises(InputError, match="no records of observable 'X'"):
        vpc(replicates, "X")
    with pytest.raises(InputError, match="n must be >= 2"):
        simulate_design(population(), design(), n=1)


def test_pcvpc_corrects_a_record_predicted_zero_to_zero():
    """Bergstrand's correction y * median(PRED) / PRED is 0/0 for a record predicted 0
    (a cell count before its infusion); such records are corrected to 0, as tidyvpc does,
    and the bin's percentiles stay finite."""
    rng = np.random.default_rng(0)
    n_rec = 40
    time = np.repeat(np.arange(4.0), 10)
    pred = np.where(time == 0, 0.0, 10.0 * time)
    observed = np.where(time == 0, 0.0, pred * np.exp(rng.normal(0, 0.1, n_rec)))
    simulated = np.where(time == 0, 0.0, pred * np.exp(rng.normal(0, 0.1, (50, n_rec))))
    reps = Replicates(
        simulated, np.arange(n_rec) % 10, time, np.full(n_rec, "C"), observed,
        np.zeros(n_rec, dtype=bool), np.full(n_rec, np.nan), pred,
    )  # fmt: skip
    pc = vpc(reps, "C", bins=np.array([-0.5, 0.5, 1.5, 2.5, 3.5]), prediction_corrected=True)
    assert np.all(pc.observed[0] == 0.0) and np.all(pc.simulated[0] == 0.0)
    assert np.all(np.isfinite(pc.observed)) and np.all(np.isfinite(pc.simulated))
    # elsewhere the correction divides by the (single) prediction of the bin: unchanged
    plain = vpc(reps, "C", bins=np.array([-0.5, 0.5, 1.5, 2.5, 3.5]))
    np.testing.assert_allclose(pc.observed[1:], plain.observed[1:], rtol=1e-12)
