"""pkpd_cart: symbolic, compiled and calibrated CAR-T models for autoimmune disease."""

from pkpd_cart.compile import CompiledModel, compile_model
from pkpd_cart.errors import (
    BackendWarning,
    CompileError,
    DatasetError,
    FitError,
    InputError,
    ModelDefinitionError,
    PkpdCartError,
    PkpdCartWarning,
    SimulationError,
)
from pkpd_cart.model.loading import available_models, load_model
from pkpd_cart.model.modelling import (
    Model,
    ModelBuilder,
    Parameter,
    State,
    compose,
    hill,
    positive_part,
    switched,
    t,
)
from pkpd_cart.simulation.solver import Dose, SolverOptions, Trajectory, simulate, simulate_batch

__version__ = "0.1.0"


def _map_source_models() -> None:
    """Make ``pkpd_cart.models`` the repository's ``models/`` when the package is imported
    straight from a source checkout (Python started in the repository root shadows the
    installed mapping of setup.cfg's ``package_dir``, and the shipped models went missing)."""
    import importlib.util
    import sys
    from pathlib import Path

    source = Path(__file__).resolve().parent.parent / "models" / "__init__.py"
    if "pkpd_cart.models" in sys.modules or not source.is_file():
        return
    if importlib.util.find_spec("pkpd_cart.models") is not None:
        return
    spec = importlib.util.spec_from_file_location(
        "pkpd_cart.models", source, submodule_search_locations=[str(source.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["pkpd_cart.models"] = module
    spec.loader.exec_module(module)


_map_source_models()

# Datasets and populations (pandas), fitting (lmfit, scipy.optimize), error models
# (scipy.special) and SBML (libsbml) are imported on first use: importing the package to
# build and simulate a model stays fast (PEP 562 module __getattr__).
_LAZY = {
    "Dataset": "pkpd_cart.data.dataset",
    "dataset_from_frame": "pkpd_cart.data.dataset",
    "read_dataset": "pkpd_cart.data.dataset",
    "ErrorModel": "pkpd_cart.estimation.likelihood",
    "simulate_population": "pkpd_cart.simulation.population",
    "fit": "pkpd_cart.estimation.fitting",
    "fit_population": "pkpd_cart.estimation.population_fit",
    "fit_saem": "pkpd_cart.estimation.saem",
    "write_population_report": "pkpd_cart.reporting.population_report",
    "simulate_design": "pkpd_cart.estimation.predictive",
    "vpc": "pkpd_cart.estimation.predictive",
    "npde": "pkpd_cart.estimation.predictive",
    "SaemOptions": "pkpd_cart.estimation.saem",
    "SaemResult": "pkpd_cart.estimation.saem",
    "PopulationFitResult": "pkpd_cart.estimation.population_fit",
    "PopulationModel": "pkpd_cart.model.population_model",
    "indicator": "pkpd_cart.model.population_model",
    "power": "pkpd_cart.model.population_model",
    "linear": "pkpd_cart.model.population_model",
    "categorical": "pkpd_cart.model.population_model",
    "FitResult": "pkpd_cart.estimation.fitting",
    "profile_likelihood": "pkpd_cart.estimation.uncertainty",
    "from_sbml": "pkpd_cart.io.sbml_import",
    "read_sbml": "pkpd_cart.io.sbml_import",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pkpd_cart' has no attribute {name!r}")


__all__ = [
    "BackendWarning",
    "CompileError",
    "CompiledModel",
    "Dataset",
    "DatasetError",
    "Dose",
    "ErrorModel",
    "FitError",
    "FitResult",
    "InputError",
    "Model",
    "ModelBuilder",
    "ModelDefinitionError",
    "Parameter",
    "PkpdCartError",
    "PkpdCartWarning",
    "SimulationError",
    "SolverOptions",
    "State",
    "Trajectory",
    "available_models",
    "compile_model",
    "compose",
    "dataset_from_frame",
    "fit",
    "fit_population",
    "PopulationFitResult",
    "PopulationModel",
    "SaemOptions",
    "SaemResult",
    "fit_saem",
    "write_population_report",
    "simulate_design",
    "vpc",
    "npde",
    "indicator",
    "power",
    "linear",
    "categorical",
    "from_sbml",
    "hill",
    "load_model",
    "positive_part",
    "profile_likelihood",
    "read_dataset",
    "read_sbml",
    "simulate",
    "simulate_batch",
    "simulate_population",
    "switched",
    "t",
]
