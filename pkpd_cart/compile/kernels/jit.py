"""The compiler switch of the kernels and the call of a model function through its table.

``jit`` compiles with numba (cached on disk) unless numba is missing or this module was
loaded as part of the pure-Python copy (:mod:`pkpd_cart.compile.kernels.pure`).

``call(fn, x, t, p, sw, out, out2)`` calls one generated model function. Every generated
function has the same C signature, :data:`SIGNATURE`: pointers to the states, the time,
pointers to the parameters and switch flags, and two output buffers. Under numba ``fn`` is
the function's machine address (an integer) and ``call`` compiles to an indirect call, so
the integrator is compiled once for all models; in pure Python ``fn`` is the function
itself. All arrays passed must be C-contiguous float64. ``call_selects(fn, x, t, p, sw,
out, out2, sel)`` is the same for the one function with a seventh argument, the column
flags of ``jac_dfdp`` (:data:`SIGNATURE_SELECTS`).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent


def sources_hash(directory: Path = KERNEL_DIR) -> bytes:
    """SHA-256 over the source of every kernel module (file names and contents).

    numba asks for it once per kernel it loads: the files are read again only when one
    of them changed (name, modification time or size), as numba does for its own stamps.
    """
    paths = sorted(Path(directory).glob("*.py"))
    return _hash_files(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths))


@functools.lru_cache(maxsize=8)
def _hash_files(stamps: tuple[tuple[str, int, int], ...]) -> bytes:
    digest = hashlib.sha256()
    for name, _, _ in stamps:
        path = Path(name)
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.digest()


PURE = ".pure" in __name__
try:
    import numba
except ImportError:  # pragma: no cover - the pure-Python backend without numba
    numba = None
    PURE = True

if PURE:

    def jit(func):
        return func

    jit_leaf = jit

    def call(fn, x, t, p, sw, out, out2):
        fn(x, t, p, sw, out, out2)

    def call_selects(fn, x, t, p, sw, out, out2, sel):
        fn(x, t, p, sw, out, out2, sel)

    SIGNATURE = None
    SIGNATURE_SELECTS = None
else:
    from llvmlite import ir
    from numba import types
    from numba.core import caching
    from numba.extending import intrinsic

    class _KernelLocator(caching._CacheLocator):
        """numba's cache locator for the kernels, stamped with all kernel sources.

        numba stamps a cached function with its own file only, so a kernel would keep
        the stale machine code of a helper it inlines from another (changed) file. Here
        every kernel's stamp is the hash of all kernel files: any change recompiles all.
        """

        def __init__(self, inner):
            self._inner = inner

        def ensure_cache_path(self):
            self._inner.ensure_cache_path()

        def get_cache_path(self):
            return self._inner.get_cache_path()

        def get_disambiguator(self):
            return self._inner.get_disambiguator()

        def get_source_stamp(self):
            return sources_hash()

        @classmethod
        def from_function(cls, py_func, py_file):
            if Path(py_file).resolve().parent != KERNEL_DIR:
                return None
            for other in (
                caching.UserProvidedCacheLocator,
                caching.InTreeCacheLocator,
                caching.UserWideCacheLocator,
            ):
                inner = other.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
            return None

    # numba 0.68 names the class CacheImpl; earlier versions _CacheImpl
    _impl_class = getattr(caching, "CacheImpl", None) or caching._CacheImpl
    if not any(c.__name__ == "_KernelLocator" for c in _impl_class._locator_classes):
        _impl_class._locator_classes.insert(0, _KernelLocator)

    jit = numba.njit(cache=True, error_model="numpy", nogil=True)
    # Kernels that allocate nothing: compiled without numba's reference counting (NRT).
    # Each array argument or view otherwise costs an atomic increment and decrement (about
    # 20 cycles each) per call, and those were a quarter of a plain simulation's time.
    jit_leaf = numba.njit(cache=True, error_model="numpy", nogil=True, _nrt=False)

    _f64p = types.CPointer(types.float64)
    SIGNATURE = types.void(_f64p, types.float64, _f64p, _f64p, _f64p, _f64p)
    SIGNATURE_SELECTS = types.void(_f64p, types.float64, _f64p, _f64p, _f64p, _f64p, _f64p)

    def _typed_call(fn, x, t, arrays):
        """The signature and code generator of an indirect call to ``fn`` with the
        pointers of ``x``, the time ``t``, and the pointers of ``arrays``."""
        if not isinstance(fn, types.Integer) or not all(
            isinstance(a, types.Array) and a.dtype == types.float64 and a.layout == "C"
            for a in (x, *arrays)
        ):  # a pointer to a strided array would read the wrong numbers: refuse to type
            return None
        sig = types.void(fn, x, t, *arrays)

        def codegen(context, builder, signature, args):
            a_fn, a_x, a_t, *a_arrays = args
            dbl = ir.DoubleType()
            ptr = dbl.as_pointer()
            fnty = ir.FunctionType(ir.VoidType(), [ptr, dbl] + [ptr] * len(arrays))
            target = builder.inttoptr(a_fn, fnty.as_pointer())

            def data(ty, value):
                return context.make_array(ty)(context, builder, value).data

            time = context.cast(builder, a_t, signature.args[2], types.float64)
            pointers = [data(ty, v) for ty, v in zip(arrays, a_arrays)]
            builder.call(target, [data(x, a_x), time, *pointers])
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def call(typingctx, fn, x, t, p, sw, out, out2):
        return _typed_call(fn, x, t, (p, sw, out, out2))

    @intrinsic
    def call_selects(typingctx, fn, x, t, p, sw, out, out2, sel):
        return _typed_call(fn, x, t, (p, sw, out, out2, sel))
