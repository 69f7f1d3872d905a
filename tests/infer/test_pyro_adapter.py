"""Pyro's private API is used in one module, ppvae/infer/pyro_adapter.py, and each of its functions works
against the installed Pyro."""

import ast
import os

import pyro
import pyro.distributions as dist
import torch
from _helpers import REPO_ROOT
from pyro.infer.autoguide import AutoMultivariateNormal
from pyro.infer.mcmc import NUTS

from ppvae.infer.pyro_adapter import chain_draws, mcmc_from_draws, unpack_latent

ROOT = str(REPO_ROOT)
ADAPTER = os.path.join("ppvae", "infer", "pyro_adapter.py")
# Pyro members ppvae once reached into; none may appear outside the adapter
PYRO_PRIVATES = {"_gen_samples", "_unpack_latent", "_samples", "_diagnostics", "_pack_latent"}


def test_pyro_privates_appear_only_in_the_adapter():
    bad = []
    for top in ("ppvae", "models"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)
                if not f.endswith(".py") or rel == ADAPTER:
                    continue
                tree = ast.parse(open(path, encoding="utf-8").read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyro"):
                        bad += [(rel, node.lineno, a.name) for a in node.names if a.name.startswith("_")]
                    if isinstance(node, ast.Attribute) and node.attr in PYRO_PRIVATES:
                        bad.append((rel, node.lineno, node.attr))
    assert not bad, f"Pyro private API outside {ADAPTER}: {bad}"


def test_chain_draws_and_mcmc_from_draws_sample_a_normal():
    pyro.set_rng_seed(0)
    calls = []
    kernel = NUTS(potential_fn=lambda p: 0.5 * (p["x"] ** 2).sum())
    kernel.initial_params = {"x": torch.zeros(2)}
    draws, diagnostics = chain_draws(kernel, warmup=200, num_draws=400, hook=lambda: calls.append(1))
    assert draws.shape == (400, 2) and len(calls) == 600
    assert draws.mean(0).abs().max() < 0.25 and (draws.std(0) - 1).abs().max() < 0.2  # N(0, I), ESS >~ 150
    mcmc = mcmc_from_draws(kernel, {"x": torch.stack([draws, draws])}, [diagnostics, diagnostics], warmup=200)
    assert mcmc.get_samples(group_by_chain=True)["x"].shape == (2, 400, 2)
    assert set(mcmc.diagnostics()["x"]) >= {"n_eff", "r_hat"}


def test_unpack_latent_splits_an_autocontinuous_vector_by_site():
    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    guide = AutoMultivariateNormal(model)
    guide()
    pieces = {site["name"]: value for site, value in unpack_latent(guide, torch.arange(4.0))}
    torch.testing.assert_close(pieces["a"], torch.tensor(0.0))
    torch.testing.assert_close(pieces["b"], torch.tensor([1.0, 2.0, 3.0]))
