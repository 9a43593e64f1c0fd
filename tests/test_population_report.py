"""The population report (SAEM and FOCE-I alike) and `pkpd-cart fit --method ...`, on
data simulated from the model (SYNTHETIC, with records below the LLOQ)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_predictive import design, population

import pkpd_cart as pk
from pkpd_cart.cli import main
from pkpd_cart.errors import InputError
from pkpd_cart.estimation.predictive import simulate_design
from pkpd_cart.estimation.saem import SaemOptions, fit_saem
from pkpd_cart.reporting import population_report
from pkpd_cart.reporting.population_report import write_population_report

LLOQ = 1.0


def synthetic_frame() -> pd.DataFrame:
    """40 subjects simulated from the model; values below 1 mg/L censored (M3)."""
    values = simulate_design(population(), design(), n=2, seed=5).simulated[0]
    frame = design(values).frame.drop(columns=["ROW", "MDV", "LIMIT", "UNIT"])
    obs = frame["EVID"] == 0
    below = obs & (frame["DV"].astype(float) < LLOQ)
    frame["CENS"] = 0
    frame.loc[below, "CENS"] = 1
    frame["DV"] = np.where(below, np.nan, frame["DV"].astype(float))
    frame["LIMIT"] = np.where(below, LLOQ, np.nan)
    return frame


@pytest.fixture(scope="module")
def case():
    frame = synthetic_frame()
    data = pk.dataset_from_frame(frame, source="population report test (SYNTHETIC)")
    fit = fit_saem(population(), data, SaemOptions(k1=80, k2=60, seed=1))
    return frame, data, fit


def test_report_of_a_saem_fit_is_complete_and_marked_synthetic(case, tmp_path):
    frame, data, fit = case
    assert fit.n_censored == int(frame["CENS"].sum()) > 0
    out = write_population_report(fit, data, tmp_path / "rep", "SAEM test", n_replicates=50)
    files = {p.name for p in out.iterdir()}
    assert {
        "report.md", "report.html", "parameters.csv", "parameters.json", "ebes.csv",
        "individual.csv", "diagnostics.csv", "npde.csv", "vpc_C.csv", "gof_C.png",
        "individual_C.png", "etas.png", "vpc_C.png", "npde.png", "convergence.png",
        "pcvpc_C.png", "pcvpc_C.csv",
    } <= files  # fmt: skip
    for name in files:
        if name.endswith(".csv"):  # every CSV says what its data are
            table = pd.read_csv(out / name)
            assert table.columns[0] == "data" and set(table["data"]) == {"SYNTHETIC"}, name
    md = (out / "report.md").read_text()
    assert "**SYNTHETIC DATA.**" in md
    assert f"{fit.n_censored} below the limit of quantification" in md
    assert "| OMEGA(eta_CL) |" in md and "shrinkage %" in md
    assert "-2LL by importance sampling" in md
    assert "5 estimated parameters" in md
    params = pd.read_csv(out / "parameters.csv")
    omega = params[params["name"] == "OMEGA(eta_CL)"].iloc[0]
    shrink = fit.shrinkage.set_index("eta").loc["eta_CL", "shrinkage_sd_pct"]
    assert omega["shrinkage_pct"] == pytest.approx(shrink)
    diag = pd.read_csv(out / "diagnostics.csv")
    assert diag["CWRES"].notna().sum() == fit.n_observations - fit.n_censored


def test_report_of_a_focei_fit(case, tmp_path):
    _, data, _ = case
    fit = pk.fit_population(population(), data)
    out = write_population_report(fit, data, tmp_path / "rep", "FOCE-I test", n_replicates=0)
    md = (out / "report.md").read_text()
    assert "Estimation: FOCEI; covariance: sandwich" in md
    assert "npde.csv" not in {p.name for p in out.iterdir()}


def test_a_failing_report_leaves_the_old_one_untouched(case, tmp_path, monkeypatch):
    _, data, fit = case
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.md").write_text("old")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(population_report, "figure_npde", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_population_report(fit, data, out, "t", n_replicates=20)
    assert [p.name for p in out.iterdir()] == ["report.md"]
    assert (out / "report.md").read_text() == "old"
    with pytest.raises(InputError, match="n_replicates must be 0 or an integer >= 2, not 1"):
        write_population_report(fit, data, out, "t", n_replicates=1)
    with pytest.raises(InputError, match="needs a population fit result, not str"):
        write_population_report("fit", data, out, "t")
    with pytest.raises(InputError, match="needs the fitted Dataset, not DataFrame"):
        write_population_report(fit, data.frame, out, "t")


def test_cli_population_fit_writes_its_report(case, tmp_path, capsys):
    frame, _, _ = case
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    common = ["fit", "pk_1cmt_iv", str(path), "--error", "C=proportional:0.2"]
    population_options = ["--method", "focei", "--estimate", "CL=1.5,V=25", "--eta", "CL=0.1",
                          "--eta", "V=0.1", "--replicates", "20"]  # fmt: skip
    code = main(common + population_options + ["--out", str(tmp_path / "r")])
    assert code == 0
    assert (tmp_path / "r" / "report.md").exists()
    assert "FOCEI fit of pk_1cmt_iv" in (tmp_path / "r" / "report.md").read_text()
    refusals = [
        (["--method", "saem", "--estimate", "CL", "--per-subject", "V"],
         "--per-subject cannot be used with --method SAEM"),
        (["--method", "focei", "--estimate", "CL", "--covariance", "lin"],
         "--covariance lin is not available with --method FOCEI"),
        (["--method", "saem", "--estimate", "CL", "--eta", "V=0.1"],
         "--eta V: give the parameter in --estimate too"),
        (["--method", "saem", "--estimate", "K=1"], "model 'pk_1cmt_iv' has no parameter 'K'"),
        (["--estimate", "CL", "--eta", "CL=0.1"], "--eta and --covariance need a population"),
    ]  # fmt: skip
    for extra, message in refusals:
        capsys.readouterr()
        assert main(common + extra + ["--out", str(tmp_path / "x")]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        main(common + ["--method", "saem", "--eta", "CL=-1", "--out", str(tmp_path / "x")])
    assert "is not NAME=VARIANCE with a positive variance" in capsys.readouterr().err
