"""The ppvae model zoo, imported as ``ppvae.models``: one module per model family, each using only
the engine's public API. Importing this package registers every model by name."""

from .bayes_gmm import BayesGMM
from .dvae import DiscreteVAE
from .gmm import GMM
from .lda import LDA
from .m2 import M2
from .normal_gamma import NormalGamma
from .ppca import PPCA
from .prodlda import ProdLDA
from .three_coin import ThreeCoin
from .vae import VAE

__all__ = ["GMM", "BayesGMM", "ThreeCoin", "NormalGamma", "PPCA", "VAE", "M2", "LDA", "ProdLDA", "DiscreteVAE"]
