"""Draw a SYNTHETIC five-patient cohort from the calibrated sle_cart population.

The per-patient time courses of Mackensen et al. 2022 were published only as figures, which
are not available here. This script makes a clearly labelled stand-in: five virtual
patients with the published sex, age, baseline SLEDAI-2K and follow-up of patients 1-5
(ACR Convergence 2022 abstract #1651), assumed body weights, parameters drawn from the
population calibrated to the published cohort summaries
(``fits/data/sle_cart_population.json``), sampled on the study's kind of schedule with
assay limits, censoring and measurement error. Every row says SYNTHETIC=1.

    python fits/make_virtual_cohort.py [--seed 20220915] [--out FILE] [--truth FILE]
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from pkpd_cart.models.sle_cart import mackensen_doses

import pkpd_cart as pk
from pkpd_cart.simulation.population import individual_parameters

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _mackensen2022 as mackensen2022  # noqa: E402
import _sle_population as sle_population  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_OUT = DATA / "mackensen2022_virtual_cohort.csv"
DEFAULT_TRUTH = DATA / "mackensen2022_virtual_cohort_truth.csv"
POPULATION_TRUTH = DATA / "mackensen2022_virtual_cohort_population_truth.csv"
SEED = 20220915

#: Assumed body weights (kg): not published. Typical for young adults of that sex.
WEIGHTS = {"1": 58.0, "2": 74.0, "3": 62.0, "4": 66.0, "5": 55.0}

#: Assay model per observable: (unit, lower limit of quantification, proportional error SD
#: on the log scale). All values are assumptions (the assays' limits are not published).
ASSAYS = {
    "CAR_T": ("cells/uL", 0.5, 0.25),
    "B_cells": ("cells/uL", 1.0, 0.20),
    "anti_dsDNA": ("IU/mL", 5.0, 0.15),
    "vaccine_titre": ("1", None, 0.10),
    "SLEDAI": ("score", None, None),  # integer score: rounded, with +/-1 point noise
}

#: Assumed between-patient variability of the baseline anti-dsDNA level Ab0 (SD on the log
#: scale): per-patient baselines are not published; anti-dsDNA titres in active SLE differ
#: several-fold between patients. The typical value is the model's default.
AB0_OMEGA_SD = 0.5
#: SLEDAI-2K after baseline: the true score plus normal noise of this SD, rounded to an
#: integer and clipped at 0 (an assumption). The fit's error model matches it: a score of 0
#: is censored below 0.5 (M3, the probability of a score that rounds to 0); positive scores
#: are normal with the rounding absorbed in the SD (sqrt(0.5^2 + 1/12) = 0.577).
SLEDAI_NOISE_SD = 0.5
SLEDAI_ZERO_LIMIT = 0.5
#: The parameters the fits estimate; the truth file gives each patient's true value.
ESTIMATED = ["k_exp", "T_exp", "Ab0", "k_M", "tau_BM", "f_LL", "k_S", "SLEDAI0"]

FIRST_MONTH = [1, 3, 5, 7, 9, 11, 14, 21, 28]


def schedule(followup_months: float) -> dict[str, list[float]]:
    """Sampling days per observable: baseline before lymphodepletion (day -7), frequent in
    the first month, then monthly to the follow-up (ACR 2023 #0607 for vaccine titres:
    baseline, month 3, last follow-up)."""
    last = 30.0 * followup_months
    monthly = [30.0 * k for k in range(2, int(followup_months) + 1)]
    cells = [-7.0, *FIRST_MONTH, *monthly]
    return {
        "CAR_T": [d for d in cells if d <= last],
        "B_cells": [d for d in cells if d <= last],
        "anti_dsDNA": [d for d in [-7.0, 14.0, 28.0, *monthly] if d <= last],
        "SLEDAI": [d for d in [-7.0, 28.0, *monthly] if d <= last],
        "vaccine_titre": sorted({-7.0, min(90.0, last), last}),
    }


def population_truth() -> pd.DataFrame:
    """The population the virtual patients are drawn from: typical value and variance of
    the log-normal random effect (0: none) of every estimated parameter, and the SD of each
    observable's residual error as the fits parameterise it."""
    model = pk.load_model("sle_cart")
    typical, omega, _ = sle_population.load_population(DATA / "sle_cart_population.json")
    rows = []
    for name in ESTIMATED:
        if name == "SLEDAI0":
            continue  # the published baseline of each patient (a covariate)
        variance = AB0_OMEGA_SD**2 if name == "Ab0" else float(omega.get(name, 0.0)) ** 2
        rows.append(
            {
                "parameter": name,
                "typical": float(typical.get(name, model.parameters[name].value)),
                "omega_variance": variance,
            }
        )
    for dvid, (_, _, sd) in ASSAYS.items():
        if sd is not None:
            rows.append({"parameter": f"SIGMA({dvid}:log)", "typical": sd, "omega_variance": 0.0})
    effective = (SLEDAI_NOISE_SD**2 + 1.0 / 12.0) ** 0.5  # rounding adds 1/12
    rows.append({"parameter": "SIGMA(SLEDAI:add)", "typical": effective, "omega_variance": 0.0})
    return pd.DataFrame(rows)


