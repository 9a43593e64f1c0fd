"""Maximum-likelihood fits: recovery with each error model, M3, exact Jacobian, failures."""

import math

import numpy as np
import pandas as pd
import pytest
from helpers import one_compartment
from scipy.stats import norm

import pkpd_cart as pk
from pkpd_cart.estimation.fitting import Problem, fit
from pkpd_cart.estimation.likelihood import ErrorModel

TRUE_K, TRUE_V = 0.3, 5.0
TIMES = np.array([0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24])


def simulated_data(error, seed, n_subjects=8, lloq=None, k_sd=0.0):
    """Records of a one-compartment model, 100 mg IV on day 0, with known error."""
    rng = np.random.default_rng(seed)
    rows = []
    for sid in range(1, n_subjects + 1):
        k = TRUE_K * math.exp(k_sd * rng.standard_normal())
        rows.append({"ID": sid, "TIME": 0.0, "EVID": 1, "AMT": 100.0, "CMT": "A"})
        f = 100 / TRUE_V * np.exp(-k * TIMES)
        kind, a, b = error
        if kind == "additive":
            y = f + a * rng.standard_normal(len(f))
        elif kind == "proportional":
            y = f * (1 + b * rng.standard_normal(len(f)))
        elif kind == "combined":
            y = f + np.sqrt(a**2 + (b * f) ** 2) * rng.standard_normal(len(f))
        else:
            y = f * np.exp(a * rng.standard_normal(len(f)))
        for t, v in zip(TIMES, y):
            censored = lloq is not None and v < lloq
            rows.append(
                {
                    "ID": sid,
                    "TIME": t,
                    "EVID": 0,
                    "DVID": "C",
                    "DV": None if censored else v,
                    "CENS": int(censored),
                    "LIMIT": lloq,
                }
            )
    return pk.dataset_from_frame(pd.DataFrame(rows), model=one_compartment())


@pytest.mark.parametrize(
    "error, model_error, truth",
    [
        (("additive", 0.4, 0), ErrorModel.additive(1.0), {"C:add": 0.4}),
        (("proportional", 0, 0.15), ErrorModel.proportional(0.3), {"C:prop": 0.15}),
        (("combined", 0.2, 0.1), ErrorModel.combined(0.5, 0.3), {"C:add": 0.2, "C:prop": 0.1}),
        (("lognormal", 0.2, 0), ErrorModel.lognormal(0.5), {"C:log": 0.2}),
    ],
)
def test_recovery_and_coverage_for_each_error_model(error, model_error, truth):
    data = simulated_data(error, seed=11)
    result = fit(
        one_compartment(),
        data,
        estimate=["k", "V"],
        error_models={"C": model_error},
        initial={"k": 0.5, "V": 8.0},
    )
    table = result.parameters.set_index("quantity")
    assert not result.warnings, result.warnings
    for quantity, true in {"k": TRUE_K, "V": TRUE_V, **truth}.items():
        row = table.loc[quantity]
        assert row["ci_low"] <= true <= row["ci_high"], (quantity, row.to_dict())
        assert row["rse_pct"] < 50


def test_per_subject_and_shared_parameters():
    data = simulated_data(("lognormal", 0.1, 0), seed=3, n_subjects=4, k_sd=0.3)
    result = fit(
        one_compartment(),
        data,
        estimate=["V"],
        per_subject=["k"],
        error_models={"C": ErrorModel.lognormal(0.3)},
    )
    ks = result.parameters.query("quantity == 'k'")
    assert list(ks["subject"]) == ["1", "2", "3", "4"]
    assert ks["estimate"].std() > 0.02  # the subjects differ
    assert result.subject_parameters("2")["k"] == pytest.approx(ks["estimate"].iloc[1])
    single = fit(
        one_compartment(),
        data,
        estimate=["k", "V"],
        subjects=["2"],
        error_models={"C": ErrorModel.lognormal(0.3)},
    )
    assert single.n_records == 11
    assert single.parameters.set_index("quantity").loc["k", "estimate"] == pytest.approx(
        ks["estimate"].iloc[1], rel=0.05
    )


def test_a_parameter_fixed_for_one_subject():
    """``fixed={"k[2]": ...}`` holds k for subject 2 only (e.g. a measured baseline)."""
    data = simulated_data(("lognormal", 0.1, 0), seed=3, n_subjects=2, k_sd=0.3)
    model = one_compartment()
    result = fit(model, data, estimate=["V"], fixed={"k[2]": 0.31},
                 error_models={"C": ErrorModel.lognormal(0.3)})  # fmt: skip
    assert result.subject_parameters("2")["k"] == 0.31
    assert result.subject_parameters("1")["k"] == model.parameters["k"].value
    with pytest.raises(pk.FitError, match=r"fixed value 'k\[9\]': not NAME\[SUBJECT\]"):
        fit(model, data, estimate=["V"], fixed={"k[9]": 0.3},
            error_models={"C": ErrorModel.lognormal(0.3)})  # fmt: skip
    with pytest.raises(pk.FitError, match="parameter k is both estimated and fixed"):
        fit(model, data, per_subject=["k"], fixed={"k[1]": 0.3},
            error_models={"C": ErrorModel.lognormal(0.3)})  # fmt: skip


