"""Checks of ``run_mcmc``'s inputs (init values, order, an observed site) and its per-element diagnostics:
every bad input is refused in one line naming the argument before any chain runs."""

from __future__ import annotations

import functools
import warnings

import torch

from ppvae._util.validation import PPVAEError, check_choice, check_float, check_int
from ppvae.data.loaders import Dataset
from ppvae.infer.importance import BroadcastError, draws_broadcast
from ppvae.model.base import ClosedFormEM
from ppvae.model.enumeration import enumerated_log_likelihood
from ppvae.model.labels import component_sites
from ppvae.results.base import Result
from ppvae.runs import directory as runs


def per_element(samples: dict, which: str) -> dict[str, torch.Tensor]:
    """``arviz.rhat`` or bulk ``arviz.ess`` of every element of every (chains, draws, ...) site."""
    import arviz as az  # heavy: loaded only for diagnostics

    fn = az.rhat if which == "rhat" else functools.partial(az.ess, method="bulk")
    out = {}
    with warnings.catch_warnings():  # arviz's divide-by-zero on constant entries (their value is NaN)
        warnings.simplefilter("ignore", RuntimeWarning)
        for k, v in samples.items():
            flat = v.detach().double().cpu().reshape(v.shape[:2] + (-1,)).numpy()
            values = [float(fn(flat[..., i])) for i in range(flat.shape[-1])]
            out[k] = torch.tensor(values, dtype=v.dtype).reshape(v.shape[2:])
    return out


def check_order(order) -> tuple[str, int] | None:
    """``order``: None or (SITE, COLUMN), e.g. ("locs", 0)."""
    if order is None:
        return None
    if (not isinstance(order, (tuple, list)) or len(order) != 2 or not isinstance(order[0], str)
            or isinstance(order[1], bool) or not isinstance(order[1], int)):
        raise PPVAEError(f"order: expected (SITE, COLUMN) such as ('locs', 0); got {order!r:.60}")
    return order[0], order[1]


def check_init(init, potential) -> None:
    """A dict ``init`` names sampled continuous sites only, each value with the site's shape and in its support."""
    if not isinstance(init, dict):
        return
    unknown = sorted(set(init) - set(potential.sites))
    if unknown:
        raise PPVAEError(f"init: expected values for sampled continuous sites among {', '.join(potential.sites)}; "
                         f"got unknown {', '.join(map(repr, unknown))}")
    for name, value in init.items():
        site = potential.sites[name]
        try:
            value = torch.as_tensor(value, dtype=site["value"].dtype)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise PPVAEError(f"init['{name}']: expected a numeric array; got {type(value).__name__} ({exc})") from None
        if value.shape != site["value"].shape:
            raise PPVAEError(f"init['{name}']: expected shape {tuple(site['value'].shape)}; got {tuple(value.shape)}")
        if not bool(site["fn"].support.check(value).all()):
            raise PPVAEError(f"init['{name}']: expected values in the support {site['fn'].support}; got values "
                             "outside it")


def check_loaded_samples(result, path: str) -> None:
    """The draws of a loaded MCMC run: every site a latent of the model with its shape, all sites
    (chains, draws) as the run's config says (NaN and inf are refused by ``runs.read_tensors``)."""
    where = f"load: {path}/{runs.SAMPLES}"
    with torch.random.fork_rng(devices=[]):  # a prior draw to read the sites' shapes; the caller's RNG kept
        trace = result.model.trace(runs.stub_dataset(result.data_info).batch())
    sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]}
    first = tuple(next(iter(result.samples.values())).shape[:2])
    said = (result.config.get("num_chains"), result.config.get("num_draws", result.config.get("num_samples")))
    lead = tuple(f if s is None else s for s, f in zip(said, first, strict=True))  # every site alike, as config says
    for name, draws in result.samples.items():
        if name not in sites:
            raise PPVAEError(f"{where}: holds site '{name}', not a latent of model '{result.model.name}' "
                             f"({', '.join(sites)}); the file is not this run's")
        want = (*lead, *sites[name]["value"].shape)
        if tuple(draws.shape) != want:
            raise PPVAEError(f"{where}: site '{name}' has shape {tuple(draws.shape)}; expected {want} "
                             "(chains, draws, *site shape)")


