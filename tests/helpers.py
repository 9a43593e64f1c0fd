"""Shared test helpers (importable because setup.cfg puts tests/ on pythonpath)."""

import ctypes

import numpy as np

import pkpd_cart as pk

BACKENDS = ["python", "numba", "llvm"]


def one_compartment(name: str = "onecmt") -> pk.Model:
    """IV bolus into one compartment with linear elimination (closed form known)."""
    m = pk.ModelBuilder(name, description="one-compartment IV bolus")
    k = m.parameter("k", 0.3, "1/d", source="test")
    V = m.parameter("V", 5.0, "L", source="test")
    A = m.state("A", "mg", dose_target=True)
    m.add_term(A, -k * A, label="elimination")
    m.observable("C", A / V, "mg/L")
    return m.build()


def relative_error(a, b, floor: float = 0.0) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), floor)))


def forget_compiled(monkeypatch) -> None:
    """No compiled model remembered in this process (the next compile reads the disk)."""
    from pkpd_cart.compile import cache

    monkeypatch.setattr(cache, "_LOADED", {})
    monkeypatch.setattr(cache, "_BY_MODEL", cache.weakref.WeakKeyDictionary())


_DOUBLE_P = ctypes.POINTER(ctypes.c_double)
_SIGNATURE = ctypes.CFUNCTYPE(
    None, _DOUBLE_P, ctypes.c_double, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P
)
_SIGNATURE_SELECTS = ctypes.CFUNCTYPE(
    None, _DOUBLE_P, ctypes.c_double, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P
)


def generated(compiled, name, x, t, out, out2, p=None, sw=None, sel=None) -> None:
    """Call the generated function ``name`` of ``compiled`` with the signature every one
    has, ``fn(x, t, p, sw, out, out2)``, on any backend (its address through ctypes for
    the compiled ones). ``out`` and ``out2`` must be C-contiguous float64; ``p`` and ``sw``
    default to one unused zero. ``jac_dfdp`` takes the column flags ``sel`` as well (all
    columns by default)."""
    from pkpd_cart.compile.codegen import GENERATED

    p = np.zeros(1) if p is None else p
    sw = np.zeros(1) if sw is None else sw
    selects = next(g.selects for g in GENERATED if g.name == name)
    extra = [np.ones(len(compiled.model.parameters)) if sel is None else sel] if selects else []
    fn = getattr(compiled.module, name)
    if compiled.backend == "python":
        fn(x, t, p, sw, out, out2, *extra)
        return
    inputs = [np.ascontiguousarray(a, dtype=float) for a in (x, p, sw)]
    pointers = [a.ctypes.data_as(_DOUBLE_P) for a in (*inputs, out, out2, *extra)]
    (_SIGNATURE_SELECTS if selects else _SIGNATURE)(fn.address)(pointers[0], t, *pointers[1:])
