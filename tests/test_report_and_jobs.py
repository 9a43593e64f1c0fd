"""Report files, the fit scripts (main job) and the fit command line."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import one_compartment
from test_fit import simulated_data

from pkpd_cart.cli import main
from pkpd_cart.estimation.fitting import fit
from pkpd_cart.estimation.likelihood import ErrorModel
from pkpd_cart.estimation.uncertainty import bootstrap_by_subject, mcmc, profile_likelihood
from pkpd_cart.reporting.report import write_fit_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_fit():
    data = simulated_data(("lognormal", 0.15, 0), seed=6, n_subjects=3, lloq=1.0)
    return fit(
        one_compartment(),
        data,
        estimate=["k", "V"],
        starts=3,
        seed=1,
        error_models={"C": ErrorModel.lognormal(0.3)},
    )


def test_report_files_are_complete_and_parseable(tmp_path, small_fit):
    profiles = profile_likelihood(small_fit)
    derived = lambda model, p, doses: {"half-life (d)": 0.693 / p["k"]}  # noqa: E731
    out = write_fit_report(
        small_fit, tmp_path / "rep", "test fit", {"a": 1}, profiles, derived, "test data", seed=1
    )
    names = {p.name for p in out.iterdir()}
    assert {
        "report.md",
        "report.html",
        "parameters.csv",
        "parameters.json",
        "predictions.csv",
        "correlation.csv",
        "derived.csv",
        "fit_C.png",
        "goodness_of_fit.png",
        "profiles.png",
        "waterfall.png",
        "derived.png",
    } <= names
    table = pd.read_csv(out / "parameters.csv")
    assert list(table["quantity"]) == ["k", "V", "C:log"]
    assert table["profile_low"].notna().all() and (table["identifiable"] == "yes").all()
    payload = json.loads((out / "parameters.json").read_text())
    assert payload["ofv"] == pytest.approx(small_fit.ofv)
    assert payload["synthetic_data"] is False
    assert len(payload["parameters"]) == 3
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "fit_C.png" in html
    md = (out / "report.md").read_text()
    assert "| k | all |" in md and "half-life (d)" in md
    derived_table = pd.read_csv(out / "derived.csv")
    assert (derived_table["ci_low"] <= derived_table["estimate"]).all()


def test_report_is_all_or_nothing(tmp_path, small_fit):
    def broken(model, p, doses):
        raise RuntimeError("derived quantity crashed")

    with pytest.raises(RuntimeError):
        write_fit_report(small_fit, tmp_path / "rep", "t", {}, derived=broken)
    assert not (tmp_path / "rep").exists()
    assert list(tmp_path.iterdir()) == []


def test_bootstrap_and_mcmc(small_fit):
    boot = bootstrap_by_subject(small_fit, n=3, seed=2)
    assert len(boot) == 3 and boot["ok"].all()
    assert boot["k"].between(0.2, 0.4).all()
    posterior = mcmc(small_fit, steps=60, burn=10, walkers=10, seed=1)
    chain = posterior.flatchain
    assert set(chain.columns) == {"log_k", "log_V", "log_sigma_C_log"}
    assert abs(chain["log_k"].median() - small_fit.x[0]) < 0.1


def load(relative):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mackensen_shared_fit_on_the_virtual_cohort(tmp_path):
    """The fixed-effects variant: baselines fixed per patient, every file marked SYNTHETIC."""
    job = load("fits/mackensen2022_fit.py")
    out = job.main(["--variant", "shared", "--out", str(tmp_path / "fit"), "--no-profiles"])
    md = (out / "report.md").read_text()
    assert "SYNTHETIC DATA" in md and "BIC's n = 270 records" in md
    assert "baseline SLEDAI-2K: each patient's published value (fixed)" in md
    table = pd.read_csv(out / "parameters.csv")
    assert set(table["data"]) == {"SYNTHETIC"}
    table = table.set_index(["quantity", "subject"])
    truth = pd.read_csv(
        ROOT / "fits" / "data" / "mackensen2022_virtual_cohort_truth.csv",
        comment="#",
        dtype={"ID": str},
    ).set_index("ID")
    # the shared memory loss rate is the same in every virtual patient: recovered
    k_m = table.loc[("k_M", "all")]
    assert k_m["ci_low"] <= truth["k_M"].iloc[0] <= k_m["ci_high"]
    # T_exp is shared here though it varies between the virtual patients: k_exp absorbs
    # the difference (within 15%; the population fit models both)
    for sid, row in truth.iterrows():
        assert table.loc[("k_exp", sid), "estimate"] == pytest.approx(row["k_exp"], rel=0.15)
    derived = pd.read_csv(out / "derived.csv")
    assert set(derived["quantity"]) >= {"CAR-T Cmax (cells/uL)", "B-cell aplasia (d)"}
    assert "**B-cell aplasia (d)**: days from the first time B cells fall below" in md


@pytest.mark.slow
def test_mackensen_population_fit_the_main_job(tmp_path):
    """The main job as the README runs it (fewer VPC replicates): a MAP population fit with
    priors, the truth-recovery table, the flat-prior and fixed-effects comparisons."""
    job = load("fits/mackensen2022_fit.py")
    out = job.main(["--out", str(tmp_path / "fit"), "--replicates", "20"])
    md = (out / "report.md").read_text()
    assert "**SYNTHETIC DATA.**" in md
    assert "## Priors" in md and "inverse Wishart(df 5" in md
    assert "| population, flat priors |" in md and "| fixed effects (shared + per patient) |" in md
    recovery = pd.read_csv(out / "truth_recovery.csv")
    assert set(recovery["data"]) == {"SYNTHETIC"}
    assert len(recovery) == 27 and recovery["covered"].mean() >= 0.85
    assert f"**{int(recovery['covered'].sum())} of 27 95% intervals" in md
    params = pd.read_csv(out / "parameters.csv").set_index("name")
    assert params.loc["tv_k_M", "lower_95"] <= 0.0191404 <= params.loc["tv_k_M", "upper_95"]
    assert "| tau_BM | fixed (model value) | 55 |" in md


def test_fit_script_reads_a_template_style_file(tmp_path):
    job = load("fits/mackensen2022_fit.py")
    data = ROOT / "fits" / "data" / "mackensen2022_virtual_cohort.csv"
    # what a user's file of figure values looks like: no synthetic header or columns
    frame = pd.read_csv(data, comment="#", dtype=str, keep_default_na=False)
    frame = frame[frame["ID"] == "2"].drop(columns=["SYNTHETIC", "SOURCE"])
    own = tmp_path / "figure_values.csv"
    frame.to_csv(own, index=False)
    out = job.main(["--variant", "individual", "--data", str(own), "--out", str(tmp_path / "i")])
    assert "SYNTHETIC" not in (out / "report.md").read_text()
    assert (out / "patient_2" / "report.html").exists()


def test_cli_fit_and_exit_codes(tmp_path, capsys):
    data = ROOT / "fits" / "data" / "mackensen2022_virtual_cohort.csv"
    fit = ["fit", "sle_cart", str(data), "--covariates", "SLEDAI_BL"]
    errors = [
        "CAR_T=lognormal:0.3",
        "B_cells=lognormal:0.3",
        "anti_dsDNA=lognormal:0.2",
        "SLEDAI=additive:1",
        "vaccine_titre=lognormal:0.1",
    ]
    options = ["--estimate", "k_exp,T_exp", "--subjects", "1"]
    options += [arg for e in errors for arg in ("--error", e)]
    code = main([*fit, *options, "--out", str(tmp_path / "r")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "r" / "report.md").exists()
    assert main([*fit, "--estimate", "nope", "--out", str(tmp_path / "x")]) == 1
    assert "has no parameter 'nope'" in capsys.readouterr().err
    assert (
        main(["fit", "sle_cart", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x")]) == 1
    )
    assert "missing.csv: file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["fit", "sle_cart", str(data), "--error", "CAR_T=gauss", "--out", "x"])
    assert info.value.code == 2
    assert "unknown kind 'gauss'; choose one of additive" in capsys.readouterr().err
