"""Calibrate sle_cart's population to the published cohort summaries of Mackensen 2022.

Real data only: the published summaries in ``fits/data/mackensen2022_published.csv`` (CAR-T
peak day 8.6 +/- 0.8, peak 11.48-59.12% of CD3+, B-cell return 110 +/- 32 d, anti-dsDNA
seroconversion 5/5, SLEDAI-2K at month 3 median 0, range 0-2). A virtual population with
fixed random draws is simulated and the same summaries are matched with lmfit, weighted by
the published uncertainty. Writes a report folder (all files or none).

    python fits/mackensen2022_cohort_calibration.py [--out DIR] [--n 200] [--seed 2022]
                                                     [--save-population FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lmfit
import numpy as np
from pkpd_cart.models.sle_cart import mackensen_doses

import pkpd_cart as pk
from pkpd_cart.estimation.summary_fit import Estimate, Target, fit_population_summaries
from pkpd_cart.reporting.output import atomic_directory
from pkpd_cart.reporting.plotting import plot_population_bands
from pkpd_cart.reporting.report import versions
from pkpd_cart.simulation.population import observable_matrix

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _mackensen2022 as mackensen2022  # noqa: E402
import _sle_population as sp_  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "reports" / "mackensen2022_cohort_calibration"
WEIGHT_KG = 60.0  # assumption: body weights are not published

TYPICAL = {
    "k_exp": Estimate(1.3, 0.4, 3.0),
    "T_exp": Estimate(8.0, 4.0, 16.0),
    "k_M": Estimate(0.009, 0.001, 0.1),
}
# Peak day mean/SD inform T_exp and its omega; the range of peak % CD3+ informs k_exp and
# its omega; the B-cell return mean informs k_M. Tried and dropped: tau_BM (cannot be
# separated from k_M by these summaries, RSE > 1000%) and an omega on k_M (went to its
# lower bound: the expansion variability already produces the published SD of B-cell
# return, which is then a check rather than a fitted target).
OMEGA = {
    "k_exp": Estimate(0.1, 0.005, 1.0),
    "T_exp": Estimate(0.1, 0.005, 1.0),
}


def targets() -> list[Target]:
    return mackensen2022.cohort_targets() + [
        Target(
            "seroconversion_5_of_5",
            0.0,
            1.0,
            "S1",
            "likelihood of 5 of 5 below the cut-off at day 90 (time assumed)",
            kind="residual",
        ),
        Target("SLEDAI_month3_median", 0.0, 1.0, "S1", "median 0; sigma 1 for integer rounding"),
        Target(
            "SLEDAI_month3_high",
            0.0,
            1.0,
            "S1",
            "range 0-2: 88% quantile above 2.5 penalised",
            kind="residual",
        ),
    ]


def calibrate(n: int = 200, seed: int = 2022, typical=None, omega=None, max_nfev: int = 200):
    model = pk.load_model("sle_cart")
    return model, fit_population_summaries(
        model,
        typical or TYPICAL,
        omega or OMEGA,
        sp_.summaries,
        targets(),
        sp_.GRID,
        doses=mackensen_doses(WEIGHT_KG),
        n=n,
        seed=seed,
        max_nfev=max_nfev,
    )


def write_report(out: Path, model, result, n: int, seed: int) -> None:
    est = result.estimates
    comp = result.comparison
    with atomic_directory(out) as tmp:
        est.to_csv(tmp / "estimates.csv", index=False)
        comp.to_csv(tmp / "comparison.csv", index=False)
        typical = {r.parameter: r.estimate for r in est.itertuples() if r.kind == "typical"}
        omega = {r.parameter: r.estimate for r in est.itertuples() if r.kind == "omega"}
        sp_.save_population(
            tmp / "population.json",
            typical,
            omega,
            f"calibrated to published Mackensen 2022 cohort summaries; n={n}, "
            f"seed={seed}; weight {WEIGHT_KG:g} kg assumed",
        )
        run = result.run
        t = sp_.run_times(run)
        panels = {
            label: observable_matrix(run, name)[1]
            for label, name in (
                ("CAR-T (cells/uL)", "CAR_T"),
                ("CAR-T (% of CD3+)", "CAR_T_pct_CD3"),
                ("B cells (cells/uL)", "B_cells"),
                ("anti-dsDNA (IU/mL)", "anti_dsDNA"),
                ("SLEDAI-2K", "SLEDAI"),
            )
        }
        plot_population_bands(
            t,
            panels,
            tmp / "population_bands.png",
            title=f"sle_cart virtual population at the calibrated values (n={n}; simulated)",
            log=("CAR-T (cells/uL)", "B cells (cells/uL)", "anti-dsDNA (IU/mL)"),
            references={
                "B cells (cells/uL)": {"1 cell/uL": 1.0},
                "anti-dsDNA (IU/mL)": {"cut-off (assumed)": sp_.DSDNA_CUTOFF},
                "CAR-T (% of CD3+)": {"published min": 11.48, "published max": 59.12},
            },
        )
        r = result.minimizer_result
        lines = [
            "# Mackensen 2022 cohort calibration of `sle_cart`",
            "",
            "**Data:** published cohort summaries only (real data; sources in "
            "`fits/data/mackensen2022_published.csv`). No individual time courses are used. "
            "The virtual population in the figures is simulated.",
            "",
            f"Model `{model.name}` (hash {model.hash[:12]}). Virtual population n={n}, "
            f"seed={seed}, body weight {WEIGHT_KG:g} kg (assumed), dose 1e6 CAR-T cells/kg. "
            f"lmfit {lmfit.__version__} `least_squares`; {result.n_evaluations} population "
            f"evaluations in {result.seconds:.0f} s; chi-square {r.chisqr:.3g} on "
            f"{r.ndata} residuals; failed individual simulations: "
            f"{result.n_failed_simulations}.",
            "",
        ]
        for w in result.warnings:
            lines += [f"> **WARNING:** {w}", ""]
        lines += [
            "## Estimates",
            "",
            "| quantity | unit | estimate | SE | RSE % | 95% CI |",
            "|---|---|---|---|---|---|",
        ]
        for e in est.itertuples():
            flag = " (at bound)" if e.at_bound else ""
            lines.append(
                f"| {e.quantity}{flag} | {e.unit} | {e.estimate:.4g} | {e.se:.3g} | "
                f"{e.rse_pct:.1f} | [{e.ci95_low:.4g}, {e.ci95_high:.4g}] |"
            )
        lines += [
            "",
            "Typical values are estimated on the log scale (SE by the delta method; "
            "RSE is the SE of the log estimate); omegas are SDs of the log-normal "
            "between-patient variability.",
            "",
            "## Published vs simulated",
            "",
            "| summary | published | sigma | simulated | weighted residual | source |",
            "|---|---|---|---|---|---|",
        ]
        for c in comp.itertuples():
            # likelihood-type targets have no single published number: show the note
            published = f"{c.published:.4g}" if np.isfinite(c.published) else c.note
            sigma = f"{c.sigma:.3g}" if np.isfinite(c.sigma) else "-"
            lines.append(
                f"| {c.summary} | {published} | {sigma} | "
                f"{c.simulated:.4g} | {c.weighted_residual:+.2f} | {c.source} |"
            )
        lines += [
            "",
            "Peak % of CD3+ is compared on the log scale (the published min and max "
            "of five patients vs the 12% and 88% quantiles). Seroconversion and the "
            "month-3 SLEDAI-2K range enter as likelihood-type residuals.",
            "",
            "![population bands](population_bands.png)",
            "",
            "## Versions",
            "",
            ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
            "",
        ]
        (tmp / "report.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    parser.add_argument("--n", type=int, default=200, help="virtual patients (default 200)")
    parser.add_argument("--seed", type=int, default=2022, help="seed of the fixed draws")
    parser.add_argument(
        "--save-population",
        type=Path,
        default=None,
        help="also write the calibrated population JSON here",
    )
    args = parser.parse_args(argv)
    model, result = calibrate(args.n, args.seed)
    write_report(args.out, model, result, args.n, args.seed)
    if args.save_population:
        args.save_population.write_text((args.out / "population.json").read_text())
    print(result.estimates[["quantity", "estimate", "se", "rse_pct"]].to_string(index=False))
    print(f"wrote {args.out}/report.md")
    return args.out


if __name__ == "__main__":
    main()
