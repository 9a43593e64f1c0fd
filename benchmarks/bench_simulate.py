"""Speed of one 365-day simulation against a hand-written scipy baseline, in one run.

Baseline: the RHS and Jacobian from ``sympy.lambdify`` integrated by
``scipy.integrate.solve_ivp(method="LSODA")`` at the same tolerances, restarting at the same
switch times. Both must give the same answer before any time is printed.

Run: ``python benchmarks/bench_simulate.py``. Prints ratios (baseline / package), which are
robust to a noisy machine because both are measured in the same run, interleaved.
"""

from __future__ import annotations

import platform
import time

import numpy as np
import scipy
import sympy as sp
from scipy.integrate import solve_ivp

import pkpd_cart as pk

RTOL, ATOL = 1e-8, 1e-6
TIMES = np.linspace(0.0, 365.0, 366)


def baseline_factory(model: pk.Model):
    """The obvious hand-written approach: lambdify f and J, solve_ivp LSODA per segment."""
    states = [s.symbol for s in model.states.values()]
    params = [p.symbol for p in model.parameters.values()]
    switches = [s.symbol for s in model.switches.values()]
    rhs = model.rhs()
    f = sp.Matrix([rhs[n] for n in model.states])
    J = f.jacobian(states)
    args = [pk.t, states, params, switches]
    f_num = sp.lambdify(args, list(f), modules="numpy")
    J_num = sp.lambdify(args, J, modules="numpy")
    x0_num = sp.lambdify([params], [model.expand(s.initial) for s in model.states.values()])
    tau_num = sp.lambdify([params], [model.expand(s.at) for s in model.switches.values()])

    def run(p, doses):
        y = np.array(x0_num(p), dtype=float)
        for d in doses:  # doses at t = 0 in these benchmarks
            y[list(model.states).index(d.target)] += d.amount
        tau = sorted(float(v) for v in tau_num(p))
        edges = [0.0] + [v for v in tau if 0 < v < TIMES[-1]] + [float(TIMES[-1])]
        out = []
        for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            sw = [1.0 if v <= a else 0.0 for v in tau]
            mask = (TIMES >= a) & ((TIMES < b) | (k == len(edges) - 2))
            sol = solve_ivp(
                lambda t, x, sw=sw: f_num(t, x, p, sw),
                (a, b),
                y,
                method="LSODA",
                t_eval=np.unique(np.r_[a, TIMES[mask], b]),
                jac=lambda t, x, sw=sw: J_num(t, x, p, sw),
                rtol=RTOL,
                atol=ATOL,
            )
            keep = np.isin(sol.t, TIMES[mask])
            out.append(sol.y.T[keep])
            y = sol.y[:, -1]
        return np.vstack(out)

    return run


FIT_SUBSET = 6


def sensitivity_accuracy(
    model: pk.Model, doses, opts: pk.SolverOptions, times=TIMES, tight=None
) -> float:
    """Largest error of the default-tolerance sensitivities of every state against a
    reference (default: LSODA, an integrator independent of the default BDF, at rtol
    1e-12, atol/100, sensitivities under error control), each
    (state, parameter) trajectory relative to its own largest magnitude; trajectories
    whose effect on the state is below 1e-6 of the state's range (or 100 atol) per unit
    relative parameter change are skipped as negligible."""
    from pkpd_cart.simulation.solver import simulate

    tight = tight or pk.SolverOptions(
        method="LSODA", rtol=1e-12, atol=opts.atol * 1e-2, sensitivity_error_control=True
    )
    ref = simulate(model, times, doses=doses, options=tight, sensitivities=True)
    got = simulate(model, times, doses=doses, options=opts, sensitivities=True)
    scale = np.max(np.abs(ref.state_sensitivities), axis=0)  # (n, nsens)
    err = np.max(np.abs(got.state_sensitivities - ref.state_sensitivities), axis=0)
    floor = np.maximum(1e-6 * np.max(np.abs(ref.states), axis=0), 100 * opts.atol)
    relevant = scale * np.abs(ref.parameters) > floor[:, None]
    return float(np.max(err[relevant] / scale[relevant]))


def best_of(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(name: str, doses, repeats: int = 7) -> dict[str, float]:
    model = pk.load_model(name)
    opts = pk.SolverOptions(rtol=RTOL, atol=ATOL)
    p = model.resolve_parameters()
    baseline = baseline_factory(model)
    model.simulate(TIMES, doses=doses, options=opts)  # compile and JIT outside the timing
    model.simulate(TIMES, doses=doses, options=opts, sensitivities=True)
    ours = model.simulate(TIMES, doses=doses, options=opts)[list(model.states)].to_numpy()
    ref = baseline(p, doses)
    scale = np.max(np.abs(ref), axis=0)
    agree = float(np.max(np.abs(ours - ref) / np.maximum(scale, 100 * ATOL)))
    assert agree < 1e-4, f"{name}: package and baseline disagree ({agree:.2e})"

    # Timed through pk.simulate, which returns arrays as the baseline does (a DataFrame of
    # every sensitivity column is presentation, not integration).
    def run(sens):
        return pk.simulate(model, TIMES, doses=doses, options=opts, sensitivities=sens)

    t_base = best_of(lambda: baseline(p, doses), repeats)
    t_plain = best_of(lambda: run(False), repeats)
    t_sens = best_of(lambda: run(True), repeats)
    subset = list(model.parameters)[:FIT_SUBSET]
    t_subset = best_of(lambda: run(subset), repeats)
    n_sens = len(model.parameters)
    accuracy = sensitivity_accuracy(model, doses, opts)
    print(
        f"{name:12s} states={len(model.states):2d} params={n_sens:2d} | "
        f"baseline {t_base * 1e3:8.2f} ms | package {t_plain * 1e3:7.2f} ms | "
        f"speed-up {t_base / t_plain:5.1f}x | max rel. difference {agree:.1e}\n"
        f"{'':12s} sensitivities: all {n_sens}: {t_sens * 1e3:7.2f} ms = "
        f"{t_sens / t_plain:4.1f}x plain; first {len(subset)} (a fit's worth): "
        f"{t_subset * 1e3:6.2f} ms = {t_subset / t_plain:4.1f}x plain; "
        f"max error vs tight reference {accuracy:.1e}"
    )
    return {"speedup": t_base / t_plain, "sens_ratio": t_sens / t_plain}


def main() -> None:
    import numba

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"sympy {sp.__version__}, numba {numba.__version__}; rtol={RTOL}, atol={ATOL}; "
        f"365-day simulation, {len(TIMES)} output times"
    )
    bench("stein2019", [])
    bench("kirouac2023", [pk.Dose(0.0, 1e8, "dose")])


if __name__ == "__main__":
    main()
