"""ppvae: latent-variable models on Pyro, fitted by SVI, evaluated honestly, compared with MCMC and EM."""

# No global settings are changed here: ppvae's models and guides keep their parameters in their modules
# by turning Pyro's module_local_params on around their own construction and calls (ppvae/_params.py).
from ._mcmc_local import fitted_proposal, local_posterior  # noqa: E402
from ._validation import (  # noqa: E402
    NonFiniteError,
    PPVAEError,
    check_choice,
    check_float,
    check_int,
    check_tensor,
)
from ._version import __version__  # noqa: F401
from .bdmc import BDMCResult, bdmc  # noqa: E402
from .callbacks import Callback, EarlyStopping  # noqa: E402
from .compare import Comparison, compare  # noqa: E402
from .conjugate import ConjugateFit, fit_conjugate  # noqa: E402
from .data import (  # noqa: E402
    Batch,
    Dataset,
    corpus_from_counts,
    corpus_from_texts,
    list_datasets,
    load_dataset,
    register_dataset,
)
from .em import EMFit, fit_em  # noqa: E402
from .evaluate import ImportanceWarning, LogEvidence, LogMarginal, log_evidence, log_marginal  # noqa: E402
from .gaps import InferenceGaps, inference_gaps  # noqa: E402
from .guides import list_guides, make_guide, register_guide  # noqa: E402
from .inference_data import exact_posterior, to_inference_data  # noqa: E402
from .mcmc import MCMCDivergenceError, MCMCResult, run_mcmc  # noqa: E402
from .model import (  # noqa: E402
    ClosedFormEM,
    ClosedFormPotential,
    ConjugateExponential,
    CoordinateAscentVI,
    ExactPosterior,
    Mixture,
    Model,
    Reports,
    build_model,
    import_model,
    list_models,
    register_model,
    require,
)
from .natural_svi import fit_svi_natural  # noqa: E402
from .objectives import list_elbos, make_elbo, register_elbo  # noqa: E402
from .result import Result  # noqa: E402
from .results import Fit  # noqa: E402
from .summary import Summary  # noqa: E402
from .train import Trainer, fit  # noqa: E402

__all__ = [
    # data and models
    "Batch", "Dataset", "load_dataset", "list_datasets", "register_dataset", "corpus_from_texts",
    "corpus_from_counts", "Model", "build_model", "list_models", "register_model", "import_model",
    # declared model capabilities (ppvae/_capabilities.py)
    "ClosedFormEM", "ClosedFormPotential", "ExactPosterior", "Mixture", "CoordinateAscentVI", "ConjugateExponential",
    "Reports", "require",
    # fitting
    "make_guide", "list_guides", "register_guide", "make_elbo", "list_elbos", "register_elbo",
    "fit", "Fit", "Trainer", "Callback", "EarlyStopping", "fit_em", "EMFit",
    "fit_conjugate", "fit_svi_natural", "ConjugateFit",
    # every result kind: predictions, summaries
    "Result", "Summary", "exact_posterior",
    # evaluation and comparison
    "log_marginal", "LogMarginal", "log_evidence", "LogEvidence", "inference_gaps", "InferenceGaps",
    "bdmc", "BDMCResult", "run_mcmc", "MCMCResult", "MCMCDivergenceError", "local_posterior", "fitted_proposal",
    "to_inference_data", "compare", "Comparison", "ImportanceWarning",
    # validation for model authors
    "PPVAEError", "NonFiniteError", "check_choice", "check_float", "check_int", "check_tensor",
]
