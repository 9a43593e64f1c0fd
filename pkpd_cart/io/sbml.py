"""SBML Level 3 Version 2 export and import (python-libsbml, the ``sbml`` extra).

Export (:func:`to_sbml`, also ``Model.to_sbml``): every state becomes a non-constant
``parameter`` with a ``rateRule`` (so no compartment or unit-of-amount semantics are
imposed), parameters become constant parameters, initial values become
``initialAssignment``s, named expressions and observables become ``assignmentRule``s,
switches become events ``time >= at`` that set a 0/1 parameter, and doses (if given) become
events that add the amount to their target, model events become SBML events (trigger,
assignments, initial value, persistence, delay, priority); an infusion becomes a rate parameter
``infusion_<target>`` added to its target's equation, raised and lowered by two events.
Units are written as text in each element's ``notes`` and, where SBML has them, as unit
definitions.

Import: :mod:`pkpd_cart.io.sbml_import` (``from_sbml``, ``read_sbml``).
"""

from __future__ import annotations

from pathlib import Path

import sympy as sp
from sympy.printing.str import StrPrinter

from pkpd_cart.errors import ModelDefinitionError
from pkpd_cart.model.modelling import Model, t
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


def _model_event(libsbml, m, ev, fml) -> None:
    """A pkpd_cart :class:`~pkpd_cart.model.modelling.Event` as an SBML event."""
    event = m.createEvent()
    _check(event.setId(ev.name), f"event id {ev.name!r}")
    event.setUseValuesFromTriggerTime(ev.values_at_trigger)
    trig = event.createTrigger()
    trig.setInitialValue(ev.initial_value)
    trig.setPersistent(ev.persistent)
    trig.setMath(_math(libsbml, fml(ev.trigger), f"the trigger of event {ev.name}"))
    if ev.delay is not None:
        event.createDelay().setMath(_math(libsbml, fml(ev.delay), f"the delay of {ev.name}"))
    if ev.priority is not None:
        event.createPriority().setMath(
            _math(libsbml, fml(ev.priority), f"the priority of {ev.name}")
        )
    for state, value in ev.assignments:
        ea = event.createEventAssignment()
        ea.setVariable(state)
        ea.setMath(_math(libsbml, fml(value), f"event {ev.name}"))


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
    doses = sorted(doses, key=lambda d: d.time)
    infused = sorted({d.target for d in doses if d.is_infusion})
    for target in infused:  # zero-order input: a rate that events raise and lower
        name = f"infusion_{target}"
        if name in model.parameters or name in model.states or name in model.expressions:
            raise ModelDefinitionError(f"SBML export: the name '{name}' is taken")
        parameter(name, 0.0, False, "", f"infusion rate into {target} (amount per time)")
        rhs[target] = rhs[target] + sp.Symbol(name, real=True)
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
    for i, d in enumerate(doses):
        if d.target not in model.states:
            raise ModelDefinitionError(f"SBML export: dose target '{d.target}' is not a state")
        if d.is_infusion:
            rate = f"infusion_{d.target}"
            for when, sign, tag in ((d.time, "+", "start"), (d.end, "-", "end")):
                _time_event(
                    libsbml, m, f"dose_{i + 1}_{tag}", repr(when - origin), rate,
                    f"{rate} {sign} {d.rate!r}",
                )  # fmt: skip
            continue
        _time_event(
            libsbml,
            m,
            f"dose_{i + 1}",
            repr(d.time - origin),
            d.target,
            f"{d.target} + {d.amount!r}",
        )
    for ev in model.events:  # after the dose events: at one time, doses come first
        _model_event(libsbml, m, ev, fml)
    text = libsbml.writeSBMLToString(doc)
    if path is not None:
        Path(path).write_text(text)
    return text
