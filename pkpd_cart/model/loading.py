"""Find models by name (shipped in ``pkpd_cart.models``) or by file path."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path

from pkpd_cart.errors import ModelDefinitionError
from pkpd_cart.model.modelling import Model


def available_models() -> list[str]:
    """Names of the models shipped with the package (modules with a ``build()``)."""
    import pkpd_cart.models as models

    names = []
    for info in pkgutil.iter_modules(models.__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"pkpd_cart.models.{info.name}")
        if callable(getattr(module, "build", None)):
            names.append(info.name)
    return sorted(names)


def load_model(name_or_path: str | Path) -> Model:
    """Build a model from a shipped name (e.g. ``"stein2019"``) or a ``.py`` file path.

    A model file defines ``build() -> Model``.
    """
    text = str(name_or_path)
    if text.endswith(".py") or Path(text).exists():
        path = Path(text)
        if not path.is_file():
            raise ModelDefinitionError(f"model file '{path}' does not exist")
        spec = importlib.util.spec_from_file_location(f"pkpd_cart_user_model_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise ModelDefinitionError(
                f"model file '{path}': line {exc.lineno}: syntax error: {exc.msg}"
            ) from None
    else:
        if text not in available_models():
            raise ModelDefinitionError(
                f"unknown model '{text}' (shipped models: {', '.join(available_models())})"
            )
        module = importlib.import_module(f"pkpd_cart.models.{text}")
    build = getattr(module, "build", None)
    if not callable(build):
        raise ModelDefinitionError(f"model module '{text}' has no build() function")
    model = build()
    if not isinstance(model, Model):
        raise ModelDefinitionError(
            f"model module '{text}': build() returned {type(model).__name__}, not a Model"
        )
    return model
