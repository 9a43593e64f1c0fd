"""Models shipped with pkpd_cart (installed as ``pkpd_cart.models``).

Each module defines ``build() -> Model``; load one with ``pkpd_cart.load_model(name)``.
Reusable mechanism blocks live in :mod:`pkpd_cart.models.blocks`.
"""
