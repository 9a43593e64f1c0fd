"""Compile a symbolic :class:`~pkpd_cart.model.modelling.Model` into numeric functions.

Backends form an ordered registry, all running the same integrator
(:mod:`pkpd_cart.compile.kernels`, compiled once per machine by numba, the ``fast`` extra):

* ``llvm`` (default): the model's functions written as LLVM IR and compiled by llvmlite, a
  fraction of a second for a new model (:mod:`pkpd_cart.compile.native`);
* ``numba``: the same functions as generated Python compiled by numba as ``cfunc`` s,
  slower to build; used for models with expressions the ``llvm`` writer does not cover;
* ``python``: the generated Python and the integrator run by the interpreter (no numba).

All pass the same tests.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from pkpd_cart.compile import cache
from pkpd_cart.compile.codegen import generate_source
from pkpd_cart.errors import BackendWarning, CompileError
from pkpd_cart.model.modelling import Model

log = logging.getLogger(__name__)

BACKENDS = ("llvm", "numba", "python")


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def default_backend() -> str:
    """``llvm`` when numba is installed, else ``python`` (with one :class:`BackendWarning`)."""
    if numba_available():
        return "llvm"
    if not getattr(default_backend, "_warned", False):
        warnings.warn(
            "numba is not installed; using the pure-Python backend "
            "(pip install 'pkpd_cart[fast]' for compiled speed)",
            BackendWarning,
            stacklevel=3,
        )
        default_backend._warned = True  # type: ignore[attr-defined]
    return "python"


def _kernels(backend: str) -> tuple[ModuleType, ModuleType]:
    """The (model_calls, bdf) kernel modules of a backend: numba-compiled or pure Python."""
    if backend in ("llvm", "numba"):
        from pkpd_cart.compile.kernels import bdf, model_calls
    else:
        from pkpd_cart.compile.kernels.pure import bdf, model_calls
    return model_calls, bdf


# Calls that take arrays of the model's functions: inputs are made C-contiguous float64
# (the compiled calls read them through raw pointers).
_ARRAY_CALLS = (
    "rhs",
    "jac",
    "jac_solver",
    "dfdp",
    "sens_rhs",
    "sens_jac_banded",
    "observables",
    "observables_dx",
    "observables_dp",
    "observe_all",
    "observe_sens_all",
    "initial",
    "initial_dp",
    "switch_times",
    "switch_times_dp",
)


def _as_input(a):
    if isinstance(a, np.ndarray) and a.dtype.kind in "iu":
        return np.ascontiguousarray(a, dtype=np.int64)  # pidx
    return np.ascontiguousarray(a, dtype=float)


@dataclass(frozen=True)
class CompiledModel:
    """A model's generated functions and the shared kernels that call them.

    Attributes
    ----------
    model : Model
    backend : str
        ``"llvm"``, ``"numba"`` or ``"python"``.
    source_path : Path
        The generated file on disk (``.ll`` or ``.py``).
    module : ModuleType or SimpleNamespace
        The loaded model functions (see :data:`codegen.GENERATED`) and ``PATTERNS``.
    table : numpy.ndarray or tuple
        The model's table for the kernels (:mod:`pkpd_cart.compile.kernels.model_calls`).

    The kernels are reached as attributes with the table bound: ``compiled.rhs(y, t, p,
    sw)``, ``compiled.bdf_segment(y0, t0, ...)``; so are the module's upper-case
    constants (``PATTERNS`` ...) and the integrator's status codes (``BDF_SUCCESS`` ...).
    """

    model: Model
    backend: str
    source_path: Path
    module: ModuleType
    table: object = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        calls, _ = _kernels(self.backend)
        functions = [getattr(self.module, name) for name in calls.FUNCTIONS]
        m = self.model
        sizes = [len(m.states), len(m.parameters), len(m.observables), len(m.switches)]
        if self.backend != "python":
            table = np.array([f.address for f in functions] + sizes, dtype=np.int64)
        else:
            table = tuple(functions) + tuple(sizes)
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "_bound", {})

    def __getattr__(self, name: str):
        bound = self.__dict__.get("_bound")
        if bound is None:
            raise AttributeError(name)
        if name in bound:
            return bound[name]
        calls, bdf = _kernels(self.__dict__["backend"])
        table = self.__dict__["table"]
        if name in _ARRAY_CALLS:
            kernel = getattr(calls, name)

            def call(*args, _kernel=kernel, _table=table):
                return _kernel(
                    _table, *[_as_input(a) if isinstance(a, np.ndarray) else a for a in args]
                )

            call.__name__ = name
            call.__doc__ = kernel.__doc__
            bound[name] = call
            return call
        if name in ("bdf_segment", "bdf_segment_into", "bdf_batch"):
            bound[name] = functools.partial(getattr(bdf, name), table)
            return bound[name]
        for source in (bdf, self.__dict__["module"]):
            if name.isupper() and hasattr(source, name):
                return getattr(source, name)
        raise AttributeError(name)

    @property
    def n_states(self) -> int:
        return len(self.model.states)


def compile_model(model: Model, backend: str | None = None) -> CompiledModel:
    """Generate, cache and load the numeric functions of ``model``.

    The generated module is reused from memory, then from the disk cache (keyed by the
    model hash, backend and library versions), and only otherwise generated anew. The
    ``llvm`` backend falls back to ``numba`` for a model with an expression it does not
    translate (logged), with the same results.

    The integrator evaluates df/dp at every step of a simulation with sensitivities, and
    only the columns of its directions (``jac_dfdp``'s column flags): a population fit's
    few random effects need no variant of the model.
    """
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise CompileError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend in ("llvm", "numba") and not numba_available():
        raise CompileError(
            f"backend {backend!r} requested but numba is not installed "
            "(pip install 'pkpd_cart[fast]')"
        )
    known = cache.compiled_for(model, backend)
    if known is not None:
        return known
    if backend == "llvm":
        from pkpd_cart.compile import native

        try:
            compiled = _build(model, backend, ".ll", "; ", native.generate_ir, native.load_ir)
        except native.UnsupportedExpressionError as exc:
            log.info("model '%s': %s; compiled with numba instead", model.name, exc)
            compiled = compile_model(model, "numba")
        except CompileError as exc:  # LLVM refused the IR: a writer bug, never the user's
            warnings.warn(
                f"{exc}; compiled with numba instead (please report this model)",
                BackendWarning,
                stacklevel=2,
            )
            compiled = compile_model(model, "numba")
    else:

        def generate_py(model: Model, header: str) -> str:
            return generate_source(model, header, backend == "numba")

        def load_py(text: None, model: Model, path: Path, key: str) -> ModuleType:
            return cache.load_module(path, key)

        compiled = _build(model, backend, ".py", "# ", generate_py, load_py)
    cache.remember(model, backend, compiled)
    return compiled


def _build(
    model: Model, backend: str, suffix: str, comment: str, generate_text, load
) -> CompiledModel:
    """Generate (or reuse from the disk cache) the model's file and load it."""
    key = cache.cache_key(model.hash, backend)
    path = cache.module_path(model.name, key, suffix)
    trailer = cache.trailer(comment)
    module = cache.loaded(key)
    if module is None:
        header = (
            f"{comment}Generated by pkpd_cart for model '{model.name}'. Do not edit.\n"
            f"{comment}model hash: {model.hash}\n{comment}{cache.versions(backend)}"
        )

        def generate() -> None:
            start = time.perf_counter()
            try:
                text = generate_text(model, header)
            except Exception as exc:
                if type(exc).__name__ == "UnsupportedExpressionError":
                    raise
                # sympy internals: report as our own error
                raise CompileError(
                    f"model '{model.name}': code generation failed: {type(exc).__name__}: {exc}"
                ) from exc
            cache.write_atomically(path, text.rstrip("\n") + trailer)
            log.info("generated %s in %.2f s", path, time.perf_counter() - start)

        def read_and_load():
            if suffix == ".py":
                return load(None, model, path, key)
            return cache.keep(key, load(path.read_text(encoding="utf-8"), model, path))

        # a cached file is used only if it starts with this model's header and ends with
        # the trailer (not cut short, nor made for another model or library version)
        if not cache.is_complete(path, header, trailer):
            generate()
        try:
            module = read_and_load()
        except Exception as exc:  # noqa: BLE001 - a damaged file: made again, once
            log.warning("cached module %s failed to load (%s): generating it again", path, exc)
            generate()
            try:
                module = read_and_load()
            except Exception as again:  # noqa: BLE001
                raise CompileError(
                    f"model '{model.name}': the generated module {path} does not load: "
                    f"{type(again).__name__}: {again}"
                ) from again
    return CompiledModel(model, backend, path, module)
