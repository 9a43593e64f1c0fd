"""Model events (:class:`pkpd_cart.model.modelling.Event`) during a simulation.

Time events (``t >= T(p)``) fire at a known time, found before integrating; the other
triggers are located during integration by bisection of the trigger on the integrator's
dense output, to machine precision in time. At an event time ``tau`` the states jump to
``x+ = A(x-, p, t)`` and the forward sensitivities by the jump conditions
(Rozenvasser 1967; as in CVODES/AMICI)::

    S+ = A_x S- + A_p + (A_x f- + A_t - f+) dtau/dp
    dtau/dp = dT/dp                                  (time event)
    dtau/dp = -(g_x S- + g_p) / (g_x f- + g_t)       (state event, g = lhs - rhs of the
                                                      relation that changed)

Event functions are few and called once per event, so they are sympy ``lambdify``
functions (numpy), not compiled code.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from pkpd_cart.errors import InputError
from pkpd_cart.model.modelling import Event, Model, t

_RELATIONS = (
    sp.GreaterThan, sp.StrictGreaterThan, sp.LessThan, sp.StrictLessThan, sp.Eq, sp.Ne
)  # fmt: skip


class EventRuntime:
    """The events of one model with one parameter vector, for :func:`simulate`.

    ``pidx``: parameter index of each parameter sensitivity direction; ``n_init``: number
    of initial-value directions (they follow the parameter directions).
    """

    def __init__(self, model: Model, p: np.ndarray, pidx: np.ndarray, n_sens: int):
        self.model = model
        self.p = np.asarray(p, dtype=float)
        self.p_tuple = tuple(self.p.tolist())
        self.pidx = np.asarray(pidx, dtype=np.int64)
        self.n_sens = n_sens
        self.n = len(model.states)
        self.index = {name: i for i, name in enumerate(model.states)}
        self.functions = _functions(model)
        self.events = model.events
        f = self.functions
        self.state_events = [k for k in range(len(self.events)) if k not in f.time]
        self.times = {k: float(fn(*self.p)) for k, fn in f.time.items()}
        self.truth: dict[int, bool] = {}
        self.pending: list[tuple[float, int, int, np.ndarray | None]] = []
        self.rng = np.random.default_rng(20_221_124)  # ties of equal priority
        delayed = [ev.name for ev in self.events if ev.delay is not None]
        if n_sens and delayed:
            raise InputError(
                f"model '{model.name}': sensitivities across delayed events ({delayed[0]}) "
                "are not supported"
            )
        self.stepping = bool(self.state_events or delayed)

    # -- triggers ------------------------------------------------------------------------
    def _args(self, time: float, x: np.ndarray, sw: np.ndarray) -> tuple:
        return (time, *x[: self.n], *self.p_tuple, *sw)

    def trigger(self, k: int, time: float, x: np.ndarray, sw: np.ndarray) -> bool:
        return bool(self.functions.trigger[k](*self._args(time, x, sw)))

    def start(self) -> None:
        """Before t0 each trigger has its declared initial value (SBML ``initialValue``):
        one that is false there and true at t0 fires at t0 (see :meth:`process`)."""
        self.truth = {k: ev.initial_value for k, ev in enumerate(self.events)}
        self.pending = []

    def is_true(self, k: int, time: float, x: np.ndarray, sw: np.ndarray) -> bool:
        """Trigger k now; a time event counts as true from its time on (``t > T`` too)."""
        if k in self.times and time >= self.times[k]:
            return True
        return self.trigger(k, time, x, sw)

    def relations(self, time: float, x: np.ndarray, sw: np.ndarray) -> np.ndarray:
        """Truth of every relation of every state-event trigger (one call)."""
        return np.asarray(self.functions.all_atoms(*self._args(time, x, sw)), dtype=bool)

    def changed(self, k: int, before: np.ndarray, after: np.ndarray) -> bool:
        """Whether a relation of trigger k differs between two :meth:`relations` results
        (a trigger changes only where one of its relations does)."""
        lo, hi = self.functions.atom_slices[k]
        return bool(np.any(before[lo:hi] != after[lo:hi]))

    def rise_time(self, k, t_old, t_new, dense, y_new, sw, before, after) -> float | None:
        """When trigger k (false at ``t_old``) first becomes true in ``(t_old, t_new]``,
        to machine precision, or None: each relation that differs between the ends
        (``before``, ``after``: :meth:`relations`) is bisected on ``dense``."""
        if not self.changed(k, before, after):
            return None

        def state(time):
            return y_new if time == t_new else dense(time)

        lo_atom, _ = self.functions.atom_slices[k]
        candidates = {t_new}
        for j, atom in enumerate(self.functions.atoms.get(k, ())):
            was = before[lo_atom + j]
            if after[lo_atom + j] == was:
                continue
            candidates.add(self._crossing(atom, was, t_old, t_new, dense, sw))
        for time in sorted(candidates):
            if self.trigger(k, time, state(time), sw):
                return time
        return None

    def _crossing(self, atom, was: bool, t_old: float, t_new: float, dense, sw) -> float:
        """The first time in ``(t_old, t_new]`` at which ``atom`` no longer has its value
        ``was``: Brent's method on g = lhs - rhs (a few evaluations when g is smooth), the
        last bits by bisection on the truth itself (also when g does not change sign)."""
        from scipy.optimize import brentq

        def truth(time):
            return bool(atom.truth(*self._args(time, dense(time), sw)))

        def g(time):
            return float(atom.g(*self._args(time, dense(time), sw)))

        lo, hi = t_old, t_new
        g_lo, g_hi = g(lo), g(hi)
        if np.isfinite(g_lo) and np.isfinite(g_hi) and g_lo * g_hi < 0:
            root = brentq(g, lo, hi, xtol=1e-14 * max(1.0, abs(hi)), rtol=1e-15)
            width = 8e-14 * max(1.0, abs(hi))
            left, right = max(lo, root - width), min(hi, root + width)
            if truth(left) == was and truth(right) != was:
                lo, hi = left, right
        while True:
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                return hi
            if truth(mid) == was:
                lo = mid
            else:
                hi = mid

    def next_pending(self, after: float) -> float:
        """The next time a delayed event is due (inf if none)."""
        return min((e[0] for e in self.pending if e[0] > after), default=np.inf)

    def fall(self, k: int) -> None:
        """Trigger k became false: armed again; a pending non-persistent execution is dropped."""
        self.truth[k] = False
        if not self.events[k].persistent:
            self.pending = [e for e in self.pending if e[2] != k]

    # -- firing --------------------------------------------------------------------------
    def process(
        self,
        time: float,
        y: np.ndarray,
        sw: np.ndarray,
        f_of,
        dtau: dict[int, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Run everything due at ``time``: events whose trigger rose (false before, true
        now), and delayed executions that fall due. ``f_of(x)`` is dx/dt at ``time``.

        Executions go one at a time, highest priority first (then in declaration order);
        after each, triggers are evaluated again: new rises join (or are scheduled, with a
        delay), and a non-persistent event whose trigger fell is dropped. ``dtau[k]`` is
        dtau/d(direction) of a state event that rose at ``time``; a time event due now
        uses dT/dp; anything else (a cascade) 0."""
        n, f = self.n, self.functions
        y = np.array(y, dtype=float)
        ready: list[tuple[int, np.ndarray | None, np.ndarray]] = []
        zero = np.zeros(self.n_sens)

        def scan():
            for k, ev in enumerate(self.events):
                now = self.is_true(k, time, y, sw)
                if now and not self.truth[k]:
                    self.truth[k] = True
                    if dtau is not None and k in dtau:
                        d = dtau[k]
                    elif self.n_sens and self.times.get(k) == time:
                        d = self._directions(f.time_p[k](*self.p))[0]
                    else:
                        d = zero
                    values = None
                    if ev.values_at_trigger:
                        values = np.asarray(f.assign[k](*self._args(time, y, sw)), dtype=float)
                        values = values.reshape(n)
                    if ev.delay is not None:
                        delay = float(f.delay[k](*self._args(time, y, sw)))
                        self.pending.append((time + max(delay, 0.0), len(self.pending), k, values))
                    else:
                        ready.append((k, values, d))
                elif not now and self.truth[k]:
                    self.fall(k)
                    if not ev.persistent:
                        ready[:] = [r for r in ready if r[0] != k]

        scan()
        for _ in range(10_000):
            due = [e for e in self.pending if e[0] <= time]
            if due:
                self.pending = [e for e in self.pending if e[0] > time]
                ready.extend((k, values, zero) for _, _, k, values in sorted(due))
            if not ready:
                return y
            k, values, d = ready.pop(self.choose(ready, time, y, sw))
            y = self.execute(k, values, d, time, y, sw, f_of)
            scan()
        raise RuntimeError("events keep triggering each other at one time")

    def choose(self, ready, time, y, sw) -> int:
        """Index of the next execution: the highest priority; among equal defined
        priorities a random one (SBML; seeded, so a simulation is reproducible); without
        priorities the first that became due."""
        priorities = [self.priority(k, time, y, sw) for k, _, _ in ready]
        best = max(priorities)
        tied = [i for i, v in enumerate(priorities) if v == best]
        if len(tied) > 1 and np.isfinite(best):
            return int(self.rng.choice(tied))
        return tied[0]

    def priority(self, k: int, time: float, y: np.ndarray, sw: np.ndarray) -> float:
        fn = self.functions.priority.get(k)
        return -np.inf if fn is None else float(fn(*self._args(time, y, sw)))

    def execute(self, k, values, d, time, y, sw, f_of) -> np.ndarray:
        """State jump of event k (assigned states take ``values`` if given) and the jump
        of the sensitivities with dtau/d(direction) ``d``."""
        n, f = self.n, self.functions
        y = np.array(y, dtype=float)
        x = y[:n].copy()
        args = self._args(time, x, sw)
        x_new = np.asarray(f.assign[k](*args), dtype=float).reshape(n)
        if values is not None:  # values from the trigger time
            for state, _ in self.events[k].assignments:
                x_new[self.index[state]] = values[self.index[state]]
        if self.n_sens:
            S = y[n:].reshape(self.n_sens, n).T  # (n, directions)
            A_x = np.asarray(f.assign_x[k](*args), dtype=float).reshape(n, n)
            A_p = self._directions(f.assign_p[k](*args))
            A_t = np.asarray(f.assign_t[k](*args), dtype=float).reshape(n)
            S_new = A_x @ S + A_p + np.outer(A_x @ f_of(x) + A_t - f_of(x_new), d)
            y[n:] = S_new.T.reshape(-1)
        y[:n] = x_new
        return y

    def _directions(self, M: np.ndarray) -> np.ndarray:
        """Columns of a d/dp matrix for the sensitivity directions (0 for initial values)."""
        M = np.asarray(M, dtype=float).reshape(-1, len(self.p))
        out = np.zeros((M.shape[0], self.n_sens))
        out[:, : len(self.pidx)] = M[:, self.pidx]
        return out

    def state_event_dtau(
        self, k: int, time: float, y: np.ndarray, sw: np.ndarray, f_minus: np.ndarray,
        t_before: float, x_before: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """dtau/d(direction) of state event k at ``time`` (the relation that changed
        between ``t_before`` and ``time`` defines g)."""
        n, f = self.n, self.functions
        x = y[:n]
        atoms = f.atoms[k]
        active = atoms[0]
        for atom in atoms:
            before = bool(atom.truth(*self._args(t_before, x_before, sw)))
            after = bool(atom.truth(*self._args(time, x, sw)))
            if before != after:
                active = atom
                break
        args = self._args(time, x, sw)
        g_x = np.asarray(active.g_x(*args), dtype=float).reshape(n)
        g_p = self._directions(np.asarray(active.g_p(*args), dtype=float)[None, :])[0]
        g_t = float(active.g_t(*args))
        S = y[n:].reshape(self.n_sens, n).T
        denominator = g_x @ f_minus + g_t
        if denominator == 0:
            return np.zeros(self.n_sens)
        return -(g_x @ S + g_p) / denominator


def _jacobian(v: sp.Matrix, wrt: list) -> sp.Matrix:
    """``v.jacobian(wrt)``, also for no variables (a (len(v), 0) matrix); floor and
    ceiling are piecewise constant (derivative 0)."""
    if not wrt:
        return sp.zeros(len(v), 0)
    return v.jacobian(wrt).applyfunc(_piecewise_constant)


def _piecewise_constant(expr):
    def is_step_derivative(e):
        return isinstance(e, sp.Derivative) and isinstance(e.expr, (sp.floor, sp.ceiling))

    if expr.has(sp.Derivative):
        expr = expr.replace(is_step_derivative, lambda e: sp.Integer(0)).doit()
    return expr


class _Atom:
    """One relation ``lhs (op) rhs`` of a trigger: its truth and g = lhs - rhs."""

    def __init__(self, relation, args, xs, ps):
        if relation is None:
            relation, g = sp.true, sp.Integer(0)
        else:
            g = relation.lhs - relation.rhs
        self.truth = sp.lambdify(args, relation, "numpy")
        self.g = sp.lambdify(args, g, "numpy")
        self.g_x = sp.lambdify(args, _jacobian(sp.Matrix([g]), xs), "numpy")
        self.g_p = sp.lambdify(args, _jacobian(sp.Matrix([g]), ps), "numpy")
        self.g_t = sp.lambdify(args, _piecewise_constant(sp.diff(g, t)), "numpy")


class _Functions:
    pass


_CACHE: dict[int, tuple[Model, _Functions]] = {}


def _functions(model: Model) -> _Functions:
    """The lambdified event functions of ``model`` (built once per model object)."""
    hit = _CACHE.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    xs = [s.symbol for s in model.states.values()]
    ps = [p.symbol for p in model.parameters.values()]
    sws = [s.symbol for s in model.switches.values()]
    args = [t, *xs, *ps, *sws]
    out = _Functions()
    out.trigger, out.assign, out.assign_x, out.assign_p, out.assign_t = [], [], [], [], []
    out.time, out.time_p, out.atoms, out.delay, out.priority = {}, {}, {}, {}, {}
    out.atom_slices, all_relations = {}, []
    index = {name: i for i, name in enumerate(model.states)}
    for k, ev in enumerate(model.events):
        ev: Event
        trigger = model.expand(ev.trigger)
        out.trigger.append(sp.lambdify(args, trigger, "numpy"))
        new = sp.Matrix(xs)
        for state, value in ev.assignments:
            new[index[state]] = model.expand(value)
        out.assign.append(sp.lambdify(args, new, "numpy"))
        out.assign_x.append(sp.lambdify(args, _jacobian(new, xs), "numpy"))
        out.assign_p.append(sp.lambdify(args, _jacobian(new, ps), "numpy"))
        out.assign_t.append(
            sp.lambdify(args, sp.diff(new, t).applyfunc(_piecewise_constant), "numpy")
        )
        if ev.delay is not None:
            out.delay[k] = sp.lambdify(args, model.expand(ev.delay), "numpy")
        if ev.priority is not None:
            out.priority[k] = sp.lambdify(args, model.expand(ev.priority), "numpy")
        T = model.expand(ev.time) if ev.time is not None else None
        if T is not None and T.free_symbols <= set(ps):
            out.time[k] = sp.lambdify(ps, T, "numpy")
            out.time_p[k] = sp.lambdify(ps, _jacobian(sp.Matrix([T]), ps), "numpy")
        else:
            relations = [a for a in sp.preorder_traversal(trigger) if isinstance(a, _RELATIONS)]
            # a trigger without relations (a constant) never crosses: dtau/dp = 0
            out.atoms[k] = [_Atom(r, args, xs, ps) for r in relations]
            out.atom_slices[k] = (len(all_relations), len(all_relations) + len(relations))
            all_relations += relations
    out.all_atoms = sp.lambdify(args, sp.Tuple(*all_relations), "numpy")
    _CACHE[id(model)] = (model, out)
    return out
