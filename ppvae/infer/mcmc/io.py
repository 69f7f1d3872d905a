"""Saving and loading an :class:`ppvae.infer.mcmc.sampler.MCMCResult` as a run directory of kind ``mcmc``
(format: ppvae/runs/directory.py).

``samples.pt`` holds the constrained draws, site -> (chains, draws, ...); ``params.pt`` the model's
buffers (what its ``setup`` derived from the data); ``config.json`` the model, data, kernel settings,
time and divergences. Pyro's ``MCMC`` object (the sampler's own state) is not saved: a loaded result
has ``mcmc = None`` and everything computed from the draws.
"""

from __future__ import annotations

import torch

from ppvae._util.validation import PPVAEError
from ppvae.runs import directory as runs


def save(result, path: str) -> None:
    config = runs.make_config("mcmc", result.model, result.data_info, method=result.method, time_s=result.time_s,
                              num_divergences=result.num_divergences, mcmc=result.config)
    runs.write_tensors(path, runs.SAMPLES, dict(result.samples))
    runs.write_tensors(path, runs.PARAMS, {"model": result.model.state_dict()})
    runs.write_config(path, config)


def load(cls, path: str):
    config = runs.read_config(path, "mcmc")
    samples = runs.read_tensors(path, runs.SAMPLES)
    state = runs.read_tensors(path, runs.PARAMS, ("model",))
    bad = [k for k, v in samples.items() if not isinstance(v, torch.Tensor) or v.dim() < 2]
    if not samples or bad:
        raise PPVAEError(f"load: {path}/{runs.SAMPLES} is not a ppvae MCMC file (expected site -> "
                         f"(chains, draws, ...) tensors; got {', '.join(bad) or 'no sites'})")
    model = runs.run_model(config, path)
    try:
        model.setup(runs.stub_dataset(config["data"]))
        model.load_state_dict(state["model"])
        return cls(model, None, samples, config["method"], float(config["time_s"]), int(config["num_divergences"]),
                   config["data"], dict(config["mcmc"]))
    except (KeyError, TypeError, RuntimeError) as exc:
        raise PPVAEError(f"load: {path} is not a complete ppvae MCMC run ({exc})") from None
