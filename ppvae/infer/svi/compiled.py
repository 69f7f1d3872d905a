"""One SVI step of the potential path compiled to machine code: the whole loss and gradient as one C++ function.

Without a closed-form gradient, a step of :class:`ppvae.infer.svi.potential_svi.PotentialSVI` is a few hundred tiny
tensor operations (the traced potential forward, autograd back through it, the guide's gradient), and on small
models each costs its PyTorch dispatch (~2-10 us), not its arithmetic. Here the step's function
(flat parameters, noise) -> (loss, d loss / d flat, grad U at the draws) is recorded once at the ATen level with
``make_fx`` (autograd's backward included, the particles unrolled) and handed to TorchInductor, which fuses it
into a few C++ loops compiled by the system C++ compiler; a step is then one call of that function, one
``torch.randn`` and one fused Adam.

Compilation costs seconds (the C++ compiler; inductor's on-disk cache makes a second process's compile of the
same graph fast), so :func:`wants_compile` takes it only when asked (``compile=True``) or, with ``compile="auto"``,
for runs on the full data set on CPU long enough for it to pay for itself: at least :data:`AUTO_MIN_STEPS` steps
when autograd differentiates the potential (its backward doubles the traced step's operations, and compiling
removes each one's dispatch), at least :data:`AUTO_MIN_STEPS_CLOSED_FORM` when the model gives the gradient in closed
form (a traced step of a few hundred microseconds, which compilation speeds up by less than a millisecond: ten
thousand steps do not repay the seconds of compilation, let alone the first compilation of a process, which also
builds inductor's precompiled header). A
failure to compile (no C++ compiler, an operation inductor cannot lower) falls back to the traced path with a
warning; the choice depends only on the configuration and the environment, never on timing, so a run and its
resumption take the same path and their steps agree bit for bit.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings

import pyro
import torch

__all__ = ["AUTO_MIN_STEPS", "AUTO_MIN_STEPS_CLOSED_FORM", "wants_compile", "compile_step", "trace", "with_grad"]

AUTO_MIN_STEPS = 5000
AUTO_MIN_STEPS_CLOSED_FORM = 50000


def wants_compile(setting, total_steps: int, minibatch: bool, device: torch.device,
                  closed_form: bool = False) -> tuple[bool, str]:
    """(compile?, why) for the ``compile`` setting (True, False or "auto") of a run; ``closed_form``: the model gives
    the potential's gradient in closed form. Depends only on the configuration, never on timing."""
    if setting is False:
        return False, "compile=False"
    if minibatch:
        return False, "minibatches (the data change every step)"
    if setting == "auto" and device.type != "cpu":
        return False, "compile='auto' compiles on CPU only"
    least = AUTO_MIN_STEPS_CLOSED_FORM if closed_form else AUTO_MIN_STEPS
    kind = " with a closed-form gradient" if closed_form else ""
    if setting == "auto" and total_steps < least:
        return False, f"compile='auto' and fewer than {least} steps{kind}"
    if shutil.which("c++") is None and shutil.which("g++") is None and shutil.which("clang++") is None:
        return False, "no C++ compiler on PATH"
    return True, "compile=True" if setting is True else f"compile='auto' and at least {least} steps{kind}"


