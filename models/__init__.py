"""The ppvae model zoo, imported as ``ppvae.models``: one module per model family, each using only
the engine's public API. Importing this package registers every model by name."""

from .gmm import GMM
from .three_coin import ThreeCoin

__all__ = ["GMM", "ThreeCoin"]
