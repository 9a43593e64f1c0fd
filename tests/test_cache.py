"""The cache of generated modules never serves a stale or damaged module: a changed model,
generator or library version gets a new key, and a damaged or foreign file is made again.
(Python backend: no numba compilation needed to check the cache.)"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import forget_compiled

import pkpd_cart as pk
from pkpd_cart.compile import cache, compile_model


def decay(rate_name: str = "k") -> pk.Model:
    m = pk.ModelBuilder("cache_probe", description="first-order decay")
    k = m.parameter(rate_name, 0.5, "1/h", lower=0)
    x = m.state("x", "mg", initial=2.0)
    m.add_term(x, -k * x)
    m.observable("x_obs", x, "mg")
    return m.build()


def rhs_at_start(compiled) -> float:
    return float(compiled.rhs(np.array([2.0]), 0.0, np.array([0.5]), np.zeros(0))[0])


def test_keys_follow_the_model_the_backend_and_the_generator(fresh_cache, monkeypatch):
    a, b = decay("k"), decay("kel")
    assert cache.cache_key(a.hash, "python") == cache.cache_key(decay("k").hash, "python")
    assert cache.cache_key(a.hash, "python") != cache.cache_key(b.hash, "python")
    assert cache.cache_key(a.hash, "python") != cache.cache_key(a.hash, "numba")
    before = cache.cache_key(a.hash, "python")
    monkeypatch.setattr(cache, "CODEGEN_VERSION", "a-changed-generator")
    assert cache.cache_key(a.hash, "python") != before


def test_a_damaged_cached_module_is_generated_again(fresh_cache, monkeypatch):
    model = decay()
    path = compile_model(model, backend="python").source_path
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # cut short, as by a full disk
    forget_compiled(monkeypatch)
    again = compile_model(decay(), backend="python")
    assert path.read_text() == good
    assert rhs_at_start(again) == pytest.approx(-1.0)


def test_a_file_with_the_right_name_but_another_header_is_not_used(fresh_cache, monkeypatch):
    model = decay()
    path = compile_model(model, backend="python").source_path
    good = path.read_text()
    # same file name, but the header names another model hash: made again, not trusted
    path.write_text(good.replace(model.hash, "0" * 64).replace("-k*", "+k*"))
    forget_compiled(monkeypatch)
    again = compile_model(decay(), backend="python")
    assert path.read_text() == good
    assert rhs_at_start(again) == pytest.approx(-1.0)
