"""ppvae: latent-variable models on Pyro, fitted by SVI, evaluated honestly, compared with MCMC and EM."""

__version__ = "0.1.0"

import pyro as _pyro  # noqa: E402

# Parameters live in their modules, not in Pyro's global param store: otherwise two fits of the same
# model and guide in one process share parameters by name, and fitting one silently changes the other.
_pyro.settings.set(module_local_params=True)

from .data import Batch, Dataset, list_datasets, load_dataset, register_dataset  # noqa: E402
from .model import Model, build_model, list_models, register_model  # noqa: E402
from .guides import list_guides, make_guide, register_guide  # noqa: E402
from .objectives import list_elbos, make_elbo, register_elbo  # noqa: E402
from .train import fit  # noqa: E402
from .results import Fit  # noqa: E402
from .evaluate import LogEvidence, LogMarginal, log_evidence, log_marginal  # noqa: E402
from .mcmc import MCMCResult, local_posterior, run_mcmc  # noqa: E402
from .inference_data import to_inference_data  # noqa: E402
from .compare import Comparison, compare  # noqa: E402
from .gaps import InferenceGaps, inference_gaps  # noqa: E402
from ._validation import NonFiniteError, PPVAEError, check_choice, check_float, check_int, check_tensor  # noqa: E402

__all__ = [
    "Batch", "Dataset", "Fit", "Model", "NonFiniteError", "PPVAEError",
    "build_model", "check_choice", "check_float", "check_int", "check_tensor", "fit", "list_datasets", "list_elbos", "list_guides", "list_models",
    "load_dataset", "make_elbo", "make_guide", "register_dataset", "register_elbo",
    "register_guide", "register_model",
    "LogEvidence", "LogMarginal", "log_evidence", "log_marginal",
    "MCMCResult", "local_posterior", "run_mcmc", "to_inference_data", "Comparison", "compare",
    "InferenceGaps", "inference_gaps",
]
