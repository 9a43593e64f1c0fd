"""Each mechanism block alone against a closed form or a steady-state property."""

import math

import numpy as np
import pytest
from pkpd_cart.models.blocks.bcell import bcell_reconstitution, cd19_kill, kill_pool
from pkpd_cart.models.blocks.cart import cart_expansion
from pkpd_cart.models.blocks.disease import lymphodepletion, sledai, sledai_score
from pkpd_cart.models.blocks.humoral import (
    autoreactive_bcells,
    plasma_cells_and_autoantibody,
    vaccine_titre,
)

import pkpd_cart as pk

TIGHT = pk.SolverOptions(rtol=1e-11, atol=1e-9)


def scaffold(name: str, kill: float = 0.0) -> pk.ModelBuilder:
    """Mature B cells held constant and a constant kill rate, so one block runs alone."""
    m = pk.ModelBuilder(name)
    B_ref = m.parameter("B_ref", 2e10, "cells", source="test")
    B = m.state("B_mat", "cells", initial=B_ref)
    m.add_term(B, 0)
    k = m.parameter("k_kill_const", kill if kill > 0 else 1.0, "1/d", source="test")
    m.expression("kill", k if kill > 0 else 0, "1/d")
    return m


def test_autoantibody_decays_at_igg_half_life_when_production_stops():
    m = scaffold("humoral_only")
    autoreactive_bcells(m)
    plasma_cells_and_autoantibody(m)
    model = m.build()
    p = model.parameter_values
    Ab0, f_LL, kI, kL = p["Ab0"], p["f_LL"], p["k_IgG"], p["k_LL"]
    assert kI == pytest.approx(math.log(2) / 21)
    times = np.array([0.0, 21.0, 42.0, 90.0, 365.0])
    # plasmablasts, short-lived plasma cells and autoreactive B cells gone at t = 0
    df = model.simulate(
        times, initial={"PB": 0.0, "SLPC": 0.0, "B_auto": 0.0, "B_mat": 0.0}, options=TIGHT
    )
    LL = np.exp(-kL * times)
    exact = Ab0 * (
        f_LL * kI / (kI - kL) * (np.exp(-kL * times) - np.exp(-kI * times)) + np.exp(-kI * times)
    )
    np.testing.assert_allclose(df["LLPC"], LL, rtol=1e-8)
    np.testing.assert_allclose(df["Ab_dsDNA"], exact, rtol=1e-7)
    # A(90)/A0 = f_LL + (1 - f_LL) exp(-k_IgG 90) when long-lived plasma cells are constant;
    # here they decay at k_LL, a 0.3% difference at day 90
    approx = f_LL + (1 - f_LL) * math.exp(-kI * 90)
    assert df["Ab_dsDNA"].iloc[3] / Ab0 == pytest.approx(approx, rel=5e-3)


def test_humoral_block_is_at_steady_state_and_vaccine_needs_b_cells():
    m = scaffold("humoral_ss")
    autoreactive_bcells(m)
    plasma_cells_and_autoantibody(m)
    vaccine_titre(m)
    model = m.build()
    df = model.simulate([0.0, 100.0, 1000.0], options=TIGHT)
    for name in ("B_auto", "PB", "SLPC", "LLPC", "Ab_dsDNA", "LLPC_vac", "Ab_vac"):
        np.testing.assert_allclose(df[name], df[name].iloc[0], rtol=1e-9)
    # without B cells, vaccine LLPC decay at k_LL only: titre at one year stays above 96%
    gone = model.simulate([365.0], initial={"B_mat": 0.0}, options=TIGHT)
    assert 0.96 < gone["Ab_vac"].iloc[0] < 0.97


def test_transit_chain_delay_equals_mean_transit_time():
    m = scaffold("marrow_only")
    m = pk.ModelBuilder("marrow_only")
    m.expression("kill", 0, "1/d")
    pools = bcell_reconstitution(m, n_transit=4)
    model = m.build()
    x0 = model.compile().initial(model.resolve_parameters())
    p_ss = x0[list(model.states).index("B_P1")]
    pulse = 0.5 * p_ss
    times = np.linspace(0, 600, 60001)
    df = model.simulate(times, initial={"B_P1": p_ss + pulse}, options=TIGHT)
    tau, n = model.parameters["tau_BM"].value, 4
    k_tr = n / tau
    excess_flux = k_tr * (df["B_P4"].to_numpy() - p_ss)  # extra cells entering B_mat per day
    total = np.trapezoid(excess_flux, times)
    mean_time = np.trapezoid(times * excess_flux, times) / total
    assert total == pytest.approx(pulse, rel=1e-4)
    # the pulse enters stage 1, so it passes all n stages: mean delay n/k_tr = tau_BM
    assert mean_time == pytest.approx(tau, rel=1e-4)
    assert [str(s) for s in pools] == ["B_P1", "B_P2", "B_P3", "B_P4", "B_mat"]