def compile_step(fn, example: tuple):
    """``fn`` (tensors -> tuple of tensors, pure) recorded with ``make_fx`` at ``example`` and compiled by
    TorchInductor (module docstring); raises RuntimeError when it cannot be compiled."""
    from torch._inductor import config  # imported here: inductor's import takes seconds
    from torch._inductor.compile_fx import compile_fx  # (the same)
    from torch.fx.experimental.proxy_tensor import make_fx  # with inductor: only compiled runs pay for it

    with pyro.validation_enabled(False), warnings.catch_warnings(), torch.enable_grad(), _isa_list_kept():
        warnings.simplefilter("ignore")
        try:
            graph = make_fx(fn)(*example)
            _index_constant_masks(graph, example)
            # the size and alignment checks of each library call's output cost ~10% of a small model's step;
            # scalar loops (simdlen 0): on tensors of tens to hundreds of elements, at::vec's vectorized loops buy
            # nothing, and their templates were most of the C++ compiler's time (compile 2-3x faster without them;
            # benchmarks/bench_small_svi.py, docs/guide/fast_svi.md); and since no SIMD code is written, no SIMD
            # instruction set is probed (vec_isa_ok False): the probe compiles one test program per instruction set
            # the CPU has (6 on an AVX-512 machine, ~7 CPU s with a cold cache: a quarter of a small model's
            # compile, benchmarks/bench_nuts_general.py)
            with config.patch(size_asserts=False, alignment_asserts=False,
                              **{"cpp.simdlen": 0, "cpp.vec_isa_ok": False}):
                compiled = compile_fx(graph, list(example))
                compiled(*example)  # the first call compiles what is left lazily
        except Exception as exc:  # inductor raises many types (BackendCompilerFailed, lowering errors, ...)
            raise RuntimeError(f"inductor could not compile the step: {type(exc).__name__}: {exc}"[:400]) from exc
    return compiled


@contextlib.contextmanager
def _isa_list_kept():
    """Inductor caches the list of usable SIMD instruction sets for the process the first time it is asked; asked
    under ``vec_isa_ok=False`` the list is empty, and the user's own ``torch.compile`` later in the process would
    write scalar code. If the list was not cached before, forget it after (a no-op where torch has no such cache)."""
    from torch._inductor import cpu_vec_isa  # imported here: inductor's import takes seconds

    cached = getattr(cpu_vec_isa.valid_vec_isa_list, "cache_info", None)
    was_cached = cached is None or cached().currsize > 0
    try:
        yield
    finally:
        if not was_cached:
            cpu_vec_isa.valid_vec_isa_list.cache_clear()


def trace(fn, inputs: tuple):
    """``torch.jit.trace`` of ``fn`` at ``inputs``, quietly (the traced path's potential)."""
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", ".*torch.jit.trace. is deprecated", DeprecationWarning)
        return torch.jit.trace(fn, inputs, check_trace=False)


def with_grad(energy):
    """theta, *data -> (U, grad U) from ``energy`` (theta, *data -> U) by autograd."""
    def value_and_grad(theta, *data):
        leaf = theta.detach().requires_grad_(True)
        value = energy(leaf, *data)
        (grad,) = torch.autograd.grad(value, leaf)
        return value.detach(), grad

    return value_and_grad


def _index_constant_masks(graph: torch.fx.GraphModule, example: tuple) -> int:
    """Replace boolean-mask indexing ``x[..., mask]`` whose mask does not depend on the inputs (a triangle's mask in
    a Cholesky transform, say) by indexing with the mask's integer positions, a constant: inductor needs static
    shapes, and a boolean mask's result has a data-dependent one. Returns how many were replaced."""
    dependent = set()
    for node in graph.graph.nodes:
        if node.op == "placeholder" or any(a in dependent for a in node.all_input_nodes):
            dependent.add(node)
    targets = [n for n in graph.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.index.Tensor]
    if not targets:
        return 0
    values = {}

    class _Record(torch.fx.Interpreter):
        def run_node(self, node):
            values[node] = super().run_node(node)
            return values[node]

    _Record(graph).run(*example)

    def constant_mask(i) -> bool:
        return isinstance(i, torch.fx.Node) and i not in dependent and values[i].dtype == torch.bool

    replaced = 0
    for node in targets:
        if not any(constant_mask(i) for i in node.args[1]):
            continue
        indices = []
        for i in node.args[1]:
            if not constant_mask(i):
                indices.append(i)
                continue
            for k, positions in enumerate(values[i].nonzero(as_tuple=True)):
                name = f"_mask_positions_{replaced}_{k}"
                graph.register_buffer(name, positions)
                with graph.graph.inserting_before(node):
                    indices.append(graph.graph.get_attr(name))
        node.args = (node.args[0], indices)
        replaced += 1
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return replaced
