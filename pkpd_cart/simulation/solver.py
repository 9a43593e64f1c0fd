"""Integrate a compiled model through bolus doses and switch times.

Integration restarts at every dose and every switch time. A state at a dose time is the
value *after* the dose (right-continuous), as in NONMEM when the dose record comes first.
Forward sensitivities are integrated with the states; at a switch time ``tau(p)`` they
jump by ``(f_before - f_after) * dtau/dp`` (the states are continuous there).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pkpd_cart.compile import CompiledModel
from pkpd_cart.errors import InputError, SimulationError
from pkpd_cart.model.modelling import Model
from pkpd_cart.simulation.structure import sensitivity_columns

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

COMPILED_METHODS = ("BDF",)
ODEINT_METHODS = ("LSODA",)
SOLVE_IVP_METHODS = ("Radau", "RK45", "DOP853")
METHODS = COMPILED_METHODS + ODEINT_METHODS + SOLVE_IVP_METHODS
# Messages for the failure statuses of bdf_segment (compile/kernels/bdf.py).
_BDF_FAILURES = {
    "BDF_TOO_MANY_STEPS": "BDF: more than max_steps steps between two output times",
    "BDF_STEP_TOO_SMALL": "BDF: step size became too small (the equations may be singular "
    "or blow up)",
}


@dataclass(frozen=True)
class Dose:
    """A dose of ``amount`` (in the target state's unit) into ``target`` at ``time``.

    A bolus by default. Give ``rate`` (amount per time unit) or ``duration`` (time units)
    for a zero-order infusion from ``time`` to ``time + duration``, as NONMEM's ``RATE``
    (``RATE > 0``) and ``DUR`` (``RATE = -2``) data items; the other one is derived from
    ``amount = rate * duration``. Giving both requires that identity to hold.
    """

    time: float
    amount: float
    target: str
    rate: float = 0.0
    duration: float = 0.0

    def __post_init__(self) -> None:
        for attr in ("time", "amount", "rate", "duration"):
            value = getattr(self, attr)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float, np.floating, np.integer))
                or not math.isfinite(value)
            ):
                raise InputError(f"Dose {attr} {value!r} is not a finite number")
            if value < 0 and attr != "time":
                raise InputError(f"Dose {attr} {value:g} is negative")
        if not isinstance(self.target, str):
            raise InputError(f"Dose target {self.target!r} is not a state name")
        rate, duration = float(self.rate), float(self.duration)
        if rate == 0 and duration == 0:
            return
        if self.amount == 0:
            raise InputError("Dose: an infusion (rate or duration given) needs an amount > 0")
        if rate > 0 and duration > 0:
            if not math.isclose(rate * duration, self.amount, rel_tol=1e-9):
                raise InputError(
                    f"Dose: rate {rate:g} x duration {duration:g} = {rate * duration:g} "
                    f"is not the amount {self.amount:g}"
                )
        elif rate > 0:
            duration = self.amount / rate
        else:
            rate = self.amount / duration
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "duration", duration)

    @property
    def is_infusion(self) -> bool:
        return self.duration > 0

    @property
    def end(self) -> float:
        """When the dose has entered completely (``time`` for a bolus)."""
        return self.time + self.duration


def dose_events(doses: Iterable[Dose], index: Mapping[str, int]) -> dict[float, list]:
    """``{time: [(state index, bolus amount, change of infusion rate), ...]}``.

    A bolus adds its amount at its time; an infusion raises the input rate of its target
    at its start and lowers it again at its end. Integration restarts at every key.
    """
    events: dict[float, list] = {}
    for d in doses:
        i = index[d.target]
        if d.is_infusion:
            events.setdefault(float(d.time), []).append((i, 0.0, d.rate))
            events.setdefault(float(d.end), []).append((i, 0.0, -d.rate))
        else:
            events.setdefault(float(d.time), []).append((i, float(d.amount), 0.0))
    return dict(sorted(events.items()))


@dataclass(frozen=True)
class SolverOptions:
    """Integrator settings.

    Attributes
    ----------
    method : str
        ``"BDF"`` (default): the variable-order BDF/NDF method of ``scipy.integrate.BDF``
        run as compiled code generated with the model (no Python between steps), with
        staggered forward sensitivities; see ``pkpd_cart/compile/kernels/bdf.py``.
        ``"LSODA"``: scipy ``odeint`` (stiff/non-stiff switching). ``solve_ivp``
        methods: ``"Radau"``, ``"RK45"``, ``"DOP853"``.
    rtol, atol : float
        Relative and absolute tolerances (atol in state units).
    max_steps : int
        Maximum internal steps between two output times.
    max_step : float
        Largest step (time units); 0 means unlimited.
    sensitivity_error_control : bool
        Include forward sensitivities in the local error test. Off by default, as in
        CVODES (``CVodeSetSensErrCon``): steps are then chosen for the states alone; at
        rtol 1e-8 the sensitivities of the shipped models are accurate to 3e-7..2.5e-5
        relative to their range (``benchmarks/bench_simulate.py``, ``bench_roadrunner.py``).
        On with BDF: sle_cart's error falls from 1.1e-5 to 7e-7 for 1.3x the time.
    exact_linear : bool
        With ``"BDF"``, batch runs without sensitivities (SAEM's chains, simulated
        replicates) of a model linear in its states (no switches or events) use its exact
        solution (:mod:`pkpd_cart.simulation.linear`) instead of integrating it.
    """

    method: str = "BDF"
    rtol: float = 1e-8
    atol: float = 1e-10
    max_steps: int = 200_000
    max_step: float = 0.0
    sensitivity_error_control: bool = False
    exact_linear: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise InputError(
                f"SolverOptions: unknown method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        # Fixed types: the compiled integrator is specialised on its argument types, so a
        # float max_steps or an int flag would compile it again (or fail inside numba).
        for name in ("rtol", "atol", "max_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise InputError(f"SolverOptions: {name} must be a number, not {value!r}")
            object.__setattr__(self, name, float(value))
        steps = self.max_steps
        whole = (
            not isinstance(steps, bool)
            and isinstance(steps, (int, float, np.integer, np.floating))
            and math.isfinite(steps)
            and float(steps) == int(steps)
        )
        if not whole:
            raise InputError(f"SolverOptions: max_steps must be a whole number, not {steps!r}")
        object.__setattr__(self, "max_steps", int(steps))
        for name in ("sensitivity_error_control", "exact_linear"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise InputError(f"SolverOptions: {name} must be True or False, not {value!r}")
            object.__setattr__(self, name, bool(value))
        if not (self.rtol > 0 and self.atol > 0):
            raise InputError(
                f"SolverOptions: tolerances must be positive (rtol={self.rtol}, atol={self.atol})"
            )
        if self.max_steps < 1 or not self.max_step >= 0:  # catches a nan max_step too
            raise InputError("SolverOptions: max_steps must be >= 1 and max_step >= 0")


def _bdf_failure(compiled: CompiledModel, status: int) -> str:
    """The message of a failure status of ``bdf_segment`` (compile/kernels/bdf.py)."""
    code = next((k for k in _BDF_FAILURES if getattr(compiled, k) == status), None)
    return _BDF_FAILURES.get(code, f"BDF status {status}")


def _bdf_segment_into(
    compiled: CompiledModel,
    options: SolverOptions,
    y0,
    t0: float,
    times,
    t_end: float,
    p,
    sw,
    pidx,
    cols,
    u,
    out: np.ndarray,
) -> tuple[np.ndarray, int, float]:
    """One call of the shared compiled BDF integrator from t0 to t_end, the solution at
    ``times`` (within [t0, t_end]) written into the rows of ``out`` (C-contiguous):
    ``(y_end, status, t_reached)``.

    ``u`` is the infusion input (amount per time unit) added to each state's derivative;
    ``cols`` the sensitivity entries that can be non-zero (``structure.sensitivity_columns``).
    """
    o = options
    f64 = np.ascontiguousarray
    y0 = f64(y0, dtype=float)
    y_end = np.empty_like(y0)
    status, reached, _ = compiled.bdf_segment_into(
        y0,
        float(t0),
        f64(times, dtype=float),
        float(t_end),
        f64(p, dtype=float),
        f64(sw, dtype=float),
        f64(pidx, dtype=np.int64),
        f64(cols, dtype=np.int64),
        f64(u, dtype=float),
        o.rtol,
        o.atol,
        o.sensitivity_error_control,
        o.max_steps,
        o.max_step or math.inf,
        out,
        y_end,
    )
    return y_end, status, reached


@dataclass(frozen=True)
class Trajectory:
    """A simulation's numbers.

    Attributes
    ----------
    times : (nt,) array
    states : (nt, n) array
    observables : (nt, no) array
    switch_flags : (nt, ns) array of 0/1
    parameters : (np,) array, the values used
    sensitivity_names : tuple of str
        Parameter names and ``"<state>(0)"`` for initial values, in column order.
    state_sensitivities : (nt, n, nsens) array or None
        d state / d direction.
    observable_sensitivities : (nt, no, nsens) array or None
    """

    model: Model = field(repr=False)
    times: np.ndarray
    states: np.ndarray
    observables: np.ndarray
    switch_flags: np.ndarray
    parameters: np.ndarray
    sensitivity_names: tuple[str, ...] = ()
    state_sensitivities: np.ndarray | None = None
    observable_sensitivities: np.ndarray | None = None

    def to_frame(self) -> pd.DataFrame:
        """``time``, states, observables, then ``d(output)/d(name)`` columns if computed."""
        import pandas as pd  # only frames need pandas; simulating does not

        names = ["time", *self.model.states, *self.model.observables]
        blocks = [self.times[:, None], self.states, self.observables]
        if self.state_sensitivities is not None:
            assert self.observable_sensitivities is not None
            outputs = [*self.model.states, *self.model.observables]
            sens = np.concatenate((self.state_sensitivities, self.observable_sensitivities), 1)
            for k, wrt in enumerate(self.sensitivity_names):
                names += [f"d({name})/d({wrt})" for name in outputs]
                blocks.append(sens[:, :, k])
        return pd.DataFrame(np.hstack(blocks), columns=names)


def _check_times(model: Model, times: Iterable[float]) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(times, dtype=float))
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"model '{model.name}': times must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"model '{model.name}': times contain non-finite values")
    if np.any(np.diff(arr) < 0):
        raise InputError(f"model '{model.name}': times must be sorted in increasing order")
    return arr


def _sensitivity_directions(
    model: Model, sensitivities: bool | Iterable[str]
) -> tuple[tuple[str, ...], np.ndarray, list[int]]:
    """Names, parameter indices, and state indices of initial-value directions."""
    if sensitivities is False:
        return (), np.zeros(0, dtype=np.int64), []
    names = list(model.parameters) if sensitivities is True else list(sensitivities)
    pnames = list(model.parameters)
    snames = list(model.states)
    pidx, sidx, ordered = [], [], []
    for name in names:  # parameters first, then initial values (the generated layout)
        if name in model.parameters:
            pidx.append(pnames.index(name))
            ordered.append(name)
    for name in names:
        if name in model.parameters:
            continue
        if name.endswith("(0)") and name[:-3] in model.states:
            sidx.append(snames.index(name[:-3]))
            ordered.append(name)
        else:
            raise InputError(
                f"model '{model.name}': cannot take a sensitivity with respect "
                f"to '{name}' (not a parameter or '<state>(0)')"
            )
    return tuple(ordered), np.asarray(pidx, dtype=np.int64), sidx


class _Integrator:
    """One run: integrates segment by segment and collects outputs."""

    def __init__(
        self,
        compiled: CompiledModel,
        p: np.ndarray,
        options: SolverOptions,
        pidx: np.ndarray,
        n_sens: int,
        cols: np.ndarray,
    ):
        self.c = compiled
        self.model = compiled.model
        self.p = p
        self.options = options
        self.pidx = pidx
        self.cols = cols
        self.n = len(self.model.states)
        self.n_sens = n_sens

    def fail(self, time: float, reason: str) -> SimulationError:
        return SimulationError(
            self.model.name, time, dict(zip(self.model.parameters, self.p)), reason
        )

    def _with_input(self, func, u: np.ndarray, size: int):
        """``func`` plus the infusion input ``u`` on the states (sensitivities unchanged)."""
        if not u.any():
            return func
        pad = np.zeros(size)
        pad[: self.n] = u
        return lambda y, t, *args: func(y, t, *args) + pad

    def _odeint(self, y0: np.ndarray, grid: np.ndarray, sw: np.ndarray, u: np.ndarray):
        """One LSODA call (scipy odeint) with the analytic (banded, for sensitivities) Jacobian."""
        from scipy.integrate import ODEintWarning, odeint  # loaded only when used

        o, c = self.options, self.c
        if self.n_sens:
            func, jac, args = c.sens_rhs, c.sens_jac_banded, (self.p, sw, self.pidx)
            band = {"ml": self.n - 1, "mu": self.n - 1}
        else:
            func, jac, args, band = c.rhs, c.jac_solver, (self.p, sw), {}
        func = self._with_input(func, u, len(y0))
        # A failed odeint call also warns; the caller raises a SimulationError instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ODEintWarning)
            return odeint(
                func,
                y0,
                grid,
                args=args,
                Dfun=jac,
                rtol=o.rtol,
                atol=self.atol(len(y0)),
                mxstep=o.max_steps,
                hmax=o.max_step,
                full_output=True,
                printmessg=False,
                **band,
            )

    def segment(
        self, y0: np.ndarray, grid: np.ndarray, sw: np.ndarray, u: np.ndarray
    ) -> np.ndarray:
        """Integrate from grid[0] over grid with infusion input ``u``; (len(grid), len(y0))."""
        if self.n == 0:  # nothing to integrate (a model of parameters and expressions only)
            return np.repeat(y0[None, :], len(grid), axis=0)
        if self.options.method == "BDF":
            Y = np.empty((len(grid), len(y0)))
            Y[-1] = self.segment_into(y0, grid[0], grid[:-1], grid[-1], sw, u, Y[:-1])
            return Y
        try:
            with np.errstate(all="ignore"):
                if self.options.method == "LSODA":
                    Y, info = self._odeint(y0, grid, sw, u)
                    if info["message"] != "Integration successful.":
                        reached = self._time_reached(y0, grid, sw, u)
                        raise self.fail(reached, f"LSODA: {info['message']}")
                else:
                    Y = self._solve_ivp(y0, grid, sw, u)
        except SimulationError:
            raise
        except (ArithmeticError, ValueError, FloatingPointError) as exc:
            raise self.fail(
                grid[0], f"{type(exc).__name__} in the model equations: {exc}"
            ) from None
        self._check_finite(Y, grid)
        return Y

    def segment_into(
        self,
        y0: np.ndarray,
        t0: float,
        times: np.ndarray,
        t_end: float,
        sw: np.ndarray,
        u: np.ndarray,
        out: np.ndarray,
    ) -> np.ndarray:
        """With BDF: integrate from t0 to t_end, the solution at ``times`` (within
        [t0, t_end)) into the rows of ``out``; returns the solution at t_end. Nothing is
        allocated per output time and nothing copied after (the output of 40
        sensitivities is 2 MB a simulation)."""
        if self.n == 0:
            out[:] = y0
            return y0.copy()
        try:
            with np.errstate(all="ignore"):
                y_end = self._bdf_into(y0, t0, times, t_end, sw, u, out)
        except SimulationError:
            raise
        except (ArithmeticError, ValueError, FloatingPointError) as exc:
            raise self.fail(t0, f"{type(exc).__name__} in the model equations: {exc}") from None
        self._check_finite(out, times)
        self._check_finite(y_end[None, :], [t_end])
        return y_end

    def _check_finite(self, Y: np.ndarray, times) -> None:
        """Refuse a block with a nan or an infinity, naming the first such time."""
        # a nan or infinity makes the sum non-finite: one cheap pass screens the block
        # (a sum of large finite values may overflow: then every entry is checked)
        with np.errstate(over="ignore", invalid="ignore"):
            total = Y.sum()
        if not np.isfinite(total) and not np.all(np.isfinite(Y)):
            bad = int(np.argmax(~np.all(np.isfinite(Y), axis=1)))
            raise self.fail(times[bad], "non-finite state values")

    def _bdf_into(self, y0, t0: float, times, t_end: float, sw, u, out) -> np.ndarray:
        """One call of the shared compiled BDF integrator; the state at t_end."""
        y_end, status, reached = _bdf_segment_into(
            self.c, self.options, y0, t0, times, t_end, self.p, sw, self.pidx, self.cols, u, out
        )
        if status:
            raise self.fail(float(reached), _bdf_failure(self.c, status))
        return y_end

    def atol(self, size: int) -> float | np.ndarray:
        """Absolute tolerances; sensitivities get a huge one unless error-controlled."""
        o = self.options
        if self.n_sens == 0 or o.sensitivity_error_control:
            return o.atol
        atol = np.full(size, 1e300)
        atol[: self.n] = o.atol
        return atol

    def _time_reached(
        self, y0: np.ndarray, grid: np.ndarray, sw: np.ndarray, u: np.ndarray
    ) -> float:
        """Where LSODA gave up: rerun on a fine grid (only after a failure) and read tcur."""
        fine = np.unique(np.concatenate((grid, np.linspace(grid[0], grid[-1], 2001))))
        _, info = self._odeint(y0, fine, sw, u)
        # tcur[i] is the internal time reached for output i + 1; after the failure it holds
        # garbage, so keep the prefix where it passed its output time.
        tcur = np.asarray(info["tcur"], dtype=float)
        tout = fine[1 : 1 + len(tcur)]
        good = np.isfinite(tcur) & (tcur >= tout) & (tcur <= 2 * abs(fine[-1]) + 1)
        n_ok = len(good) if good.all() else int(np.argmin(good))
        return float(tout[n_ok - 1]) if n_ok else float(grid[0])

    def _solve_ivp(
        self, y0: np.ndarray, grid: np.ndarray, sw: np.ndarray, u: np.ndarray
    ) -> np.ndarray:
        from scipy.integrate import solve_ivp

        o = self.options
        c = self.c
        n = self.n
        if self.n_sens:
            func, args = c.sens_rhs, (self.p, sw, self.pidx)
        else:
            func, args = c.rhs, (self.p, sw)
        func = self._with_input(func, u, len(y0))
        nblocks = len(y0) // n

        def jac(t, y):
            J = c.jac_solver(y[:n], t, self.p, sw)
            return J if nblocks == 1 else np.kron(np.eye(nblocks), J)

        sol = solve_ivp(
            lambda t, y: func(y, t, *args),
            (grid[0], grid[-1]),
            y0,
            method=o.method,
            t_eval=grid,
            rtol=o.rtol,
            atol=self.atol(len(y0)),
            **({"jac": jac} if o.method in ("BDF", "Radau") else {}),
            max_step=o.max_step or np.inf,
        )
        if not sol.success:
            raise self.fail(
                float(sol.t[-1]) if sol.t.size else grid[0], f"{o.method}: {sol.message}"
            )
        return sol.y.T

    def segment_events(
        self, y0: np.ndarray, grid: np.ndarray, sw: np.ndarray, u: np.ndarray, events
    ) -> np.ndarray:
        """:meth:`segment` for a model with state events: step with scipy's solver
        (``LSODA``, or the chosen solve_ivp method), check the triggers after every step,
        locate a rising trigger by bisection on the dense output, fire, restart there.
        An output at an event time is the value after the event."""
        from scipy.integrate import DOP853, LSODA, RK45, Radau

        o, c, n = self.options, self.c, self.n
        solver_class = {"Radau": Radau, "RK45": RK45, "DOP853": DOP853}.get(o.method, LSODA)
        args = (self.p, sw, self.pidx) if self.n_sens else (self.p, sw)
        func = self._with_input(c.sens_rhs if self.n_sens else c.rhs, u, len(y0))
        Y = np.empty((len(grid), len(y0)))
        Y[0] = y0
        filled, y, t_now, t_end = 1, np.array(y0, dtype=float), float(grid[0]), float(grid[-1])

        def f_of(x):
            return c.rhs(x, t_star, self.p, sw) + u

        def fill(upto: float, dense, include_end: bool, y_end):
            nonlocal filled
            while filled < len(grid) and (
                grid[filled] < upto or (include_end and grid[filled] == upto)
            ):
                Y[filled] = y_end if grid[filled] == upto else dense(grid[filled])
                filled += 1

        while t_now < t_end:
            t_stop = min(t_end, events.next_pending(t_now))  # a delayed execution is due
            solver = solver_class(
                lambda tt, yy: func(yy, tt, *args), t_now, y, t_stop, rtol=o.rtol,
                atol=self.atol(len(y)), max_step=o.max_step or np.inf,
            )  # fmt: skip
            fired = False
            steps = 0
            before = events.relations(t_now, y, sw)
            while solver.status == "running":
                message = solver.step()
                steps += 1
                if solver.status == "failed" or steps > o.max_steps:
                    raise self.fail(float(solver.t), f"{o.method}: {message or 'too many steps'}")
                t_old, t_new, dense = float(solver.t_old), float(solver.t), solver.dense_output()
                # the earliest rise inside the step; a trigger that is a window (a And b)
                # can open and close within one step, so each relation's crossing is found
                after = events.relations(t_new, solver.y, sw)
                rises = {
                    k: events.rise_time(k, t_old, t_new, dense, solver.y, sw, before, after)
                    for k in events.state_events
                    if not events.truth[k]
                }
                rises = {k: v for k, v in rises.items() if v is not None}
                for k in events.state_events:  # triggers that fell are armed again
                    if (
                        events.truth[k] and events.changed(k, before, after)
                        and not events.trigger(k, t_new, solver.y, sw)
                    ):  # fmt: skip
                        events.fall(k)
                before = after
                if not rises:
                    fill(t_new, dense, t_new < t_stop or t_stop == t_end, solver.y)
                    continue
                t_star = min(rises.values())
                rising = [k for k, v in rises.items() if v == t_star]
                y_star = solver.y if t_star == t_new else dense(t_star)
                fill(t_star, dense, False, None)
                t_before = max(t_old, np.nextafter(t_star, -np.inf))
                y_before = dense(t_before)
                dtau = {}
                if self.n_sens:
                    f_minus = f_of(y_star[:n])
                    for k in rising:
                        if events.trigger(k, t_star, y_star, sw):
                            dtau[k] = events.state_event_dtau(
                                k, t_star, y_star, sw, f_minus, t_before, y_before[:n]
                            )
                y = events.process(t_star, y_star, sw, f_of, dtau)
                fill(t_star, None, True, y)
                t_now, fired = t_star, True
                break
            if not fired:
                y = np.array(solver.y)
                t_now = t_stop
                if t_stop < t_end:  # delayed executions due now
                    t_star = t_stop
                    y = events.process(t_star, y, sw, f_of)
                    fill(t_star, None, True, y)
        fill(t_end, None, True, y)
        return Y

    def switch_jump(
        self, y: np.ndarray, t: float, sw_old: np.ndarray, sw_new: np.ndarray, k: int
    ) -> np.ndarray:
        """Sensitivity jump when switch ``k`` flips at t = tau_k(p)."""
        if self.n_sens == 0:
            return y
        n = self.n
        x = y[:n]
        df = self.c.rhs(x, t, self.p, sw_old) - self.c.rhs(x, t, self.p, sw_new)
        dtau = self.c.switch_times_dp(self.p)[k]
        y = y.copy()
        npd = len(self.pidx)  # parameter directions: block j is y[n (1 + j) : n (2 + j)]
        y[n : n * (1 + npd)] += np.outer(dtau[np.asarray(self.pidx, dtype=np.int64)], df).ravel()
        return y


def simulate(
    model: Model,
    times: Iterable[float],
    params: str | Mapping[str, float] | pd.Series | np.ndarray | None = None,
    doses: Iterable[Dose] = (),
    initial: Mapping[str, float] | None = None,
    options: SolverOptions | None = None,
    sensitivities: bool | Iterable[str] = False,
    backend: str | None = None,
    t0: float | None = None,
    compiled: CompiledModel | None = None,
) -> Trajectory:
    """Simulate ``model``; see :meth:`pkpd_cart.Model.simulate` for the arguments.

    ``params`` may also be a full parameter vector (in ``model.parameters`` order).
    """
    options = options or SolverOptions()
    compiled = compiled or model.compile(backend)
    times = _check_times(model, times)
    if isinstance(params, np.ndarray):
        p = np.asarray(params, dtype=float)
        if p.shape != (len(model.parameters),):
            raise InputError(
                f"model '{model.name}': parameter vector has shape {p.shape}, "
                f"expected ({len(model.parameters)},)"
            )
    else:
        p = model.resolve_parameters(params)
    doses = sorted(doses, key=lambda d: d.time)
    for d in doses:
        if d.target not in model.states:
            raise InputError(f"model '{model.name}': dose target '{d.target}' is not a state")
        if d.target not in model.dose_targets:
            raise InputError(
                f"model '{model.name}': state '{d.target}' is not a dose target "
                f"(dose targets: {', '.join(model.dose_targets) or 'none'})"
            )
    n = len(model.states)
    names, pidx, sidx = _sensitivity_directions(model, sensitivities)
    n_sens = len(names)

    if t0 is None:
        start = min([model.start_time, float(times[0])] + [d.time for d in doses])
    else:
        start = float(t0)
    if times[0] < start:
        raise InputError(
            f"model '{model.name}': first output time {times[0]:g} is before t0={start:g}"
        )
    x0 = np.asarray(compiled.initial(p), dtype=float)
    dx0 = np.asarray(compiled.initial_dp(p), dtype=float)
    for name, value in (initial or {}).items():
        if name not in model.states:
            raise InputError(
                f"model '{model.name}': initial value given for unknown state '{name}'"
            )
        i = list(model.states).index(name)
        x0[i] = float(value)
        dx0[i, :] = 0.0
    y = np.empty(n * (1 + n_sens))
    y[:n] = x0
    for k, j in enumerate(pidx):
        y[n * (1 + k) : n * (2 + k)] = dx0[:, j]
    for k, i in enumerate(sidx):
        block = np.zeros(n)
        block[i] = 1.0
        y[n * (1 + len(pidx) + k) : n * (2 + len(pidx) + k)] = block

    tau = np.asarray(compiled.switch_times(p), dtype=float)
    if not np.all(np.isfinite(tau)):
        raise SimulationError(
            model.name, start, dict(zip(model.parameters, p)), "a switch time is not finite"
        )
    sw = (tau <= start).astype(float)
    t_end = max(float(times[-1]), start)
    cols = sensitivity_columns(compiled, pidx, sidx) if n_sens else np.zeros(0, np.int64)
    run = _Integrator(compiled, p, options, pidx, n_sens, cols)
    state_index = {name: i for i, name in enumerate(model.states)}

    # Plain Python containers: a population calls this a few times per patient, and numpy
    # calls on arrays of two elements cost more than the loops.
    tau_list = tau.tolist()
    doses_at = dose_events(doses, state_index)
    early = [at for at in doses_at if at < start]
    if early:
        raise InputError(
            f"model '{model.name}': a dose at time {early[0]:g} is before t0={start:g}"
        )
    u = np.zeros(n)  # infusion input, amount per time unit
    events = None
    if model.events:
        from pkpd_cart.simulation.events import EventRuntime

        events = EventRuntime(model, p, pidx, n_sens)

    def apply_events(
        y: np.ndarray, sw: np.ndarray, at: float, first: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        for k, tau_k in enumerate(tau_list):
            if tau_k == at and sw[k] == 0.0:
                new = sw.copy()
                new[k] = 1.0
                y = run.switch_jump(y, at, sw, new, k)
                sw = new
        if at in doses_at:
            y = y.copy()
            for i, amount, rate in doses_at[at]:
                y[i] += amount
                u[i] += rate
                if abs(u[i]) <= 1e-12 * abs(rate):  # an infusion ended: no rounding residue
                    u[i] = 0.0
        if events is not None:  # after the doses: a trigger sees the dosed states
            y = _model_events(events, y, sw, at, first, lambda x: compiled.rhs(x, at, p, sw) + u)
        return y, sw

    out_y = np.empty((len(times), y.size))
    out_sw = np.empty((len(times), len(tau)))
    y, sw = apply_events(y, sw, start, first=True)
    event_times = events.times.values() if events is not None else ()
    boundaries = sorted(
        {at for at in doses_at if start < at <= t_end}
        | {float(v) for v in tau if start < v <= t_end}
        | {v for v in event_times if start < v <= t_end}
        | {t_end}
    )
    state_events = events is not None and events.stepping
    current = start
    for b in boundaries:
        lo = np.searchsorted(times, current, side="left")
        hi = np.searchsorted(times, b, side="left")  # outputs in [current, b)
        inner = times[lo:hi]
        if b > current and options.method == "BDF" and not state_events:
            y = run.segment_into(y, current, inner, b, sw, u, out_y[lo:hi])
            out_sw[lo:hi] = sw
            y, sw = apply_events(y, sw, b)
            current = b
            continue
        if options.method == "BDF" or state_events:  # repeated times, output at its start
            grid = np.concatenate(([current], inner, [b]))
            rows = slice(1, 1 + hi - lo)
        else:
            grid = np.unique(np.concatenate(([current], inner, [b])))
            rows = np.searchsorted(grid, inner)
        if b > current and state_events:
            Y = run.segment_events(y, grid, sw, u, events)
        elif b > current:
            Y = run.segment(y, grid, sw, u)
        else:
            Y = np.repeat(y[None, :], len(grid), axis=0)
        out_y[lo:hi] = Y[rows]
        out_sw[lo:hi] = sw
        y = Y[-1]
        y, sw = apply_events(y, sw, b)
        current = b
    at_end = np.searchsorted(times, t_end, side="left")
    out_y[at_end:] = y
    out_sw[at_end:] = sw

    states = np.ascontiguousarray(out_y[:, :n])
    observables = compiled.observe_all(states, times, p, out_sw)
    state_sens = obs_sens = None
    if n_sens:
        # a view (nt, n, nsens) of the integrator's direction-major rows, not a copy
        state_sens = out_y[:, n:].reshape(len(times), n_sens, n).transpose(0, 2, 1)
        with np.errstate(divide="ignore"):  # an infinite dh/dx meeting s = 0 gives 0
            obs_sens = compiled.observe_sens_all(out_y, times, p, out_sw, pidx)
    return Trajectory(model, times, states, observables, out_sw, p, names, state_sens, obs_sens)


def _model_events(events, y: np.ndarray, sw: np.ndarray, at: float, first: bool, f_of):
    """Run the model events due at a boundary time ``at`` (at the start, the triggers'
    initial values are set first): rises, time events, delayed executions, cascades."""
    if first:
        events.start()
    try:
        return events.process(at, y, sw, f_of)
    except RuntimeError as exc:
        raise SimulationError(
            events.model.name, at, dict(zip(events.model.parameters, events.p)), str(exc)
        ) from None


def simulate_batch(
    model: Model,
    times: Iterable[float],
    parameter_sets: pd.DataFrame,
    doses: Iterable[Dose] = (),
    options: SolverOptions | None = None,
    backend: str | None = None,
) -> pd.DataFrame:
    """Simulate each row of ``parameter_sets`` (columns: any subset of parameter names).

    Returns a long DataFrame: ``set`` (the row's index label), ``time``, states, observables.
    """
    compiled = model.compile(backend)
    unknown = [c for c in parameter_sets.columns if c not in model.parameters]
    if unknown:
        raise InputError(
            f"model '{model.name}': parameter_sets has unknown column(s) "
            f"{', '.join(map(str, unknown))}"
        )
    doses = list(doses)
    frames = []
    for label, row in parameter_sets.iterrows():
        traj = simulate(
            model, times, params=row.to_dict(), doses=doses, options=options, compiled=compiled
        )
        frame = traj.to_frame()
        frame.insert(0, "set", label)
        frames.append(frame)
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


class BatchRun:
    """Several subjects packed for one compiled call (``bdf_batch`` of the shared
    kernels): no Python between subjects, doses or switches.

    ``run(P, active)`` simulates the rows ``active`` of the parameter matrix ``P`` and
    returns ``(observables, sensitivities or None, status)``; subject ``s`` owns rows
    ``row_ptr[s]:row_ptr[s + 1]`` of the outputs, at its times ``times[...]``. The
    integration is that of :func:`simulate` with the BDF method, switches included.
    """

    def __init__(
        self,
        compiled: CompiledModel,
        subjects: list[tuple[np.ndarray, list[Dose]]],
        options: SolverOptions,
        sensitivities: Iterable[str] = (),
    ):
        model = compiled.model
        self.c, self.options, self.model = compiled, options, model
        names, self.pidx, sidx = _sensitivity_directions(model, list(sensitivities) or False)
        if sidx:
            raise InputError("BatchRun: initial-value sensitivities are not supported")
        self.cols = sensitivity_columns(compiled, self.pidx, []) if names else np.zeros(0, np.int64)
        self.n_sens = len(names)
        index = {name: i for i, name in enumerate(model.states)}
        starts, ends, ev_ptr, ev_t, ev_lo, ev_hi = [], [], [0], [], [], []
        dose_state, dose_amount, dose_rate, out_ptr, all_times = [], [], [], [0], []
        for times, doses in subjects:
            times = np.asarray(times, dtype=float)
            doses = sorted(doses, key=lambda d: d.time)
            start = min([model.start_time, float(times[0])] + [d.time for d in doses])
            starts.append(start)
            ends.append(max(float(times[-1]), start))
            for at, entries in dose_events(doses, index).items():
                ev_t.append(at)
                ev_lo.append(len(dose_state))
                for i, amount, rate in entries:
                    dose_state.append(i)
                    dose_amount.append(amount)
                    dose_rate.append(rate)
                ev_hi.append(len(dose_state))
            ev_ptr.append(len(ev_t))
            all_times.append(times)
            out_ptr.append(out_ptr[-1] + len(times))
        i64 = np.int64
        self.start = np.asarray(starts, dtype=float)
        self.t_end = np.asarray(ends, dtype=float)
        self.ev_ptr = np.asarray(ev_ptr, dtype=i64)
        self.ev_t = np.asarray(ev_t, dtype=float)
        self.ev_lo = np.asarray(ev_lo, dtype=i64)
        self.ev_hi = np.asarray(ev_hi, dtype=i64)
        self.dose_state = np.asarray(dose_state, dtype=i64)
        self.dose_amount = np.asarray(dose_amount, dtype=float)
        self.dose_rate = np.asarray(dose_rate, dtype=float)
        self.row_ptr = np.asarray(out_ptr, dtype=i64)
        self.times = np.concatenate(all_times) if all_times else np.zeros(0)
        self.n_subjects = len(subjects)
        self.n_obs = len(model.observables)
        self.subjects = [(np.asarray(t, dtype=float), list(d)) for t, d in subjects]
        self.names = names
        self.messages: dict[int, str] = {}  # subject -> failure message (other methods)
        self.linear = None
        if not self.n_sens and options.method == "BDF" and options.exact_linear:
            from pkpd_cart.simulation.linear import LinearBatch, linear_structure

            structure = linear_structure(model)
            if structure is not None:
                self.linear = LinearBatch(model, self.subjects, structure)

    def run(self, P: np.ndarray, active: np.ndarray):
        o = self.options
        rows = len(self.times)
        OBS = np.full((rows, self.n_obs), np.nan)
        SENS = np.full((rows, self.n_obs, self.n_sens), np.nan)
        status = np.zeros(self.n_subjects, dtype=np.int64)
        if self.linear is not None:
            return self.linear.run(P, active)
        if o.method != "BDF" or self.model.events:  # simulate() subject by subject
            for s in np.asarray(active, dtype=np.int64):
                rows_s = slice(self.row_ptr[s], self.row_ptr[s + 1])
                times, doses = self.subjects[s]
                try:
                    traj = simulate(
                        self.model,
                        times,
                        params=np.asarray(P[s], dtype=float),
                        doses=doses,
                        options=o,
                        sensitivities=list(self.names) or False,
                        compiled=self.c,
                    )
                except SimulationError as exc:
                    status[s] = -1
                    self.messages[int(s)] = str(exc)
                    continue
                OBS[rows_s] = traj.observables
                if self.n_sens:
                    SENS[rows_s] = traj.observable_sensitivities
            return OBS, (SENS if self.n_sens else None), status
        with np.errstate(all="ignore"):
            self.c.bdf_batch(
                np.ascontiguousarray(P, dtype=float),
                self.pidx,
                self.cols,
                np.asarray(active, dtype=np.int64),
                self.start,
                self.t_end,
                self.ev_ptr,
                self.ev_t,
                self.ev_lo,
                self.ev_hi,
                self.dose_state,
                self.dose_amount,
                self.dose_rate,
                self.row_ptr,
                self.times,
                o.rtol,
                o.atol,
                o.sensitivity_error_control,
                o.max_steps,
                o.max_step or math.inf,
                OBS,
                SENS,
                status,
            )
        return OBS, (SENS if self.n_sens else None), status

    def failure(self, status: int, subject: int | None = None) -> str:
        if status == -1 and subject is not None:
            return self.messages.get(subject, "simulation failed")
        return _bdf_failure(self.c, status)
