"""Public entry points refuse what is outside a value's domain, in one line (issue 11, part 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

import pkpd_cart as pk
from pkpd_cart.estimation.fitting import Problem

DATA = Path(__file__).resolve().parents[1] / "fits" / "data" / "mackensen2022_virtual_cohort.csv"


@pytest.fixture(scope="module")
def sle():
    return pk.load_model("sle_cart")


def test_a_negative_dose_is_refused():
    with pytest.raises(pk.InputError) as err:
        pk.Dose(0, -6e7, "CAR_D")
    assert str(err.value) == "Dose amount -6e+07 is negative"


@pytest.mark.parametrize(
    "value, message",
    [
        (
            -1,
            "model 'sle_cart': parameter 'k_kill': value -1 is not positive (a log-scale "
            "parameter)",
        ),
        ("abc", "model 'sle_cart': parameter 'k_kill': value 'abc' is not a number"),
        (float("nan"), "model 'sle_cart': parameter 'k_kill': value nan is not finite"),
    ],
)
def test_parameter_values_outside_their_domain_are_refused(sle, value, message):
    with pytest.raises(pk.InputError) as err:
        sle.simulate([0.0, 1.0], params={"k_kill": value})
    assert str(err.value) == message


def test_a_value_outside_the_plausible_bounds_warns_and_names_them(sle):
    p = sle.parameters["k_kill"]
    with pytest.warns(pk.PkpdCartWarning) as record:
        sle.resolve_parameters({"k_kill": 100})
    assert str(record[0].message) == (
        f"model 'sle_cart': parameter 'k_kill': value 100 is outside its plausible bounds "
        f"[{p.lower:g}, {p.upper:g}]"
    )


def test_an_error_model_for_an_unknown_observable_is_refused(sle):
    data = pk.read_dataset(DATA, model=sle, covariates=["SLEDAI_BL"])
    models = {
        o: pk.ErrorModel.lognormal(0.3) for o in ["CAR_T", "B_cells", "anti_dsDNA", "vaccine_titre"]
    }
    models |= {"SLEDAI": pk.ErrorModel.additive(1.0), "CART": pk.ErrorModel.lognormal(0.3)}
    with pytest.raises(pk.FitError) as err:
        Problem(sle, data, estimate=["T_exp"], error_models=models)
    assert str(err.value).startswith("error model for unknown observable(s) CART; observables")


def test_one_name_as_a_string_is_that_name(sle):
    data = pk.read_dataset(DATA, model=sle, covariates=["SLEDAI_BL"])
    models = {
        o: pk.ErrorModel.lognormal(0.3) for o in ["CAR_T", "B_cells", "anti_dsDNA", "vaccine_titre"]
    }
    models |= {"SLEDAI": pk.ErrorModel.additive(1.0)}
    problem = Problem(sle, data, estimate="T_exp", error_models=models)
    assert [s.quantity for s in problem.specs if s.kind == "model"] == ["T_exp"]


def test_an_error_model_parameter_that_is_not_a_number_is_refused():
    with pytest.raises(pk.InputError) as err:
        pk.ErrorModel.additive("one")
    assert str(err.value) == "additive error model: a = 'one' is not a number"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["simulate", "stein2019", "--step", "0", "--out", "x.csv"],
            "argument --step: '0' is not a positive number",
        ),
        (
            ["simulate", "stein2019", "--end", "-5", "--out", "x.csv"],
            "argument --end: '-5' is not a non-negative number",
        ),
        (
            ["simulate", "sle_cart", "--dose", "0:-6e7:CAR_D", "--out", "x.csv"],
            "argument --dose: dose '0:-6e7:CAR_D': Dose amount -6e+07 is negative",
        ),
        (
            ["simulate", "sle_cart", "--dose", "0:6e7:CAR_D:-2", "--out", "x.csv"],
            "argument --dose: dose '0:6e7:CAR_D:-2': Dose duration -2 is negative",
        ),
        (
            ["simulate", "sle_cart", "--dose", "0:6e7:CAR_D:1:2", "--out", "x.csv"],
            "argument --dose: dose '0:6e7:CAR_D:1:2' is not TIME:AMOUNT:TARGET[:DURATION] "
            "(e.g. 0:7e7:CAR_infused)",
        ),
        (
            ["fit", "sle_cart", "d.csv", "--error", "CAR_T=lognorm:0.3", "--out", "r"],
            "argument --error: error model 'CAR_T=lognorm:0.3': unknown kind 'lognorm'; choose one "
            "of additive, proportional, combined, combined1, lognormal",
        ),
        (
            ["fit", "sle_cart", "d.csv", "--error", "CAR_T=lognormal:-0.3", "--out", "r"],
            "argument --error: error model 'CAR_T=lognormal:-0.3': lognormal error model: a = -0.3 "
            "must be a positive number",
        ),
    ],
)
def test_command_line_values_outside_their_domain_exit_2_in_one_line(argv, message, capsys):
    from pkpd_cart.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"error: {message}"), last


def test_a_negative_log_scale_parameter_on_the_command_line_exits_1(tmp_path, capsys):
    from pkpd_cart.cli import main

    code = main(
        [
            "simulate",
            "sle_cart",
            "--param",
            "k_kill=-1",
            "--end",
            "1",
            "--out",
            str(tmp_path / "x.csv"),
        ]
    )
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "pkpd-cart: error: model 'sle_cart': parameter 'k_kill': value -1 is not positive "
        "(a log-scale parameter)"
    )


def test_names_on_the_command_line_lose_their_spaces():
    from pkpd_cart.cli import _names

    assert _names("T_exp, k_M ,") == ["T_exp", "k_M"]


def test_docs_into_a_closed_pipe_ends_quietly(monkeypatch):
    import io
    import sys

    from pkpd_cart.cli import main

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["docs", "stein2019"]) == 0


@pytest.mark.parametrize(
    "header, hint",
    [
        ("ID,TIEM,DV,DVID,EVID", "column TIEM: unknown column (did you mean TIME?)"),
        ("ID,TIME,DV,DVID,EVID,LIMT", "column LIMT: unknown column (did you mean LIMIT?)"),
        ("ID,TIME,VD,DVID,EVID", "column VD: unknown column (did you mean DV?)"),
    ],
)
def test_misspelt_columns_get_the_closest_name(tmp_path, header, hint):
    path = tmp_path / "d.csv"
    path.write_text(header + "\n" + ",".join(["1"] * len(header.split(","))) + "\n")
    with pytest.raises(pk.DatasetError) as err:
        pk.read_dataset(path)
    assert str(err.value).startswith(f"{path}: {hint}")


def test_a_semicolon_separated_file_is_named_as_such(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("ID;TIME;DV;DVID;EVID\n1;0;5;B_cells;0\n")
    with pytest.raises(pk.DatasetError) as err:
        pk.read_dataset(path)
    assert str(err.value) == (
        f"{path}: the columns are separated by semicolons; save the file as comma-separated CSV"
    )


def test_an_initial_value_for_something_not_estimated_is_refused(sle):
    data = pk.read_dataset(DATA, model=sle, covariates=["SLEDAI_BL"])
    models = {
        o: pk.ErrorModel.lognormal(0.3) for o in ["CAR_T", "B_cells", "anti_dsDNA", "vaccine_titre"]
    }
    models |= {"SLEDAI": pk.ErrorModel.additive(1.0)}
    with pytest.raises(pk.FitError) as err:
        Problem(sle, data, estimate=["T_exp"], error_models=models, initial={"Texp": 7.0})
    assert str(err.value).startswith(
        "initial value(s) for Texp, which the fit does not estimate (it estimates: "
    )


def test_the_shipped_models_load_when_python_starts_in_the_repository_root():
    # Python started in the checkout imports ./pkpd_cart, not the installed copy; its
    # models must still be found (setup.cfg maps them from ./models only when installed).
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = (
        "import pkpd_cart as pk, pkpd_cart.models as m; "
        "print(pk.__file__); print(m.__file__); print(len(pk.load_model('stein2019').states))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [
        str(root / "pkpd_cart" / "__init__.py"),
        str(root / "models" / "__init__.py"),
        "2",
    ]
