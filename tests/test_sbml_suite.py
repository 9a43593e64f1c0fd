"""SBML import measured against cases of the SBML Test Suite (vendored in
tests/data/sbml-test-suite, LGPL 2.1; see the README there). Each case runs exactly as
``benchmarks/sbml_conformance.py`` runs the whole suite."""

from pathlib import Path

import pytest

pytest.importorskip("libsbml")

from pkpd_cart.io.sbml_suite import run_case  # noqa: E402

CASES = sorted(
    p for p in (Path(__file__).parent / "data" / "sbml-test-suite").iterdir() if p.is_dir()
)


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_case_passes(case):
    name, outcome, tags, detail = run_case(case)
    assert outcome == "pass", f"{name} ({', '.join(tags)}): {outcome}: {detail}"
