"""Zero-order infusions (NONMEM RATE / DUR) against the closed form of a one-compartment
model, with forward sensitivities across the start and the end of the infusion."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import pkpd_cart as pk
from pkpd_cart.errors import DatasetError, InputError
from pkpd_cart.simulation.solver import BatchRun, SolverOptions

CL, V = 2.0, 20.0


@pytest.fixture(scope="module")
def onecmt():
    return pk.load_model("pk_1cmt_iv")


def closed_form(doses):
    """C(t) and its derivatives in CL and V for superposed infusions (R, start, duration):
    C = R/CL (1 - exp(-k (t - start))) while running, then decays from its end value."""
    t, cl, v = sp.symbols("t CL V", positive=True)
    k = cl / v
    pieces = []
    for rate, start, dur in doses:
        during = rate / cl * (1 - sp.exp(-k * (t - start)))
        after = rate / cl * (1 - sp.exp(-k * dur)) * sp.exp(-k * (t - start - dur))
        pieces.append(sp.Piecewise((0, t < start), (during, t <= start + dur), (after, True)))
    c = sum(pieces)
    funcs = [sp.lambdify((t, cl, v), e) for e in (c, sp.diff(c, cl), sp.diff(c, v))]
    return lambda times: [np.array([f(x, CL, V) for x in times], dtype=float) for f in funcs]


TIMES = np.array([0.0, 0.5, 1.0, 2.5, 3.0, 4.0, 5.0, 7.5, 12.0, 24.0, 60.0])


@pytest.mark.parametrize("method", ["BDF", "LSODA", "Radau"])
def test_one_infusion_matches_closed_form_with_sensitivities(onecmt, method):
    """100 mg over 3 h (RATE form), outputs on both sides of the end; C and dC/dCL, dC/dV."""
    dose = pk.Dose(0.0, 100.0, "A", rate=100.0 / 3.0)
    assert dose.duration == pytest.approx(3.0) and dose.end == pytest.approx(3.0)
    traj = pk.simulate(
        onecmt,
        TIMES,
        params={"CL": CL, "V": V},
        doses=[dose],
        sensitivities=True,
        options=SolverOptions(method=method, rtol=1e-10, atol=1e-12),
    )
    c, dc_dcl, dc_dv = closed_form([(100.0 / 3.0, 0.0, 3.0)])(TIMES)
    i = list(onecmt.observables).index("C")
    assert np.allclose(traj.observables[:, i], c, rtol=1e-7, atol=1e-10)
    sens = traj.observable_sensitivities[:, i, :]
    names = list(traj.sensitivity_names)
    assert np.allclose(sens[:, names.index("CL")], dc_dcl, rtol=1e-5, atol=1e-9)
    assert np.allclose(sens[:, names.index("V")], dc_dv, rtol=1e-5, atol=1e-9)


def test_overlapping_infusions_and_a_bolus_superpose(onecmt):
    """Two overlapping infusions (DUR form) into the same state plus a bolus: linear
    superposition of the closed forms; the batched path agrees with simulate()."""
    doses = [
        pk.Dose(0.0, 60.0, "A", duration=2.0),
        pk.Dose(1.0, 40.0, "A", duration=8.0),
        pk.Dose(6.0, 50.0, "A"),
    ]
    traj = pk.simulate(
        onecmt,
        TIMES, params={"CL": CL, "V": V}, doses=doses,
        options=SolverOptions(rtol=1e-10, atol=1e-12),
    )  # fmt: skip
    c = closed_form([(30.0, 0.0, 2.0), (5.0, 1.0, 8.0)])(TIMES)[0]
    k = CL / V
    c = c + np.where(TIMES >= 6.0, 50.0 / V * np.exp(-k * (TIMES - 6.0)), 0.0)
    assert np.allclose(traj.observables[:, 0], c, rtol=1e-7, atol=1e-10)

    compiled = onecmt.compile()
    p = onecmt.resolve_parameters({"CL": CL, "V": V})
    run = BatchRun(compiled, [(TIMES, doses)], SolverOptions(rtol=1e-10, atol=1e-12), ["CL"])
    obs, sens, status = run.run(p[None, :], np.array([0]))
    assert status[0] == 0
    reference = pk.simulate(
        onecmt,
        TIMES, params={"CL": CL, "V": V}, doses=doses, sensitivities=["CL"],
        options=SolverOptions(rtol=1e-10, atol=1e-12),
    )  # fmt: skip
    assert np.array_equal(obs, reference.observables)
    assert np.array_equal(sens, reference.observable_sensitivities)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rate": -1.0}, "Dose rate -1 is negative"),
        ({"duration": -2.0}, "Dose duration -2 is negative"),
        ({"rate": 10.0, "duration": 2.0}, "rate 10 x duration 2 = 20 is not the amount 100"),
        ({"rate": float("nan")}, "Dose rate nan is not a finite number"),
    ],
)
def test_bad_infusions_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        pk.Dose(0.0, 100.0, "A", **kwargs)


def test_dose_before_the_start_is_refused(onecmt):
    with pytest.raises(InputError, match=r"a dose at time -1 is before t0=0"):
        pk.simulate(onecmt, [0.0, 1.0], doses=[pk.Dose(-1.0, 5.0, "A")], t0=0.0)


def _write(tmp_path, rows, header="ID,TIME,EVID,AMT,RATE,DUR,CMT,DV,DVID"):
    path = tmp_path / "inf.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_dataset_rate_and_dur_become_infusions(onecmt, tmp_path):
    path = _write(
        tmp_path,
        [
            "1,0,1,100,25,.,A,.,",  # RATE > 0: 4 h
            "1,2,0,.,.,.,,1.5,C",
            "2,0,1,100,-2,5,A,.,",  # RATE = -2: DUR 5 h
            "2,2,0,.,.,.,,1.5,C",
            "3,0,1,100,0,.,A,.,",  # bolus
            "3,2,0,.,.,.,,1.5,C",
        ],
    )
    data = pk.read_dataset(path, model=onecmt)
    from pkpd_cart.data.dataset import subject_records

    doses = {r.id: r.doses[0] for r in subject_records(data, onecmt.observables)}
    assert doses["1"].rate == 25.0 and doses["1"].duration == pytest.approx(4.0)
    assert doses["2"].duration == 5.0 and doses["2"].rate == pytest.approx(20.0)
    assert not doses["3"].is_infusion
    out = tmp_path / "back.csv"
    data.write(out)
    again = pk.read_dataset(out, model=onecmt)
    assert again.frame["RATE"].tolist() == data.frame["RATE"].tolist()
    assert again.frame["DUR"].tolist() == data.frame["DUR"].tolist()


@pytest.mark.parametrize(
    "row, message",
    [
        ("1,0,1,100,-1,.,A,.,", r"row 2, column RATE: RATE=-1 \(a rate defined in the model\)"),
        ("1,0,1,100,-2,.,A,.,", r"row 2, column DUR: RATE=-2 needs a duration DUR > 0"),
        ("1,0,1,100,-3,.,A,.,", r"row 2, column RATE: -3 is not a rate >= 0, -1 or -2"),
        ("1,0,1,100,10,4,A,.,", r"row 2, column DUR: DUR is used only with RATE=-2"),
        ("1,0,0,.,10,.,,1.5,C", r"row 2, column RATE: only dose records \(EVID=1\)"),
    ],
)
def test_dataset_infusion_errors(tmp_path, row, message):
    with pytest.raises(DatasetError, match=message):
        pk.read_dataset(_write(tmp_path, [row]))


def test_command_line_infusion(tmp_path):
    """--dose TIME:AMOUNT:TARGET:DURATION infuses; the CSV matches simulate()."""
    import pandas as pd

    from pkpd_cart.cli import main

    out = tmp_path / "inf.csv"
    code = main(
        ["simulate", "pk_1cmt_iv", "--dose", "0:100:A:3", "--end", "6", "--step", "1",
         "--param", "CL=2", "--param", "V=20", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    frame = pd.read_csv(out)
    c = closed_form([(100.0 / 3.0, 0.0, 3.0)])(frame["time"].to_numpy())[0]
    assert np.allclose(frame["C"], c, rtol=1e-6)