def test_m3_likelihood_matches_hand_computation():
    frame = pd.DataFrame(
        [
            {"ID": 1, "TIME": 0.0, "EVID": 1, "AMT": 100.0, "CMT": "A"},
            {"ID": 1, "TIME": 1.0, "EVID": 0, "DVID": "C", "DV": 15.0},
            {"ID": 1, "TIME": 20.0, "EVID": 0, "DVID": "C", "CENS": 1, "LIMIT": 0.5},
        ]
    )
    model = one_compartment()
    data = pk.dataset_from_frame(frame, model=model)
    for em, sd in (
        (ErrorModel.additive(0.7), lambda f: 0.7),
        (ErrorModel.proportional(0.2), lambda f: 0.2 * f),
    ):
        problem = Problem(
            model,
            data,
            ["k"],
            error_models={"C": em},
            options=pk.SolverOptions(rtol=1e-10, atol=1e-12),
        )
        x = np.array([s.to_internal(s.initial) for s in problem.specs])
        f1, f20 = 20 * math.exp(-0.3), 20 * math.exp(-6.0)
        hand = -2 * norm.logpdf(15.0, f1, sd(f1)) - 2 * norm.logcdf(0.5, f20, sd(f20))
        assert problem.evaluate(x)[2] == pytest.approx(hand, rel=1e-7)
    # lognormal: likelihood of log y, plus the 2 log y Jacobian term
    problem = Problem(
        model,
        data,
        ["k"],
        error_models={"C": ErrorModel.lognormal(0.3)},
        options=pk.SolverOptions(rtol=1e-10, atol=1e-12),
    )
    x = np.array([s.to_internal(s.initial) for s in problem.specs])
    hand = (
        -2 * norm.logpdf(math.log(15.0), math.log(f1), 0.3)
        + 2 * math.log(15.0)
        - 2 * norm.logcdf(math.log(0.5), math.log(f20), 0.3)
    )
    assert problem.evaluate(x)[2] == pytest.approx(hand, rel=1e-7)
    # M1 drops the censored record
    m1 = Problem(
        model,
        data,
        ["k"],
        error_models={"C": ErrorModel.additive(0.7)},
        blq="M1",
        options=pk.SolverOptions(),
    )
    assert m1.n_records == 1 and m1.n_dropped_m1 == 1


@pytest.mark.parametrize("em", [ErrorModel.combined(0.3, 0.1), ErrorModel.lognormal(0.2)])
def test_exact_jacobian_matches_finite_differences(em):
    data = simulated_data(("lognormal", 0.2, 0), seed=5, n_subjects=3, lloq=1.0, k_sd=0.2)
    problem = Problem(
        one_compartment(),
        data,
        ["V"],
        ["k"],
        error_models={"C": em},
        options=pk.SolverOptions(rtol=1e-11, atol=1e-12),
        initial={"k": 0.25, "V": 6.0},
    )
    x = np.array([s.to_internal(s.initial) for s in problem.specs])
    r0, J, _, _ = problem.evaluate(x)
    assert problem.subjects[0].censored.any() or problem.subjects[1].censored.any()
    for k in range(len(x)):
        h = 1e-6
        up, dn = x.copy(), x.copy()
        up[k] += h
        dn[k] -= h
        fd = (problem.evaluate(up)[0] - problem.evaluate(dn)[0]) / (2 * h)
        np.testing.assert_allclose(J[:, k], fd, rtol=1e-5, atol=1e-6 * (1 + np.abs(fd).max()))


def test_fit_survives_injected_solver_failures(monkeypatch):
    import importlib

    # the module that fit() lives in (pkpd_cart.fit is the function)
    fit_module = importlib.import_module("pkpd_cart.estimation.fitting")

    data = simulated_data(("lognormal", 0.1, 0), seed=2, n_subjects=3)
    real = fit_module.simulate

    def flaky(model, times, params=None, **kw):
        if params[0] > 0.45:  # the solver "fails" for large k
            raise pk.SimulationError(model.name, 0.0, {"k": params[0]}, "injected failure")
        return real(model, times, params=params, **kw)

    monkeypatch.setattr(fit_module, "simulate", flaky)
    # Latin-hypercube starts reach k up to 0.2 e^2 = 1.5, deep in the failing region
    result = fit(
        one_compartment(),
        data,
        estimate=["k", "V"],
        starts=4,
        seed=1,
        error_models={"C": ErrorModel.lognormal(0.3)},
        initial={"k": 0.2},
    )
    assert result.n_failures > 0
    assert any("simulations failed" in w for w in result.warnings)
    assert result.parameters.set_index("quantity").loc["k", "estimate"] == pytest.approx(
        TRUE_K, rel=0.1
    )


