"""Symbolic model definitions: parameters, states, equations, observables.

A model is written with a :class:`ModelBuilder` (mutable, used by mechanism blocks) and
frozen into a :class:`Model` (immutable, validated) by :meth:`ModelBuilder.build`::

    m = ModelBuilder("one_compartment", description="IV bolus, linear elimination")
    k = m.parameter("k", 0.1, unit="1/d", lower=0, source="example")
    A = m.state("A", unit="mg", dose_target=True)
    m.add_term(A, -k * A, label="elimination")
    m.observable("A_obs", A, unit="mg")
    model = m.build()

Every name becomes a real-valued sympy ``Symbol``; equations are ordinary sympy
expressions, so Hill functions, fractional powers, ``sympy.Max(0, x)`` and
``sympy.Piecewise`` all work. A *switch* is a 0/1 symbol that flips from 0 to 1 at a
parameter-dependent time (Stein 2019's Tmax); the simulator restarts integration there.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import keyword
import math
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import sympy as sp

from pkpd_cart.errors import ModelDefinitionError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from pkpd_cart.compile import CompiledModel
    from pkpd_cart.simulation.solver import Dose, SolverOptions

#: The independent variable of every model (time, in the model's time unit).
t = sp.Symbol("t", real=True)

Scale = Literal["linear", "log"]


def hill(x: sp.Expr, ec50: sp.Expr, n: sp.Expr = 1) -> sp.Expr:
    """Hill function ``x**n / (ec50**n + x**n)`` (dimensionless, 0..1)."""
    return x**n / (ec50**n + x**n)


def rebuild(
    expr: sp.Expr,
    mapping: Mapping[sp.Basic, sp.Basic],
    transform: Callable[[sp.Basic], sp.Basic] | None = None,
) -> sp.Expr:
    """``expr.xreplace(mapping)``, then ``transform`` applied to every rebuilt node from the
    leaves up (as ``expr.replace``), with ``Max`` and ``Min`` rebuilt unevaluated.

    Building a ``Max`` or ``Min``, sympy compares every pair of its arguments (assumption
    queries, ``factor_terms``) to drop redundant ones: rebuilding the positive parts of
    ``sle_cart`` took a quarter of its code generation. The unevaluated result is the same
    function of its arguments. Shared subexpressions are rebuilt once.
    """
    done: dict[sp.Basic, sp.Basic] = {}

    def walk(e: sp.Basic) -> sp.Basic:
        if e in mapping:
            return mapping[e]
        if e in done:
            return done[e]
        args = tuple(walk(a) for a in e.args)
        if args == e.args:
            out = e
        elif isinstance(e, (sp.Max, sp.Min)):
            out = e.func(*args, evaluate=False)
        else:
            out = e.func(*args)
        if transform is not None:
            out = transform(out)
        done[e] = out
        return out

    return walk(sp.sympify(expr))


def positive_part(x: sp.Expr) -> sp.Expr:
    """``max(0, x)``, the zero-limit used by Kirouac et al. 2023."""
    return sp.Max(0, x)


def switched(switch: sp.Symbol, before: sp.Expr, after: sp.Expr) -> sp.Expr:
    """``before`` until the switch time, ``after`` from then on."""
    return before * (1 - switch) + after * switch


@dataclass(frozen=True)
class Parameter:
    """A model parameter.

    Attributes
    ----------
    name : str
    value : float
        Default (typical) value, in ``unit``.
    unit : str
        Unit as text, e.g. ``"1/d"``, ``"cells"``; ``"1"`` for dimensionless.
    lower, upper : float
        Bounds (inclusive) used for validation and fitting.
    scale : {"linear", "log"}
        Scale on which the parameter is estimated; ``log`` for positive parameters.
    description, source : str
        Meaning, and the literature source (paper, table/equation) or ``"assumption"``.
    """

    name: str
    value: float
    unit: str = "1"
    lower: float = -math.inf
    upper: float = math.inf
    scale: Scale = "linear"
    description: str = ""
    source: str = ""

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, real=True)


@dataclass(frozen=True)
class State:
    """A state variable (ODE compartment) with its initial condition.

    ``initial`` is a sympy expression of parameters (e.g. a pre-treatment steady state).
    ``dose_target`` marks states that may receive bolus doses.
    """

    name: str
    unit: str = "1"
    initial: sp.Expr = sp.Integer(0)
    description: str = ""
    dose_target: bool = False

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, real=True)


@dataclass(frozen=True)
class Expression:
    """A named intermediate quantity (e.g. ``rho = log(foldx)/Tmax``)."""

    name: str
    expr: sp.Expr
    unit: str = "1"
    description: str = ""

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, real=True)


@dataclass(frozen=True)
class Observable:
    """An output: an expression of states and parameters, in clinical units."""

    name: str
    expr: sp.Expr
    unit: str = "1"
    description: str = ""

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, real=True)


@dataclass(frozen=True)
class Switch:
    """A 0/1 indicator that becomes 1 at time ``at`` (an expression of parameters)."""

    name: str
    at: sp.Expr
    description: str = ""

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, real=True)


@dataclass(frozen=True)
class Event:
    """A discrete change of states when ``trigger`` goes from false to true (SBML events).

    ``trigger`` is a sympy relation (or And/Or/Not of relations) of time, states,
    parameters, switches and expressions. ``assignments`` are ``(state, new value)``
    pairs, all evaluated before any is applied. ``initial_value`` is the trigger's value
    just before the start: with ``False`` an event whose trigger is true at the start
    fires there. A trigger ``t >= T`` (or ``t > T``) with ``T`` a function of the
    parameters is a *time event*: it fires at ``T`` without root-finding.

    When several events fire at the same time they run in declaration order; the values
    of an event with ``values_at_trigger`` are computed before any of them runs (else just
    before it runs), and an event that is not ``persistent`` is dropped if an earlier one
    made its trigger false (SBML's ``useValuesFromTriggerTime`` and ``persistent``).
    With a ``delay`` (time units, evaluated when the trigger rises) the assignments run
    that much later; among executions due at the same time the highest ``priority``
    (evaluated then) goes first. Doses at the same time come before events, so a trigger
    sees the dosed states. Sensitivities across delayed events are refused.
    """

    name: str
    trigger: sp.Basic
    assignments: tuple[tuple[str, sp.Expr], ...]
    initial_value: bool = True
    description: str = ""
    persistent: bool = True
    values_at_trigger: bool = True
    delay: sp.Expr | None = None
    priority: sp.Expr | None = None

    @property
    def time(self) -> sp.Expr | None:
        """``T`` of a time event, else None."""
        trig = self.trigger
        if isinstance(trig, (sp.GreaterThan, sp.StrictGreaterThan)):
            lhs, rhs = trig.lhs, trig.rhs
        elif isinstance(trig, (sp.LessThan, sp.StrictLessThan)):
            lhs, rhs = trig.rhs, trig.lhs
        else:
            return None
        if lhs == t and t not in rhs.free_symbols:
            return rhs
        return None


@dataclass(frozen=True)
class Term:
    """One additive term of a state's derivative, with an optional label (for docs)."""

    expr: sp.Expr
    label: str = ""
    flow_to: str | None = None  # set when the term is the outflow half of a flow


def _check_name(model: str, kind: str, name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ModelDefinitionError(
            f"model '{model}': {kind} name {name!r} is not a valid identifier"
        )
    if name == "t":
        raise ModelDefinitionError(f"model '{model}': {kind} name 't' is reserved for time")


def _validate_parameter(model: str, p: Parameter) -> None:
    for attr in ("value", "lower", "upper"):
        v = getattr(p, attr)
        if not isinstance(v, (int, float, np.floating, np.integer)):
            raise ModelDefinitionError(
                f"model '{model}': parameter '{p.name}' {attr} {v!r} is not a number"
            )
    if not math.isfinite(p.value):
        raise ModelDefinitionError(
            f"model '{model}': parameter '{p.name}' value {p.value} is not finite"
        )
    if math.isnan(p.lower) or math.isnan(p.upper) or not p.lower < p.upper:
        raise ModelDefinitionError(
            f"model '{model}': parameter '{p.name}' bounds [{p.lower}, {p.upper}] are not "
            "an interval with lower < upper"
        )
    if not p.lower <= p.value <= p.upper:
        raise ModelDefinitionError(
            f"model '{model}': parameter '{p.name}' value {p.value:g} is outside its bounds "
            f"[{p.lower:g}, {p.upper:g}]"
        )
    if p.scale not in ("linear", "log"):
        raise ModelDefinitionError(
            f"model '{model}': parameter '{p.name}' scale {p.scale!r} is not 'linear' or 'log'"
        )
    if p.scale == "log" and p.lower < 0:
        raise ModelDefinitionError(
            f"model '{model}': parameter '{p.name}' has log scale but lower bound {p.lower:g} < 0"
        )


class ModelBuilder:
    """Mutable model under construction; mechanism blocks add to it, :meth:`build` freezes it.

    Parameters
    ----------
    name : str
        Model name (used in every error message).
    description, reference : str
        What the model is, and its citation.
    time_unit : str
        Unit of the independent variable ``t`` (default ``"d"``).
    start_time : float
        Where simulations start by default (e.g. -6 d, before lymphodepletion, for a model
        whose initial condition is the pre-treatment steady state). Default 0.
    """

    def __init__(
        self,
        name: str,
        description: str = "",
        reference: str = "",
        time_unit: str = "d",
        start_time: float = 0.0,
    ):
        _check_name(name, "model", name)
        self.name = name
        self.description = description
        self.reference = reference
        self.time_unit = time_unit
        self.start_time = float(start_time)
        self.t = t
        self._parameters: dict[str, Parameter] = {}
        self._states: dict[str, State] = {}
        self._expressions: dict[str, Expression] = {}
        self._observables: dict[str, Observable] = {}
        self._switches: dict[str, Switch] = {}
        self._events: dict[str, Event] = {}
        self._terms: dict[str, list[Term]] = {}
        self._parameter_sets: dict[str, dict[str, float]] = {}
        self._parameter_set_notes: dict[str, str] = {}
        self.notes: list[str] = []

    # -- declarations ------------------------------------------------------------------
    def _claim(self, kind: str, name: str) -> None:
        _check_name(self.name, kind, name)
        for other_kind, table in (
            ("parameter", self._parameters),
            ("state", self._states),
            ("expression", self._expressions),
            ("observable", self._observables),
            ("switch", self._switches),
            ("event", self._events),
        ):
            if name in table:
                raise ModelDefinitionError(
                    f"model '{self.name}': duplicate name '{name}' "
                    f"({kind} clashes with an existing {other_kind})"
                )

    def parameter(
        self,
        name: str,
        value: float,
        unit: str = "1",
        lower: float | None = None,
        upper: float = math.inf,
        scale: Scale | None = None,
        description: str = "",
        source: str = "",
    ) -> sp.Symbol:
        """Declare a parameter and return its symbol.

        ``lower`` defaults to 0 for positive values (and ``-inf`` otherwise); ``scale``
        defaults to ``"log"`` when the parameter is positive with a non-negative lower bound.
        """
        self._claim("parameter", name)
        if lower is None:
            lower = 0.0 if (isinstance(value, (int, float)) and value > 0) else -math.inf
        if scale is None:
            scale = (
                "log"
                if (lower >= 0 and isinstance(value, (int, float)) and value > 0)
                else ("linear")
            )
        p = Parameter(name, value, unit, lower, upper, scale, description, source)
        _validate_parameter(self.name, p)
        p = dataclasses.replace(p, value=float(value), lower=float(lower), upper=float(upper))
        self._parameters[name] = p
        return p.symbol

    def state(
        self,
        name: str,
        unit: str = "1",
        initial: sp.Expr | float = 0,
        description: str = "",
        dose_target: bool = False,
    ) -> sp.Symbol:
        """Declare a state variable and return its symbol."""
        self._claim("state", name)
        try:
            init = sp.sympify(initial)
        except (sp.SympifyError, TypeError) as exc:
            raise ModelDefinitionError(
                f"model '{self.name}': initial value of state '{name}' is not an expression: {exc}"
            ) from None
        self._states[name] = State(name, unit, init, description, dose_target)
        self._terms.setdefault(name, [])
        return sp.Symbol(name, real=True)

    def expression(
        self, name: str, expr: sp.Expr | float, unit: str = "1", description: str = ""
    ) -> sp.Symbol:
        """Declare a named intermediate expression and return its symbol."""
        self._claim("expression", name)
        self._expressions[name] = Expression(name, sp.sympify(expr), unit, description)
        return sp.Symbol(name, real=True)

    def switch(self, name: str, at: sp.Expr | float, description: str = "") -> sp.Symbol:
        """Declare a 0/1 switch that turns on at time ``at`` and return its symbol."""
        self._claim("switch", name)
        self._switches[name] = Switch(name, sp.sympify(at), description)
        return sp.Symbol(name, real=True)

    def event(
        self,
        name: str,
        trigger: sp.Basic,
        assignments: Mapping[str, sp.Expr | float],
        initial_value: bool = True,
        description: str = "",
        persistent: bool = True,
        values_at_trigger: bool = True,
        delay: sp.Expr | float | None = None,
        priority: sp.Expr | float | None = None,
    ) -> None:
        """Declare an :class:`Event`: when ``trigger`` becomes true, set each state of
        ``assignments`` to its value (all computed first, then applied)."""
        self._claim("event", name)
        trigger = sp.sympify(trigger)
        if not isinstance(trigger, (sp.core.relational.Relational, sp.logic.boolalg.Boolean)):
            raise ModelDefinitionError(
                f"model '{self.name}': event '{name}': trigger {trigger} is not a condition"
            )
        pairs = []
        for state, value in assignments.items():
            state = self._state_name(state)
            pairs.append((state, sp.sympify(value)))
        self._events[name] = Event(
            name, trigger, tuple(pairs), bool(initial_value), description,
            bool(persistent), bool(values_at_trigger),
            None if delay is None else sp.sympify(delay),
            None if priority is None else sp.sympify(priority),
        )  # fmt: skip

    def observable(
        self, name: str, expr: sp.Expr | float, unit: str = "1", description: str = ""
    ) -> sp.Symbol:
        """Declare an observable (model output) and return its symbol."""
        self._claim("observable", name)
        self._observables[name] = Observable(name, sp.sympify(expr), unit, description)
        return sp.Symbol(name, real=True)

    # -- equations ---------------------------------------------------------------------
    def _state_name(self, state: sp.Symbol | str) -> str:
        name = state if isinstance(state, str) else str(state)
        if name not in self._states:
            raise ModelDefinitionError(
                f"model '{self.name}': cannot add a term to '{name}', which is not a state"
            )
        return name

    def add_term(self, state: sp.Symbol | str, expr: sp.Expr | float, label: str = "") -> None:
        """Add ``expr`` to ``d(state)/dt``. Several blocks may add to the same state."""
        self._terms[self._state_name(state)].append(Term(sp.sympify(expr), label))

    def flow(
        self,
        source: sp.Symbol | str,
        target: sp.Symbol | str,
        rate: sp.Expr,
        label: str = "",
    ) -> None:
        """A mass flow ``rate`` (amount/time) out of ``source`` into ``target``."""
        src, dst = self._state_name(source), self._state_name(target)
        self._terms[src].append(Term(-sp.sympify(rate), label, flow_to=dst))
        self._terms[dst].append(Term(sp.sympify(rate), label))

    def set_initial(self, state: sp.Symbol | str, initial: sp.Expr | float) -> None:
        """Replace the initial condition of a declared state."""
        name = self._state_name(state)
        self._states[name] = dataclasses.replace(self._states[name], initial=sp.sympify(initial))

    def parameter_set(self, name: str, values: Mapping[str, float], note: str = "") -> None:
        """Store a named parameter set (only the values that differ need be given)."""
        self._parameter_sets[name] = {k: float(v) for k, v in values.items()}
        self._parameter_set_notes[name] = note

    def symbol(self, name: str) -> sp.Symbol:
        """Symbol of an already declared quantity (so a block can use another's names)."""
        for table in (self._parameters, self._states, self._expressions, self._switches):
            if name in table:
                return sp.Symbol(name, real=True)
        raise ModelDefinitionError(f"model '{self.name}': no quantity named '{name}' declared")

    def has(self, name: str) -> bool:
        """True when ``name`` is declared (parameter, state, expression, switch, observable)."""
        tables = (
            self._parameters,
            self._states,
            self._expressions,
            self._switches,
            self._observables,
        )
        return any(name in table for table in tables)

    # -- freezing ----------------------------------------------------------------------
    def build(self) -> Model:
        """Validate everything at once and return the immutable :class:`Model`."""
        m = self.name
        known = {t} | {sp.Symbol(n, real=True) for n in self._parameters}
        known |= {sp.Symbol(n, real=True) for n in self._states}
        known |= {sp.Symbol(n, real=True) for n in self._switches}
        expr_syms = {sp.Symbol(n, real=True) for n in self._expressions}

        def check(where: str, expr: sp.Expr, allowed: set) -> None:
            unknown = sorted(str(s) for s in expr.free_symbols - allowed)
            if unknown:
                raise ModelDefinitionError(
                    f"model '{m}': undefined symbol(s) {', '.join(unknown)} in {where}"
                )

        param_syms = {sp.Symbol(n, real=True) for n in self._parameters}
        seen: set = set()
        for e in self._expressions.values():  # expressions may use earlier expressions
            check(f"expression '{e.name}'", e.expr, known | seen)
            seen.add(e.symbol)
        for s in self._states.values():
            check(f"initial value of state '{s.name}'", s.initial, param_syms | expr_syms)
            if not self._terms[s.name]:
                raise ModelDefinitionError(
                    f"model '{m}': state '{s.name}' has no equation (add a term, or 0 for a "
                    "constant state)"
                )
            for term in self._terms[s.name]:
                check(f"the equation of state '{s.name}'", term.expr, known | expr_syms)
        for sw in self._switches.values():
            check(f"the time of switch '{sw.name}'", sw.at, param_syms | expr_syms)
        for o in self._observables.values():
            check(f"observable '{o.name}'", o.expr, known | expr_syms)
        for ev in self._events.values():
            check(f"the trigger of event '{ev.name}'", ev.trigger, known | expr_syms)
            for state, value in ev.assignments:
                check(f"event '{ev.name}' (assignment to {state})", value, known | expr_syms)
            for what in ("delay", "priority"):
                if getattr(ev, what) is not None:
                    check(f"the {what} of event '{ev.name}'", getattr(ev, what), known | expr_syms)
        for set_name, values in self._parameter_sets.items():
            for k, v in values.items():
                if k not in self._parameters:
                    raise ModelDefinitionError(
                        f"model '{m}': parameter set '{set_name}' names unknown parameter '{k}'"
                    )
                _validate_parameter(
                    m,
                    dataclasses.replace(
                        self._parameters[k], value=v, name=f"{k}' in set '{set_name}"
                    ),
                )
        defaults = {k: p.value for k, p in self._parameters.items()}
        sets = tuple(
            (k, tuple({**defaults, **v}.values())) for k, v in self._parameter_sets.items()
        )
        return Model(
            name=m,
            description=self.description,
            reference=self.reference,
            time_unit=self.time_unit,
            start_time=self.start_time,
            parameters=types.MappingProxyType(dict(self._parameters)),
            states=types.MappingProxyType(dict(self._states)),
            expressions=types.MappingProxyType(dict(self._expressions)),
            observables=types.MappingProxyType(dict(self._observables)),
            switches=types.MappingProxyType(dict(self._switches)),
            terms=types.MappingProxyType({k: tuple(v) for k, v in self._terms.items()}),
            parameter_set_rows=sets,
            parameter_set_notes=types.MappingProxyType(dict(self._parameter_set_notes)),
            notes=tuple(self.notes),
            events=tuple(self._events.values()),
        )


@dataclass(frozen=True, eq=False)
class Model:
    """An immutable, validated symbolic model. Build it with :class:`ModelBuilder`.

    Attributes
    ----------
    parameters : Mapping[str, Parameter]
    states : Mapping[str, State]
    expressions : Mapping[str, Expression]
    observables : Mapping[str, Observable]
    switches : Mapping[str, Switch]
    terms : Mapping[str, tuple[Term, ...]]
        The additive terms of each state's derivative.
    """

    name: str
    description: str
    reference: str
    time_unit: str
    start_time: float
    parameters: Mapping[str, Parameter]
    states: Mapping[str, State]
    expressions: Mapping[str, Expression]
    observables: Mapping[str, Observable]
    switches: Mapping[str, Switch]
    terms: Mapping[str, tuple[Term, ...]]
    # Named sets besides "default" (which is always the parameters' values): (set name,
    # values in parameter order); a DataFrame on request, so building and simulating a
    # model never needs pandas.
    parameter_set_rows: tuple[tuple[str, tuple[float, ...]], ...] = field(repr=False)
    parameter_set_notes: Mapping[str, str] = field(repr=False)
    notes: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()

    # -- pickling (for worker processes and Dask) ---------------------------------------
    _MAPPINGS = (
        "parameters",
        "states",
        "expressions",
        "observables",
        "switches",
        "terms",
        "parameter_set_notes",
    )

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_expression_substitutions", None)  # a cache, rebuilt on demand
        for name in self._MAPPINGS:
            state[name] = dict(state[name])
        return state

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            if name in self._MAPPINGS:
                value = types.MappingProxyType(dict(value))
            object.__setattr__(self, name, value)

    # -- symbolic views ----------------------------------------------------------------
    @property
    def parameter_sets(self) -> pd.DataFrame:
        """Named parameter sets, one row per set (``default`` first), one column per parameter."""
        import pandas as pd

        sets = self._sets()
        return pd.DataFrame(
            [list(values) for values in sets.values()],
            index=pd.Index(list(sets), name="set"),
            columns=list(self.parameters),
        )

    def _sets(self) -> dict[str, tuple[float, ...]]:
        """Every named set, ``default`` (the parameters' values) first."""
        return {"default": tuple(self.parameter_values.values()), **dict(self.parameter_set_rows)}

    @property
    def dose_targets(self) -> tuple[str, ...]:
        """Names of the states that accept bolus doses."""
        return tuple(s.name for s in self.states.values() if s.dose_target)

    def rhs(self, expand: bool = True) -> dict[str, sp.Expr]:
        """``d(state)/dt`` for every state, with named expressions substituted if ``expand``."""
        out = {name: sp.Add(*(term.expr for term in terms)) for name, terms in self.terms.items()}
        return {k: self.expand(v) for k, v in out.items()} if expand else out

    def expand(self, expr: sp.Expr) -> sp.Expr:
        """Substitute named expressions (recursively) into ``expr``."""
        return rebuild(expr, self._expression_substitutions)

    @functools.cached_property
    def _expression_substitutions(self) -> dict[sp.Symbol, sp.Expr]:
        # kept: code generation expands every observable, initial value and switch time
        subs: dict[sp.Symbol, sp.Expr] = {}
        for e in self.expressions.values():  # declared in dependency order
            subs[e.symbol] = rebuild(e.expr, subs)
        return subs

    @property
    def hash(self) -> str:
        """SHA-256 of the model's canonical symbolic content (not of its numbers' defaults)."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        for name, terms in self.terms.items():
            h.update(f"{name}:{sp.srepr(self.states[name].initial)}".encode())
            for term in terms:
                h.update(sp.srepr(term.expr).encode())
        for coll in (self.expressions, self.observables, self.switches):
            for k, v in coll.items():
                h.update(f"{k}={sp.srepr(getattr(v, 'expr', getattr(v, 'at', None)))}".encode())
        for ev in self.events:
            h.update(f"event {ev.name}:{sp.srepr(ev.trigger)}:{ev.assignments}".encode())
            h.update(f"{ev.delay}:{ev.priority}:{ev.persistent}:{ev.values_at_trigger}".encode())
        h.update(",".join(self.parameters).encode())
        return h.hexdigest()

    # -- numbers -----------------------------------------------------------------------
    @property
    def parameter_values(self) -> dict[str, float]:
        """Default parameter values, name to value."""
        return {k: p.value for k, p in self.parameters.items()}

    def resolve_parameters(
        self, params: str | Mapping[str, float] | pd.Series | None = None
    ) -> np.ndarray:
        """Turn ``None`` (defaults), a set name, or a partial mapping into a value vector."""
        values = self.parameter_values
        if params is None:
            pass
        elif isinstance(params, str):
            sets = self._sets()
            if params not in sets:
                known = ", ".join(sets)
                raise ModelDefinitionError(
                    f"model '{self.name}': no parameter set '{params}' (known: {known})"
                )
            values = dict(zip(self.parameters, sets[params]))
        else:
            for k, v in dict(params).items():
                if k not in values:
                    raise ModelDefinitionError(f"model '{self.name}': unknown parameter '{k}'")
                values[k] = self.checked_value(k, v)
        return np.array([values[k] for k in self.parameters], dtype=float)

    def checked_value(self, name: str, value: Any) -> float:
        """``value`` for parameter ``name`` as a float, refused outside the parameter's
        domain (not a number, not finite, not positive for a log-scale parameter, negative
        for one bounded below by 0); a value outside the plausible bounds only warns."""
        import warnings

        from pkpd_cart.errors import InputError, PkpdCartWarning

        p = self.parameters[name]
        where = f"model '{self.name}': parameter '{name}'"
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InputError(f"{where}: value {value!r} is not a number")
        x = float(value)
        if not math.isfinite(x):
            raise InputError(f"{where}: value {x} is not finite")
        if p.scale == "log" and x <= 0:
            raise InputError(f"{where}: value {x:g} is not positive (a log-scale parameter)")
        if p.lower >= 0 and x < 0:
            raise InputError(f"{where}: value {x:g} is negative (its lower bound is {p.lower:g})")
        if not p.lower <= x <= p.upper:
            warnings.warn(
                f"{where}: value {x:g} is outside its plausible bounds [{p.lower:g}, {p.upper:g}]",
                PkpdCartWarning,
                stacklevel=3,
            )
        return x

    def with_parameters(self, **values: float) -> Model:
        """A copy whose default parameter values are replaced (validated against bounds)."""
        params = dict(self.parameters)
        for k, v in values.items():
            if k not in params:
                raise ModelDefinitionError(f"model '{self.name}': unknown parameter '{k}'")
            p = dataclasses.replace(params[k], value=float(v))
            _validate_parameter(self.name, p)
            params[k] = p
        return dataclasses.replace(self, parameters=types.MappingProxyType(params))

    def with_parameter_set(self, name: str, values: Mapping[str, float], note: str = "") -> Model:
        """A copy with one more named parameter set (e.g. fitted estimates)."""
        row = self.parameter_values
        for k, v in values.items():
            if k not in row:
                raise ModelDefinitionError(f"model '{self.name}': unknown parameter '{k}'")
            _validate_parameter(
                self.name,
                dataclasses.replace(
                    self.parameters[k], value=float(v), name=f"{k}' in set '{name}"
                ),
            )
            row[k] = float(v)
        rows = dict(self.parameter_set_rows)
        rows[name] = tuple(row.values())  # a set of the same name is replaced
        notes = {**self.parameter_set_notes, name: note}
        return dataclasses.replace(
            self,
            parameter_set_rows=tuple(rows.items()),
            parameter_set_notes=types.MappingProxyType(notes),
        )

    # -- numerics (delegated) ----------------------------------------------------------
    def compile(self, backend: str | None = None) -> CompiledModel:
        """Generate and load the numeric functions (cached); see :mod:`pkpd_cart.compile`."""
        from pkpd_cart.compile import compile_model

        return compile_model(self, backend=backend)

    def simulate(
        self,
        times: Iterable[float],
        params: str | Mapping[str, float] | pd.Series | None = None,
        doses: Iterable[Dose] = (),
        initial: Mapping[str, float] | None = None,
        options: SolverOptions | None = None,
        sensitivities: bool | Iterable[str] = False,
        backend: str | None = None,
        t0: float | None = None,
    ) -> pd.DataFrame:
        """Simulate and return a DataFrame (``time``, one column per state and observable).

        Parameters
        ----------
        times : array of float
            Output times in the model's time unit (days for the shipped models).
        params : str, mapping or Series, optional
            A parameter-set name, or values overriding the defaults.
        doses : iterable of :class:`~pkpd_cart.Dose`
            Bolus doses (amount added to the target state at the dose time).
        initial : mapping, optional
            Initial values overriding the model's initial expressions.
        options : :class:`~pkpd_cart.SolverOptions`, optional
            Integrator and tolerances.
        sensitivities : bool or list of names
            If true, add columns ``d(<output>)/d(<name>)`` for every parameter (or for the
            given names; ``"<state>(0)"`` names an initial value).
        t0 : float, optional
            Start time; default ``min(model.start_time, first output time, first dose
            time)``. The initial condition applies at ``t0``.

        Raises
        ------
        SimulationError
            If the solver fails.
        """
        from pkpd_cart.simulation.solver import simulate

        return simulate(
            self,
            times,
            params=params,
            doses=doses,
            initial=initial,
            options=options,
            sensitivities=sensitivities,
            backend=backend,
            t0=t0,
        ).to_frame()

    def to_sbml(self, path: str | None = None, doses: Iterable[Dose] = ()) -> str:
        """Write the model (and optional doses as events) as SBML L3V2; see
        :mod:`pkpd_cart.io.sbml`. Returns the SBML text."""
        from pkpd_cart.io.sbml import to_sbml

        return to_sbml(self, path, list(doses))

    def simulate_batch(
        self,
        times: Iterable[float],
        parameter_sets: pd.DataFrame,
        doses: Iterable[Dose] = (),
        options: SolverOptions | None = None,
        backend: str | None = None,
    ) -> pd.DataFrame:
        """Simulate every row of ``parameter_sets``; long DataFrame with a ``set`` column."""
        from pkpd_cart.simulation.solver import simulate_batch

        return simulate_batch(
            self, times, parameter_sets, doses=doses, options=options, backend=backend
        )


def compose(builder: ModelBuilder, *blocks: Callable[[ModelBuilder], Any]) -> ModelBuilder:
    """Apply mechanism blocks (functions ``block(builder)``) in order; returns the builder."""
    for block in blocks:
        block(builder)
    return builder
