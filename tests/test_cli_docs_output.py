"""Command line, generated documentation pages, and all-or-nothing output folders."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pkpd_cart as pk
from pkpd_cart.cli import main
from pkpd_cart.model.docs import model_page
from pkpd_cart.reporting.output import atomic_directory

DOCS = Path(__file__).resolve().parents[1] / "docs" / "models"


def load_script(relative: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["stein2019", "kirouac2023", "sle_cart", "pk_1cmt_iv"])
def test_committed_model_pages_are_up_to_date(name):
    generate = load_script("docs/generate.py")
    assert (DOCS / f"{name}.md").read_text() == generate.page(name), "run docs/generate.py"
    assert (DOCS / f"{name}_diagram.png").stat().st_size > 10_000


def test_diagram_graph_of_sle_cart():
    from pkpd_cart.model.diagram import flow_graph

    flows, influences = flow_graph(pk.load_model("sle_cart"))
    assert set(flows.edges) == {
        ("CAR_D", "CAR_E"),
        ("CAR_E", "CAR_M"),
        ("B_P1", "B_P2"),
        ("B_P2", "B_P3"),
        ("B_P3", "B_P4"),
        ("B_P4", "B_mat"),
    }
    # the kill signal comes from CAR-T cells and reaches every CD19+ pool, not the LLPC
    assert influences.has_edge("C_eff", "kill") and influences.has_edge("CAR_E", "C_eff")
    killed = set(influences.successors("kill"))
    assert {"B_P1", "B_P4", "B_mat", "B_auto", "PB", "SLPC"} <= killed
    assert "LLPC" not in killed and "LLPC_vac" not in killed


def test_stein_page_shows_the_switch_as_cases():
    page = model_page(pk.load_model("stein2019"))
    assert r"\begin{cases} E \cdot \rho & t < Tmax \\ - E \cdot \alpha & t \ge Tmax" in page
    assert "| `alpha` | 0.16 | 1/d | [0, 10] | log |" in page


def test_cli_simulate_writes_csv(tmp_path, capsys):
    out = tmp_path / "sim.csv"
    code = main(
        [
            "simulate",
            "kirouac2023",
            "--set",
            "CR1",
            "--dose",
            "0:1e8:dose",
            "--end",
            "28",
            "--step",
            "7",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    frame = pd.read_csv(out)
    assert list(frame["time"]) == [0, 7, 14, 21, 28]
    assert frame["B_cells"].iloc[-1] == pytest.approx(6.877e6, rel=1e-2)


def test_cli_errors(tmp_path, capsys):
    assert main(["simulate", "nope", "--out", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pkpd-cart: error: unknown model 'nope'")
    with pytest.raises(SystemExit) as info:
        main(["simulate", "stein2019", "--dose", "1:2", "--out", "x.csv"])
    assert info.value.code == 2
    assert "is not TIME:AMOUNT:TARGET" in capsys.readouterr().err
    assert (
        main(["simulate", "stein2019", "--param", "alpha=fast", "--out", str(tmp_path / "x.csv")])
        == 1
    )
    assert "--param 'alpha=fast' is not NAME=VALUE" in capsys.readouterr().err


def test_atomic_directory_all_or_nothing(tmp_path):
    target = tmp_path / "report"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("solver crashed")
    assert (target / "a.txt").read_text() == "first"  # the old report is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no debris


def test_stein_main_job(tmp_path):
    job = load_script("fits/stein2019_typical.py")
    out = job.main(["--out", str(tmp_path / "stein")])
    frame = pd.read_csv(out / "simulation.csv")
    assert frame.loc[frame["time"] == 28.0, "C"].iloc[0] == pytest.approx(1373.6, rel=1e-3)
    assert (out / "simulation.png").stat().st_size > 10_000
    assert "| AUC(0-28 d) (copies*d/ug) | 17177" in (out / "summary.md").read_text()


def test_sensitivity_table_is_committed_and_matches_finite_differences():
    script = load_script("fits/sle_cart_sensitivity.py")
    model = pk.load_model("sle_cart")
    table = script.sensitivity_table(model)
    committed = (DOCS / "sle_cart_sensitivity.md").read_text()
    assert committed == script.to_markdown(table), "run: python fits/sle_cart_sensitivity.py"
    assert len(table) == len(model.parameters)

    from pkpd_cart.models.sle_cart import mackensen_doses, summarise

    grid = np.arange(-6.0, 366.0, 0.05)

    def quantities(**change):
        s = summarise(model.simulate(grid, params=change, doses=mackensen_doses(60.0)))
        return np.array(
            [s["B_reappearance_day"], s["CAR_T_peak_cells_per_uL"], s["anti_dsDNA_day90"]]
        )

    for name in ("k_exp", "tau_BM", "f_LL"):
        value = model.parameters[name].value
        up, down = quantities(**{name: value * 1.001}), quantities(**{name: value / 1.001})
        fd = (np.log(up) - np.log(down)) / (2 * np.log(1.001))
        row = table.set_index("parameter").loc[name]
        exact = row[["B-cell reappearance day", "CAR-T peak", "anti-dsDNA day 90"]].to_numpy()
        np.testing.assert_allclose(exact.astype(float), fd, rtol=0.02, atol=5e-3)


def test_readme_example_runs(monkeypatch):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## A short example\n\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["result"].ofv < 1e4
    assert namespace["data"].synthetic


def test_readme_population_example_reaches_nonmems_objective(monkeypatch):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(
        r"proportional error\), which ends at NONMEM's OFV 586.276:\n\n```python\n"
        r"(.*?)```",
        readme,
        re.S,
    ).group(1)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    namespace: dict = {"pk": pk}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    fit = namespace["fit"]
    assert fit.ofv == pytest.approx(586.27605628, abs=0.05)  # NONMEM 7.4.2 pheno_real.ext
    assert fit.parameters.set_index("name").loc["APGR_on_V", "estimate"] == pytest.approx(
        0.15892, rel=1e-2
    )