def test_multistart_is_seeded_and_keeps_the_best():
    data = simulated_data(("lognormal", 0.15, 0), seed=8, n_subjects=3)
    kw = {
        "estimate": ["k", "V"],
        "error_models": {"C": ErrorModel.lognormal(0.3)},
        "starts": 5,
        "seed": 42,
    }
    a = fit(one_compartment(), data, **kw)
    b = fit(one_compartment(), data, workers=2, **kw)
    assert len(a.starts) == 5 and a.starts["ofv"].is_monotonic_increasing
    assert a.ofv == pytest.approx(a.starts["ofv"].min())
    np.testing.assert_allclose(a.starts["ofv"], b.starts["ofv"], rtol=1e-8)


def test_bad_fit_arguments():
    data = simulated_data(("lognormal", 0.15, 0), seed=8, n_subjects=1)
    with pytest.raises(pk.FitError, match="has no parameter 'kk'"):
        fit(one_compartment(), data, estimate=["kk"], error_models={"C": ErrorModel.lognormal(1)})
    with pytest.raises(pk.FitError, match="no error model for observable"):
        fit(one_compartment(), data, estimate=["k"])
    with pytest.raises(pk.FitError, match="cannot be both shared and per subject"):
        fit(
            one_compartment(),
            data,
            estimate=["k"],
            per_subject=["k"],
            error_models={"C": ErrorModel.lognormal(1)},
        )
    with pytest.raises(pk.InputError, match="unknown error model 'poisson'"):
        ErrorModel("poisson", a=1)


def test_profile_likelihood_interval_and_non_identifiable_parameter():
    from pkpd_cart.estimation.uncertainty import profile_likelihood

    data = simulated_data(("lognormal", 0.15, 0), seed=4, n_subjects=4)
    result = fit(
        one_compartment(), data, estimate=["k", "V"], error_models={"C": ErrorModel.lognormal(0.3)}
    )
    prof = profile_likelihood(result, ["log_k"])["log_k"]
    row = result.parameters.set_index("name").loc["log_k"]
    assert prof.identifiable and prof.note == ""
    # nearly linear problem: profile and Wald intervals agree closely
    assert prof.ci_low == pytest.approx(row["ci_low"], rel=0.02)
    assert prof.ci_high == pytest.approx(row["ci_high"], rel=0.02)
    assert prof.ci_low < TRUE_K < prof.ci_high
    assert min(prof.delta_ofv) == pytest.approx(0.0, abs=1e-6)

    # V and a scale factor F enter only as V/F: F is not identifiable
    m = pk.ModelBuilder("scaled")
    k = m.parameter("k", 0.3, "1/d", source="test")
    V = m.parameter("V", 5.0, "L", source="test")
    F = m.parameter("F", 1.0, "1", upper=1e3, source="test")
    A = m.state("A", "mg", dose_target=True)
    m.add_term(A, -k * A)
    m.observable("C", F * A / V, "mg/L")
    scaled = m.build()
    res = fit(
        scaled,
        pk.dataset_from_frame(data.frame.drop(columns="ROW"), model=scaled),
        estimate=["k", "V", "F"],
        error_models={"C": ErrorModel.lognormal(0.3)},
    )
    assert any("not identifiable" in w or "COVARIANCE" in w for w in res.warnings)
    prof_f = profile_likelihood(res, ["log_F"], max_steps=4)["log_F"]
    assert not prof_f.identifiable
    assert "not identifiable" in prof_f.note


def test_profiles_in_processes_equal_serial():
    from pkpd_cart.estimation.uncertainty import profile_likelihood

    data = simulated_data(("lognormal", 0.15, 0), seed=4, n_subjects=3)
    result = fit(
        one_compartment(), data, estimate=["k", "V"], error_models={"C": ErrorModel.lognormal(0.3)}
    )
    serial = profile_likelihood(result, max_steps=3)
    parallel = profile_likelihood(result, max_steps=3, executor=2)
    assert list(serial) == list(parallel) == ["log_k", "log_V", "log_sigma_C_log"]
    for name in serial:
        np.testing.assert_allclose(serial[name].delta_ofv, parallel[name].delta_ofv, rtol=1e-9)
    with pytest.raises(pk.FitError, match="no estimated parameter 'log_x' to profile"):
        profile_likelihood(result, ["log_x"])


def test_parameter_table_survives_a_huge_standard_error():
    """A non-identifiable log-scale parameter can have an SE beyond exp's range: the table
    reports an infinite upper limit instead of crashing the fit (seen in CI)."""
    from pkpd_cart.estimation.fitting import _table

    data = simulated_data(("lognormal", 0.15, 0), seed=4, n_subjects=3)
    problem = Problem(
        one_compartment(), data, ["k", "V"], error_models={"C": ErrorModel.lognormal(0.3)}
    )
    x = np.array([math.log(0.3), math.log(5.0), math.log(0.3)])
    cov = np.diag([0.01, 1e6, 0.01])
    table = _table(problem, x, cov).set_index("name")
    assert table.loc["log_V", "ci_high"] == math.inf
    assert table.loc["log_V", "ci_low"] == 0.0
    assert table.loc["log_k", "ci_high"] == pytest.approx(0.3 * math.exp(1.96 * 0.1))
