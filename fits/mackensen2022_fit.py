"""Fit sle_cart to the five-patient time courses of Mackensen 2022 and write a report.

Until the real time courses are entered (docs/entering-figure-data.md), the data are the
SYNTHETIC virtual cohort ``fits/data/mackensen2022_virtual_cohort.csv``; the report says so.

Variants:

* ``shared`` (default): expansion programme, memory persistence, marrow transit, LLPC share
  and disease-activity turnover shared by all patients; expansion rate, baseline
  anti-dsDNA and baseline SLEDAI-2K per patient; likelihood profiles for the shared
  parameters and sigmas.
* ``individual``: each patient fitted alone (one report per patient plus a summary).

    python fits/mackensen2022_fit.py [--variant shared|individual] [--data CSV] [--out DIR]
                                     [--starts N] [--workers N] [--no-profiles]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from pkpd_cart.models.sle_cart import summarise

import pkpd_cart as pk
from pkpd_cart.estimation.fitting import fit
from pkpd_cart.estimation.likelihood import ErrorModel
from pkpd_cart.estimation.uncertainty import profile_likelihood
from pkpd_cart.reporting.output import atomic_directory
from pkpd_cart.reporting.report import write_fit_report

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE / "data" / "mackensen2022_virtual_cohort.csv"
DEFAULT_OUT = HERE / "reports" / "mackensen2022_fit"

SHARED = ["T_exp", "k_M", "tau_BM", "f_LL", "k_S"]
PER_SUBJECT = ["k_exp", "Ab0", "SLEDAI0"]
INDIVIDUAL = ["k_exp", "T_exp", "k_M", "Ab0", "SLEDAI0"]
ERRORS = {
    "CAR_T": ErrorModel.lognormal(0.3),
    "B_cells": ErrorModel.lognormal(0.3),
    "anti_dsDNA": ErrorModel.lognormal(0.2),
    "vaccine_titre": ErrorModel.lognormal(0.1),
    "SLEDAI": ErrorModel.additive(1.0),
    "CAR_T_pct_CD3": ErrorModel.lognormal(0.3),
}
GRID = np.unique(
    np.concatenate((np.arange(-6.0, 0.0), np.arange(0.0, 30.0, 0.1), np.arange(30.0, 366.0, 1.0)))
)


def derived(model, params, doses) -> dict[str, float]:
    """CAR-T Cmax, Tmax, AUC(0-28 d), B-cell aplasia duration, anti-dsDNA at month 3."""
    s = summarise(
        model.simulate(
            GRID, params=params, doses=doses, options=pk.SolverOptions(rtol=1e-7, atol=1e-8)
        )
    )
    return {
        "CAR-T Cmax (cells/uL)": s["CAR_T_peak_cells_per_uL"],
        "CAR-T Tmax (d)": s["CAR_T_peak_day"],
        "CAR-T AUC 0-28 d (cells*d/uL)": s["CAR_T_AUC_0_28"],
        "B-cell aplasia (d)": s["B_aplasia_days"],
        "anti-dsDNA day 90 (IU/mL)": s["anti_dsDNA_day90"],
    }


def provenance(data: pk.Dataset) -> str:
    if data.synthetic:
        return (
            "SYNTHETIC virtual cohort drawn by fits/make_virtual_cohort.py from sle_cart "
            "calibrated to the published cohort summaries; it stands in for the "
            "unpublished per-patient time courses of Mackensen et al. 2022"
        )
    return f"values entered from {data.source} (see its SOURCE column)"


def run_shared(data, out: Path, starts: int, workers: int, profiles: bool, seed: int) -> Path:
    model = pk.load_model("sle_cart")
    used = set(data.observations()["DVID"])
    result = fit(
        model,
        data,
        estimate=SHARED,
        per_subject=PER_SUBJECT,
        error_models={k: v for k, v in ERRORS.items() if k in used},
        starts=starts,
        seed=seed,
        workers=workers,
        progress=starts > 1,
    )
    names = [s.name for s in result.problem.specs]  # every estimate, per-patient ones too
    prof = profile_likelihood(result, names, executor=max(workers, 2)) if profiles else None
    settings = {
        "variant": "shared and per-patient parameters",
        "estimated (shared)": ", ".join(SHARED),
        "estimated (per patient)": ", ".join(PER_SUBJECT),
        "error models": "; ".join(f"{k}: {v.kind}" for k, v in ERRORS.items() if k in used),
        "BLQ": "M3 (likelihood of being below the limit)",
        "optimiser": "lmfit least_squares (trust-region reflective), exact Jacobian from "
        "forward sensitivities",
        "starts": f"{starts} (Latin hypercube)" if starts > 1 else "1 (model defaults)",
        "profiles": "every estimate (2 processes)" if profiles else "not computed",
        "fixed": "all other sle_cart parameters at their literature defaults",
    }
    write_fit_report(
        result,
        out,
        "Mackensen 2022 time-course fit of sle_cart (shared)",
        settings,
        prof,
        derived,
        provenance(data),
        seed,
    )
    return out


def run_individual(data, out: Path, seed: int) -> Path:
    model = pk.load_model("sle_cart")
    rows = []
    with atomic_directory(out) as tmp:
        for sid in data.subjects:
            used = set(data.observations().query("ID == @sid")["DVID"])
            result = fit(
                model,
                data,
                estimate=INDIVIDUAL,
                subjects=[sid],
                seed=seed,
                error_models={k: v for k, v in ERRORS.items() if k in used},
            )
            write_fit_report(
                result,
                tmp / f"patient_{sid}",
                f"Mackensen 2022 time-course fit of sle_cart, patient {sid}",
                {
                    "variant": "individual (one patient)",
                    "estimated": ", ".join(INDIVIDUAL),
                    "BLQ": "M3",
                },
                None,
                derived,
                provenance(data),
                seed,
            )
            for r in result.parameters.itertuples():
                rows.append(
                    {
                        "patient": sid,
                        "parameter": r.quantity,
                        "estimate": r.estimate,
                        "rse_pct": r.rse_pct,
                        "ofv": result.ofv,
                    }
                )
        table = pd.DataFrame(rows)
        table.to_csv(tmp / "summary.csv", index=False)
        label = " (SYNTHETIC data)" if data.synthetic else ""
        wide = table.pivot(index="parameter", columns="patient", values="estimate")
        lines = [
            "| parameter | " + " | ".join(f"patient {p}" for p in wide.columns) + " |",
            "|---" * (len(wide.columns) + 1) + "|",
        ]
        lines += [
            f"| {name} | " + " | ".join(f"{v:.4g}" for v in row) + " |"
            for name, row in wide.iterrows()
        ]
        (tmp / "report.md").write_text(
            f"# Individual fits of sle_cart{label}\n\n{provenance(data)}.\n\n"
            + "\n".join(lines)
            + "\n\nOne folder per patient holds the full report.\n"
        )
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant",
        choices=["shared", "individual"],
        default="shared",
        help="shared/per-patient parameters (default) or one fit per patient",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset CSV")
    parser.add_argument("--out", type=Path, default=None, help="report folder")
    parser.add_argument("--starts", type=int, default=1, help="multi-start: number of starts")
    parser.add_argument("--workers", type=int, default=1, help="processes for multi-start")
    parser.add_argument("--seed", type=int, default=2022, help="seed for starts and draws")
    parser.add_argument("--no-profiles", action="store_true", help="skip likelihood profiles")
    args = parser.parse_args(argv)
    try:
        data = pk.read_dataset(args.data, model=pk.load_model("sle_cart"))
    except pk.PkpdCartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(data.report())
    out = args.out or (
        DEFAULT_OUT
        if args.variant == "shared"
        else DEFAULT_OUT.with_name("mackensen2022_fit_individual")
    )
    try:  # a failed fit is one line; the report folder is then left untouched
        if args.variant == "shared":
            run_shared(data, out, args.starts, args.workers, not args.no_profiles, args.seed)
        else:
            run_individual(data, out, args.seed)
    except pk.PkpdCartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"report: {out / 'report.md'} (and report.html)")
    return out


if __name__ == "__main__":
    main()
