"""Model definition API: composition, parameter sets, and every validation error's message."""

import math

import pytest
import sympy as sp
from helpers import one_compartment

import pkpd_cart as pk


def builder(name="demo"):
    m = pk.ModelBuilder(name)
    k = m.parameter("k", 0.5, "1/d", source="test")
    x = m.state("x", "cells", initial=10)
    return m, k, x


def test_two_blocks_add_to_one_state():
    m, k, x = builder()

    def production(b):
        s = b.parameter("s", 2.0, "cells/d", source="test")
        b.add_term(b.symbol("x"), s, label="production")

    def loss(b):
        b.add_term(b.symbol("x"), -b.symbol("k") * b.symbol("x"), label="loss")

    model = pk.compose(m, production, loss).build()
    assert [t.label for t in model.terms["x"]] == ["production", "loss"]
    s, k, x = (sp.Symbol(n, real=True) for n in ("s", "k", "x"))
    assert model.rhs()["x"] == s - k * x
    # steady state s/k = 4 reached from 10 with rate k: x = 4 + 6 exp(-k t)
    df = model.simulate([3.0])
    assert df["x"].iloc[0] == pytest.approx(4 + 6 * math.exp(-1.5), rel=1e-7)


def test_flow_conserves_mass_and_initial_expressions():
    m = pk.ModelBuilder("transit")
    ktr = m.parameter("ktr", 2.0, "1/d", source="test")
    a0 = m.parameter("a0", 7.0, "cells", source="test")
    a = m.state("a", "cells", initial=a0)
    b = m.state("b", "cells", initial=a0 / 7)
    m.flow(a, b, ktr * a, label="transit")
    m.observable("total", a + b, "cells")
    df = m.build().simulate([0.0, 1.0, 5.0])
    assert list(df["total"]) == pytest.approx([8.0, 8.0, 8.0], rel=1e-9)


def test_parameter_metadata_and_defaults():
    m, k, x = builder()
    m.add_term(x, -k * x)
    m.parameter("shift", -1.0, "1", source="test")
    model = m.build()
    p = model.parameters["k"]
    assert (p.value, p.unit, p.lower, p.upper, p.scale) == (0.5, "1/d", 0.0, math.inf, "log")
    assert model.parameters["shift"].scale == "linear"
    assert model.parameters["shift"].lower == -math.inf


def test_parameter_sets_and_with_parameters(onecmt):
    model = onecmt.with_parameter_set("fast", {"k": 3.0}, note="fitted")
    assert list(model.parameter_sets.index) == ["default", "fast"]
    assert model.parameter_sets.loc["fast", "k"] == 3.0
    assert model.parameter_sets.loc["fast", "V"] == 5.0
    assert onecmt.parameter_sets.shape[0] == 1  # the original is untouched
    faster = onecmt.with_parameters(k=1.0)
    assert faster.parameters["k"].value == 1.0 and onecmt.parameters["k"].value == 0.3


def test_hill_max_piecewise_and_fractional_power_compile():
    m = pk.ModelBuilder("features")
    ec50 = m.parameter("ec50", 2.0, source="test")
    n = m.parameter("n", 1.5, source="test")
    x = m.state("x", initial=1.0)
    y = m.state("y", initial=0.0)
    m.add_term(x, -pk.hill(x, ec50, n) + pk.positive_part(y - 10))
    m.add_term(y, sp.Piecewise((1.0, pk.t < 2), (0.0, True)) * x**0.5)
    df = m.build().simulate([0.0, 1.0, 3.0])
    assert df["y"].iloc[-1] > 0 and df["x"].iloc[-1] < 1.0


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda m, k, x: m.add_term(x, -sp.Symbol("kk", real=True) * x),
            "model 'demo': undefined symbol(s) kk in the equation of state 'x'",
        ),
        (
            lambda m, k, x: m.state("z"),
            "model 'demo': state 'z' has no equation (add a term, or 0 for a constant state)",
        ),
        (
            lambda m, k, x: m.parameter("x", 1.0),
            "model 'demo': duplicate name 'x' (parameter clashes with an existing state)",
        ),
        (
            lambda m, k, x: m.parameter("q", float("nan")),
            "model 'demo': parameter 'q' value nan is not finite",
        ),
        (
            lambda m, k, x: m.parameter("q", 5.0, lower=0, upper=1),
            "model 'demo': parameter 'q' value 5 is outside its bounds [0, 1]",
        ),
        (
            lambda m, k, x: m.parameter("q", float("inf")),
            "model 'demo': parameter 'q' value inf is not finite",
        ),
        (
            lambda m, k, x: m.parameter("2q", 1.0),
            "model 'demo': parameter name '2q' is not a valid identifier",
        ),
        (
            lambda m, k, x: m.add_term("nope", 1),
            "model 'demo': cannot add a term to 'nope', which is not a state",
        ),
        (
            lambda m, k, x: m.observable("o", x * sp.Symbol("w", real=True)),
            "model 'demo': undefined symbol(s) w in observable 'o'",
        ),
        (
            lambda m, k, x: m.parameter_set("s1", {"zz": 1.0}),
            "model 'demo': parameter set 's1' names unknown parameter 'zz'",
        ),
        (
            lambda m, k, x: m.parameter_set("s1", {"k": -1.0}),
            "model 'demo': parameter 'k' in set 's1' value -1 is outside its bounds [0, inf]",
        ),
    ],
)
def test_validation_errors_are_one_clear_line(edit, message):
    m, k, x = builder()
    m.add_term(x, -k * x)
    with pytest.raises(pk.ModelDefinitionError) as info:
        edit(m, k, x)
        m.build()
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_load_model_by_path(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(
        "import pkpd_cart as pk\n\n"
        "def build():\n"
        "    m = pk.ModelBuilder('from_file')\n"
        "    k = m.parameter('k', 1.0, '1/d', source='test')\n"
        "    x = m.state('x', initial=1.0)\n"
        "    m.add_term(x, -k * x)\n"
        "    return m.build()\n"
    )
    model = pk.load_model(path)
    assert model.name == "from_file"
    assert model.simulate([1.0])["x"].iloc[0] == pytest.approx(math.exp(-1), rel=1e-7)


def test_load_model_errors(tmp_path):
    with pytest.raises(pk.ModelDefinitionError, match="^unknown model 'nope' \\(shipped models:"):
        pk.load_model("nope")
    bad = tmp_path / "bad.py"
    bad.write_text("def build(:\n")
    with pytest.raises(pk.ModelDefinitionError, match="bad.py': line 1: syntax error"):
        pk.load_model(bad)


def test_model_hash_is_stable_and_sensitive():
    assert one_compartment().hash == one_compartment().hash
    assert one_compartment().hash != one_compartment("other").hash
