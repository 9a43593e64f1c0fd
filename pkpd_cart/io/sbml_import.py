"""SBML import with SBML's own semantics (python-libsbml, the ``sbml`` extra).

libsbml's converters first flatten hierarchical models (``comp``), expand function
definitions and promote local parameters. Then every SBML quantity becomes one of:

* a **parameter**: constant, with a value (constant parameters, compartments, species
  and stoichiometries);
* an **expression**: an assignment rule, a reaction's rate (its id used in formulas), a
  constant set by an initial assignment (evaluated once, at the start), or a variable an
  algebraic rule determines (solved with sympy; no unique explicit solution: refused);
* a **state**: a rate rule's variable, a species changed by reactions, or anything an
  event assigns (a constant between events).

Species follow SBML: a species symbol in a formula is its concentration unless
``hasOnlySubstanceUnits``; reactions change amounts (``d amount/dt = sum(stoichiometry x
rate x conversion factor)``); boundary and constant species are not changed by reactions.
A species in a compartment of constant size is integrated as the quantity formulas use
(concentration = amount / size); in a compartment whose size changes, its amount is the
state (named ``<id>_amount``), so that a change of size dilutes it as SBML says.

Events keep their SBML meaning: any trigger, several assignments, values from the trigger
or the assignment time, the trigger's initial value (firing at the start), persistence,
delays and priorities (equal priorities in random, seeded order). ``rateOf(x)`` is x's
equation (or the chain-rule derivative of an expression). Fast reactions, ``delay()``,
SBML packages other than ``comp`` and elements without math are refused in one line naming
the element; nothing is imported partially.

libsbml's reaction converter (``replaceReactions``) is not used: it divides a reaction's
rate by the compartment size even when that size changes, and drops conversion factors
(SBML Test Suite cases 00051 and 00975 fail with it).

:func:`read_sbml` returns an :class:`SbmlModel` whose ``simulate`` gives every SBML
quantity as amount or concentration; :func:`from_sbml` returns the :class:`Model`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sympy as sp

from pkpd_cart.errors import InputError, ModelDefinitionError
from pkpd_cart.io.sbml import ORIGIN_NOTE, _libsbml
from pkpd_cart.model.modelling import Model, ModelBuilder, t

AVOGADRO = 6.02214179e23  # the value SBML Level 3 fixes for the avogadro csymbol
UNSUPPORTED_PACKAGES = {
    "fbc": "flux balance constraints (a steady-state optimisation, not an ODE model)",
    "qual": "qualitative (logical) models",
    "spatial": "spatial models",
    "multi": "multistate species",
    "distrib": "distributions",
    "arrays": "arrays",
    "dyn": "dynamic structures",
}


@dataclass
class SbmlModel:
    """An imported SBML model: the :class:`Model` and how to read SBML quantities off it.

    ``quantities`` maps every SBML id (species, compartments, parameters, species
    references with an id, reactions) to its expression in model symbols; a species'
    expression is the value formulas use (concentration unless ``hasOnlySubstanceUnits``);
    ``species`` maps each species to ``(compartment, hasOnlySubstanceUnits)``.
    """

    model: Model
    quantities: dict[str, sp.Expr]
    species: dict[str, tuple[str, bool]]
    source: str = ""
    _functions: dict = field(default_factory=dict, repr=False)

    def values(self, trajectory, ids: Iterable[str], amounts: Iterable[str] = ()):
        """``{id: values over the trajectory's times}``; ids in ``amounts`` (species) as
        amounts, other species as concentrations."""
        model = self.model
        amounts = set(amounts)
        symbols = [
            t,
            *(s.symbol for s in model.states.values()),
            *(p.symbol for p in model.parameters.values()),
            *(s.symbol for s in model.switches.values()),
        ]
        columns = [
            trajectory.times,
            *trajectory.states.T,
            *(np.full(len(trajectory.times), v) for v in trajectory.parameters),
            *trajectory.switch_flags.T,
        ]
        out = {}
        for sid in ids:
            if sid not in self.quantities:
                raise InputError(f"{self.source}: no SBML quantity '{sid}'")
            expr = self.quantities[sid]
            if sid in self.species:
                compartment, only_substance = self.species[sid]
                size = self.quantities[compartment]
                if sid in amounts and not only_substance:
                    expr = expr * size
                elif sid not in amounts and only_substance:
                    expr = expr / size
            key = (sid, sid in amounts)
            if key not in self._functions:
                observables = {o.symbol: o.expr for o in model.observables.values()}
                expr = model.expand(expr.xreplace(observables))
                self._functions[key] = sp.lambdify(symbols, expr, "numpy")
            with np.errstate(all="ignore"):  # nan/inf outside a function's domain, as SBML
                value = np.asarray(self._functions[key](*columns), dtype=float)
            out[sid] = np.broadcast_to(value, trajectory.times.shape).copy()
        return out

    def simulate(self, times, ids: Iterable[str] | None = None, amounts=(), **kwargs):
        """Simulate (keyword arguments of :func:`pkpd_cart.simulate`) and return a
        DataFrame indexed by time with the SBML quantities ``ids`` (default: every species,
        as concentrations, or as amounts if listed in ``amounts``)."""
        import pandas as pd

        from pkpd_cart.simulation.solver import simulate

        traj = simulate(self.model, times, **kwargs)
        ids = list(self.species) if ids is None else list(ids)
        # time is the index: an SBML model may have a quantity called "time" (suite case 1821)
        index = pd.Index(traj.times, name="time")
        return pd.DataFrame(self.values(traj, ids, amounts), index=index)


def from_sbml(path_or_text: str | Path, name: str | None = None) -> Model:
    """Read an SBML model into a :class:`Model` (see the module docstring)."""
    return read_sbml(path_or_text, name).model


def read_sbml(path_or_text: str | Path, name: str | None = None) -> SbmlModel:
    """Read an SBML file (or its text) into an :class:`SbmlModel`."""
    libsbml, doc, where = _read(path_or_text)
    return _Importer(libsbml, doc.getModel(), where, name).run()


# -- reading and converting ------------------------------------------------------------
def _read(path_or_text: str | Path):
    libsbml = _libsbml()
    text = str(path_or_text)
    if text.lstrip().startswith("<"):
        doc, where = libsbml.readSBMLFromString(text), "<string>"
    else:
        if not Path(text).is_file():
            raise ModelDefinitionError(f"SBML file '{text}' does not exist")
        doc, where = libsbml.readSBMLFromFile(text), text
    _raise_errors(libsbml, doc, where, "invalid SBML")
    if doc.getModel() is None:
        raise ModelDefinitionError(f"{where}: no model in the SBML document")
    for i in range(doc.getNumPlugins()):
        prefix = doc.getPlugin(i).getPrefix()
        if prefix in UNSUPPORTED_PACKAGES:
            raise ModelDefinitionError(
                f"{where}: uses the SBML package '{prefix}' ({UNSUPPORTED_PACKAGES[prefix]}), "
                "which pkpd_cart cannot import"
            )
    if doc.isPackageEnabled("comp"):
        _convert(libsbml, doc, where, "flatten comp", "flattening the hierarchical model")
    _convert(libsbml, doc, where, "expandFunctionDefinitions", "expanding function definitions")
    _convert(libsbml, doc, where, "promoteLocalParameters", "promoting local parameters")
    return libsbml, doc, where


def _raise_errors(libsbml, doc, where: str, what: str) -> None:
    for i in range(doc.getNumErrors()):
        e = doc.getError(i)
        if e.getSeverity() >= libsbml.LIBSBML_SEV_ERROR:
            raise ModelDefinitionError(
                f"{where}: line {e.getLine()}: {what}: {e.getShortMessage()}"
            )


def _convert(libsbml, doc, where: str, option: str, what: str) -> None:
    props = libsbml.ConversionProperties()
    props.addOption(option, True)
    if option == "flatten comp":
        props.addOption("leavePorts", False)
    code = doc.convert(props)
    if code != libsbml.LIBSBML_OPERATION_SUCCESS:
        detail = ""
        for i in range(doc.getNumErrors()):
            if doc.getError(i).getSeverity() >= libsbml.LIBSBML_SEV_ERROR:
                detail = ": " + doc.getError(i).getShortMessage()
                break
        raise ModelDefinitionError(f"{where}: libsbml failed {what} (code {code}){detail}")


def _origin(m) -> float:
    notes = m.getNotesString() if m.isSetNotes() else ""
    if ORIGIN_NOTE in notes:
        try:
            return float(notes.split(ORIGIN_NOTE, 1)[1].split(";", 1)[0].strip())
        except ValueError:
            return 0.0
    return 0.0


def _unit_of(element) -> str:
    notes = element.getNotesString() if element is not None and element.isSetNotes() else ""
    if "unit: " in notes:
        return notes.split("unit: ", 1)[1].split(" ", 1)[0].split("<", 1)[0]
    return "1"


class RateOf(sp.Function):
    """SBML's ``rateOf(x)``: dx/dt, replaced by the equations once they are all read."""


class _UnsupportedError(Exception):
    """An SBML construct pkpd_cart cannot represent (the message names it)."""


class _MathReader:
    """SBML math (a libsbml AST) to sympy, node by node: n-ary operators with any number
    of arguments, chained relations, csymbols (time, avogadro) that no id can shadow."""

    def __init__(self, lib, origin: float):
        self.lib, self.origin = lib, origin
        L = lib
        self.unary = {
            L.AST_FUNCTION_ABS: sp.Abs, L.AST_FUNCTION_EXP: sp.exp, L.AST_FUNCTION_LN: sp.log,
            L.AST_FUNCTION_FLOOR: sp.floor, L.AST_FUNCTION_CEILING: sp.ceiling,
            L.AST_FUNCTION_FACTORIAL: lambda x: sp.gamma(x + 1),
            L.AST_FUNCTION_SIN: sp.sin, L.AST_FUNCTION_COS: sp.cos, L.AST_FUNCTION_TAN: sp.tan,
            L.AST_FUNCTION_SEC: sp.sec, L.AST_FUNCTION_CSC: sp.csc, L.AST_FUNCTION_COT: sp.cot,
            L.AST_FUNCTION_SINH: sp.sinh, L.AST_FUNCTION_COSH: sp.cosh,
            L.AST_FUNCTION_TANH: sp.tanh, L.AST_FUNCTION_SECH: sp.sech,
            L.AST_FUNCTION_CSCH: sp.csch, L.AST_FUNCTION_COTH: sp.coth,
            L.AST_FUNCTION_ARCSIN: sp.asin, L.AST_FUNCTION_ARCCOS: sp.acos,
            L.AST_FUNCTION_ARCTAN: sp.atan, L.AST_FUNCTION_ARCSEC: sp.asec,
            L.AST_FUNCTION_ARCCSC: sp.acsc, L.AST_FUNCTION_ARCCOT: sp.acot,
            L.AST_FUNCTION_ARCSINH: sp.asinh, L.AST_FUNCTION_ARCCOSH: sp.acosh,
            L.AST_FUNCTION_ARCTANH: sp.atanh, L.AST_FUNCTION_ARCSECH: sp.asech,
            L.AST_FUNCTION_ARCCSCH: sp.acsch, L.AST_FUNCTION_ARCCOTH: sp.acoth,
        }  # fmt: skip
        self.relations = {
            L.AST_RELATIONAL_EQ: sp.Eq, L.AST_RELATIONAL_NEQ: sp.Ne,
            L.AST_RELATIONAL_GT: sp.StrictGreaterThan, L.AST_RELATIONAL_GEQ: sp.GreaterThan,
            L.AST_RELATIONAL_LT: sp.StrictLessThan, L.AST_RELATIONAL_LEQ: sp.LessThan,
        }  # fmt: skip
        self.constants = {
            L.AST_CONSTANT_PI: sp.pi, L.AST_CONSTANT_E: sp.E, L.AST_CONSTANT_TRUE: sp.true,
            L.AST_CONSTANT_FALSE: sp.false, L.AST_NAME_AVOGADRO: sp.Float(AVOGADRO),
        }  # fmt: skip

    def read(self, node):
        L, kind = self.lib, node.getType()
        args = [self.read(node.getChild(i)) for i in range(node.getNumChildren())]
        if kind == L.AST_INTEGER:
            return sp.Integer(node.getInteger())
        if kind in (L.AST_REAL, L.AST_REAL_E):
            value = node.getReal()
            if math.isinf(value):
                return sp.oo if value > 0 else -sp.oo
            return sp.nan if math.isnan(value) else sp.Float(value)
        if kind == L.AST_RATIONAL:
            return sp.Rational(node.getNumerator(), node.getDenominator())
        if kind == L.AST_NAME:
            return sp.Symbol(node.getName(), real=True)
        if kind == L.AST_NAME_TIME:
            return t - self.origin
        if kind in self.constants:
            return self.constants[kind]
        if kind == L.AST_PLUS:
            return sp.Add(*[_as_number(a) for a in args])
        if kind == L.AST_TIMES:
            return sp.Mul(*[_as_number(a) for a in args])
        if kind == L.AST_MINUS:
            args = [_as_number(a) for a in args]
            return -args[0] if len(args) == 1 else args[0] - sp.Add(*args[1:])
        if kind == L.AST_DIVIDE:
            return _as_number(args[0]) / _as_number(args[1])
        if kind in (L.AST_POWER, L.AST_FUNCTION_POWER):
            return sp.Pow(_as_number(args[0]), _as_number(args[1]))
        if kind in self.unary:
            return self.unary[kind](_as_number(args[0]))
        if kind == L.AST_FUNCTION_LOG:  # log(base, x); one argument: base 10
            return sp.log(args[-1], args[0] if len(args) == 2 else 10)
        if kind == L.AST_FUNCTION_ROOT:  # root(degree, x); one argument: square root
            return args[-1] ** (1 / sp.sympify(args[0] if len(args) == 2 else 2))
        if kind == L.AST_FUNCTION_MAX:
            return sp.Max(*args)
        if kind == L.AST_FUNCTION_MIN:
            return sp.Min(*args)
        if kind == L.AST_FUNCTION_QUOTIENT:
            return sp.floor(args[0] / args[1])
        if kind == L.AST_FUNCTION_REM:
            return args[0] - args[1] * sp.floor(args[0] / args[1])
        if kind == L.AST_FUNCTION_PIECEWISE:
            pairs = [
                (_as_number(args[i]), _as_condition(args[i + 1]))
                for i in range(0, len(args) - 1, 2)
            ]
            pairs.append((_as_number(args[-1]) if len(args) % 2 else sp.nan, sp.true))
            return sp.Piecewise(*pairs)
        if kind in self.relations:
            relation = self.relations[kind]
            if len(args) < 2:
                return sp.true
            args = [_as_number(a) for a in args]
            return sp.And(*(relation(a, b) for a, b in zip(args, args[1:])))
        if kind == L.AST_LOGICAL_AND:
            return sp.And(*[_as_condition(a) for a in args])
        if kind == L.AST_LOGICAL_OR:
            return sp.Or(*[_as_condition(a) for a in args])
        if kind == L.AST_LOGICAL_XOR:
            return sp.Xor(*[_as_condition(a) for a in args])
        if kind == L.AST_LOGICAL_NOT:
            return sp.Not(_as_condition(args[0]))
        if kind == L.AST_LOGICAL_IMPLIES:
            return sp.Implies(_as_condition(args[0]), _as_condition(args[1]))
        if kind == L.AST_FUNCTION_DELAY:
            raise _UnsupportedError("delay(), which pkpd_cart cannot represent")
        if kind == L.AST_FUNCTION_RATE_OF:  # resolved once all equations are known
            if not isinstance(args[0], sp.Symbol):
                raise _UnsupportedError("rateOf() of an expression (SBML allows only an id)")
            return RateOf(args[0])
        raise _UnsupportedError(
            f"the MathML construct '{node.getName() or kind}', which pkpd_cart cannot read"
        )


class _Importer:
    def __init__(self, libsbml, m, where: str, name: str | None):
        self.lib, self.m, self.where = libsbml, m, where
        self.name = name or m.getId() or "sbml_model"
        self.origin = _origin(m)

    # -- math --------------------------------------------------------------------------
    def math(self, node, element: str, condition: bool = False) -> sp.Expr:
        """sympy expression of an SBML math node (SBML time = model time - origin); a
        number, or a condition if ``condition`` (SBML lets true/false be 1/0 and back)."""
        if node is None:
            raise ModelDefinitionError(f"{self.where}: {element} has no math")
        try:
            expr = _MathReader(self.lib, self.origin).read(node)
        except _UnsupportedError as exc:
            raise ModelDefinitionError(f"{self.where}: {element} uses {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            formula = self.lib.formulaToL3String(node)
            raise ModelDefinitionError(
                f"{self.where}: {element}: cannot read its math {formula!r} ({exc})"
            ) from None
        return _as_condition(expr) if condition else _as_number(expr)

    # -- the import --------------------------------------------------------------------
    def run(self) -> SbmlModel:
        m, where = self.m, self.where
        self.refuse_unsupported()
        self.rate_rules = {}
        self.assignment_rules = {}
        algebraic = []
        for i in range(m.getNumRules()):
            rule = m.getRule(i)
            if rule.isAlgebraic():
                algebraic.append(self.math(rule.getMath(), f"algebraic rule {i + 1}"))
                continue
            var = rule.getVariable()
            what = f"{'rate' if rule.isRate() else 'assignment'} rule of '{var}'"
            (self.rate_rules if rule.isRate() else self.assignment_rules)[var] = self.math(
                rule.getMath(), what
            )
        self.initial = {
            ia.getSymbol(): self.math(ia.getMath(), f"initial assignment of '{ia.getSymbol()}'")
            for ia in m.getListOfInitialAssignments()
        }
        self.event_targets = {
            ea.getVariable() for ev in m.getListOfEvents() for ea in ev.getListOfEventAssignments()
        }
        self.compartments = {c.getId(): c for c in m.getListOfCompartments()}
        self.species = {s.getId(): s for s in m.getListOfSpecies()}
        self.references = {}
        for r in m.getListOfReactions():
            for ref in (*r.getListOfReactants(), *r.getListOfProducts()):
                if ref.isSetId() and ref.getId():
                    self.references[ref.getId()] = ref
        self.reaction_rates = {}
        for r in m.getListOfReactions():
            law = r.getKineticLaw()
            if law is None or law.getMath() is None:
                raise ModelDefinitionError(f"{where}: reaction '{r.getId()}' has no kinetic law")
            self.reaction_rates[r.getId()] = self.math(law.getMath(), f"reaction '{r.getId()}'")
        if algebraic:
            self.solve_algebraic(algebraic)
        changes = self.species_changes()
        b = ModelBuilder(
            self.name,
            description=m.getName() or "",
            reference=f"imported from SBML {where}",
            start_time=self.origin,
        )
        quantities: dict[str, sp.Expr] = {}
        expressions: dict[str, sp.Expr] = dict(self.assignment_rules)
        expressions.update(self.reaction_rates)
        states: dict[str, sp.Expr] = {}  # state name -> derivative
        initial: dict[str, sp.Expr] = {}  # state name -> initial value (any symbols)
        parameters: dict[str, float] = {}
        amount_states: dict[str, str] = {}  # species -> its amount state
        once: list[str] = []  # constants set by an initial assignment
        constant_size = {c: self.constant_size(c) for c in self.compartments}

        def element_value(sid):
            """The declared value of a quantity (species: in formula units)."""
            if sid in self.species:
                s = self.species[sid]
                c = sp.Symbol(s.getCompartment(), real=True)
                if s.isSetInitialAmount():
                    amount = sp.Float(s.getInitialAmount())
                    return amount if s.getHasOnlySubstanceUnits() else amount / c
                if s.isSetInitialConcentration():
                    conc = sp.Float(s.getInitialConcentration())
                    return conc * c if s.getHasOnlySubstanceUnits() else conc
                return None
            if sid in self.compartments:
                c = self.compartments[sid]
                if c.isSetSize():
                    return sp.Float(c.getSize())
                # a 0-D compartment has no size: its species are amounts (size 1 here)
                return sp.Integer(1) if c.getSpatialDimensions() == 0 else None
            if sid in self.references:
                ref = self.references[sid]
                return sp.Float(ref.getStoichiometry()) if ref.isSetStoichiometry() else None
            p = m.getParameter(sid)
            return sp.Float(p.getValue()) if p is not None and p.isSetValue() else None

        ids = [
            *(p.getId() for p in m.getListOfParameters()),
            *self.compartments,
            *self.species,
            *self.references,
        ]
        for sid in ids:
            sym = sp.Symbol(sid, real=True)
            quantities[sid] = sym
            if sid in self.assignment_rules:
                continue
            start_value = self.initial.get(sid, element_value(sid))
            if sid in self.rate_rules:
                states[sid] = self.rate_rules[sid]
            elif sid in self.species and not (
                self.species[sid].getHasOnlySubstanceUnits()
                or constant_size[self.species[sid].getCompartment()]
            ):  # a species in a compartment that changes size: its amount is the state
                # (reactions change it, a change of size does not); formulas use amount/size
                c = sp.Symbol(self.species[sid].getCompartment(), real=True)
                amount = f"{sid}_amount"
                amount_states[sid] = amount
                states[amount] = changes.get(sid, sp.Integer(0))
                initial[amount] = (start_value if start_value is not None else sp.nan) * c
                expressions[sid] = sp.Symbol(amount, real=True) / c
                continue
            elif sid in changes:
                only_substance = self.species[sid].getHasOnlySubstanceUnits()
                c = sp.Symbol(self.species[sid].getCompartment(), real=True)
                states[sid] = changes[sid] if only_substance else changes[sid] / c
            elif sid in self.event_targets:
                states[sid] = sp.Integer(0)
            elif sid in self.initial:  # a constant computed once, at the start
                expressions[sid] = self.initial[sid]
                once.append(sid)
                continue
            else:
                if start_value is None or not start_value.is_number:
                    if start_value is None:
                        raise ModelDefinitionError(
                            f"{where}: '{sid}' has no value and no rule or initial assignment"
                        )
                    expressions[sid] = start_value  # e.g. concentration x size: at the start
                    once.append(sid)
                    continue
                value = float(start_value)
                if math.isnan(value):
                    raise ModelDefinitionError(f"{where}: '{sid}' has no finite value")
                parameters[sid] = value
                continue
            if start_value is None:
                raise ModelDefinitionError(
                    f"{where}: '{sid}' has no initial value and no initial assignment"
                )
            initial[sid] = start_value
        for rid in self.reaction_rates:
            quantities[rid] = sp.Symbol(rid, real=True)

        self.rates = _Rates(states, expressions, where)
        states = {k: self.rates.replace(v) for k, v in states.items()}
        expressions = {k: self.rates.replace(v) for k, v in expressions.items()}
        initial = {k: self.rates.replace(v) for k, v in initial.items()}
        self.rates = _Rates(states, expressions, where)
        self.events = self.read_events()

        # initial values in parameters only: states and expressions at the start
        at_start = {sp.Symbol(k, real=True): v for k, v in initial.items()}
        at_start.update({sp.Symbol(k, real=True): v for k, v in expressions.items()})
        for k, v in list(initial.items()):
            initial[k] = self.resolve(v, at_start, k)
        for k in once:
            expressions[k] = self.resolve(expressions[k], at_start, k)

        for sid, value in parameters.items():
            element = m.getElementBySId(sid)
            b.parameter(
                sid, value, _unit_of(element), lower=-math.inf, scale="linear",
                description=(element.getName() if element is not None else "") or "",
                source=f"SBML {where}",
            )  # fmt: skip
        used = self.used_symbols(states, expressions, initial)
        order = _dependency_order(expressions, where)
        observables = [v for v in self.assignment_rules if self.is_output(v, used)]
        for v in order:
            if v not in observables:
                b.expression(v, expressions[v], _unit_of(m.getElementBySId(v)))
        for sid, derivative in states.items():
            element = m.getElementBySId(sid)
            b.state(sid, _unit_of(element), initial=initial[sid])
            b.add_term(sid, derivative)
        self.add_events(b, amount_states)
        for v in observables:
            b.observable(v, expressions[v], _unit_of(m.getElementBySId(v)))
        try:
            model = b.build()
        except ModelDefinitionError as exc:
            raise ModelDefinitionError(f"{where}: {exc}") from None
        species = {
            sid: (s.getCompartment(), bool(s.getHasOnlySubstanceUnits()))
            for sid, s in self.species.items()
        }
        return SbmlModel(model, quantities, species, where)

    # -- pieces ------------------------------------------------------------------------
    def refuse_unsupported(self) -> None:
        m, where = self.m, self.where
        for r in m.getListOfReactions():
            if r.isSetFast() and r.getFast():
                raise ModelDefinitionError(
                    f"{where}: reaction '{r.getId()}' is fast, which pkpd_cart cannot represent"
                )
        for ev in m.getListOfEvents():
            if ev.getTrigger() is None or ev.getTrigger().getMath() is None:
                raise ModelDefinitionError(f"{where}: event '{ev.getId()}' has no trigger")

    def solve_algebraic(self, rules: list[sp.Expr]) -> None:
        """Algebraic rules ``0 = f(...)`` solved (sympy) for the variables they determine:
        those neither constant nor set by another rule, a reaction or an event. They become
        assignment rules; a system without one explicit solution is refused."""
        m = self.m
        taken = set(self.rate_rules) | set(self.assignment_rules) | set(self.event_targets)
        for r in m.getListOfReactions():
            taken.add(r.getId())
            for ref in (*r.getListOfReactants(), *r.getListOfProducts()):
                s = self.species.get(ref.getSpecies())
                if s is not None and not (s.getBoundaryCondition() or s.getConstant()):
                    taken.add(s.getId())
        free = set()
        for expr in rules:
            for sym in expr.free_symbols:
                element = m.getElementBySId(str(sym))
                constant = (
                    element is not None
                    and hasattr(element, "getConstant")
                    and (element.getConstant())
                )
                if str(sym) not in taken and not constant and element is not None:
                    free.add(sym)
        unknowns = sorted(free, key=str)
        refusal = (
            f"{self.where}: {len(rules)} algebraic rule(s) in {len(unknowns)} undetermined "
            f"variable(s) ({', '.join(map(str, unknowns)) or 'none'}) have no unique explicit "
            "solution (pkpd_cart models are ODEs, not DAEs)"
        )
        if len(unknowns) != len(rules):
            raise ModelDefinitionError(refusal)
        try:
            solutions = sp.solve(rules, unknowns, dict=True)
        except (NotImplementedError, ValueError, TypeError):
            raise ModelDefinitionError(refusal) from None
        if len(solutions) != 1 or set(solutions[0]) != set(unknowns):
            raise ModelDefinitionError(refusal)
        for sym, value in solutions[0].items():
            self.assignment_rules[str(sym)] = value

    def is_output(self, sid: str, used: set[str]) -> bool:
        """An assignment rule becomes an observable when nothing uses it, or, in a file
        pkpd_cart wrote, when its notes say it is one (so a round trip keeps the model)."""
        if sid in used:
            return False
        notes = self.m.getNotesString() if self.m.isSetNotes() else ""
        if ORIGIN_NOTE not in notes:
            return True
        element = self.m.getElementBySId(sid)
        return element is not None and "observable: " in (element.getNotesString() or "")

    def constant_size(self, cid: str) -> bool:
        """Whether compartment ``cid`` keeps its size (no rule changes it, no event)."""
        return not (
            cid in self.rate_rules or cid in self.assignment_rules or cid in self.event_targets
        )

    def species_changes(self) -> dict[str, sp.Expr]:
        """d(amount)/dt of each species that reactions change."""
        m = self.m
        changes: dict[str, sp.Expr] = {}
        default_factor = m.getConversionFactor() if m.isSetConversionFactor() else ""
        for r in m.getListOfReactions():
            rate = sp.Symbol(r.getId(), real=True)
            for refs, sign in ((r.getListOfReactants(), -1), (r.getListOfProducts(), 1)):
                for ref in refs:
                    sid = ref.getSpecies()
                    s = self.species.get(sid)
                    if s is None:
                        raise ModelDefinitionError(
                            f"{self.where}: reaction '{r.getId()}' names unknown species '{sid}'"
                        )
                    if s.getBoundaryCondition() or s.getConstant():
                        continue
                    if sid in self.rate_rules or sid in self.assignment_rules:
                        raise ModelDefinitionError(
                            f"{self.where}: species '{sid}' is changed by reaction "
                            f"'{r.getId()}' and by a rule"
                        )
                    if ref.isSetId() and ref.getId():
                        stoich = sp.Symbol(ref.getId(), real=True)
                    else:
                        stoich = sp.Float(ref.getStoichiometry()) if ref.isSetStoichiometry() else 1
                    factor = (
                        s.getConversionFactor() if s.isSetConversionFactor() else default_factor
                    )
                    term = sign * stoich * rate
                    if factor:
                        term = term * sp.Symbol(factor, real=True)
                    changes[sid] = changes.get(sid, sp.Integer(0)) + term
        return changes

    def resolve(self, expr: sp.Expr, at_start: dict, what: str) -> sp.Expr:
        """Substitute states and expressions by their start values until only parameters
        (and numbers) are left."""
        for _ in range(50):
            new = expr.xreplace(at_start)
            if new == expr:
                return new.xreplace({t: sp.Float(self.origin)})
            expr = new.xreplace({t: sp.Float(self.origin)})
        raise ModelDefinitionError(
            f"{self.where}: the initial value of '{what}' depends on itself (a cycle)"
        )

    def used_symbols(self, states, expressions, initial) -> set[str]:
        """Names that equations, initial values, events or other expressions use (an
        assignment rule nothing uses becomes an observable)."""
        used: set[str] = set()
        for e in (*states.values(), *initial.values(), *expressions.values()):
            used |= {str(s) for s in e.free_symbols}
        return used | self.event_symbols()

    def read_events(self) -> list[dict]:
        """Each SBML event read once: name, trigger, assigned values, delay, priority and
        its flags (rateOf already replaced)."""
        events = []
        for i, ev in enumerate(self.m.getListOfEvents()):
            name = ev.getId() or f"event_{i + 1}"
            element = f"event '{name}'"
            trig = ev.getTrigger()
            trigger = self.rates.replace(self.math(trig.getMath(), element, condition=True))
            if not isinstance(trigger, sp.logic.boolalg.Boolean):
                raise ModelDefinitionError(
                    f"{self.where}: {element}: trigger {trigger} is not a condition"
                )
            extra = {}
            for key, part in (("delay", ev.getDelay()), ("priority", ev.getPriority())):
                extra[key] = (
                    None if part is None else self.rates.replace(self.math(part.getMath(), element))
                )
            events.append(
                dict(
                    name=name,
                    trigger=trigger,
                    values={
                        ea.getVariable(): self.rates.replace(self.math(ea.getMath(), element))
                        for ea in ev.getListOfEventAssignments()
                    },
                    initial_value=bool(trig.getInitialValue())
                    if trig.isSetInitialValue()
                    else True,
                    persistent=bool(trig.getPersistent()) if trig.isSetPersistent() else True,
                    values_at_trigger=bool(ev.getUseValuesFromTriggerTime()),
                    **extra,
                )
            )
        return events

    def event_symbols(self) -> set[str]:
        out: set[str] = set()
        for ev in self.events:
            parts = [ev["trigger"], *ev["values"].values(), ev["delay"], ev["priority"]]
            for part in parts:
                if part is not None:
                    out |= {str(s) for s in part.free_symbols}
        return out

    def add_events(self, b: ModelBuilder, amount_states: dict[str, str]) -> None:
        for ev in self.events:
            values = ev["values"]
            # An assigned concentration sets the amount at the size before the event; a
            # size changed by the event then dilutes it (SBML test cases 1779, 1506).
            assignments = {}
            for var, value in values.items():
                if var in amount_states:  # the state is the amount
                    c = sp.Symbol(self.species[var].getCompartment(), real=True)
                    var, value = amount_states[var], value * c
                assignments[var] = value
            for sid, s in self.species.items():  # concentration states keep their amount
                c = s.getCompartment()
                if c in values and sid in self.rate_rules and not s.getHasOnlySubstanceUnits():
                    conc = values.get(sid, sp.Symbol(sid, real=True))
                    assignments[sid] = conc * sp.Symbol(c, real=True) / values[c]
            if not assignments:
                continue  # an event that changes nothing
            b.event(
                ev["name"], ev["trigger"], assignments, initial_value=ev["initial_value"],
                persistent=ev["persistent"], values_at_trigger=ev["values_at_trigger"],
                delay=ev["delay"], priority=ev["priority"],
            )  # fmt: skip


def _as_number(expr):
    """A condition used as a number is 1 or 0 (SBML), also inside arithmetic."""
    if isinstance(expr, sp.logic.boolalg.Boolean) and not isinstance(expr, sp.Symbol):
        return sp.Piecewise((1, _as_condition(expr)), (0, True))
    if isinstance(expr, sp.Piecewise):
        return sp.Piecewise(*((_as_number(v), _as_condition(c)) for v, c in expr.args))
    if not expr.args or isinstance(expr, sp.Symbol):
        return expr
    return expr.func(*(_as_number(a) for a in expr.args))


def _as_condition(expr):
    """A number used as a condition is true when not 0 (SBML)."""
    if isinstance(expr, (sp.And, sp.Or, sp.Not, sp.Xor, sp.Implies)):
        return expr.func(*(_as_condition(a) for a in expr.args))
    if isinstance(expr, sp.core.relational.Relational):
        return expr.func(_as_number(expr.lhs), _as_number(expr.rhs))
    if isinstance(expr, sp.logic.boolalg.Boolean) and not isinstance(expr, sp.Symbol):
        return expr
    return sp.Ne(_as_number(expr), 0)


class _Rates:
    """``rateOf(x)`` as an expression: a state's equation, the total time derivative of a
    named expression (chain rule through the states), 0 for a constant."""

    def __init__(self, states: dict, expressions: dict, where: str):
        self.states, self.expressions, self.where = states, expressions, where

    def replace(self, expr):
        if not expr.has(RateOf):
            return expr
        return expr.replace(lambda e: isinstance(e, RateOf), lambda e: self.rate(str(e.args[0]), 0))

    def rate(self, name: str, depth: int):
        if depth > 20:
            raise ModelDefinitionError(f"{self.where}: rateOf({name}) depends on itself")
        if name in self.states:
            expr = self.states[name]
            return expr.replace(
                lambda e: isinstance(e, RateOf), lambda e: self.rate(str(e.args[0]), depth + 1)
            )
        if name in self.expressions:
            expr = self.expressions[name]
            total = sp.diff(
                expr.replace(lambda e: isinstance(e, RateOf), lambda e: sp.Integer(0)), t
            )
            for s in expr.free_symbols:
                if str(s) in self.states or str(s) in self.expressions:
                    total += sp.diff(expr, s) * self.rate(str(s), depth + 1)
            return total
        return sp.Integer(0)


def _dependency_order(exprs: dict[str, sp.Expr], where: str) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(v, path):
        if state.get(v) == 2:
            return
        if state.get(v) == 1:
            raise ModelDefinitionError(
                f"{where}: '{v}' is defined in terms of itself ({' -> '.join([*path, v])})"
            )
        state[v] = 1
        for s in sorted(exprs[v].free_symbols, key=str):
            if str(s) in exprs:
                visit(str(s), [*path, v])
        state[v] = 2
        order.append(v)

    for v in exprs:
        visit(v, [])
    return order


def sbml_doses(path_or_text: str | Path):
    """Removed: :func:`from_sbml` keeps an SBML file's dose events in the model."""
    raise ModelDefinitionError(
        "sbml_doses() is gone: from_sbml() now keeps dose events with the model, so "
        "passing them again would dose twice"
    )
