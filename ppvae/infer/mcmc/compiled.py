"""The vectorized sampler's potential and gradient compiled to machine code: (C, n) -> (U (C,), grad U (C, n)) as one
C++ function.

On the small models NUTS is run on, one batched evaluation of U and its gradient is a few hundred tiny tensor
operations each way (the model's log-densities, the transforms' Jacobians, autograd's backward), and each costs its
PyTorch dispatch (~2-10 us), not its arithmetic: ~1.5-30 ms per leapfrog step traced with ``torch.jit.trace``. As for
SVI (:mod:`ppvae.infer.svi.compiled`), the function theta -> (U, dU/dtheta) of all chains is recorded once at the
ATen level with ``make_fx`` (autograd's backward included) and compiled by TorchInductor into a few fused C++ loops:
0.1-0.4 ms per step on the four models of ``benchmarks/bench_nuts_general.py``, 10-85x less.

Compilation costs 10-40 CPU s on those models (inductor's code generation, then the C++ compiler; inductor's on-disk
cache makes a later compile of the same graph fast), so :func:`wants_compile` takes it only when asked
(``compile=True``) or, with ``compile="auto"``, for vectorized runs with ``jit=True`` of at least
:data:`AUTO_MIN_ITERATIONS` iterations per chain, where it pays for itself: ~10 leapfrog steps per iteration and
1-30 ms saved on each. Much of the compile is the C++ compiler's, and most of that the SIMD code inductor writes
for every loop: generated without it (scalar loops, :func:`ppvae.infer.svi.compiled.compile_step`), a graph of these
models compiles in about half the time (hierarchical model, load 9: 52 s against 106 s; HMM: 70 s against 139 s) and
a step costs about the same on a batch of a few chains; without SIMD code, the probe of the CPU's instruction sets
(one test program compiled per set) is skipped too. The choice depends on the configuration
and the environment only, never on timing, so a seed gives the same draws on a machine every time; a failure to
compile (no C++ compiler, an operation inductor cannot lower, a compiled result that disagrees with the eager one)
falls back to the traced potential with a warning.
"""

from __future__ import annotations

import shutil
import warnings
from typing import Callable

import pyro
import torch

from ppvae._util.validation import PPVAEError
from ppvae.infer.mcmc.potential import Potential
from ppvae.infer.svi.compiled import compile_step

__all__ = ["AUTO_MIN_ITERATIONS", "wants_compile", "chain_value_and_grad"]

AUTO_MIN_ITERATIONS = 1000


def wants_compile(setting, *, jit: bool, vectorized: bool, iterations: int, closed_form: bool) -> tuple[bool, str]:
    """(compile?, why) for the ``compile`` setting (True, False or "auto") of a run of ``iterations`` (warm-up plus
    draws) per chain; ``compile=True`` without ``vectorized=True`` is an error."""
    if setting not in (True, False, "auto"):
        raise PPVAEError(f"compile: expected True, False or 'auto'; got {setting!r}")
    if setting is True and not vectorized:
        raise PPVAEError("compile: the compiled potential is the vectorized sampler's; expected vectorized=True "
                         "with compile=True")
    if setting is False or not vectorized:
        return False, "compile=False" if setting is False else "not vectorized"
    if closed_form:
        return False, "the model's closed-form gradient (already one call per chain)"
    if setting == "auto" and not jit:
        return False, "compile='auto' compiles only with jit=True"
    if setting == "auto" and iterations < AUTO_MIN_ITERATIONS:
        return False, f"compile='auto' and fewer than {AUTO_MIN_ITERATIONS} iterations per chain"
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        return False, "no C++ compiler on PATH"
    return True, "compile=True" if setting is True else f"compile='auto', jit=True, >= {AUTO_MIN_ITERATIONS} iterations"


def _value_and_grad(potential: Potential) -> Callable:
    """theta (C, n) -> (U (C,), dU/dtheta (C, n)) by one backward pass of the sum (rows are independent chains)."""
    def value_and_grad(theta):
        leaf = theta.detach().requires_grad_(True)
        with pyro.validation_enabled(False):
            energies = potential.chain_energies(leaf)
        (grad,) = torch.autograd.grad(energies.sum(), leaf)
        return energies.detach(), grad

    return value_and_grad


def chain_value_and_grad(potential: Potential, theta: torch.Tensor, compile: bool, rtol: float = 1e-3) -> Callable:
    """The vectorized sampler's (C, n) -> (U, grad U) for ``theta``'s number of chains: compiled by TorchInductor
    when ``compile`` (module docstring), else ``potential.chain_value_and_grad`` (traced when ``potential.jit``).

    The compiled function is checked at ``theta`` against the eager one: U within ``rtol * (1 + |U|)`` and the
    gradient within ``rtol * (1 + max |grad U|)`` (float32 sums in another order differ by ~1e-6 relative); a
    failure to compile or a disagreement warns and returns the traced function."""
    if not compile:
        return potential.chain_value_and_grad
    theta = theta.detach().clone()
    from torch._inductor import config  # imported here: inductor's import takes seconds

    try:
        # compiled in this process (compile_threads=1): a pool of compile workers takes seconds to start
        with config.patch({"compile_threads": 1}):
            graph = compile_step(_value_and_grad(potential), (theta,))
    except RuntimeError as exc:
        return _fall_back(potential, str(exc))

    def step(at: torch.Tensor):  # the graph reads its input as theta's dtype and layout, unchecked
        return graph(at.to(theta.dtype).contiguous())

    value, grad = step(theta)
    expected, expected_grad = _value_and_grad(potential)(theta)  # eagerly: no trace to build for one check
    tol_u = rtol * (1 + expected.abs())
    tol_g = rtol * (1 + float(expected_grad.abs().max()))
    if not (bool(((value - expected).abs() <= tol_u).all()) and float((grad - expected_grad).abs().max()) <= tol_g):
        return _fall_back(potential, "the compiled U or gradient differs from the eager one at the start")
    return step


def _fall_back(potential: Potential, why: str) -> Callable:
    warnings.warn(f"compile: the potential was not compiled ({why}); sampling with the traced potential",
                  RuntimeWarning, stacklevel=3)
    return potential.chain_value_and_grad
