"""No surprise global state (issue 14, item 7): importing ppvae and fitting with it leaves Pyro's settings alone,
so a plain Pyro script gives the same numbers after a ppvae fit in the same process as in a fresh one; ppvae's
own models and guides still keep their parameters in their modules, so two fits never share parameters; and
no ppvae module selects a matplotlib backend or imports pyplot."""

import ast
import json
import os
import subprocess
import sys

import pyro
import pytest
import torch

import ppvae
from ppvae.models import PPCA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A plain Pyro script: SVI with three autoguides in the global param store, plus a raw pyro.param.
PLAIN_PYRO = r'''
import json, sys
import pyro, pyro.distributions as dist, torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal

def run_ppvae_first():
    import ppvae
    from ppvae.models import PPCA
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(1))
    ppvae.fit(PPCA(latent_dim=1), ppvae.Dataset(x), steps=5, progress=False)

def model(x):
    loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 10.0).to_event(1))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(loc, scale).to_event(1), obs=x)

if sys.argv[1] == "after":
    run_ppvae_first()
out = {"module_local_params": pyro.settings.get("module_local_params")}
x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)) + torch.tensor([1.0, -2.0])
for cls in (AutoMultivariateNormal, AutoNormal, AutoDelta):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = cls(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(30)]
    out[cls.__name__] = {"loss": losses[-1], "params": sorted(pyro.get_param_store().keys()),
                         "scale": float(pyro.param("scale"))}
print(json.dumps(out))
'''


def _run(mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", PLAIN_PYRO, mode], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_plain_pyro_script_runs_the_same_after_import_ppvae_and_a_fit():
    before, after = _run("before"), _run("after")
    assert after["module_local_params"] is False
    for name in ("AutoMultivariateNormal", "AutoNormal", "AutoDelta"):
        # the global param store holds the script's own parameters, and the same numbers come out
        assert "scale" in after[name]["params"] and after[name]["params"] == before[name]["params"]
        assert after[name]["loss"] == pytest.approx(before[name]["loss"], rel=1e-6)
        assert after[name]["scale"] == pytest.approx(before[name]["scale"], rel=1e-6)


def test_import_and_fit_leave_pyro_settings_alone():
    assert pyro.settings.get("module_local_params") is False
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    ppvae.fit(PPCA(latent_dim=1), ppvae.Dataset(x), steps=3, progress=False)
    assert pyro.settings.get("module_local_params") is False
    assert len(pyro.get_param_store()) == 0  # ppvae's parameters live in its modules


def test_two_fits_of_the_same_model_and_guide_do_not_share_parameters():
    g = torch.Generator().manual_seed(0)
    a, b = ppvae.Dataset(torch.randn(40, 3, generator=g)), ppvae.Dataset(5 + torch.randn(40, 3, generator=g))
    first = ppvae.fit(PPCA(latent_dim=1), a, guide="auto_normal", steps=30, lr=0.05, seed=0, progress=False)
    mu_first = first.model.mu.detach().clone()
    loc_first = {k: v.detach().clone() for k, v in first.guide.named_parameters()}
    second = ppvae.fit(PPCA(latent_dim=1), b, guide="auto_normal", steps=30, lr=0.05, seed=0, progress=False)
    # fitting the second (data 5 units away) changed nothing in the first
    assert torch.equal(first.model.mu.detach(), mu_first)
    assert all(torch.equal(v.detach(), loc_first[k]) for k, v in first.guide.named_parameters())
    assert (second.model.mu.detach() - mu_first).abs().min() > 3


def test_no_module_selects_a_matplotlib_backend_or_imports_pyplot():
    bad = []
    for folder in ("ppvae", "models"):
        for name in os.listdir(os.path.join(ROOT, folder)):
            if not name.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(ROOT, folder, name), encoding="utf-8").read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                    names = [a.name for a in node.names]
                    if any(m and "pyplot" in m for m in mods) or "pyplot" in names:
                        bad.append(f"{folder}/{name}:{node.lineno} imports pyplot")
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use" \
                        and getattr(node.func.value, "id", "") == "matplotlib":
                    bad.append(f"{folder}/{name}:{node.lineno} calls matplotlib.use")
    assert not bad, bad


# -- issue 22, item 7: public calls leave the caller's RNG states, param store and rcParams as they were --------
def _user_draws(call) -> tuple:
    """The user's next torch, numpy and Python draws after ``call()``, from a state the user set."""
    import random

    import numpy as np

    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    call()
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_fit_and_run_mcmc_leave_the_callers_rng_states_as_they_were():
    from ppvae.models import NormalGamma

    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(1))
    without = _user_draws(lambda: None)
    for seed in (1, 2):
        assert _user_draws(lambda s=seed: ppvae.fit(PPCA(latent_dim=1), ppvae.Dataset(x), steps=3, seed=s,
                                                   progress=False, check_convergence=False)) == without
    y = x[:, :1]
    assert _user_draws(lambda: ppvae.run_mcmc(NormalGamma(), y, num_draws=5, warmup=5, seed=4, cores=1,
                                              progress=False)) == without
    # and a seeded fit is still reproducible from its seed alone, whatever the caller's state
    torch.manual_seed(999)
    a = ppvae.fit(PPCA(latent_dim=1), ppvae.Dataset(x), steps=5, seed=7, progress=False, check_convergence=False)
    torch.manual_seed(5)
    b = ppvae.fit(PPCA(latent_dim=1), ppvae.Dataset(x), steps=5, seed=7, progress=False, check_convergence=False)
    assert a.history["loss"] == b.history["loss"]


def test_a_users_param_store_entry_survives_fit_and_load(tmp_path):
    pyro.clear_param_store()
    pyro.param("my_scale", torch.tensor(2.5), constraint=pyro.distributions.constraints.positive)
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(1))
    fit = ppvae.fit(PPCA(latent_dim=1), ppvae.Dataset(x), steps=3, progress=False, check_convergence=False)
    fit.save(str(tmp_path / "run"))
    ppvae.Fit.load(str(tmp_path / "run"))
    assert "my_scale" in pyro.get_param_store() and pyro.param("my_scale").item() == pytest.approx(2.5)
    pyro.clear_param_store()


def test_matplotlib_rcparams_are_left_alone(tmp_path):
    import matplotlib

    from ppvae.cli import main

    matplotlib.rcParams["lines.linewidth"] = 3.25
    before = dict(matplotlib.rcParams)
    assert main(["em", "gmm", "K=2", "--data", "faithful", "--restarts", "1", "--out", str(tmp_path / "em")]) == 0
    assert dict(matplotlib.rcParams) == before
    matplotlib.rcParams.update(matplotlib.rcParamsDefault)
