"""SBML Level 3 Version 2 export and import (python-libsbml, the ``sbml`` extra).

Export (:func:`to_sbml`, also ``Model.to_sbml``): every state becomes a non-constant
``parameter`` with a ``rateRule`` (so no compartment or unit-of-amount semantics are
imposed), parameters become constant parameters, initial values become
``initialAssignment``s, named expressions and observables become ``assignmentRule``s,
switches become events ``time >= at`` that set a 0/1 parameter, and doses (if given) become
events that add the amount to their target. Units are written as text in each element's
``notes`` and, where SBML has them, as unit definitions.

Import (:func:`from_sbml`): rate rules, reactions (mass-balance of species, divided by the
compartment size for concentrations), assignment rules, initial assignments, and events of
two kinds: ``time >= expr`` setting a parameter to a constant (a switch) and
``time >= value`` adding a constant to a variable (a dose, returned by :func:`sbml_doses`).
Anything else (algebraic rules, delays, event priorities, non-time triggers, fast
reactions, ...) raises :class:`ModelDefinitionError` naming the element.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import sympy as sp
from sympy.printing.str import StrPrinter

from pkpd_cart.errors import ModelDefinitionError
from pkpd_cart.model.modelling import Model, ModelBuilder, t
from pkpd_cart.simulation.solver import Dose


def _libsbml():
    try:
        import libsbml
    except ImportError:
        raise ModelDefinitionError(
            "SBML needs python-libsbml: pip install 'pkpd_cart[sbml]'"
        ) from None
    return libsbml


class _FormulaPrinter(StrPrinter):
    """sympy -> SBML L3 infix formula (``ln`` for natural log, ``time`` for t).

    SBML time starts at 0; model time ``t`` is written as ``(time + origin)``.
    """

    def __init__(self, origin: float = 0.0):
        super().__init__()
        self.origin = origin

    def _print_Symbol(self, expr):
        if expr == t:
            return f"(time + {self.origin!r})" if self.origin else "time"
        return expr.name

    def _print_Pow(self, expr, rational=False):
        b, e = expr.args
        return f"pow({self._print(b)}, {self._print(e)})"

    def _print_log(self, expr):
        return f"ln({self._print(expr.args[0])})"

    def _print_exp(self, expr):
        return f"exp({self._print(expr.args[0])})"

    def _print_Max(self, expr):
        return f"max({', '.join(self._print(a) for a in expr.args)})"

    def _print_Min(self, expr):
        return f"min({', '.join(self._print(a) for a in expr.args)})"

    def _print_Piecewise(self, expr):
        parts = []
        for value, cond in expr.args:
            if cond is sp.true:
                parts.append(self._print(value))
            else:
                parts += [self._print(value), self._print(cond)]
        return f"piecewise({', '.join(parts)})"

    def _print_Relational(self, expr):
        return f"({self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)})"

    def _print_And(self, expr):
        return "(" + " && ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " || ".join(self._print(a) for a in expr.args) + ")"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return f"({expr.p}/{expr.q})"

    def _print_Integer(self, expr):
        return str(int(expr))


def formula(expr: sp.Expr, origin: float = 0.0) -> str:
    return _FormulaPrinter(origin).doprint(sp.sympify(expr))


ORIGIN_NOTE = "pkpd_cart time origin:"


def _math(libsbml, text: str, where: str):
    node = libsbml.parseL3Formula(text)
    if node is None:
        raise ModelDefinitionError(
            f"SBML export: cannot write {where}: {libsbml.getLastParseL3Error()}"
        )
    return node


def _check(code: int, what: str) -> None:
    if code not in (0, None):
        raise ModelDefinitionError(f"SBML export: libsbml refused {what} (code {code})")


def _note(element, unit: str, description: str) -> None:
    text = " ".join(x for x in (f"unit: {unit}" if unit else "", description) if x)
    if text:
        element.setNotes(f'<body xmlns="http://www.w3.org/1999/xhtml"><p>{_xml(text)}</p></body>')


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _time_event(libsbml, m, event_id: str, at: str, variable: str, value: str) -> None:
    """An event ``time >= at: variable = value`` (persistent, values at trigger time)."""
    ev = m.createEvent()
    ev.setId(event_id)
    ev.setUseValuesFromTriggerTime(True)
    trig = ev.createTrigger()
    trig.setInitialValue(False)
    trig.setPersistent(True)
    trig.setMath(_math(libsbml, f"time >= {at}", f"event {event_id}"))
    ea = ev.createEventAssignment()
    ea.setVariable(variable)
    ea.setMath(_math(libsbml, value, f"event {event_id}"))


def to_sbml(model: Model, path: str | Path | None = None, doses: list[Dose] = ()) -> str:
    """Write ``model`` (and optional ``doses`` as events) as SBML L3V2; returns the text.

    SBML tools start at time 0, so SBML time is model time minus ``model.start_time`` (the
    origin is recorded in the model's notes and undone by :func:`from_sbml`).
    """
    libsbml = _libsbml()
    origin = float(model.start_time)

    def fml(expr):
        return formula(expr, origin)

    doc = libsbml.SBMLDocument(3, 2)
    m = doc.createModel()
    m.setId(model.name)
    m.setName(model.description or model.name)
    _note(
        m,
        "",
        f"{model.description} Reference: {model.reference}. Exported by pkpd_cart; "
        f"time unit {model.time_unit}; SBML time 0 is model time {origin!r}. "
        f"{ORIGIN_NOTE} {origin!r} ;",
    )
    if model.time_unit == "d":
        ud = m.createUnitDefinition()
        ud.setId("day")
        u = ud.createUnit()
        u.setKind(libsbml.UNIT_KIND_SECOND)
        u.setExponent(1)
        u.setScale(0)
        u.setMultiplier(86400)
        m.setTimeUnits("day")

    def parameter(pid, value, constant, unit, description):
        p = m.createParameter()
        _check(p.setId(pid), f"id {pid!r}")
        if value is not None:
            p.setValue(float(value))
        p.setConstant(constant)
        _note(p, unit, description)
        if unit == "1":
            p.setUnits("dimensionless")
        return p

    for p in model.parameters.values():
        parameter(
            p.name,
            p.value,
            True,
            p.unit,
            f"{p.description} Source: {p.source}. "
            f"Bounds [{p.lower:g}, {p.upper:g}], {p.scale} scale.",
        )
    for sw in model.switches.values():
        parameter(sw.name, 0.0, False, "1", f"switch: 1 from t = {fml(sw.at)}")
        ia = m.createInitialAssignment()
        ia.setSymbol(sw.name)
        ia.setMath(
            _math(
                libsbml,
                f"piecewise(1, {fml(sw.at)} <= {model.start_time!r}, 0)",
                f"the initial value of switch {sw.name}",
            )
        )
        _time_event(libsbml, m, f"event_{sw.name}", f"{fml(sw.at)} - ({origin!r})", sw.name, "1")
    for e in model.expressions.values():
        parameter(e.name, None, False, e.unit, e.description)
        rule = m.createAssignmentRule()
        rule.setVariable(e.name)
        rule.setMath(_math(libsbml, fml(e.expr), f"expression {e.name}"))
    rhs = model.rhs(expand=False)
    for s in model.states.values():
        parameter(
            s.name, None, False, s.unit, s.description + (" (dose target)" if s.dose_target else "")
        )
        ia = m.createInitialAssignment()
        ia.setSymbol(s.name)
        ia.setMath(_math(libsbml, fml(s.initial), f"the initial value of {s.name}"))
        rule = m.createRateRule()
        rule.setVariable(s.name)
        rule.setMath(_math(libsbml, fml(rhs[s.name]), f"the equation of {s.name}"))
    for o in model.observables.values():
        parameter(o.name, None, False, o.unit, "observable: " + o.description)
        rule = m.createAssignmentRule()
        rule.setVariable(o.name)
        rule.setMath(_math(libsbml, fml(o.expr), f"observable {o.name}"))
    for i, d in enumerate(sorted(doses, key=lambda d: d.time)):
        if d.target not in model.states:
            raise ModelDefinitionError(f"SBML export: dose target '{d.target}' is not a state")
        _time_event(
            libsbml,
            m,
            f"dose_{i + 1}",
            repr(d.time - origin),
            d.target,
            f"{d.target} + {d.amount!r}",
        )
    text = libsbml.writeSBMLToString(doc)
    if path is not None:
        Path(path).write_text(text)
    return text


# -- import ----------------------------------------------------------------------------
def _read(path_or_text: str | Path):
    libsbml = _libsbml()
    text = str(path_or_text)
    if text.lstrip().startswith("<"):
        doc = libsbml.readSBMLFromString(text)
        where = "<string>"
    else:
        if not Path(text).is_file():
            raise ModelDefinitionError(f"SBML file '{text}' does not exist")
        doc = libsbml.readSBMLFromFile(text)
        where = text
    errors = [
        doc.getError(i)
        for i in range(doc.getNumErrors())
        if doc.getError(i).getSeverity() >= libsbml.LIBSBML_SEV_ERROR
    ]
    if errors:
        e = errors[0]
        raise ModelDefinitionError(
            f"{where}: line {e.getLine()}: invalid SBML: {e.getShortMessage()}"
        )
    if doc.getModel() is None:
        raise ModelDefinitionError(f"{where}: no model in the SBML document")
    return libsbml, doc.getModel(), where


def _origin(m) -> float:
    notes = m.getNotesString() if m.isSetNotes() else ""
    if ORIGIN_NOTE in notes:
        try:
            return float(notes.split(ORIGIN_NOTE, 1)[1].split(";", 1)[0].strip())
        except ValueError:
            return 0.0
    return 0.0


def _sympify(libsbml, origin: float, node, where: str, element: str) -> sp.Expr:
    """sympy expression of an SBML math node; SBML ``time`` is model time minus ``origin``."""
    if node is None:
        raise ModelDefinitionError(f"{where}: {element} has no math")
    text = libsbml.formulaToL3String(node)
    for bad in ("delay(", "rateOf(", "csymbol"):
        if bad in text:
            raise ModelDefinitionError(
                f"{where}: {element} uses {bad.rstrip('(')}, which pkpd_cart cannot represent"
            )
    text = text.replace("&&", "&").replace("||", "|")
    names = {
        "time": t - origin,
        "ln": sp.log,
        "log10": lambda x: sp.log(x, 10),
        "pow": sp.Pow,
        "max": sp.Max,
        "min": sp.Min,
        "piecewise": _piecewise,
        "exp": sp.exp,
        "sqrt": sp.sqrt,
        "abs": sp.Abs,
        "true": sp.true,
        "false": sp.false,
        "pi": sp.pi,
        "exponentiale": sp.E,
    }
    local = dict(names)
    for ident in set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)):
        if ident not in local:
            local[ident] = sp.Symbol(ident, real=True)  # the ModelBuilder's symbols
    try:
        expr = sp.sympify(text.replace("^", "**"), locals=local)
    except (sp.SympifyError, TypeError, SyntaxError) as exc:
        raise ModelDefinitionError(
            f"{where}: {element}: cannot read its math {text!r} ({type(exc).__name__})"
        ) from None
    return expr


def _piecewise(*args):
    pairs = [(args[i], args[i + 1]) for i in range(0, len(args) - 1, 2)]
    if len(args) % 2:
        pairs.append((args[-1], True))
    return sp.Piecewise(*pairs)


def _unit_of(element) -> str:
    notes = element.getNotesString() if element.isSetNotes() else ""
    if "unit: " in notes:
        return notes.split("unit: ", 1)[1].split(" ", 1)[0].split("<", 1)[0]
    return "1"


def _event_time(libsbml, origin: float, ev, where) -> sp.Expr:
    """Model time ``T`` of an event triggered by ``time >= T`` (anything else is refused)."""
    trig = ev.getTrigger()
    node = trig.getMath() if trig is not None else None
    if node is None:
        raise ModelDefinitionError(f"{where}: event '{ev.getId()}' has no trigger")
    if ev.isSetDelay():
        raise ModelDefinitionError(
            f"{where}: event '{ev.getId()}' has a delay, which pkpd_cart cannot represent"
        )
    if ev.isSetPriority():
        raise ModelDefinitionError(
            f"{where}: event '{ev.getId()}' has a priority, which pkpd_cart cannot represent"
        )
    if (
        node.getType() in (libsbml.AST_RELATIONAL_GEQ, libsbml.AST_RELATIONAL_GT)
        and node.getNumChildren() == 2
        and node.getChild(0).getType() == libsbml.AST_NAME_TIME
    ):
        # SBML time = model time - origin
        return _sympify(libsbml, origin, node.getChild(1), where, f"event '{ev.getId()}'") + origin
    raise ModelDefinitionError(
        f"{where}: event '{ev.getId()}': only triggers 'time >= "
        f"expression' are supported, not "
        f"'{libsbml.formulaToL3String(node)}'"
    )


def from_sbml(path_or_text: str | Path, name: str | None = None) -> Model:
    """Read an SBML model into a :class:`Model` (doses: :func:`sbml_doses`)."""
    libsbml, m, where = _read(path_or_text)
    return _from_sbml(libsbml, _origin(m), m, where, name)


def _from_sbml(libsbml, origin: float, m, where: str, name: str | None) -> Model:
    for i in range(m.getNumRules()):
        rule = m.getRule(i)
        if rule.isAlgebraic():
            raise ModelDefinitionError(
                f"{where}: algebraic rule {i + 1} cannot be represented (pkpd_cart models are ODEs)"
            )
    if m.getNumConstraints():
        raise ModelDefinitionError(
            f"{where}: constraint '{m.getConstraint(0).getId()}' cannot be represented"
        )
    b = ModelBuilder(
        name or m.getId() or "sbml_model",
        description=m.getName() or "",
        reference=f"imported from SBML {where}",
        start_time=origin,
    )
    rate_rules = {
        m.getRule(i).getVariable(): m.getRule(i)
        for i in range(m.getNumRules())
        if m.getRule(i).isRate()
    }
    assign_rules = {
        m.getRule(i).getVariable(): m.getRule(i)
        for i in range(m.getNumRules())
        if m.getRule(i).isAssignment()
    }
    initial = {
        m.getInitialAssignment(i).getSymbol(): m.getInitialAssignment(i)
        for i in range(m.getNumInitialAssignments())
    }
    switch_events, doses = _events(libsbml, origin, m, where, set(rate_rules))
    dose_events = {d.target for d in doses}
    species_rates: dict[str, sp.Expr] = {}
    for i in range(m.getNumReactions()):
        r = m.getReaction(i)
        if r.isSetFast() and r.getFast():
            raise ModelDefinitionError(f"{where}: reaction '{r.getId()}' is fast")
        law = r.getKineticLaw()
        if law is None:
            raise ModelDefinitionError(f"{where}: reaction '{r.getId()}' has no kinetic law")
        if law.getNumLocalParameters():
            raise ModelDefinitionError(
                f"{where}: reaction '{r.getId()}' has local parameters "
                "(promote them to global parameters)"
            )
        rate = _sympify(libsbml, origin, law.getMath(), where, f"reaction '{r.getId()}'")
        for refs, sign in ((r.getListOfReactants(), -1), (r.getListOfProducts(), 1)):
            for ref in refs:
                if (
                    ref.isSetStoichiometryMath()
                    if hasattr(ref, "isSetStoichiometryMath")
                    else False
                ):
                    raise ModelDefinitionError(
                        f"{where}: reaction '{r.getId()}' has stoichiometry math"
                    )
                stoich = ref.getStoichiometry() if ref.isSetStoichiometry() else 1.0
                species_rates[ref.getSpecies()] = (
                    species_rates.get(ref.getSpecies(), sp.Integer(0)) + sign * stoich * rate
                )
    # parameters and compartments that are constant
    constants = []
    init_exprs: dict[str, sp.Expr] = {}
    for coll in (m.getListOfParameters(), m.getListOfCompartments()):
        for p in coll:
            pid = p.getId()
            if (
                pid in rate_rules
                or pid in assign_rules
                or pid in switch_events
                or pid in dose_events
            ):
                continue
            if pid in initial:  # a constant set by an initial assignment: an expression
                init_exprs[pid] = _sympify(
                    libsbml, origin, initial[pid].getMath(), where, f"initialAssignment of '{pid}'"
                )
                continue
            if isinstance(p, libsbml.Compartment):
                value = p.getSize() if p.isSetSize() else 1.0
            else:
                value = p.getValue() if p.isSetValue() else 0.0
            if not math.isfinite(value):
                raise ModelDefinitionError(f"{where}: parameter '{pid}' has no finite value")
            constants.append(pid)
            b.parameter(
                pid,
                float(value),
                _unit_of(p),
                lower=-math.inf,
                scale="linear",
                description=p.getName() or "",
                source=f"SBML {where}",
            )
    for sid, at in switch_events.items():
        b.switch(sid, at)
    # states: rate-rule variables and reaction species
    states = list(rate_rules)
    for s in m.getListOfSpecies():
        if s.getId() in species_rates or s.getId() in rate_rules or s.getId() in dose_events:
            if s.getId() not in states:
                states.append(s.getId())
        elif s.getId() not in assign_rules:
            b.parameter(
                s.getId(),
                float(
                    s.getInitialAmount() if s.isSetInitialAmount() else s.getInitialConcentration()
                ),
                "1",
                lower=-math.inf,
                scale="linear",
                source=f"SBML {where}",
            )
    for v in dose_events:
        if v not in states:
            states.append(v)
    for sid in states:
        element = m.getElementBySId(sid)
        if sid in initial:
            init = _sympify(
                libsbml, origin, initial[sid].getMath(), where, f"initialAssignment of '{sid}'"
            )
        elif isinstance(element, libsbml.Species):
            init = (
                element.getInitialAmount()
                if element.isSetInitialAmount()
                else element.getInitialConcentration()
            )
        else:
            init = element.getValue() if element is not None and element.isSetValue() else 0.0
        b.state(
            sid,
            _unit_of(element) if element is not None else "1",
            initial=init,
            dose_target=sid in dose_events,
        )
    # assignment rules: observables when no equation uses them, else expressions
    exprs = {
        v: _sympify(libsbml, origin, rule.getMath(), where, f"assignmentRule of '{v}'")
        for v, rule in assign_rules.items()
    }
    exprs.update(init_exprs)
    used: set[str] = set(init_exprs)
    for rule in rate_rules.values():
        used |= {str(s) for s in _sympify(libsbml, origin, rule.getMath(), where, "").free_symbols}
    for rate in species_rates.values():
        used |= {str(s) for s in rate.free_symbols}
    for e in exprs.values():
        used |= {str(s) for s in e.free_symbols}
    for at in switch_events.values():
        used |= {str(s) for s in at.free_symbols}
    for sid, ia in initial.items():
        used |= {
            str(s)
            for s in _sympify(
                libsbml, origin, ia.getMath(), where, f"initialAssignment of '{sid}'"
            ).free_symbols
        }
    for v in _dependency_order(exprs):
        if v in used:
            b.expression(v, exprs[v], _unit_of(m.getElementBySId(v)))
    for sid in states:
        if sid in rate_rules:
            b.add_term(
                sid,
                _sympify(libsbml, origin, rate_rules[sid].getMath(), where, f"rateRule of '{sid}'"),
            )
        if sid in species_rates:
            sp_el = m.getSpecies(sid)
            rate = species_rates[sid]
            if not sp_el.getHasOnlySubstanceUnits():
                rate = rate / sp.Symbol(sp_el.getCompartment(), real=True)
            b.add_term(sid, rate)
        if sid not in rate_rules and sid not in species_rates:
            b.add_term(sid, 0)
    for v, e in exprs.items():
        if v not in used:
            b.observable(v, e, _unit_of(m.getElementBySId(v)))
    return b.build()


def _dependency_order(exprs: dict[str, sp.Expr]) -> list[str]:
    order, seen = [], set()

    def visit(v):
        if v in seen:
            return
        seen.add(v)
        for s in exprs[v].free_symbols:
            if str(s) in exprs:
                visit(str(s))
        order.append(v)

    for v in exprs:
        visit(v)
    return order


def sbml_doses(path_or_text: str | Path) -> list[Dose]:
    """The dose events (``time >= T: x = x + A``) of an SBML file, as :class:`Dose`s."""
    libsbml, m, where = _read(path_or_text)
    rate_rules = {
        m.getRule(i).getVariable() for i in range(m.getNumRules()) if m.getRule(i).isRate()
    }
    return _events(libsbml, _origin(m), m, where, rate_rules)[1]


def _events(libsbml, origin: float, m, where: str, rate_rules: set[str]):
    """Classify the events: ``({switch parameter: time}, [Dose, ...])``.

    A switch sets a parameter without a rate rule to a constant at ``time >= T``; a dose
    adds a constant to a variable at a constant time. Anything else is refused in one line.
    """
    switches, doses = {}, []
    for i in range(m.getNumEvents()):
        ev = m.getEvent(i)
        at = _event_time(libsbml, origin, ev, where)
        if ev.getNumEventAssignments() != 1:
            raise ModelDefinitionError(
                f"{where}: event '{ev.getId()}' must assign exactly one variable"
            )
        ea = ev.getEventAssignment(0)
        value = _sympify(libsbml, origin, ea.getMath(), where, f"event '{ev.getId()}'")
        var = sp.Symbol(ea.getVariable(), real=True)
        if value.is_number and ea.getVariable() not in rate_rules:
            switches[ea.getVariable()] = at
        elif (value - var).is_number and at.is_number:
            doses.append(Dose(float(at), float(value - var), ea.getVariable()))
        else:
            raise ModelDefinitionError(
                f"{where}: event '{ev.getId()}' is neither a switch "
                "(set a parameter to a constant) nor a dose (add a "
                "constant to a variable)"
            )
    return switches, doses
