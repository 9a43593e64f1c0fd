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

from pkpd_cart.model.modelling import Event, Model, t

_RELATIONS = (sp.GreaterThan, sp.StrictGreaterThan, sp.LessThan, sp.StrictLessThan)


class EventRuntime:
    """The events of one model with one parameter vector, for :func:`simulate`.

    ``pidx``: parameter index of each parameter sensitivity direction; ``n_init``: number
    of initial-value directions (they follow the parameter directions).
    """

    def __init__(self, model: Model, p: np.ndarray, pidx: np.ndarray, n_sens: int):
        self.model = model
        self.p = np.asarray(p, dtype=float)
        self.pidx = np.asarray(pidx, dtype=np.int64)
        self.n_sens = n_sens
        self.n = len(model.states)
        self.index = {name: i for i, name in enumerate(model.states)}
        self.functions = _functions(model)
        self.events = model.events
        self.time_events = [k for k, ev in enumerate(self.events) if ev.time is not None]
        self.state_events = [k for k, ev in enumerate(self.events) if ev.time is None]
        f = self.functions
        self.times = {k: float(f.time[k](*self.p)) for k in self.time_events}
        self.truth: dict[int, bool] = {}

    # -- triggers ------------------------------------------------------------------------
    def _args(self, time: float, x: np.ndarray, sw: np.ndarray) -> tuple:
        return (time, *x[: self.n], *self.p, *sw)

    def trigger(self, k: int, time: float, x: np.ndarray, sw: np.ndarray) -> bool:
        return bool(self.functions.trigger[k](*self._args(time, x, sw)))

    def start(self, t0: float, x: np.ndarray, sw: np.ndarray) -> list[int]:
        """Arm the state events at t0; returns the events (all kinds) that fire at t0."""
        fire = []
        for k, ev in enumerate(self.events):
            now = self.trigger(k, t0, x, sw)
            if k in self.times and self.times[k] == t0:
                now = True  # t > T fires just after T: at the start, as t >= T does
            if now and not ev.initial_value:
                fire.append(k)
            self.truth[k] = now
        return fire

    # -- firing --------------------------------------------------------------------------
    def fire(
        self,
        ks: list[int],
        time: float,
        y: np.ndarray,
        sw: np.ndarray,
        f_of,
        dtau: dict[int, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Apply events ``ks`` in order at ``time``; ``f_of(x)`` is dx/dt at ``time``.

        ``dtau[k]`` is dtau/d(direction) of a state event (None: a time event, whose
        dT/dp is known)."""
        n, f = self.n, self.functions
        y = np.array(y, dtype=float)
        early = {  # values computed when the events triggered (before any of them ran)
            k: np.asarray(f.assign[k](*self._args(time, y, sw)), dtype=float).reshape(n)
            for k in ks
            if self.events[k].values_at_trigger
        }
        done = []
        for k in ks:
            x = y[:n].copy()
            if done and not self.events[k].persistent and not self.trigger(k, time, x, sw):
                self.truth[k] = False  # an earlier event switched its trigger off
                continue
            args = self._args(time, x, sw)
            x_new = np.asarray(f.assign[k](*args), dtype=float).reshape(n)
            if k in early:  # only the assigned states take the early values
                for state, _ in self.events[k].assignments:
                    i = self.index[state]
                    x_new[i] = early[k][i]
            if self.n_sens:
                S = y[n:].reshape(self.n_sens, n).T  # (n, directions)
                A_x = np.asarray(f.assign_x[k](*args), dtype=float).reshape(n, n)
                A_p = self._directions(np.asarray(f.assign_p[k](*args), dtype=float))
                A_t = np.asarray(f.assign_t[k](*args), dtype=float).reshape(n)
                if dtau is not None and k in dtau:
                    d = dtau[k]
                else:
                    d = self._directions(np.asarray(f.time_p[k](*self.p), dtype=float)[None, :])[0]
                f_minus, f_plus = f_of(x), f_of(x_new)
                S_new = A_x @ S + A_p + np.outer(A_x @ f_minus + A_t - f_plus, d)
                y[n:] = S_new.T.reshape(-1)
            y[:n] = x_new
            done.append(k)
        for k in done:  # a fired trigger must become false again, unless its assignment undid it
            self.truth[k] = self.trigger(k, time, y, sw)
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
    """``v.jacobian(wrt)``, also for no variables (a (len(v), 0) matrix)."""
    return v.jacobian(wrt) if wrt else sp.zeros(len(v), 0)


class _Atom:
    """One relation ``lhs (op) rhs`` of a trigger: its truth and g = lhs - rhs."""

    def __init__(self, relation, args, xs, ps):
        if relation is None:
            relation, g = sp.true, sp.Integer(0)
        else:
            g = relation.lhs - relation.rhs
        self.truth = sp.lambdify(args, relation, "numpy")
        self.g_x = sp.lambdify(args, _jacobian(sp.Matrix([g]), xs), "numpy")
        self.g_p = sp.lambdify(args, _jacobian(sp.Matrix([g]), ps), "numpy")
        self.g_t = sp.lambdify(args, sp.diff(g, t), "numpy")


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
    out.time, out.time_p, out.atoms = {}, {}, {}
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
        out.assign_t.append(sp.lambdify(args, sp.diff(new, t), "numpy"))
        if ev.time is not None:
            T = model.expand(ev.time)
            out.time[k] = sp.lambdify(ps, T, "numpy")
            out.time_p[k] = sp.lambdify(ps, _jacobian(sp.Matrix([T]), ps), "numpy")
        else:
            relations = [a for a in sp.preorder_traversal(trigger) if isinstance(a, _RELATIONS)]
            # a trigger without relations (a constant) never crosses: dtau/dp = 0
            out.atoms[k] = [_Atom(r, args, xs, ps) for r in relations] or [
                _Atom(None, args, xs, ps)
            ]
    _CACHE[id(model)] = (model, out)
    return out