def test_marrow_steady_state_and_recovery_without_kill():
    m = pk.ModelBuilder("marrow_ss")
    m.expression("kill", 0, "1/d")
    bcell_reconstitution(m)
    model = m.build()
    df = model.simulate([0.0, 500.0], options=TIGHT)
    np.testing.assert_allclose(df.iloc[1, 1:], df.iloc[0, 1:], rtol=1e-9)
    depleted = model.simulate([0, 50, 100, 200, 400, 1000], initial={"B_mat": 0.0}, options=TIGHT)
    # refilled from the marrow with up-regulated output (a transient overshoot), then B_ref
    assert depleted["B_mat"].iloc[1] > 0.5 * 2e10
    assert depleted["B_mat"].iloc[-1] == pytest.approx(2e10, rel=0.01)


def test_kill_is_exponential_at_constant_car_t():
    m = pk.ModelBuilder("kill_only")
    E = m.parameter("E_const", 1e9, "cells", source="test")
    kill = cd19_kill(m, effector=E)
    B = m.state("B", "cells", initial=1e10)
    kill_pool(m, B)
    model = m.build()
    p = model.parameter_values
    rate = (
        p["k_kill"] * p["E_const"] ** p["n_k"] / (p["K_E"] ** p["n_k"] + p["E_const"] ** p["n_k"])
    )
    df = model.simulate([0.0, 2.0, 10.0], options=TIGHT)
    np.testing.assert_allclose(df["B"], 1e10 * np.exp(-rate * df["time"]), rtol=1e-8)
    assert str(kill) == "kill"


def test_cart_without_antigen_is_a_linear_chain():
    m = pk.ModelBuilder("cart_only")
    cart_expansion(m, antigen=0)
    model = m.build()
    p = model.parameter_values
    kd, kout = p["k_dist"], p["k_E"] + p["k_EM"]
    times = np.array([0.5, 1.0, 5.0, 20.0])
    df = model.simulate(times, doses=[pk.Dose(0.0, 6e7, "CAR_D")], options=TIGHT)
    exact = 6e7 * kd / (kout - kd) * (np.exp(-kd * times) - np.exp(-kout * times))
    np.testing.assert_allclose(df["CAR_E"], exact, rtol=1e-7)


def test_cart_growth_is_bounded_under_constant_antigen_supply():
    m = pk.ModelBuilder("cart_supply")
    A = m.parameter("A_const", 2e10, "cells", source="test")  # CD19 supply never runs out
    cart_expansion(m, antigen=A, exhaustion=True)
    model = m.build()
    df = model.simulate(np.arange(0, 366.0), doses=[pk.Dose(0.0, 6e7, "CAR_D")])
    total = df["CAR_E"] + df["CAR_M"] + df["CAR_X"]
    peak_day = df["time"][total.idxmax()]
    assert 5 <= peak_day <= 15
    assert total.iloc[-1] < 1e-2 * total.max()  # the programme ends: no unbounded growth


def test_sledai_indirect_response_closed_form():
    m = pk.ModelBuilder("sledai_only")
    Ab0 = m.parameter("Ab0", 100.0, "IU/mL", source="test")
    Ab = m.state("Ab", "IU/mL", initial=25.0)
    m.add_term(Ab, 0)
    sledai(m, Ab, Ab0)
    model = m.build()
    p = model.parameter_values
    target = p["SLEDAI0"] * 0.25 ** p["gamma_S"]
    times = np.array([0.0, 10.0, 30.0, 90.0])
    df = model.simulate(times, options=TIGHT)
    exact = target + (p["SLEDAI0"] - target) * np.exp(-p["k_S"] * times)
    np.testing.assert_allclose(df["S_act"], exact, rtol=1e-8)
    np.testing.assert_array_equal(sledai_score(np.array([0.4, 1.6, -0.2, 15.5])), [0, 2, 0, 16])


def test_lymphodepletion_window_closed_form():
    m = pk.ModelBuilder("ld_only", start_time=-6)
    lymphodepletion(m)
    model = m.build()
    p = model.parameter_values
    kT, kLD, Tref = p["k_T"], p["k_LD"], p["T_ref"]
    df = model.simulate([-6.0, -5.0, -2.0], options=TIGHT)
    low = kT * Tref / (kT + kLD)
    exact_end = low + (Tref - low) * math.exp(-(kT + kLD) * 3.0)
    assert df["T_host"].iloc[1] == pytest.approx(Tref, rel=1e-9)
    assert df["T_host"].iloc[2] == pytest.approx(exact_end, rel=1e-8)
