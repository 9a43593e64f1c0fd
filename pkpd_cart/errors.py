"""The package's exception and warning tree.

Every error the package raises on purpose derives from :class:`PkpdCartError`, and each
message is a single line that says what went wrong and where.
"""

from __future__ import annotations

from collections.abc import Mapping


class PkpdCartError(Exception):
    """Base class of every error raised by pkpd_cart."""


class ModelDefinitionError(PkpdCartError, ValueError):
    """A model is malformed: undefined symbol, missing equation, duplicate name, bad value."""


class InputError(PkpdCartError, ValueError):
    """An argument to a public function is invalid (unknown name, unsorted times, ...)."""


class CompileError(PkpdCartError):
    """Code generation or compilation of a model failed."""


class SimulationError(PkpdCartError):
    """The ODE solver failed.

    Attributes
    ----------
    model : str
        Name of the model.
    time : float
        Last time reached by the solver (model time units, days for the shipped models).
    parameters : dict[str, float]
        Parameter values of the failed run.
    """

    def __init__(self, model: str, time: float, parameters: Mapping[str, float], reason: str):
        self.model = model
        self.time = float(time)
        self.parameters = dict(parameters)
        self.reason = reason
        shown = ", ".join(f"{k}={v:.6g}" for k, v in self.parameters.items())
        super().__init__(
            f"model '{model}': solver failed at t={self.time:.6g}: {reason} (parameters: {shown})"
        )


class DatasetError(PkpdCartError, ValueError):
    """A dataset file is malformed; the message names file, row and column."""


class FitError(PkpdCartError):
    """A fit could not be set up or run."""


class PkpdCartWarning(UserWarning):
    """Base class of the package's warnings."""


class BackendWarning(PkpdCartWarning):
    """The fast (numba) backend is unavailable and the pure-Python fallback is used."""
