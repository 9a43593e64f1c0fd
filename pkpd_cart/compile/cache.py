"""Where generated modules live: an in-memory table and a directory on disk.

The key is the model's symbolic hash plus the backend and the versions of everything that
shapes the generated text, so a changed model, sympy or numba never reuses a stale file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import weakref
from pathlib import Path
from types import ModuleType

import sympy

from pkpd_cart.compile.codegen import CODEGEN_VERSION

_LOADED: dict[str, ModuleType] = {}
# Per model object (models are immutable): skips re-hashing the symbolic model on every call.
_BY_MODEL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cache_dir() -> Path:
    """Directory of generated modules: ``$PKPD_CART_CACHE_DIR`` or ``~/.cache/pkpd_cart``."""
    root = os.environ.get("PKPD_CART_CACHE_DIR")
    path = Path(root) if root else Path.home() / ".cache" / "pkpd_cart"
    path.mkdir(parents=True, exist_ok=True)
    return path


def versions(backend: str) -> str:
    parts = [
        f"codegen={CODEGEN_VERSION}",
        f"sympy={sympy.__version__}",
        f"python={sys.version_info.major}.{sys.version_info.minor}",
    ]
    if backend in ("llvm", "numba"):
        import llvmlite
        import numba

        parts.append(f"llvmlite={llvmlite.__version__}")

        parts.append(f"numba={numba.__version__}")
    return ", ".join(parts)


def cache_key(model_hash: str, backend: str) -> str:
    return hashlib.sha256(f"{model_hash}|{backend}|{versions(backend)}".encode()).hexdigest()


def module_path(model_name: str, key: str, suffix: str = ".py") -> Path:
    return cache_dir() / f"{model_name}_{key[:20]}{suffix}"


def write_atomically(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` so no reader ever sees a half-written file (and no
    temporary file is left behind on failure)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as fh:
            fh.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def trailer(comment: str = "# ") -> str:
    """The last line of every generated file (a file without it was cut short)."""
    return f"\n{comment}end of the generated module\n"


TRAILER = trailer()


def is_complete(path: Path, header: str, end: str = TRAILER) -> bool:
    """Whether the file at ``path`` begins with ``header`` and ends with ``end``
    (not cut short, not edited at its ends, not made for another model or version)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return text.startswith(header) and text.endswith(end)


def load_module(path: Path, key: str) -> ModuleType:
    """Import the generated module at ``path`` once per process."""
    if key in _LOADED:
        return _LOADED[key]
    name = f"pkpd_cart_generated_{key[:20]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's on-disk cache needs the module importable by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _LOADED[key] = module
    return module


def keep(key: str, module):
    """Remember a loaded module (or module-like namespace) for this process."""
    _LOADED[key] = module
    return module


def loaded(key: str) -> ModuleType | None:
    return _LOADED.get(key)


def compiled_for(model, backend: str):
    """The compiled model already made for this model object and backend, if any."""
    return _BY_MODEL.get(model, {}).get(backend)


def remember(model, backend: str, compiled) -> None:
    _BY_MODEL.setdefault(model, {})[backend] = compiled