_PROBE_DRAWS = 7  # prime, unlikely to equal a dimension of the model and broadcast by accident


def check_broadcasts(model, batch) -> None:
    """Before any chain runs: the model computes its pointwise likelihood over a leading dimension of seven
    prior draws of its globals, as the summary and PSIS-LOO after sampling do (else one line states the rule)."""
    structure = model.structure(batch)
    if structure.continuous_local_sites or not structure.global_sites:
        return
    with torch.random.fork_rng(devices=[]):  # prior draws for a check; the caller's RNG kept
        trace = model.trace(batch)
    draws = {n: trace.nodes[n]["value"].detach().expand(_PROBE_DRAWS, *trace.nodes[n]["value"].shape)
             for n in structure.global_sites}
    try:
        with torch.no_grad(), draws_broadcast(model, _PROBE_DRAWS, list(draws)):
            enumerated_log_likelihood(model, batch, draws, num_draws=_PROBE_DRAWS)
    except BroadcastError:
        raise
    except Exception:  # noqa: BLE001 -- another reason the pointwise likelihood fails: not this check's to refuse
        return


def init_values(model, batch, init, seed) -> dict:
    """The values ``init`` gives (None/"model": the model's ``init_values``; "prior": none; a dict; a Fit or an
    EMFit's values) for the chain seeded ``seed``."""
    if init is None or init == "model":
        if model is None:
            return {}
        return model.init_values(Dataset(batch.x, batch.y), torch.Generator().manual_seed(seed))
    if init == "prior":
        return {}
    if isinstance(init, dict):
        return {k: torch.as_tensor(v) for k, v in init.items()}
    if isinstance(init, Result) and init.method == "em" and isinstance(init.model, ClosedFormEM):
        return {k: v.to(batch.x.dtype) for k, v in init.model.em_to_sites(init.params).items()}  # float64 params
    if isinstance(init, Result):
        return init.global_values(Dataset(batch.x, batch.y))
    raise PPVAEError(f"init: expected None, 'model', 'prior', a dict of site values, a Fit or an EMFit; got {init!r}")


def sort_components(model, values: dict, name: str, column: int) -> dict:
    """Permute every component-indexed site so that ``values[name][:, column]`` increases."""
    perm = values[name][:, column].argsort()
    return {k: (v.index_select(component_sites(model, values).get(k, 0), perm)
                if k in component_sites(model, values) else v) for k, v in values.items()}


def check_options(kind, num_samples, warmup, num_chains, seed, options) -> None:
    """``run_mcmc``'s kernel, counts, seed and sampler options (``options``: target_accept, max_tree_depth,
    num_leapfrog, full_mass, step_size, vectorized)."""
    check_choice("kernel", kind, ("nuts", "hmc"))
    if check_int("num_draws", num_samples, low=1) < 4:
        raise PPVAEError(f"num_draws: expected at least 4 draws per chain (split R-hat and ESS need them); "
                         f"got {num_samples}")
    check_int("warmup", warmup, low=0)
    check_int("num_chains", num_chains, low=1)
    check_int("seed", seed, low=0)
    check_float("target_accept", options["target_accept"], low=0.0, high=1.0, strict=True)
    check_int("max_tree_depth", options["max_tree_depth"], low=1)
    check_int("num_leapfrog", options["num_leapfrog"], low=1)
    if options.get("vectorized") and (kind != "nuts" or options["full_mass"] or options["step_size"] is not None):
        raise PPVAEError("vectorized: expected kernel='nuts' with a diagonal mass matrix and adapted step size; got "
                         f"kernel={kind!r}, full_mass={options['full_mass']}, step_size={options['step_size']}")
