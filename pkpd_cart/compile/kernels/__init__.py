"""Model-independent compiled kernels: the BDF integrator and the calls into a model.

Everything here is compiled once per machine (numba's on-disk cache) and reused by every
model. A model contributes only a table of its generated functions (see
:mod:`pkpd_cart.compile.kernels.table`): under numba their machine addresses, called
through a function pointer; under the pure-Python backend the functions themselves. So a
new or edited model compiles only its own small functions, never the integrator.

The same source serves both backends. Imported as ``pkpd_cart.compile.kernels.<name>``
the functions are numba-compiled (when numba is installed); imported as
``pkpd_cart.compile.kernels.pure.<name>`` the very same files run as plain Python (see
:mod:`pkpd_cart.compile.kernels.jit`).
"""
