"""Population estimation (FOCE-I, FOCE, FO, LAPLACE) against NONMEM's and nlmixr2's numbers.

References are in tests/data/nlme/ (README there: sources and conventions).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sympy as sp

import pkpd_cart as pk
from pkpd_cart.errors import DatasetError, FitError, ModelDefinitionError
from pkpd_cart.model.population_model import PopulationModel, categorical, indicator, power

DATA = Path(__file__).resolve().parent / "data" / "nlme"


# -- models ---
def wang_model() -> pk.Model:
    """Wang 2007 as an ODE: d ipre/dt = -ke ipre, ipre(0) = 10 (nlmixr2's ODE variant)."""
    m = pk.ModelBuilder("wang2007", description="Wang 2007 test model")
    ke = m.parameter("ke", 0.5, "1/h", lower=0, upper=100, scale="log", source="Wang 2007")
    ipre = m.state("ipre", "mg/L", initial=10)
    m.add_term(ipre, -ke * ipre)
    m.observable("ipre_obs", ipre, "mg/L")
    m.observable("f2", ipre / (ipre + 5), "1")
    m.observable("lipre", sp.log(ipre), "1")
    return m.build()


WANG_ERRORS = {
    "prop": pk.ErrorModel.proportional(math.sqrt(0.1)),
    "propMod": pk.ErrorModel.custom("F * f2"),
    "propF": pk.ErrorModel.custom("prop_sd * f2", {"prop_sd": math.sqrt(0.1)}),
    "propFMod": pk.ErrorModel.custom("lipre * f2"),
    "add": pk.ErrorModel.additive(math.sqrt(0.1)),
    "addMod": pk.ErrorModel.custom("f2"),
    "combined1": pk.ErrorModel.combined1(math.sqrt(0.1), math.sqrt(0.1)),
    "combined2": pk.ErrorModel.combined2(math.sqrt(0.1), math.sqrt(0.1)),
}


def wang_population(error: str) -> PopulationModel:
    pop = PopulationModel(wang_model())
    pop.log_normal("ke", 0.5, omega=0.04)
    pop.error("ipre_obs", WANG_ERRORS[error])
    return pop


def wang_data() -> pk.Dataset:
    frame = pd.read_csv(DATA / "wang2007.csv", comment="#")
    frame["DVID"] = "ipre_obs"
    return pk.dataset_from_frame(frame, source="wang2007.csv")


def pheno_population(covariates: bool) -> PopulationModel:
    pop = PopulationModel(pk.load_model("pk_1cmt_iv"), name="pheno")
    if covariates:  # pheno_real.lst, NONMEM 7.4.2 initial values
        th1 = pop.theta("THETA1", 0.00469307, lower=0, unit="L/h/kg")
        th2 = pop.theta("THETA2", 1.00916, lower=0, unit="L/kg")
        th3 = pop.theta("THETA3", 0.1, lower=-0.99)
        e1, e2 = pop.eta("ETA1", 0.0309626), pop.eta("ETA2", 0.031128)
        wgt, apgr = pop.covariate("WGT"), pop.covariate("APGR")
        pop.individual("CL", th1 * wgt * sp.exp(e1))
        pop.individual("V", th2 * wgt * (1 + th3 * indicator(apgr < 5)) * sp.exp(e2))
        pop.error("C", pk.ErrorModel.proportional(math.sqrt(0.0130865)))
    else:  # pheno.lst, NONMEM 7.4.4
        pop.log_normal("CL", 0.00469307, omega=0.0309626)
        pop.log_normal("V", 1.00916, omega=0.031128)
        pop.error("C", pk.ErrorModel.proportional(math.sqrt(0.013241)))
    return pop


def pheno_data() -> pk.Dataset:
    return pk.read_dataset(DATA / "pheno.csv", covariates=["WGT", "APGR"])


def read_ext(name: str) -> dict[int, pd.Series]:
    """NONMEM .ext tables by ITERATION code (the last table of the file)."""
    text = (DATA / name).read_text().split("TABLE NO.")[-1].splitlines()[1:]
    rows = [line.split() for line in text if line.strip()]
    frame = pd.DataFrame(rows[1:], columns=rows[0]).astype(float)
    return {int(r.ITERATION): r for _, r in frame.iterrows()}


def read_phi() -> pd.DataFrame:
    lines = (DATA / "pheno_real.phi").read_text().splitlines()[1:]
    rows = [line.split() for line in lines]
    return pd.DataFrame(rows[1:], columns=rows[0]).astype(float)


# -- Wang 2007: objective at fixed parameters ---
REFERENCE = pd.read_csv(DATA / "reference_ofv.csv")


@pytest.mark.parametrize("error", list(WANG_ERRORS))
@pytest.mark.parametrize("method", ["FOCEI", "FOCE", "FO"])
def test_wang2007_objective_matches_nonmem_and_nlmixr2(error, method):
    ref = REFERENCE.query("error_model == @error and method == @method")["ofv_closed_form"]
    result = pk.fit_population(
        wang_population(error), wang_data(), method=method, max_iterations=0, covariance=None
    )
    assert result.ofv == pytest.approx(float(ref.iloc[0]), abs=1e-3)


def test_wang2007_prop_focei_per_subject_eta_obj_and_residuals():
    table = pd.read_csv(DATA / "nonmem_prop_focei_table.csv")
    result = pk.fit_population(
        wang_population("prop"), wang_data(), max_iterations=0, covariance=None
    )
    first = table.groupby("ID").first()
    ebes = result.ebes.set_index(result.ebes["ID"].astype(int))
    np.testing.assert_allclose(ebes["eta_ke"], first["ETA1"], atol=1e-4 * 1.5)
    np.testing.assert_allclose(ebes["OBJ"], first["OBJI"], atol=1e-4 * 1.5)
    d = result.diagnostics
    for ours, theirs in [
        ("IPRED", "IPRE"),
        ("PRED", "PRED"),
        ("CWRES", "CWRES"),
        ("CPRED", "CPRED"),
        ("IWRES", "IWRES"),
    ]:
        np.testing.assert_allclose(d[ours], table[theirs], atol=1e-3, err_msg=ours)


# -- LAPLACE is exact for a model linear in eta ---
def linear_population() -> tuple[PopulationModel, pk.Dataset, float]:
    m = pk.ModelBuilder("level", description="a constant level")
    P = m.parameter("P", 5.0, "mg/L", lower=-100, upper=100)
    x = m.state("x", "mg/L", initial=P)
    m.add_term(x, 0 * x)
    m.observable("y", x, "mg/L")
    model = m.build()
    pop = PopulationModel(model)
    pop.normal("P", 5.0, omega=0.7)
    pop.error("y", pk.ErrorModel.additive(0.4))
    rng = np.random.default_rng(3)
    rows, exact = [], 0.0
    for i in range(6):
        n = 1 + i % 3
        y = 5 + rng.normal(0, math.sqrt(0.7)) + rng.normal(0, 0.4, n)
        C = 0.7 * np.ones((n, n)) + 0.16 * np.eye(n)
        e = y - 5
        exact += np.linalg.slogdet(C)[1] + e @ np.linalg.solve(C, e)
        rows += [
            {"ID": i, "TIME": t + 1.0, "DV": v, "DVID": "y", "EVID": 0} for t, v in enumerate(y)
        ]
    return pop, pk.dataset_from_frame(pd.DataFrame(rows), source="linear"), exact


@pytest.mark.parametrize("method", ["FOCEI", "FOCE", "FO", "LAPLACE"])
def test_every_method_is_exact_for_a_model_linear_in_eta(method):
    pop, data, exact = linear_population()
    result = pk.fit_population(pop, data, method=method, max_iterations=0, covariance=None)
    assert result.ofv == pytest.approx(exact, abs=1e-6)


def test_laplace_differs_from_focei_where_the_hessian_is_not_first_order():
    # Wang prop: the exact Hessian of q adds the residual-weighted second-order terms
    pop = wang_population("prop")
    focei = pk.fit_population(pop, wang_data(), max_iterations=0, covariance=None)
    laplace = pk.fit_population(pop, wang_data(), "LAPLACE", max_iterations=0, covariance=None)
    assert focei.ofv == pytest.approx(39.458, abs=1e-3)
    assert laplace.ofv == pytest.approx(39.227, abs=2e-3)  # computed independently (README)


# -- pheno: NONMEM 7.4.2 FOCE-I with covariates and $COV ---
@pytest.fixture(scope="module")
def pheno_fit():  # two processes: the executor path is exercised too
    return pk.fit_population(pheno_population(True), pheno_data(), method="FOCEI", executor=2)


@pytest.mark.slow
def test_pheno_focei_estimates_ofv_and_sandwich_se_match_nonmem(pheno_fit):
    # measured: SEs within 0.11% of NONMEM's; asserted to 1%
    ext = read_ext("pheno_real.ext")
    final, se = ext[-1000000000], ext[-1000000001]
    p = pheno_fit.parameters.set_index("name")
    assert pheno_fit.ofv == pytest.approx(586.27605628, abs=0.05)
    for k in (1, 2, 3):
        assert p.loc[f"THETA{k}", "estimate"] == pytest.approx(final[f"THETA{k}"], rel=1e-3)
        assert p.loc[f"THETA{k}", "se"] == pytest.approx(se[f"THETA{k}"], rel=0.01)
    for ours, theirs in [("OMEGA(ETA1)", "OMEGA(1,1)"), ("OMEGA(ETA2)", "OMEGA(2,2)")]:
        assert p.loc[ours, "estimate"] == pytest.approx(final[theirs], rel=1e-2)
        assert p.loc[ours, "se"] == pytest.approx(se[theirs], rel=0.01)
    assert p.loc["SIGMA(C:prop)", "variance"] == pytest.approx(final["SIGMA(1,1)"], rel=1e-2)
    assert p.loc["SIGMA(C:prop)", "se_variance"] == pytest.approx(se["SIGMA(1,1)"], rel=0.01)
    assert pheno_fit.covariance_method == "sandwich"
    assert pheno_fit.ofv_with_constant == pytest.approx(871.14700157, abs=0.05)


@pytest.mark.slow
def test_pheno_per_subject_objective_and_ebes_match_the_phi_file(pheno_fit):
    phi = read_phi()
    ebes = pheno_fit.ebes
    np.testing.assert_allclose(ebes["OBJ"].to_numpy(), phi["OBJ"].to_numpy(), atol=0.01)
    np.testing.assert_allclose(ebes["ETA1"].to_numpy(), phi["ETA(1)"].to_numpy(), atol=2e-3)


def test_pheno_at_nonmem_estimates_reproduces_phi_to_1e4():
    ext = read_ext("pheno_real.ext")[-1000000000]
    pop = pheno_population(True).with_values(
        theta={"THETA1": ext["THETA1"], "THETA2": ext["THETA2"], "THETA3": ext["THETA3"]},
        omega=np.diag([ext["OMEGA(1,1)"], ext["OMEGA(2,2)"]]),
        sigma={("C", "prop"): math.sqrt(ext["SIGMA(1,1)"])},
    )
    result = pk.fit_population(pop, pheno_data(), max_iterations=0, covariance=None)
    phi = read_phi()
    assert result.ofv == pytest.approx(586.27605628, abs=2e-3)
    np.testing.assert_allclose(result.ebes["OBJ"], phi["OBJ"], atol=1e-4)
    np.testing.assert_allclose(result.ebes["ETA1"], phi["ETA(1)"], atol=1e-5)
    np.testing.assert_allclose(result.ebes["ETC(ETA2,ETA1)"], phi["ETC(2,1)"], atol=1e-6)
    shrink = result.shrinkage.set_index("eta")["shrinkage_sd_pct"]
    assert shrink["ETA1"] == pytest.approx(47.13, abs=0.05)  # pheno_real.lst ETASHRINKSD
    assert shrink["ETA2"] == pytest.approx(12.84, abs=0.05)
    assert shrink["EPS (IWRES)"] == pytest.approx(21.20, abs=0.05)  # EPSSHRINKSD


@pytest.mark.slow
def test_pheno_without_covariates_reaches_nonmems_ofv():
    result = pk.fit_population(pheno_population(False), pheno_data(), covariance=None)
    assert result.ofv == pytest.approx(730.89472681, abs=0.05)
    ext = read_ext("pheno.ext")[-1000000000]
    p = result.parameters.set_index("name")["estimate"]
    assert p["tv_CL"] == pytest.approx(ext["THETA1"], rel=1e-2)
    assert p["tv_V"] == pytest.approx(ext["THETA2"], rel=1e-2)


# -- the population model ---
def test_shorthands_build_the_nonmem_expressions():
    pop = PopulationModel(pk.load_model("pk_1cmt_iv"))
    pop.log_normal("CL", 2.0, omega=0.1, covariates=[power("WGT", 70, 0.75, fixed=True)])
    pop.log_normal(
        "V",
        20.0,
        omega=0.1,
        covariates=[categorical("APGR", sp.Symbol("APGR", real=True) < 5, 0.2)],
    )
    pop.error("C", pk.ErrorModel.proportional(0.1))
    cl = pop.individual_parameters(np.array([0.3, -0.2]), np.array([50.0, 3.0]))
    names = list(pop.model.parameters)
    assert cl[names.index("CL")] == pytest.approx(2.0 * (50 / 70) ** 0.75 * math.exp(0.3))
    assert cl[names.index("V")] == pytest.approx(20.0 * 1.2 * math.exp(-0.2))
    assert pop.thetas["WGT_on_CL"].fixed


def test_population_model_draws_virtual_patients_with_omega():
    pop = PopulationModel(pk.load_model("pk_1cmt_iv"))
    pop.log_normal("CL", 2.0, omega=0.09)
    pop.log_normal("V", 20.0, omega=0.04)
    pop.block(["eta_CL", "eta_V"], [[0.09, 0.03], [0.03, 0.04]])
    pop.error("C", pk.ErrorModel.proportional(0.1))
    frame = pop.draw(n=4000, seed=1)
    logs = np.log(frame[["CL", "V"]].to_numpy()) - np.log([2.0, 20.0])
    np.testing.assert_allclose(np.cov(logs.T), [[0.09, 0.03], [0.03, 0.04]], atol=6e-3)
    run = pk.simulate_population(pop.model, frame, [1.0, 2.0], doses=[pk.Dose(0, 100, "A")])
    assert run.n_failed == 0


# -- bad input: one line, the package's own error ---
def test_random_effect_on_an_unknown_parameter_is_refused():
    pop = PopulationModel(pk.load_model("pk_1cmt_iv"), name="p")
    with pytest.raises(ModelDefinitionError) as err:
        pop.log_normal("KA", 1.0, omega=0.1)
    assert str(err.value) == "population model 'p': model 'pk_1cmt_iv' has no parameter 'KA'"


def test_non_positive_definite_omega_is_refused():
    pop = PopulationModel(pk.load_model("pk_1cmt_iv"), name="p")
    pop.log_normal("CL", 1.0, omega=0.1)
    pop.log_normal("V", 10.0, omega=0.1)
    with pytest.raises(ModelDefinitionError) as err:
        pop.block(["eta_CL", "eta_V"], [[0.1, 0.2], [0.2, 0.1]])
    assert str(err.value) == (
        "population model 'p': initial Omega block of eta_CL, eta_V is not positive definite"
    )


def test_a_theta_that_no_parameter_uses_is_refused():
    pop = PopulationModel(pk.load_model("pk_1cmt_iv"), name="p")
    pop.log_normal("CL", 1.0, omega=0.1)
    pop.theta("KA", 1.0, lower=0)
    pop.error("C", pk.ErrorModel.proportional(0.1))
    with pytest.raises(FitError) as err:
        pk.fit_population(pop, wang_data())
    assert str(err.value) == (
        "population model 'p': theta(s) KA appear in no individual parameter (they could "
        "not be estimated)"
    )


def test_misspelt_method_is_refused():
    with pytest.raises(FitError) as err:
        pk.fit_population(wang_population("prop"), wang_data(), method="FOCE-I")
    assert (
        str(err.value) == "unknown estimation method 'FOCE-I'; choose one of FOCEI, FOCE, FO, "
        "LAPLACE"
    )


def test_missing_covariate_column_is_refused():
    frame = pd.read_csv(DATA / "pheno.csv", comment="#").drop(columns="APGR")
    data = pk.dataset_from_frame(frame, source="pheno.csv", covariates=["WGT"])
    with pytest.raises(DatasetError) as err:
        pk.fit_population(pheno_population(True), data)
    assert str(err.value) == (
        "pheno.csv: column APGR: covariate of population model 'pheno' is missing from the dataset"
    )


def test_covariate_varying_within_a_subject_is_refused(tmp_path):
    text = (
        (DATA / "pheno.csv")
        .read_text()
        .replace("1,12.5,,,1,3.5,A,1,1.4,7", "1,12.5,,,1,3.5,A,1,1.5,7")
    )
    path = tmp_path / "pheno.csv"
    path.write_text(text)
    with pytest.raises(DatasetError) as err:
        pk.fit_population(pheno_population(True), pk.read_dataset(path, covariates=["WGT", "APGR"]))
    assert str(err.value) == (
        f"{path}: row 9, column WGT: covariate WGT varies within subject 1 (1.4, 1.5); it "
        "must be constant within a subject"
    )


# -- recovery with M3-censored records ---
@pytest.mark.slow
def test_focei_with_m3_recovers_a_known_population():
    from nlme_recovery import TRUTH, simulate_dataset, starting_population  # fits/

    data, censored = simulate_dataset(seed=11)
    assert 0.2 < censored < 0.45
    assert data.synthetic
    result = pk.fit_population(starting_population(), data, method="FOCEI")
    p = result.parameters.set_index("name")
    for name, truth in TRUTH.items():
        est, se = p.loc[name, "estimate"], p.loc[name, "se"]
        assert abs(est - truth) < 3 * se, (name, est, se, truth)
    assert result.n_censored == round(censored * 240)
    assert "SYNTHETIC" in result.summary()


def test_a_subject_whose_simulation_fails_is_counted_and_reported_not_fatal():
    m = pk.ModelBuilder("blowup", description="dA/dt = k A^2 blows up at t = 1 / (k A0)")
    k = m.parameter("k", 0.1, "1/h", lower=0, upper=10, scale="log")
    A = m.state("A", "mg", initial=1.0)
    m.add_term(A, k * A**2)
    m.observable("C", A, "mg")
    pop = PopulationModel(m.build())
    pop.log_normal("k", 0.1, omega=0.01)
    pop.error("C", pk.ErrorModel.additive(0.5))
    rows = [
        {"ID": 1, "TIME": t, "DV": 1 / (1 - 0.1 * t), "DVID": "C", "EVID": 0}
        for t in (1.0, 2.0, 4.0)
    ]
    rows += [{"ID": 2, "TIME": 20.0, "DV": 5.0, "DVID": "C", "EVID": 0}]  # past the blow-up
    data = pk.dataset_from_frame(pd.DataFrame(rows), source="blowup")
    with pytest.warns(pk.PkpdCartWarning) as record:
        result = pk.fit_population(pop, data, max_iterations=3, covariance=None)
    messages = [str(w.message) for w in record]
    assert any("subject evaluations failed" in m for m in messages), messages
    assert any("max_iterations=3" in m for m in messages), messages
    assert result.n_failures > 0
    assert "blowup" in result.failure_messages[0]
    assert result.ebes["OBJ"].iloc[0] < 100  # subject 1 was fitted


def test_covariance_choices_follow_nonmems_definitions():
    pop, data, _ = linear_population()
    fits = {m: pk.fit_population(pop, data, covariance=m) for m in ("sandwich", "R", "S")}
    R, S = fits["R"].R, fits["R"].S
    np.testing.assert_allclose(fits["R"].covariance, 2 * np.linalg.inv(R), rtol=1e-12)
    np.testing.assert_allclose(fits["S"].covariance, 4 * np.linalg.inv(S), rtol=1e-12)
    Ri = np.linalg.inv(fits["sandwich"].R)
    np.testing.assert_allclose(
        fits["sandwich"].covariance, Ri @ fits["sandwich"].S @ Ri, rtol=1e-12
    )
    # a linear Gaussian model: the Hessian is the expected information, so R and the
    # sandwich agree closely; the MLE of the typical value is the GLS mean
    se = {m: f.parameters.set_index("name").loc["tv_P", "se"] for m, f in fits.items()}
    assert se["R"] == pytest.approx(se["sandwich"], rel=0.35)
    assert fits["R"].params["tv_P"].stderr == pytest.approx(se["R"])


def test_virtual_population_is_an_initial_estimate_and_a_fit_draws_patients():
    from pkpd_cart.simulation.population import Population

    model = pk.load_model("pk_1cmt_iv")
    virtual = Population(typical={"CL": 2.5, "V": 15.0}, omega={"CL": 0.3})
    pop = PopulationModel.from_population(model, virtual, {"C": pk.ErrorModel.proportional(0.2)})
    assert pop.thetas["tv_CL"].value == 2.5 and pop.thetas["tv_V"].value == 15.0
    assert pop.etas == ["eta_CL"] and pop.omega[0, 0] == pytest.approx(0.09)
    fitted = pop.with_values(theta={"tv_CL": 2.0}, omega=np.array([[0.04]]))
    run = pk.simulate_population(
        model, 300, [1.0, 4.0], doses=[pk.Dose(0, 100.0, "A")], population=fitted, seed=4
    )
    cl = run.parameters["CL"].to_numpy()
    assert run.n_failed == 0
    assert np.exp(np.mean(np.log(cl))) == pytest.approx(2.0, rel=0.05)
    assert np.std(np.log(cl)) == pytest.approx(0.2, rel=0.15)
    assert np.all(run.parameters["V"] == 15.0)


@pytest.mark.slow
def test_block_omega_is_estimated_and_nests_the_diagonal_model():
    from nlme_recovery import simulate_dataset, starting_population  # fits/

    data, _ = simulate_dataset(seed=5, n=24)
    diagonal = pk.fit_population(starting_population(), data, covariance=None)
    pop = starting_population()
    pop.block(["eta_CL", "eta_V"], [[0.2, 0.05], [0.05, 0.2]])
    block = pk.fit_population(pop, data, covariance="sandwich")
    p = block.parameters.set_index("name")
    assert "OMEGA(eta_V,eta_CL)" in p.index
    assert block.ofv <= diagonal.ofv + 1e-3  # one more parameter, nested
    assert np.isfinite(p.loc["OMEGA(eta_V,eta_CL)", "se"])
    w = block.population.omega
    assert np.all(np.linalg.eigvalsh(w) > 0)


def test_the_objective_pickles_for_a_cluster_and_evaluates_the_same():
    import pickle

    from pkpd_cart.estimation.population_fit import PopulationObjective, subjects_from_dataset

    pop = pheno_population(True)
    subjects = subjects_from_dataset(pop, pheno_data())
    objective = PopulationObjective(pop, subjects, "FOCEI", pk.SolverOptions())
    x = objective.layout.natural()
    copy = pickle.loads(pickle.dumps(objective))
    assert copy.evaluate(x)[0] == objective.evaluate(x)[0]
    assert objective.evaluate(x)[0] == pytest.approx(587.36644134661617, abs=1e-4)  # .ext it 0


def test_a_fit_on_a_dask_cluster_equals_the_serial_fit():
    distributed = pytest.importorskip("dask.distributed")
    pop, data = wang_population("prop"), wang_data()
    serial = pk.fit_population(pop, data, covariance=None)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote = pk.fit_population(pop, data, covariance=None, executor=client)
    assert remote.ofv == serial.ofv
    np.testing.assert_array_equal(remote.parameters["estimate"], serial.parameters["estimate"])


@pytest.mark.slow
def test_acop_focei_matches_nonmem_runode001():
    pop = PopulationModel(pk.load_model("pk_1cmt_iv"), name="runODE001")
    lcl, lv = pop.theta("lCL", 1.6), pop.theta("lV", 4.5)
    e1, e2 = pop.eta("eta_CL", 0.15), pop.eta("eta_V", 0.15)
    pop.individual("CL", sp.exp(lcl + e1))
    pop.individual("V", sp.exp(lv + e2))
    pop.error("C", pk.ErrorModel.proportional(0.3))
    data = pk.read_dataset(DATA / "acop_bolus_1cpt.csv")
    result = pk.fit_population(pop, data, executor=2)
    ext = read_ext("runODE001.ext")
    final, se = ext[-1000000000], ext[-1000000001]
    assert result.ofv == pytest.approx(final["OBJ"], abs=0.1)  # 20058.504, ADVAN13 TOL=6
    p = result.parameters.set_index("name")
    pairs = [
        ("lCL", "THETA1"),
        ("lV", "THETA2"),
        ("SIGMA(C:prop)", "THETA3"),
        ("OMEGA(eta_CL)", "OMEGA(1,1)"),
        ("OMEGA(eta_V)", "OMEGA(2,2)"),
    ]
    for ours, theirs in pairs:
        # NONMEM stopped with 2 significant digits; nlmixr2 differs from it by 2e-3 too
        assert p.loc[ours, "estimate"] == pytest.approx(final[theirs], rel=5e-3)
        assert p.loc[ours, "se"] == pytest.approx(se[theirs], rel=0.02)
    assert result.n_observations == 2276 and result.n_subjects == 120


@pytest.mark.slow
def test_a_model_with_a_parameter_dependent_switch_recovers_its_population():
    """stein2019 switches at Tmax (a parameter), where the sensitivities jump; SYNTHETIC
    data from a known population, log-normal error."""
    model = pk.load_model("stein2019")
    truth = PopulationModel(model)
    truth.log_normal("Cmax", 24000, omega=0.3)
    truth.log_normal("Tmax", 9.3, omega=0.04)
    times = np.array([1, 4, 7, 10, 14, 21, 28, 60, 90.0])
    run = pk.simulate_population(model, truth.draw(n=12, seed=3), times)
    rng = np.random.default_rng(4)
    rows = [
        {"ID": i + 1, "TIME": t, "DV": v, "DVID": "C", "EVID": 0, "SYNTHETIC": 1}
        for i, tr in run.trajectories.items()
        for t, v in zip(times, tr.observables[:, 0] * np.exp(0.3 * rng.standard_normal(9)))
    ]
    start = PopulationModel(model)
    start.log_normal("Cmax", 15000, omega=0.2)
    start.log_normal("Tmax", 12, omega=0.1)
    start.error("C", pk.ErrorModel.lognormal(0.5))
    result = pk.fit_population(start, pk.dataset_from_frame(pd.DataFrame(rows)))
    p = result.parameters.set_index("name")
    truth_values = {
        "tv_Cmax": 24000,
        "tv_Tmax": 9.3,
        "OMEGA(eta_Cmax)": 0.3,
        "OMEGA(eta_Tmax)": 0.04,
        "SIGMA(C:log)": 0.3,
    }
    for name, value in truth_values.items():
        assert abs(p.loc[name, "estimate"] - value) < 3 * p.loc[name, "se"], name
    assert result.success and result.synthetic


def test_without_random_effects_every_method_is_the_fixed_effects_likelihood():
    """No etas: FOCE-I and LAPLACE are the naive pooled likelihood, which the package's
    fixed-effects fit (pk.fit, a different optimiser and code path) maximises too."""
    model = pk.load_model("pk_1cmt_iv")
    pop = PopulationModel(model)
    pop.log_normal("CL", 0.01)
    pop.log_normal("V", 1.5)
    pop.error("C", pk.ErrorModel.proportional(0.2))
    data = pheno_data()
    focei = pk.fit_population(pop, data, covariance=None)
    laplace = pk.fit_population(
        focei.population, data, "LAPLACE", max_iterations=0, covariance=None
    )
    fixed = pk.fit(
        model,
        data,
        estimate=["CL", "V"],
        initial={"CL": 0.01, "V": 1.5},
        error_models={"C": pk.ErrorModel.proportional(0.2)},
    )
    assert laplace.ofv == pytest.approx(focei.ofv, abs=1e-9)
    assert focei.ofv_with_constant == pytest.approx(fixed.ofv, abs=1e-3)
    est = fixed.parameters.set_index("quantity")["estimate"]
    p = focei.parameters.set_index("name")["estimate"]
    assert p["tv_CL"] == pytest.approx(est["CL"], rel=1e-3)
    assert p["tv_V"] == pytest.approx(est["V"], rel=1e-3)


def test_fixed_effects_fit_stuck_at_a_residual_floor_says_so():
    """Found while cross-checking: from the model's default CL and V the pheno
    concentrations fall to ~1e-13, the proportional SD hits its floor, the optimiser stops
    at once with success and an OFV of 5e18. The result must say it is not reliable."""
    fixed = pk.fit(
        pk.load_model("pk_1cmt_iv"),
        pheno_data(),
        estimate=["CL", "V"],
        error_models={"C": pk.ErrorModel.proportional(0.2)},
    )
    assert any("numerical floor" in w for w in fixed.warnings), fixed.warnings


def test_fixed_theta_omega_and_sigma_stay_at_their_values():
    pop, data, _ = linear_population()
    fixed = PopulationModel(pop.model)
    fixed.theta("tv_P", 5.0, fixed=True)
    eta = fixed.eta("eta_P", 0.5, fixed=True)
    fixed.individual("P", sp.Symbol("tv_P", real=True) + eta)
    fixed.error("y", pk.ErrorModel.additive(0.4), fixed=True)
    free = PopulationModel(pop.model)
    free.theta("tv_P", 5.0, fixed=True)
    eta = free.eta("eta_P", 0.5)
    free.individual("P", sp.Symbol("tv_P", real=True) + eta)
    free.error("y", pk.ErrorModel.additive(0.4), fixed=True)
    result = pk.fit_population(free, data)
    p = result.parameters.set_index("name")
    assert p.loc["tv_P", "estimate"] == 5.0 and p.loc["tv_P", "fixed"]
    assert p.loc["SIGMA(y:add)", "estimate"] == 0.4 and np.isnan(p.loc["SIGMA(y:add)", "se"])
    assert p.loc["OMEGA(eta_P)", "estimate"] != 0.5 and not p.loc["OMEGA(eta_P)", "fixed"]
    assert result.n_estimated == 1
    all_fixed = pk.fit_population(fixed, data)
    assert all_fixed.parameters["estimate"].tolist() == [5.0, 0.5, 0.4]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"covariance": "sandwhich"},
            "unknown covariance method 'sandwhich'; choose one of 'sandwich', 'R', 'S', "
            "'lin' or None",
        ),
        ({"max_iterations": -1}, "max_iterations must be a non-negative integer, not -1"),
        ({"data": "wang2007.csv"}, "fit_population needs a Dataset (pk.read_dataset), not str"),
        ({"population": "pop"}, "fit_population needs a PopulationModel, not str"),
        ({"options": "BDF"}, "options must be a pk.SolverOptions, not str"),
        ({"ofv_tolerance": 0}, "ofv_tolerance must be a positive number, not 0"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(kwargs, message):
    args = {"population": wang_population("prop"), "data": wang_data()} | kwargs
    with pytest.raises(FitError) as err:
        pk.fit_population(**args)
    assert str(err.value) == message


def test_declared_covariate_columns_are_checked(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("ID,TIME,DV,DVID,EVID,WGT\n1,1,5,C,0,1.2\n1,2,4,C,0,x\n")
    with pytest.raises(DatasetError) as err:
        pk.read_dataset(path, covariates=["WGT", "APGR"])
    assert str(err.value) == f"{path}: column APGR: declared covariate column is missing"
    with pytest.raises(DatasetError) as err:
        pk.read_dataset(path, covariates=["WGT"])
    assert str(err.value).startswith(f"{path}: row 3, column WGT: ")
    with pytest.raises(DatasetError) as err:
        pk.read_dataset(path, covariates=["WT"])
    assert str(err.value) == (
        f"{path}: covariates=: 'WT' is a standard column, kept without declaring it"
    )


def test_other_integrators_give_the_same_objective():
    """LSODA runs subject by subject through simulate(); the compiled BDF in one batch."""
    pop, data = wang_population("prop"), wang_data()
    bdf = pk.fit_population(pop, data, max_iterations=0, covariance=None)
    lsoda = pk.fit_population(
        pop,
        data,
        max_iterations=0,
        covariance=None,
        options=pk.SolverOptions(method="LSODA", rtol=1e-10, atol=1e-12),
    )
    assert lsoda.ofv == pytest.approx(39.458, abs=1e-3)
    assert lsoda.ofv == pytest.approx(bdf.ofv, abs=1e-5)