def draw_cohort(seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(records, truth)``: the synthetic dataset and each virtual patient's parameters."""
    rng = np.random.default_rng(seed)
    model = pk.load_model("sle_cart")
    typical, omega, _ = sle_population.load_population(DATA / "sle_cart_population.json")
    people = mackensen2022.patients()
    eta = pd.DataFrame(
        rng.standard_normal((len(people), len(omega))), columns=sorted(omega), index=people.index
    )
    params = individual_parameters(model, typical, omega, eta)
    ab0 = model.parameters["Ab0"].value * np.exp(AB0_OMEGA_SD * rng.standard_normal(len(people)))
    params["Ab0"] = ab0
    params["SLEDAI0"] = people["SLEDAI0"].to_numpy()  # published baseline (S3)
    rows = []
    for pid, person in people.iterrows():
        wt = WEIGHTS[pid]
        days = schedule(person["followup_months"])
        grid = sorted({d for ds in days.values() for d in ds})
        frame = model.simulate(
            grid, params=params.loc[pid].to_dict(), doses=mackensen_doses(wt), t0=-10.0
        )
        at = frame.set_index("time")
        common = {
            "ID": pid,
            "WT": wt,
            "AGE": person["age"],
            "SEX": person["sex"],
            "SLEDAI_BL": person["SLEDAI0"],
            "SYNTHETIC": 1,
        }
        dose = mackensen_doses(wt)[0]
        rows.append(
            {
                **common,
                "TIME": dose.time,
                "EVID": 1,
                "AMT": dose.amount,
                "CMT": dose.target,
                "MDV": 1,
                "CENS": 0,
                "NOTE": "1e6 CAR-T cells/kg",
            }
        )
        for dvid in ASSAYS:
            unit, lloq, sd = ASSAYS[dvid]
            for day in days[dvid]:
                true = float(at.loc[day, dvid])
                note, mdv, limit = "", 0, lloq
                if dvid == "SLEDAI" and day < 0:
                    value, mdv = person["SLEDAI0"], 1
                    note = "published baseline (ACR 2022 #1651): the covariate SLEDAI_BL"
                elif dvid == "SLEDAI":
                    value = float(max(0, round(true + rng.normal(0.0, SLEDAI_NOISE_SD))))
                    limit = SLEDAI_ZERO_LIMIT if value == 0 else None
                else:
                    value = true * float(np.exp(rng.normal(0.0, sd)))
                censored = limit is not None and value < limit
                rows.append(
                    {
                        **common,
                        "TIME": day,
                        "DVID": dvid,
                        "EVID": 0,
                        "MDV": mdv,
                        "DV": None if censored else value,
                        "CENS": int(censored),
                        "LIMIT": limit,
                        "UNIT": unit,
                        "NOTE": note,
                    }
                )
    records = pd.DataFrame(rows)
    records["SOURCE"] = f"simulated: sle_cart, calibrated population, seed {seed}"
    order = {name: i for i, name in enumerate(ASSAYS)}
    records["_k"] = records["DVID"].map(order).fillna(-1)
    records = records.sort_values(["ID", "TIME", "EVID", "_k"], ascending=[True, True, False, True])
    columns = [
        "ID",
        "TIME",
        "DV",
        "DVID",
        "EVID",
        "AMT",
        "CMT",
        "MDV",
        "CENS",
        "LIMIT",
        "UNIT",
        "WT",
        "AGE",
        "SEX",
        "SLEDAI_BL",
        "SYNTHETIC",
        "SOURCE",
        "NOTE",
    ]
    truth = params[ESTIMATED].copy()
    truth.insert(0, "WT", [WEIGHTS[p] for p in truth.index])
    truth.index.name = "ID"
    return records[columns].reset_index(drop=True), truth


HEADER = (
    "# SYNTHETIC DATA - NOT PATIENT DATA. Simulated by fits/make_virtual_cohort.py (seed {seed}).",
    "# Five virtual patients with the published sex, age, baseline SLEDAI-2K and follow-up of "
    "Mackensen 2022 patients 1-5 (ACR 2022 #1651);",
    "# body weights, assay limits, measurement errors and the spread of baseline anti-dsDNA "
    "are assumptions; k_exp and T_exp are drawn from sle_cart calibrated to the published "
    "cohort summaries.",
    "# SLEDAI: the baseline row (MDV=1) is the published value, given as the covariate "
    "SLEDAI_BL; later scores are rounded and clipped at 0, and a 0 is censored below 0.5 (M3).",
    "# Replace with values read off the paper's figures (docs/entering-figure-data.md) for "
    "real fits.",
)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write(records: pd.DataFrame, path: Path, seed: int) -> None:
    buffer = io.StringIO()
    buffer.write("".join(line.format(seed=seed) + "\n" for line in HEADER))
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(records.columns)
    for row in records.itertuples(index=False):
        writer.writerow([_fmt(v) for v in row])
    path.write_text(buffer.getvalue(), encoding="utf-8")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED, help="random seed")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="dataset CSV to write")
    parser.add_argument(
        "--truth",
        type=Path,
        default=DEFAULT_TRUTH,
        help="CSV of the virtual patients' true parameters",
    )
    args = parser.parse_args(argv)
    records, truth = draw_cohort(args.seed)
    write(records, args.out, args.seed)
    header = f"# SYNTHETIC: true parameters of the virtual patients (seed {args.seed})\n"
    args.truth.write_text(header + truth.to_csv(float_format="%.6g", lineterminator="\n"))
    stem = args.truth.stem.removesuffix("_truth")
    population = args.truth.with_name(f"{stem}_population_truth.csv")
    population.write_text(
        "# SYNTHETIC: the population the virtual patients are drawn from "
        "(fits/make_virtual_cohort.py)\n"
        + population_truth().to_csv(index=False, float_format="%.6g", lineterminator="\n")
    )
    data = pk.read_dataset(args.out, model=pk.load_model("sle_cart"), covariates=["SLEDAI_BL"])
    print(data.report())
    return args.out


if __name__ == "__main__":
    main()
