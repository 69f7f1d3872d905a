"""Compiled objectives for ``fit(..., jit=True)``: the ELBO traced once per batch shape.

Every SVI step of a Pyro model/guide pair runs Python besides the tensor arithmetic: effect
handlers, distribution objects, two traces (on the MNIST VAE of benchmarks/bench_vae_speed.py about
0.6 ms of a 2.2 ms forward pass). :func:`torch.jit.trace` records only the tensor operations of
one call; later steps replay that graph. This is what :class:`pyro.infer.JitTrace_ELBO` does
through :func:`pyro.ops.jit.trace` for parameters in Pyro's global store; ppvae keeps parameters in
the modules (module-local params), so here the traced function is an ``nn.Module`` holding the model
and the guide, and the tracer makes their parameters inputs of the graph (gradients reach them and
optimizer updates are seen by the next call). The random draws of ``rsample`` are recorded as
random ops, so every call draws afresh from the same RNG stream as the eager objective would.

Valid when the sequence of tensor operations does not depend on data values or random draws (no
Python control flow on them) -- the usual condition for tracing (Pyro's JitTrace_ELBO has the same).
Each graph is checked when it is built: user code must not have turned a tensor into a Python value
while tracing (a TracerWarning from outside torch and Pyro), and the graph, replayed from two RNG
states on the batch it was traced on, must give the eager objective's values. Otherwise, or when the
tracer refuses the model (for example a parameter it cannot see), training goes on eagerly and one
warning says why. Control flow on the values of other batches stays out of sight of these checks.

``torch.compile`` is not used: on the MNIST VAE it took 25 s to compile and ran slower than eager,
because Pyro's messengers break its graph. ``torch.jit.trace`` is deprecated in recent torch releases
but still supported; its deprecation warning is dropped here.
"""

from __future__ import annotations

import os
import warnings

import pyro
import torch
from torch import nn

from ppvae._util.validation import one_line
from ppvae.data.loaders import Batch

__all__ = ["CompiledObjective"]


class _Objective(nn.Module):
    """``objective.differentiable_loss(model_fn, guide, Batch(x, y, index, size))`` as a module whose
    submodules (the model and the guide, when modules) own every parameter the loss reads; called
    with the batch's tensors (``fields`` names them: x and those of index and y that are present)."""

    def __init__(self, objective, model_fn, guide, modules: list[nn.Module], fields: tuple[str, ...], size):
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.__dict__["_call"] = (objective, model_fn, guide, fields, size)  # not submodules: no double registration

    def forward(self, *tensors):
        objective, model_fn, guide, fields, size = self._call
        batch = Batch(size=size, **dict(zip(fields, tensors, strict=True)))
        return objective.differentiable_loss(model_fn, guide, batch)


class CompiledObjective:
    """Call with a :class:`Batch`: the objective's differentiable loss, from a graph traced for that
    batch's shapes (built and checked on first use), or eagerly where tracing failed."""

    def __init__(self, objective, model_fn, guide, model: nn.Module):
        modules = [m for m in dict.fromkeys([model, guide]) if isinstance(m, nn.Module)]
        self.objective, self.model_fn, self.guide, self.modules = objective, model_fn, guide, modules
        self.graphs: dict[tuple, torch.jit.ScriptModule] = {}
        self.failed: str | None = None  # why tracing was given up, once it was

    def __call__(self, batch: Batch, step: int):
        if self.failed is not None:
            return self.objective.differentiable_loss(self.model_fn, self.guide, batch)
        fields = tuple(f for f in ("x", "index", "y", "mask") if getattr(batch, f) is not None)
        inputs = tuple(getattr(batch, f) for f in fields)
        key = (fields, batch.size) + tuple((t.shape, t.dtype, t.device) for t in inputs)
        graph = self.graphs.get(key)
        if graph is None:
            return self._build(key, fields, inputs, batch, step)
        return graph(*inputs)

    def _build(self, key, fields, inputs, batch: Batch, step: int):
        """Trace for these shapes and check the graph before using it: give up where user code turned a
        tensor into a Python value while tracing (control flow the graph cannot follow), or where the
        graph, replayed from two RNG states, differs from the eager objective. The replay from the
        step's own RNG state is this step's loss (the same draws as an eager step, so jit=True and
        jit=False runs agree to rounding)."""
        module = _Objective(self.objective, self.model_fn, self.guide, self.modules, fields, batch.size)
        device = batch.x.device
        s0 = _rng_state(device)
        buffers = [(b, b.detach().clone()) for m in self.modules for b in m.buffers()]
        rewind = lambda state: _rewind(device, state, buffers)  # noqa: E731 -- RNG and e.g. batch-norm statistics
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")  # TracerWarnings are inspected below; the deprecation is dropped
                graph = torch.jit.trace(module, inputs, check_trace=False)
            where = _user_conversion(caught)
            if where is not None:
                return self._give_up(f"the model turns a tensor into a Python value at {where}, which a traced "
                                     "graph cannot follow", batch, rewind, s0)
            # eager and graph from the same RNG state, twice: fresh draws (s1), then the step's own (s0);
            # with gradients recorded, since TraceEnum_ELBO refuses a loss that needs none
            s1 = _rng_state(device)
            rewind(s1)
            fresh = module(*inputs).detach()
            rewind(s1)
            fresh_graph = graph(*inputs).detach()
            rewind(s0)
            eager = module(*inputs).detach()
            rewind(s0)
            loss = graph(*inputs)
        except (RuntimeError, TypeError, ValueError) as exc:
            reason = one_line(exc)
            return self._give_up(f"torch.jit.trace failed: {reason}", batch, rewind, s0)
        for traced, expected in ((fresh_graph, fresh), (loss.detach(), eager)):  # rounding: ~1e-7 relative
            if not torch.allclose(traced, expected, rtol=1e-4, atol=1e-4, equal_nan=True):  # NaN: the trainer's guard
                return self._give_up(f"at step {step} the traced objective gave {traced.item():.6g} where the "
                                     f"eager one gave {expected.item():.6g} (the model's operations depend on "
                                     "data values or random draws)", batch, rewind, s0)
        self.graphs[key] = graph
        return loss

    def _give_up(self, reason: str, batch: Batch, rewind, state):
        self.failed = reason
        warnings.warn(f"jit: {reason}; training continues without jit", RuntimeWarning, stacklevel=4)
        rewind(state)
        return self.objective.differentiable_loss(self.model_fn, self.guide, batch)


_LIBRARIES = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch, pyro))


def _user_conversion(caught) -> str | None:
    """``file:line`` of the first TracerWarning about turning a tensor into a Python value raised
    outside torch and Pyro (whose own conversions are shape checks and NaN warnings), else None."""
    for w in caught:
        if (issubclass(w.category, torch.jit.TracerWarning) and "to a Python" in str(w.message)
                and not os.path.abspath(w.filename).startswith(_LIBRARIES)):
            return f"{w.filename}:{w.lineno}"
    return None


def _rng_state(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _rewind(device: torch.device, state, buffers) -> None:
    _set_rng_state(device, state)
    with torch.no_grad():
        for buf, saved in buffers:
            buf.copy_(saved)


def _set_rng_state(device: torch.device, state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
