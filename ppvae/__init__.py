"""ppvae: latent-variable models on Pyro, fitted by SVI, evaluated honestly, compared with MCMC and EM."""

__version__ = "0.1.0"

from .data import Batch, Dataset, list_datasets, load_dataset, register_dataset  # noqa: E402
from .model import Model, build_model, list_models, register_model  # noqa: E402
from .guides import list_guides, make_guide, register_guide  # noqa: E402
from .objectives import list_elbos, make_elbo, register_elbo  # noqa: E402
from .train import fit  # noqa: E402
from .results import Fit  # noqa: E402
from ._validation import NonFiniteError, PPVAEError  # noqa: E402

__all__ = [
    "Batch", "Dataset", "Fit", "Model", "NonFiniteError", "PPVAEError",
    "build_model", "fit", "list_datasets", "list_elbos", "list_guides", "list_models",
    "load_dataset", "make_elbo", "make_guide", "register_dataset", "register_elbo",
    "register_guide", "register_model",
]
