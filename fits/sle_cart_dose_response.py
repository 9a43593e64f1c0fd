"""Virtual dose-response trial of sle_cart: 1e5 to 1e7 CAR-T cells/kg.

SIMULATION, not data: virtual patients are drawn from the sle_cart population calibrated
to the published Mackensen 2022 cohort summaries (``fits/data/sle_cart_population.json``),
with body weights drawn from a normal distribution (mean 65 kg, SD 12 kg, 40-120 kg;
assumed). Only 1e6 cells/kg was given in the study: other dose levels are model
extrapolations. Writes a report folder (all files or none).

    python fits/sle_cart_dose_response.py [--n 500] [--seed 7] [--workers 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import pkpd_cart as pk  # noqa: E402
from pkpd_cart.reporting.output import atomic_directory  # noqa: E402
from pkpd_cart.reporting.plotting import plot_population_bands  # noqa: E402
from pkpd_cart.simulation.population import PerKgDose, Population, observable_matrix  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _sle_population as sle_population  # noqa: E402

DOSES_PER_KG = [1e5, 3e5, 1e6, 3e6, 1e7]
WEIGHT = (65.0, 12.0, 40.0, 120.0)  # mean, SD, lower, upper (kg): assumption
DEFAULT_OUT = HERE / "reports" / "sle_cart_dose_response"


def population() -> Population:
    """The calibrated population with assumed body weights."""
    typical, omega, _ = sle_population.load_population(HERE / "data" / "sle_cart_population.json")
    return Population(typical, omega, {"WT": WEIGHT})


def run(n: int, seed: int, workers: int):
    model = pk.load_model("sle_cart")
    pop = population()
    opts = pk.SolverOptions(rtol=1e-6, atol=1e-6)
    runs = {}
    for dose in DOSES_PER_KG:
        # the same virtual patients (same seed) at every dose level
        runs[dose] = pk.simulate_population(
            model,
            n,
            sle_population.GRID,
            PerKgDose(dose, "CAR_D"),
            opts,
            population=pop,
            seed=seed,
            executor=workers,
        )
    return model, runs


def summary_table(runs) -> pd.DataFrame:
    rows = []
    for dose, run in runs.items():
        q = sle_population.per_patient(run)
        gone = q["B_return_day"] < sle_population.NO_RETURN_DAY
        row = {
            "dose (cells/kg)": dose,
            "patients": len(run.trajectories),
            "failed simulations": run.n_failed,
        }
        for label, values in (
            ("CAR-T Cmax (cells/uL)", q["peak_cells"]),
            ("CAR-T Tmax (d)", q["peak_day"]),
            ("B-cell return (d)", q["B_return_day"]),
            ("anti-dsDNA day 90 (IU/mL)", q["anti_dsDNA_d90"]),
        ):
            lo, med, hi = np.quantile(values, [0.05, 0.5, 0.95])
            row[label] = f"{med:.3g} [{lo:.3g}, {hi:.3g}]"
        _, car = observable_matrix(run, "CAR_T")
        t = sle_population.run_times(run)
        inside = (t >= 0) & (t <= 28)
        auc = np.trapezoid(car[:, inside], t[inside], axis=1)
        lo, med, hi = np.quantile(auc, [0.05, 0.5, 0.95])
        row["CAR-T AUC 0-28 d (cells*d/uL)"] = f"{med:.3g} [{lo:.3g}, {hi:.3g}]"
        row["B cells back by day 400"] = f"{100 * gone.mean():.0f}%"
        row["seroconverted at day 90"] = (
            f"{100 * np.mean(q['anti_dsDNA_d90'] < sle_population.DSDNA_CUTOFF):.0f}%"
        )
        rows.append(row)
    return pd.DataFrame(rows)


def write(out: Path, model, runs, n: int, seed: int) -> None:
    table = summary_table(runs)
    with atomic_directory(out) as tmp:
        table.to_csv(tmp / "summary.csv", index=False)
        t = sle_population.run_times(next(iter(runs.values())))
        for dose, run in runs.items():
            panels = {
                label: observable_matrix(run, name)[1]
                for label, name in (
                    ("CAR-T (cells/uL)", "CAR_T"),
                    ("B cells (cells/uL)", "B_cells"),
                    ("anti-dsDNA (IU/mL)", "anti_dsDNA"),
                )
            }
            plot_population_bands(
                t,
                panels,
                tmp / f"bands_{dose:.0e}.png",
                title=f"{dose:.0e} CAR-T cells/kg (n={n}; SIMULATED)",
                log=tuple(panels),
            )
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for ax, key in zip(axes, ("peak_cells", "B_return_day", "anti_dsDNA_d90")):
            q = [sle_population.per_patient(run)[key] for run in runs.values()]
            med = [np.median(v) for v in q]
            lo = [np.quantile(v, 0.05) for v in q]
            hi = [np.quantile(v, 0.95) for v in q]
            ax.fill_between(DOSES_PER_KG, lo, hi, alpha=0.25)
            ax.plot(DOSES_PER_KG, med, "o-")
            ax.set_xscale("log")
            ax.axvline(1e6, color="0.5", ls=":", lw=1)
            ax.set(
                xlabel="dose (CAR-T cells/kg)",
                title={
                    "peak_cells": "CAR-T Cmax (cells/uL)",
                    "B_return_day": "B-cell return (d)",
                    "anti_dsDNA_d90": "anti-dsDNA day 90 (IU/mL)",
                }[key],
            )
            ax.grid(True, alpha=0.3)
        fig.suptitle("median and 90% prediction interval; dotted: the studied dose")
        fig.tight_layout()
        fig.savefig(tmp / "dose_response.png", dpi=100)
        plt.close(fig)
        header = "| " + " | ".join(table.columns) + " |"
        lines = [header, "|" + "---|" * len(table.columns)]
        lines += [
            "| " + " | ".join(f"{v:.0e}" if isinstance(v, float) else str(v) for v in row) + " |"
            for row in table.itertuples(index=False)
        ]
        (tmp / "report.md").write_text(
            "\n".join(
                [
                    "# Virtual dose-response trial of sle_cart (SIMULATION)",
                    "",
                    "> **This is a simulation, not data.** Virtual patients are drawn from the "
                    "sle_cart population calibrated to the published Mackensen 2022 cohort "
                    "summaries; only 1e6 cells/kg was studied, so other doses are "
                    "extrapolations of the model.",
                    "",
                    f"n = {n} virtual patients per dose level (the same patients at every level, "
                    f"seed {seed}); body weight ~ normal(65, 12) kg truncated to 40-120 kg "
                    "(assumed); dose on day 0 after lymphodepletion on days -5 to -3; model "
                    "defaults for all parameters without variability. Medians with 5-95% "
                    "prediction intervals.",
                    "",
                    *lines,
                    "",
                    "Assumptions: the model's (see docs/models/sle_cart.md), plus: variability "
                    "only in the calibrated parameters (expansion rate and programme length); "
                    "B-cell return censored at day 400; anti-dsDNA cut-off 10 IU/mL.",
                    "",
                    "![dose response](dose_response.png)",
                    "",
                    *[f"![{d:.0e}](bands_{d:.0e}.png)" for d in DOSES_PER_KG],
                    "",
                ]
            )
        )


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="virtual patients per dose level")
    parser.add_argument("--seed", type=int, default=7, help="seed of the virtual patients")
    parser.add_argument("--workers", type=int, default=1, help="local processes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    args = parser.parse_args(argv)
    model, runs = run(args.n, args.seed, args.workers)
    write(args.out, model, runs, args.n, args.seed)
    print(summary_table(runs).to_string(index=False))
    print(f"report: {args.out / 'report.md'}")
    return args.out


if __name__ == "__main__":
    main()
