"""The ppvae model zoo, imported as ``ppvae.models``: one module per model family, each using only
the engine's public API. Importing this package registers every model by name."""

from .gmm import GMM
from .three_coin import ThreeCoin
from .normal_gamma import NormalGamma
from .ppca import PPCA
from .vae import VAE
from .m2 import M2
from .lda import LDA
from .prodlda import ProdLDA

__all__ = ["GMM", "ThreeCoin", "NormalGamma", "PPCA", "VAE", "M2", "LDA", "ProdLDA"]
