"""Declared model capabilities (issue 14, item 4): named abstract mixins instead of hooks found by name.

Checks: which capabilities every zoo and example model declares; require()'s one-line message; no mixture
alignment without :class:`ppvae.Mixture` (no fallback to an attribute named K); ``ppvae em`` on a model
without EM; the CLI help built from the guide and ELBO registries; one jit switch; the rule for a hook
defined without its capability; no name-based hook lookups left in the engine.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os

import pyro
import pyro.distributions as dist
import pytest
import torch
from _helpers import REPO_ROOT

import ppvae
from ppvae import (
    ClosedFormEM,
    ClosedFormPotential,
    ConditionsOnSubset,
    ConjugateExponential,
    CoordinateAscentVI,
    ExactPosterior,
    Mixture,
    Reports,
)
from ppvae.cli.app import build_parser, main
from ppvae.model.base import get_model_class
from ppvae.model.capabilities import CAPABILITIES, capabilities_of
from ppvae.model.labels import align_labels, component_sites

ROOT = str(REPO_ROOT)

ZOO = {
    "gmm": {ClosedFormEM, ClosedFormPotential, Mixture, Reports},
    "bayes_gmm": {Mixture, CoordinateAscentVI, ConjugateExponential},
    "three_coin": {ClosedFormEM},
    "ppca": {ExactPosterior, ConditionsOnSubset},
    "normal_gamma": {ExactPosterior, CoordinateAscentVI, ConjugateExponential},
    "vae": {Reports, ConditionsOnSubset},
    "m2": {Reports},
    "dvae": {Reports, ConditionsOnSubset},
    "lda": {CoordinateAscentVI, ConjugateExponential, Reports},
    "prodlda": {Reports},
}

EXAMPLES = {
    ("custom_model.py", "PoissonMixture"): {Mixture},
    ("mixreg.py", "MixtureOfRegressions"): {Mixture},
    ("blr.py", "BayesianLinearRegression"): set(),
    ("factor_analysis.py", "FactorAnalysis"): set(),  # has an attribute K (factors), and is no mixture
}


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"_cap_{name[:-3]}", os.path.join(ROOT, "examples", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(ZOO))
def test_each_zoo_model_declares_its_capabilities(name):
    cls = get_model_class(name)
    assert set(capabilities_of(cls)) == ZOO[name], name
    for cap in ZOO[name]:  # every abstract method is implemented, so the class can be built
        assert not (getattr(cls, "__abstractmethods__", set()) & set(cap.hooks)), (name, cap)


def test_the_zoo_table_covers_every_bundled_model():
    modules = ("ppvae.models.", "models.")  # tests also import the zoo from the source tree, as models.gmm
    bundled = {n for n in ppvae.list_models() if get_model_class(n).__module__.startswith(modules)}
    assert bundled == set(ZOO)


@pytest.mark.parametrize("file,cls", sorted(EXAMPLES))
def test_examples_declare_their_capabilities(file, cls):
    assert set(capabilities_of(getattr(_example(file), cls))) == EXAMPLES[(file, cls)]


def test_require_names_the_model_the_capability_and_the_methods():
    model = get_model_class("ppca")()
    with pytest.raises(ppvae.PPVAEError) as info:
        ppvae.require(model, ClosedFormEM, "fit_em")
    message = str(info.value)
    assert "\n" not in message and message.startswith("fit_em: model 'ppca' has no closed-form EM")
    assert "ppvae.ClosedFormEM" in message
    assert all(m in message for m in ("em_init(x, generator, init=None)", "em_step(x, params)", "em_to_sites(params)"))
    ppvae.require(get_model_class("gmm")(), ClosedFormEM, "fit_em")  # declared: nothing raised
    with pytest.raises(ppvae.PPVAEError, match=r"posterior_guide\(x, y=None\)"):
        ppvae.exact_posterior(get_model_class("gmm")(), torch.randn(5, 2))
    with pytest.raises(ppvae.PPVAEError, match=r"fit_em: model 'ppca' has no closed-form EM .*ppvae.ClosedFormEM"):
        ppvae.fit_em(model, torch.randn(5, 2))


class _TwoGroups(ppvae.Model):
    """Has an attribute K and sites with leading dimension K, but declares no Mixture."""

    def __init__(self, K: int = 2):
        super().__init__()
        self.K = K

    def forward(self, batch):
        locs = pyro.sample("locs", dist.Normal(batch.x.new_zeros(self.K, 1), 10.0).to_event(2))
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Categorical(batch.x.new_ones(self.K)))
            pyro.sample("obs", dist.Normal(locs[z], 1.0).to_event(1), obs=batch.x)


class _TwoComponents(_TwoGroups, ppvae.Mixture):
    def num_components(self):
        return self.K


def test_a_model_without_mixture_has_no_components_and_no_alignment():
    data = torch.tensor([[-3.0], [-2.5], [2.0], [3.0]])
    swapped = torch.tensor([[[[-3.0], [3.0]], [[3.0], [-3.0]]]])  # (chains 1, draws 2, K 2, 1): a label switch
    samples = {"locs": swapped}
    assert component_sites(_TwoGroups(), {"locs": swapped[0, 0]}) == {}
    same, info = align_labels(samples, _TwoGroups(), data)
    assert info is None and torch.equal(same["locs"], swapped)
    assert component_sites(_TwoComponents(), {"locs": swapped[0, 0]}) == {"locs": 0}
    aligned, info = align_labels(samples, _TwoComponents(), data)
    assert info["site"] == "locs" and torch.equal(aligned["locs"][0, 1], swapped[0, 0])


def test_cli_em_on_a_model_without_closed_form_em_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["em", "ppca", "--data", "faithful", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ppvae: error: ppvae em: model 'ppca' has no closed-form EM")
    with_em = sorted(n for n in ppvae.list_models() if issubclass(get_model_class(n), ClosedFormEM))
    assert "ppvae.ClosedFormEM" in err and f"models with it: {', '.join(with_em)}" in err
    assert not out.exists()


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _help_of(parser, dest: str) -> str:
    return " ".join(next(a for a in parser._actions if a.dest == dest).help.split())


def test_fit_help_lists_every_registered_guide_and_elbo(monkeypatch):
    from ppvae.infer.svi import guides, objectives

    monkeypatch.setitem(guides._GUIDES, "my_test_guide", (lambda model, **kw: None, "a guide registered by a test"))
    monkeypatch.setitem(objectives._ELBOS, "my_test_elbo", (lambda **kw: None, "an ELBO registered by a test", False))
    fit = _subparser("fit")
    guide_help, elbo_help = _help_of(fit, "guide"), _help_of(fit, "elbo")
    assert "my_test_guide" in guide_help and "my_test_elbo" in elbo_help and "iwae" in elbo_help
    assert all(name in guide_help for name in ppvae.list_guides())
    assert all(name in elbo_help for name in ppvae.list_elbos())


def test_one_jit_switch_on_fit_compare_and_mcmc():
    defaults = {"fit": None, "compare": True, "mcmc": False}  # the model's train_defaults; compiled; eager
    for command, default in defaults.items():
        parser = _subparser(command)
        action = next(a for a in parser._actions if a.dest == "jit")
        assert isinstance(action, argparse.BooleanOptionalAction) and action.option_strings == ["--jit", "--no-jit"]
        assert action.default is default, command
        assert not any(a.dest == "no_jit" for a in parser._actions)


def test_a_hook_defined_without_its_capability_is_refused_at_class_creation():
    with pytest.raises(TypeError, match=r"'_Undeclared' \(.*\) defines em_step, reserved for ppvae.ClosedFormEM"):
        class _Undeclared(ppvae.Model):
            def forward(self, batch):
                pass

            def em_step(self, x, params):
                return params, x.new_zeros(len(x))

    with pytest.raises(TypeError, match=r"train_defaults, reserved for ppvae.Reports"):
        class _Defaults(ppvae.Model):
            train_defaults = {"lr": 0.1}

    class _Declared(ppvae.Model, ClosedFormEM):  # declared but incomplete: abc refuses an instance
        def em_step(self, x, params):
            return params, x.new_zeros(len(x))

    with pytest.raises(TypeError, match="abstract"):
        _Declared()

    class _Tuned(get_model_class("gmm")):  # a subclass inherits the declarations and may override hooks
        def em_responsibilities(self, x, params):
            return super().em_responsibilities(x, params)

    assert set(capabilities_of(_Tuned)) == ZOO["gmm"]
    assert all(issubclass(c, ppvae.model.base.Capability) for c in CAPABILITIES)


def test_the_engine_finds_no_hook_by_name():
    hooks = {h for cap in CAPABILITIES for h in cap.hooks}
    found = []
    for folder in ("ppvae", "models"):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if not name.endswith(".py") or name == "_capabilities.py":
                continue
            path = os.path.join(ROOT, folder, name)
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read(), path)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in ("hasattr", "getattr") and len(node.args) >= 2
                        and isinstance(node.args[1], ast.Constant) and node.args[1].value in hooks):
                    found.append(f"{folder}/{name}:{node.lineno} {node.func.id}(..., {node.args[1].value!r})")
    assert not found, found
