import pytest
from helpers import forget_compiled, one_compartment

import pkpd_cart as pk


@pytest.fixture(scope="session")
def onecmt() -> pk.Model:
    return one_compartment()


@pytest.fixture(scope="session")
def stein() -> pk.Model:
    return pk.load_model("stein2019")


@pytest.fixture(scope="session")
def kirouac() -> pk.Model:
    return pk.load_model("kirouac2023")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache directory and no compiled model remembered in this process."""
    monkeypatch.setenv("PKPD_CART_CACHE_DIR", str(tmp_path))
    forget_compiled(monkeypatch)
    return tmp_path
