"""SBML export and import: round trips, libroadrunner agreement, clear refusals."""

import numpy as np
import pytest
from pkpd_cart.models.sle_cart import mackensen_doses

import pkpd_cart as pk

CASES = {
    "stein2019": [],
    "kirouac2023": [pk.Dose(0.0, 1e8, "dose")],
    "sle_cart": mackensen_doses(60.0),
    # infusions: a rate parameter raised and lowered by events, next to a bolus
    "pk_1cmt_iv": [
        pk.Dose(0.0, 100.0, "A", duration=3.0),
        pk.Dose(5.0, 50.0, "A"),
        pk.Dose(8.0, 30.0, "A", rate=10.0),
    ],
}
TIGHT = pk.SolverOptions(rtol=1e-11, atol=1e-10)


def relative(a, b, floor):
    scale = np.maximum(np.abs(a).max(axis=0), floor)
    return float(np.max(np.abs(a - b) / scale))


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_simulates_the_same(name, tmp_path):
    model, doses = pk.load_model(name), CASES[name]
    path = tmp_path / f"{name}.xml"
    model.to_sbml(str(path), doses=doses)
    back = pk.from_sbml(path)
    # switches and infusion rates come back as event-assigned states
    rates = {f"infusion_{d.target}" for d in doses if d.is_infusion}
    assert set(back.states) == {*model.states, *model.switches, *rates}
    assert set(back.parameters) == set(model.parameters)
    assert list(back.observables) == list(model.observables)
    assert back.start_time == model.start_time
    # dose events stay with the model: no doses passed again
    assert len(back.events) == len(model.switches) + sum(1 + d.is_infusion for d in doses)
    times = np.linspace(model.start_time, 365.0, 120)
    a = model.simulate(times, doses=doses, options=TIGHT)
    b = back.simulate(times, options=TIGHT)
    cols = [*model.states, *model.observables]
    assert relative(a[cols].to_numpy(), b[cols].to_numpy(), 1e-6) < 1e-8


@pytest.mark.parametrize("name", list(CASES))
def test_libroadrunner_agrees(name):
    roadrunner = pytest.importorskip("roadrunner")
    model, doses = pk.load_model(name), CASES[name]
    rr = roadrunner.RoadRunner(model.to_sbml(doses=doses))
    rr.integrator.relative_tolerance = 1e-10
    rr.integrator.absolute_tolerance = 1e-10
    rr.integrator.maximum_num_steps = 100000
    cols = list(model.states)
    rr.timeCourseSelections = ["time", *cols]
    times = np.linspace(model.start_time, 365.0, 200)
    ours = model.simulate(times, doses=doses, options=TIGHT)[cols].to_numpy()
    theirs = np.array(rr.simulate(times=times - model.start_time))[:, 1:]  # SBML time from 0
    assert relative(ours, theirs, 1e-6) < 1e-6


DOC = """<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="m">
    <listOfParameters>
      <parameter id="k" value="0.5" constant="true"/>
      <parameter id="x" value="1" constant="false"/>
    </listOfParameters>
    <listOfRules>{rules}</listOfRules>
    {extra}
  </model>
</sbml>"""
RATE = """<rateRule variable="x"><math xmlns="http://www.w3.org/1998/Math/MathML">
  <apply><times/><apply><minus/><ci>k</ci></apply><ci>x</ci></apply></math></rateRule>"""


def test_reactions_and_rate_rules_are_read():
    reactions = """<listOfCompartments><compartment id="c" size="2" constant="true"/>
    </listOfCompartments>
    <listOfSpecies><species id="S" compartment="c" initialConcentration="4"
      hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/></listOfSpecies>
    <listOfReactions><reaction id="deg" reversible="false"><listOfReactants>
      <speciesReference species="S" stoichiometry="1" constant="true"/></listOfReactants>
      <kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML"><apply><times/><ci>k</ci>
      <ci>S</ci><ci>c</ci></apply></math></kineticLaw></reaction></listOfReactions>"""
    model = pk.from_sbml(DOC.format(rules=RATE, extra=reactions))
    df = model.simulate([0.0, 2.0])
    # dS/dt = -k S c / c (concentration in a compartment of size 2), dx/dt = -k x
    assert df["S"].iloc[1] == pytest.approx(4 * np.exp(-1.0), rel=1e-7)
    assert df["x"].iloc[1] == pytest.approx(np.exp(-1.0), rel=1e-7)


@pytest.mark.parametrize(
    "rules, extra, message",
    [
        (
            # 0 = x^2 - k: two solutions (a linear rule is solved and imported)
            """<algebraicRule><math xmlns="http://www.w3.org/1998/Math/MathML"><apply><minus/>
         <apply><times/><ci>x</ci><ci>x</ci></apply><ci>k</ci></apply></math></algebraicRule>""",
            "",
            "1 algebraic rule(s) in 1 undetermined variable(s) (x) have no unique explicit "
            "solution",
        ),
        (
            RATE,
            """<listOfEvents><event id="ev" useValuesFromTriggerTime="true">
         <trigger initialValue="false" persistent="true"><math
         xmlns="http://www.w3.org/1998/Math/MathML"><apply><gt/><ci>x</ci><cn>2</cn></apply>
         </math></trigger><listOfEventAssignments><eventAssignment variable="k"><math
         xmlns="http://www.w3.org/1998/Math/MathML"><cn>1</cn></math></eventAssignment>
         </listOfEventAssignments></event></listOfEvents>""",
            "",  # a state-dependent trigger is imported (see test_sbml_events.py)
        ),
        (
            # a delay differential equation (event delays are imported)
            """<rateRule variable="x"><math xmlns="http://www.w3.org/1998/Math/MathML"><apply>
         <csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/delay">delay
         </csymbol><ci>x</ci><cn>1</cn></apply></math></rateRule>""",
            "",
            "rate rule of 'x' uses delay(), which pkpd_cart cannot represent",
        ),
    ],
)
def test_unsupported_sbml_fails_with_one_clear_line(rules, extra, message):
    if not message:
        assert pk.from_sbml(DOC.format(rules=rules, extra=extra)).events
        return
    with pytest.raises(pk.ModelDefinitionError) as info:
        pk.from_sbml(DOC.format(rules=rules, extra=extra))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(pk.ModelDefinitionError, match="does not exist"):
        pk.from_sbml(tmp_path / "none.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<sbml><model")
    with pytest.raises(pk.ModelDefinitionError, match="bad.xml: line"):
        pk.from_sbml(bad)


def test_read_sbml_gives_amounts_or_concentrations():
    reactions = """<listOfCompartments><compartment id="c" size="2" constant="true"/>
    </listOfCompartments>
    <listOfSpecies><species id="S" compartment="c" initialConcentration="4"
      hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/></listOfSpecies>"""
    sbml = pk.read_sbml(DOC.format(rules=RATE, extra=reactions))
    assert sbml.simulate([0.0, 1.0])["S"].tolist() == [4.0, 4.0]  # concentration
    assert sbml.simulate([0.0, 1.0], amounts=["S"])["S"].tolist() == [8.0, 8.0]  # x size 2
    x = sbml.simulate([0.0, 2.0], ids=["x", "k"])
    assert x["x"].iloc[1] == pytest.approx(np.exp(-1.0), rel=1e-7) and x["k"].iloc[1] == 0.5
    with pytest.raises(pk.InputError, match="no SBML quantity 'nope'"):
        sbml.simulate([0.0, 1.0], ids=["nope"])
