"""The virtual cohort is reproducible byte for byte, labelled synthetic, and readable."""

import importlib.util
from pathlib import Path

import pytest

import pkpd_cart as pk

ROOT = Path(__file__).resolve().parents[1]


def load(relative):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load("fits/make_virtual_cohort.py")


def test_reproducible_byte_for_byte_and_committed(tmp_path, script):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    script.main(["--out", str(a), "--truth", str(tmp_path / "ta.csv")])
    script.main(["--out", str(b), "--truth", str(tmp_path / "tb.csv")])
    assert a.read_bytes() == b.read_bytes()
    committed = ROOT / "fits" / "data" / "mackensen2022_virtual_cohort.csv"
    assert a.read_bytes() == committed.read_bytes(), "run: python fits/make_virtual_cohort.py"
    assert (tmp_path / "ta.csv").read_bytes() == (
        ROOT / "fits" / "data" / "mackensen2022_virtual_cohort_truth.csv"
    ).read_bytes()
    assert (tmp_path / "ta_population_truth.csv").read_bytes() == (
        ROOT / "fits" / "data" / "mackensen2022_virtual_cohort_population_truth.csv"
    ).read_bytes()
    other = tmp_path / "c.csv"
    script.main(["--seed", "1", "--out", str(other), "--truth", str(tmp_path / "tc.csv")])
    assert other.read_bytes() != a.read_bytes()


def test_labelled_synthetic_and_matches_the_published_patients(script):
    path = ROOT / "fits" / "data" / "mackensen2022_virtual_cohort.csv"
    assert path.read_text().startswith("# SYNTHETIC DATA - NOT PATIENT DATA.")
    data = pk.read_dataset(path, model=pk.load_model("sle_cart"), covariates=["SLEDAI_BL"])
    assert data.synthetic and (data.frame["SYNTHETIC"] == 1).all()
    cov = data.covariates()
    assert list(cov["SEX"]) == ["F", "M", "F", "F", "F"]  # ACR 2022 #1651
    assert list(cov["AGE"]) == [20, 22, 22, 24, 18]
    last = data.frame.groupby("ID")["TIME"].max()
    assert list(last) == [14 * 30, 11 * 30, 6 * 30, 5 * 30, 3 * 30]  # follow-up (months)
    baseline = data.observations(include_ignored=True).query("DVID == 'SLEDAI' and TIME < 0")
    assert list(baseline["DV"]) == [16, 16, 10, 8, 9]  # ACR 2022 #1651
    assert list(baseline["MDV"]) == [1] * 5  # the covariate SLEDAI_BL, not fitted
    assert list(cov["SLEDAI_BL"]) == [16, 16, 10, 8, 9]
    # later scores are integers >= 0; a 0 is censored below 0.5 (M3)
    later = data.observations().query("DVID == 'SLEDAI'")
    zero = later["CENS"] == 1
    assert (later.loc[zero, "LIMIT"] == 0.5).all() and zero.any()
    assert (later.loc[~zero, "DV"] >= 1).all() and (later.loc[~zero, "DV"] % 1 == 0).all()
    doses = data.doses()
    assert list(doses["AMT"]) == [1e6 * w for w in cov["WT"]]
    assert (data.observations()["CENS"] == 1).sum() > 0
