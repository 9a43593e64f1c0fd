"""Virtual populations: reproducible draws, batch = one by one, executors (local, Dask)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import pkpd_cart as pk
from pkpd_cart.simulation.executor import LocalExecutor, SerialExecutor, get_executor
from pkpd_cart.simulation.population import PerKgDose, Population, simulate_population
from pkpd_cart.simulation.solver import simulate

TIMES = np.array([-6.0, 5.0, 9.0, 28.0, 90.0, 365.0])
POP = Population(
    {"k_exp": 1.5, "T_exp": 7.0}, {"k_exp": 0.15, "T_exp": 0.1}, {"WT": (65.0, 12.0, 40.0, 120.0)}
)
OPTS = pk.SolverOptions(rtol=1e-8, atol=1e-8)


@pytest.fixture(scope="module")
def sle():
    return pk.load_model("sle_cart")


def test_seeds_reproduce_populations_exactly(sle):
    a, b, c = POP.draw(sle, 50, seed=3), POP.draw(sle, 50, seed=3), POP.draw(sle, 50, seed=4)
    assert a.equals(b) and not a.equals(c)
    assert a["WT"].between(40, 120).all()
    assert np.log(a["k_exp"]).std() == pytest.approx(0.15, rel=0.3)


def test_batch_equals_one_by_one(sle):
    run = simulate_population(sle, 6, TIMES, PerKgDose(1e6, "CAR_D"), OPTS, population=POP, seed=1)
    assert run.n_failed == 0 and len(run.trajectories) == 6
    for label, row in run.parameters.iterrows():
        one = simulate(
            sle,
            TIMES,
            params=row[list(sle.parameters)].to_dict(),
            doses=[pk.Dose(0.0, 1e6 * row["WT"], "CAR_D")],
            options=OPTS,
        )
        np.testing.assert_allclose(
            run.trajectories[label].observables, one.observables, rtol=1e-10, atol=0
        )
    long = run.to_frame()
    assert list(long["id"].unique()) == list(range(6)) and len(long) == 6 * len(TIMES)


def test_local_processes_give_the_same_results(sle):
    serial = simulate_population(
        sle, 8, TIMES, PerKgDose(1e6, "CAR_D"), OPTS, population=POP, seed=2, chunk_size=3
    )
    parallel = simulate_population(
        sle,
        8,
        TIMES,
        lambda row: [pk.Dose(0, 1e6 * row["WT"], "CAR_D")],
        OPTS,
        population=POP,
        seed=2,
        chunk_size=3,
        executor=2,
    )
    for label in serial.trajectories:
        np.testing.assert_array_equal(
            serial.trajectories[label].observables, parallel.trajectories[label].observables
        )


def test_dask_local_cluster(sle):
    distributed = pytest.importorskip("dask.distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        run = simulate_population(
            sle,
            4,
            TIMES,
            PerKgDose(1e6, "CAR_D"),
            OPTS,
            population=POP,
            seed=5,
            chunk_size=2,
            executor=client,
        )
    serial = simulate_population(
        sle, 4, TIMES, PerKgDose(1e6, "CAR_D"), OPTS, population=POP, seed=5
    )
    for label in serial.trajectories:
        np.testing.assert_array_equal(
            serial.trajectories[label].observables, run.trajectories[label].observables
        )


def test_executor_choices():
    assert isinstance(get_executor(None), SerialExecutor)
    assert isinstance(get_executor(1), SerialExecutor)
    assert isinstance(get_executor(2), LocalExecutor) and get_executor(2).workers == 2
    with pytest.raises(pk.InputError, match="number of processes must be >= 1"):
        get_executor(0)
    with pytest.raises(pk.InputError, match="cannot run tasks on 'list'"):
        get_executor([1, 2])
    assert LocalExecutor(2).map(abs, [-1, -2, 3]) == [1, 2, 3]


def test_dose_response_script(tmp_path):
    path = Path(__file__).resolve().parents[1] / "fits" / "sle_cart_dose_response.py"
    spec = importlib.util.spec_from_file_location("dose_response", path)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    out = job.main(["--n", "6", "--out", str(tmp_path / "dr")])
    table = (out / "summary.csv").read_text()
    assert "1000000.0" in table
    md = (out / "report.md").read_text()
    assert "This is a simulation, not data" in md and "extrapolations" in md
    assert (out / "dose_response.png").exists()
