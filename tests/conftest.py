import pytest
from helpers import one_compartment

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
