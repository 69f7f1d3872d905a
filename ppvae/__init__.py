"""ppvae: latent-variable models on Pyro, fitted by SVI, evaluated honestly, compared with MCMC and EM.

The engine, by layer (each subpackage imports only the ones listed before it):

* :mod:`ppvae._util` -- validation, errors, progress, process pool, atomic writes (private)
* :mod:`ppvae.plots` -- figures written into run directories
* :mod:`ppvae.data` -- datasets, loaders, the registry of named data
* :mod:`ppvae.model` -- the Model base class, capabilities, structure, enumeration
* :mod:`ppvae.runs` -- run directories, checkpoints, callbacks
* :mod:`ppvae.results` -- the Result interface and summaries
* :mod:`ppvae.infer` -- SVI (``infer.svi``), MCMC (``infer.mcmc``), EM, importance weights
* :mod:`ppvae.evaluate` -- log p(x), the evidence, AIS, BDMC, bridge sampling, inference gaps
* :mod:`ppvae.comparison` -- ArviZ data, LOO and the compare table
* :mod:`ppvae.cli` -- the ``ppvae`` command

The bundled models are in :mod:`ppvae.models` (the repository's top-level ``models/``)."""

# No global settings are changed here: ppvae's models and guides keep their parameters in their modules
# by turning Pyro's module_local_params on around their own construction and calls (ppvae/_util/params.py).
#
# The public names load on first use (PEP 562): ``import ppvae`` and ``ppvae.__version__`` cost nothing, so the
# ``ppvae`` command answers --help, --version, models and datasets without torch (issue 31). The first public
# name asked for loads every module below, in this order, as the eager imports did: result kinds and evaluators
# register themselves on import, and ``ppvae.load`` must find them whichever name came first.
import importlib

from ppvae._version import __version__  # noqa: F401

_EXPORTS: dict[str, tuple[str, ...]] = {
    "ppvae._util.validation": ("NonFiniteError", "PPVAEError", "check_choice", "check_float", "check_int",
                               "check_tensor", "renamed"),
    "ppvae.comparison": ("Comparison", "GuideDiagnostic", "SBCResult", "compare", "exact_posterior",
                         "guide_diagnostic", "sbc", "to_inference_data"),
    "ppvae.data": ("Batch", "Dataset", "corpus_from_counts", "corpus_from_texts", "list_datasets", "load_dataset",
                   "register_dataset"),
    "ppvae.evaluate": ("BDMCResult", "ImportanceWarning", "InferenceGaps", "LogEvidence", "LogMarginal", "bdmc",
                       "impute_weighted", "inference_gaps", "log_evidence", "log_marginal"),
    "ppvae.infer": ("ConjugateFit", "EMFit", "Fit", "MCMCDivergenceError", "MCMCResult", "Trainer", "fit",
                    "fit_conjugate", "fit_em", "fit_svi_natural", "fitted_proposal", "list_elbos", "list_guides",
                    "local_posterior", "make_elbo", "make_guide", "register_elbo", "register_guide", "run_mcmc"),
    "ppvae.model": ("BayesianWeights", "ClosedFormEM", "ClosedFormPotential", "ConditionsOnSubset",
                    "ConjugateExponential", "CoordinateAscentVI", "ExactPosterior", "Mixture", "Model", "Reports",
                    "build_model", "import_model", "list_models", "observed_part", "register_model", "require"),
    "ppvae.results": ("Result", "Summary", "list_kinds", "load", "register_kind"),
    "ppvae.runs": ("Callback", "EarlyStopping"),
}
_SUBMODULES = ("plots", "data", "model", "runs", "results", "infer", "evaluate", "comparison", "cli", "models")


def _load_public_names() -> None:
    """Import the engine and bind every public name in this module (later lookups skip ``__getattr__``)."""
    for module, names in _EXPORTS.items():
        loaded = importlib.import_module(module)
        for name in names:
            globals()[name] = getattr(loaded, name)


def __getattr__(name: str):
    """``ppvae.NAME`` and ``from ppvae import NAME`` for the public names and subpackages, loaded on first use."""
    if name in _SUBMODULES:
        return importlib.import_module(f"ppvae.{name}")
    if name in __all__:
        _load_public_names()
        return globals()[name]
    raise AttributeError(f"module 'ppvae' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


__all__ = [
    # data and models
    "Batch", "Dataset", "load_dataset", "list_datasets", "register_dataset", "corpus_from_texts",
    "corpus_from_counts", "Model", "build_model", "list_models", "register_model", "import_model",
    # declared model capabilities (ppvae/_capabilities.py)
    "ClosedFormEM", "ClosedFormPotential", "ExactPosterior", "Mixture", "CoordinateAscentVI", "ConjugateExponential",
    "Reports", "require", "ConditionsOnSubset", "observed_part", "BayesianWeights",
    # fitting
    "make_guide", "list_guides", "register_guide", "make_elbo", "list_elbos", "register_elbo",
    "fit", "Fit", "Trainer", "Callback", "EarlyStopping", "fit_em", "EMFit",
    "fit_conjugate", "fit_svi_natural", "ConjugateFit",
    # every result kind: predictions, summaries
    "Result", "Summary", "exact_posterior", "load", "register_kind", "list_kinds",
    # evaluation and comparison
    "log_marginal", "LogMarginal", "impute_weighted", "log_evidence", "LogEvidence", "inference_gaps", "InferenceGaps",
    "bdmc", "BDMCResult", "run_mcmc", "MCMCResult", "MCMCDivergenceError", "local_posterior", "fitted_proposal",
    "to_inference_data", "compare", "Comparison", "ImportanceWarning", "guide_diagnostic", "GuideDiagnostic", "sbc",
    "SBCResult",
    # validation for model authors
    "PPVAEError", "NonFiniteError", "check_choice", "check_float", "check_int", "check_tensor", "renamed",
]
