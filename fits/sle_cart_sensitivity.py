"""Local sensitivities of three clinical quantities of ``sle_cart`` to every parameter.

Quantities (default parameters, 60 kg, 1e6 CAR-T cells/kg): the B-cell reappearance day
(B cells back to >= 1 cell/uL), the CAR-T peak (cells/uL) and anti-dsDNA at month 3
(day 90, IU/mL). Each sensitivity is relative, (p/Q) dQ/dp, from the compiled forward
sensitivities: the peak by the envelope theorem (dC/dt = 0 there), the reappearance day
by the implicit-function rule dtau/dp = -(dB/dp)/(dB/dt) at the crossing.

    python fits/sle_cart_sensitivity.py [--out FILE]      (default: docs/models/...)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from pkpd_cart.models.sle_cart import mackensen_doses

import pkpd_cart as pk
from pkpd_cart.reporting.derived import first_crossing
from pkpd_cart.simulation.solver import simulate

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "models" / "sle_cart_sensitivity.md"
WEIGHT_KG = 60.0
THRESHOLD = 1.0  # B cells per uL


def sensitivity_table(model: pk.Model) -> pd.DataFrame:
    """One row per parameter: relative sensitivities of the three quantities."""
    doses = mackensen_doses(WEIGHT_KG)
    names = list(model.parameters)
    obs = list(model.observables)
    grid = np.arange(-6.0, 366.0, 0.25)
    traj = simulate(model, grid, doses=doses, sensitivities=True)
    p = traj.parameters
    car, bcell, ab = obs.index("CAR_T"), obs.index("B_cells"), obs.index("anti_dsDNA")

    i_peak = int(np.argmax(traj.observables[:, car]))
    peak = traj.observables[i_peak, car]
    d_peak = traj.observable_sensitivities[i_peak, car]

    i90 = int(np.flatnonzero(grid == 90.0)[0])
    ab90 = traj.observables[i90, ab]
    d_ab90 = traj.observable_sensitivities[i90, ab]

    gone = first_crossing(grid, traj.observables[:, bcell], THRESHOLD, "down", after=0.0)
    tau = first_crossing(grid, traj.observables[:, bcell], THRESHOLD, "up", after=gone)
    at_tau = simulate(model, [tau], doses=doses, sensitivities=True)
    c = model.compile()
    x, sw = at_tau.states[0], at_tau.switch_flags[0]
    slope = c.observables_dx(x, tau, p, sw)[bcell] @ c.rhs(x, tau, p, sw)
    d_tau = -at_tau.observable_sensitivities[0, bcell] / slope

    table = pd.DataFrame(
        {
            "parameter": names,
            "value": p,
            "unit": [model.parameters[n].unit for n in names],
            "B-cell reappearance day": p * d_tau / tau,
            "CAR-T peak": p * d_peak / peak,
            "anti-dsDNA day 90": p * d_ab90 / ab90,
        }
    )
    table.attrs.update(tau=tau, peak=peak, peak_day=grid[i_peak], ab90=ab90)
    # Sorted by the largest |sensitivity| as printed (3 decimals), ties by name: the order
    # must not depend on integrator noise in the 10th digit.
    columns = ["B-cell reappearance day", "CAR-T peak", "anti-dsDNA day 90"]
    table["_key"] = -table[columns].abs().max(axis=1).round(3)
    table = table.sort_values(["_key", "parameter"], kind="stable").drop(columns="_key")
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    a = table.attrs
    lines = [
        "## Local sensitivities (default parameters)",
        "",
        "Relative sensitivities (p/Q) dQ/dp of three quantities, from the compiled forward "
        f"sensitivities; {WEIGHT_KG:g} kg patient, 1e6 CAR-T cells/kg on day 0. At the "
        f"defaults: B cells return to >= {THRESHOLD:g} cell/uL on day {a['tau']:.1f}, CAR-T "
        f"peak {a['peak']:.1f} cells/uL on day {a['peak_day']:g}, anti-dsDNA "
        f"{a['ab90']:.2f} IU/mL on day 90. A value of 1 means a 1% change of the parameter "
        "changes the quantity by 1%. Written by `python fits/sle_cart_sensitivity.py`.",
        "",
        "| parameter | value | unit | B-cell reappearance day | CAR-T peak | anti-dsDNA day 90 |",
        "|---|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        lines.append(
            f"| `{row[0]}` | {row[1]:.4g} | {row[2]} | {row[3]:+.3f} | {row[4]:+.3f} | "
            f"{row[5]:+.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file to write")
    args = parser.parse_args(argv)
    text = to_markdown(sensitivity_table(pk.load_model("sle_cart")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
