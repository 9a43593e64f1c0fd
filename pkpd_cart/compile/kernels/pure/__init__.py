"""The kernels of the parent package, loaded a second time as plain Python.

This package's search path is its parent's directory, so
``pkpd_cart.compile.kernels.pure.bdf`` executes ``kernels/bdf.py`` as a separate module
whose relative imports resolve inside this package; :mod:`..jit` sees the package name and
returns undecorated functions. The pure-Python backend runs on these copies.
"""

from pathlib import Path

__path__ = [str(Path(__file__).resolve().parent.parent)]
