"""pkpd_cart against libroadrunner (LLVM-compiled CVODE) on the same exported SBML models.

Measured in one run at matched tolerances (rtol 1e-8, atol 1e-8 unless stated):

(a) one 365-day simulation of stein2019, kirouac2023 and sle_cart;
(b) the same with forward sensitivities for all parameters, and their accuracy against a
    tight reference (pkpd_cart's LSODA, independent of the default BDF, at rtol 1e-11 with
    sensitivities under error control);
    libroadrunner's own sensitivities where its version offers them;
(c) N one-year sle_cart patients drawn from the calibrated population (8 output times,
    rtol 1e-6): pkpd_cart serial and on 2 processes vs a libroadrunner loop;
(d) model build time: cold (generate and JIT-compile) and cached (a new process loading
    the cached module);
(e) the inner problem of a population fit: 20 sle_cart patients from the calibrated
    population (12 observation times, rtol 1e-6) in one compiled batch (``BatchRun``),
    with sensitivities for the 3 random effects against the same batch without.

Run: ``python benchmarks/bench_roadrunner.py [--patients 10000] [--parts abcde]``. Ratios are
pkpd_cart / libroadrunner time (below 1: pkpd_cart faster).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pkpd_cart.models.sle_cart import mackensen_doses

import pkpd_cart as pk
from pkpd_cart.simulation.population import PerKgDose, simulate_population
from pkpd_cart.simulation.solver import BatchRun

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fits"))
import sle_cart_dose_response as dose_response  # noqa: E402
from bench_simulate import best_of, sensitivity_accuracy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "stein2019": [],
    "kirouac2023": [pk.Dose(0.0, 1e8, "dose")],
    "sle_cart": mackensen_doses(60.0),
}


def roadrunner_for(model, doses, rtol, atol):
    import roadrunner

    rr = roadrunner.RoadRunner(model.to_sbml(doses=doses))
    rr.integrator.relative_tolerance = rtol
    rr.integrator.absolute_tolerance = atol
    rr.integrator.maximum_num_steps = 200000
    rr.timeCourseSelections = ["time", *model.states]
    return rr


#: Parameters with random effects in the population fits of each model (the directions of
#: the EBE problem); other models use their first three parameters.
HANDFUL = {"sle_cart": ["k_exp", "T_exp", "Ab0"]}


def part_a_b(rtol=1e-8, atol=1e-8):
    print(f"(a, b) one 365-day simulation, rtol={rtol}, atol={atol}")
    for name, doses in CASES.items():
        one_model(name, doses, rtol, atol)


def one_model(name, doses, rtol, atol):
    model = pk.load_model(name)
    times = np.linspace(model.start_time, 365.0, 366)
    opts = pk.SolverOptions(rtol=rtol, atol=atol)
    model.simulate(times, doses=doses, options=opts, sensitivities=True)  # JIT
    rr = roadrunner_for(model, doses, rtol, atol)
    shifted = times - model.start_time  # SBML time starts at 0

    def run_rr():
        rr.reset()
        return rr.simulate(times=shifted)

    # pk.simulate returns arrays (a Trajectory), as roadrunner does; building a DataFrame
    # (model.simulate) is presentation, not integration, and is left out of the timing.
    ours = pk.simulate(model, times, doses=doses, options=opts).states
    theirs = np.array(run_rr())[:, 1:]
    scale = np.maximum(np.abs(ours).max(axis=0), 1e-6)
    agree = float(np.max(np.abs(ours - theirs) / scale))
    t_rr = best_of(run_rr, 7)
    t_plain = best_of(lambda: pk.simulate(model, times, doses=doses, options=opts), 7)
    t_sens = best_of(
        lambda: pk.simulate(model, times, doses=doses, options=opts, sensitivities=True), 7
    )
    # a handful of directions, as the inner problem of a population fit asks for
    few = HANDFUL.get(name, list(model.parameters)[:3])
    t_few = best_of(
        lambda: pk.simulate(model, times, doses=doses, options=opts, sensitivities=few), 7
    )
    # reference at rtol 1e-11 (rtol 1e-12 with atol/100 exceeds LSODA's work limit for
    # sle_cart's 40 sensitivities)
    tight = pk.SolverOptions(method="LSODA", rtol=1e-11, atol=atol, sensitivity_error_control=True)
    accuracy = sensitivity_accuracy(model, doses, opts, times, tight)
    print(
        f"  {name:12s} roadrunner {t_rr * 1e3:7.2f} ms | pkpd_cart {t_plain * 1e3:7.2f} ms "
        f"= {t_plain / t_rr:5.2f}x roadrunner | with {len(model.parameters)} "
        f"sensitivities {t_sens * 1e3:7.2f} ms = {t_sens / t_plain:4.1f}x plain, "
        f"max rel. error {accuracy:.1e} | agreement {agree:.1e}"
    )
    n_all = len(model.parameters)
    print(
        f"  {'':12s} cost per direction (plain simulations per parameter): all {n_all} "
        f"{(t_sens / t_plain - 1) / n_all:.2f}; {len(few)} ({', '.join(few)}) "
        f"{t_few / t_plain:.1f}x plain = {(t_few / t_plain - 1) / len(few):.2f} per direction"
    )


def part_c(n: int):
    model = pk.load_model("sle_cart")
    pop = dose_response.population()  # calibrated population, assumed body weights
    times = np.array([-6.0, 7, 9, 14, 28, 90, 180, 365])
    opts = pk.SolverOptions(rtol=1e-6, atol=1e-6)
    doses = PerKgDose(1e6, "CAR_D")
    simulate_population(model, 10, times, doses, opts, population=pop, seed=1)  # JIT
    print(f"(c) {n} one-year sle_cart patients, 8 output times, rtol=1e-6, atol=1e-6")
    start = time.perf_counter()
    serial = simulate_population(model, n, times, doses, opts, population=pop, seed=1)
    t_serial = time.perf_counter() - start
    start = time.perf_counter()
    two = simulate_population(model, n, times, doses, opts, population=pop, seed=1, executor=2)
    t_two = time.perf_counter() - start
    same = all(
        np.array_equal(serial.trajectories[k].observables, two.trajectories[k].observables)
        for k in list(serial.trajectories)[:50]
    )
    import roadrunner  # noqa: F401

    rr = roadrunner_for(model, [], 1e-6, 1e-6)
    params = serial.parameters
    names = list(model.parameters)
    k = min(n, 2000)  # the loop is timed on up to 2000 patients and scaled
    start = time.perf_counter()
    for i in range(k):
        rr.resetAll()
        row = params.iloc[i]
        for name in ("k_exp", "T_exp"):
            rr[name] = float(row[name])
        rr.reset()
        rr.simulate(0, 6.0, 2)
        rr["CAR_D"] = rr["CAR_D"] + 1e6 * float(row["WT"])
        rr.simulate(times=times[1:] + 6.0)
    t_rr = (time.perf_counter() - start) * n / k
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  pkpd_cart serial {t_serial:6.2f} s | 2 processes {t_two:6.2f} s "
        f"(identical results: {same}) | libroadrunner loop {t_rr:6.2f} s "
        f"{'(scaled from ' + str(k) + ')' if k < n else ''} | ratio 2 processes / "
        f"roadrunner {t_two / t_rr:.2f}x | failures {serial.n_failed} | peak RSS "
        f"{peak:.0f} MB | {len(names)} parameters per patient"
    )


def part_d():
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, PKPD_CART_CACHE_DIR=cache)
        # Ready: import, load, first simulations (arrays); then the first DataFrame, which
        # adds importing pandas.
        code = (
            "import time; t0 = time.perf_counter(); import pkpd_cart as pk; "
            "m = pk.load_model('sle_cart'); pk.simulate(m, [0.0, 1.0]); "
            "pk.simulate(m, [0.0, 1.0], sensitivities=True); t1 = time.perf_counter(); "
            "m.simulate([0.0, 1.0]); print(t1 - t0, time.perf_counter() - t0)"
        )

        def run() -> list[float]:
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
            ).stdout
            return [float(v) for v in out.split()]

        cold, _ = run()
        warm = min(run() for _ in range(3))
    import roadrunner

    text = pk.load_model("sle_cart").to_sbml()
    start = time.perf_counter()
    roadrunner.RoadRunner(text)
    t_rr = time.perf_counter() - start
    print(
        f"(d) sle_cart in a new process (import, load, first simulation with and without "
        f"sensitivities): cold (generate + JIT) {cold:.1f} s, cached {warm[0]:.2f} s "
        f"(best of 3; {warm[1]:.2f} s with the first DataFrame) | libroadrunner load of the "
        f"SBML {t_rr:.2f} s"
    )


def part_e(n: int = 20):
    model = pk.load_model("sle_cart")
    compiled = model.compile()
    pop = dose_response.population()
    times = np.array([-6.0, 7, 9, 14, 28, 60, 90, 120, 180, 240, 300, 365])
    opts = pk.SolverOptions(rtol=1e-6, atol=1e-6)
    sample = simulate_population(
        model, n, times, PerKgDose(1e6, "CAR_D"), opts, population=pop, seed=2
    )
    rows = [row for _, row in sample.parameters.iterrows()]
    known = [name for name in model.parameters if name in sample.parameters.columns]
    P = np.array([model.resolve_parameters({k: float(row[k]) for k in known}) for row in rows])
    subjects = [(times, mackensen_doses(float(row["WT"]))) for row in rows]
    active = np.arange(n)
    few = HANDFUL["sle_cart"]
    plain = BatchRun(compiled, subjects, opts)
    sens = BatchRun(compiled, subjects, opts, sensitivities=few)
    best = {"plain": np.inf, "sens": np.inf}
    for _ in range(40):  # interleaved: the machine's speed drifts
        for key, batch in (("plain", plain), ("sens", sens)):
            start = time.perf_counter()
            status = batch.run(P, active)[2]
            best[key] = min(best[key], time.perf_counter() - start)
            assert not np.any(status), "a patient failed"
    print(
        f"(e) population inner problem, {n} sle_cart patients x {len(times)} times, rtol 1e-6, "
        f"one batch: plain {best['plain'] * 1e3:.1f} ms, with sensitivities for "
        f"{', '.join(few)} {best['sens'] * 1e3:.1f} ms = {best['sens'] / best['plain']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=10000)
    parser.add_argument("--parts", default="abcde", help="which parts to run, e.g. 'be'")
    args = parser.parse_args()
    import numba
    import roadrunner
    import scipy

    print(
        f"pkpd_cart {pk.__version__}, numba {numba.__version__}, scipy {scipy.__version__}, "
        f"libroadrunner {roadrunner.__version__}, {os.cpu_count()} cores"
    )
    if "a" in args.parts or "b" in args.parts:
        part_a_b()
    if "c" in args.parts:
        part_c(args.patients)
    if "d" in args.parts:
        part_d()
    if "e" in args.parts:
        part_e()


if __name__ == "__main__":
    main()
