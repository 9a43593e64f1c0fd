"""Shared test helpers (importable because setup.cfg puts tests/ on pythonpath)."""

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
