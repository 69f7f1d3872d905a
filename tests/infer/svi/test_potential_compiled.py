"""The potential path's step compiled by TorchInductor (ppvae/infer/svi/compiled.py, issue 24).

* The compiled step's loss, gradient and grad U equal the traced path's at the same parameters and noise (float32
  rounding: inductor reorders sums), for the hand-derived guide gradient with several particles (unrolled in the
  graph) and for the autograd one (MAP).
* A compiled run resumed from a checkpoint equals the uninterrupted compiled run bit for bit.
* The boolean-mask rewrite gives the same values as the graph it rewrites; when compilation applies.
"""

import shutil

import pytest
import torch
from _helpers import REPO_ROOT
from torch.fx.experimental.proxy_tensor import make_fx

import ppvae
from ppvae.infer.svi.compiled import (
    AUTO_MIN_STEPS,
    AUTO_MIN_STEPS_CLOSED_FORM,
    _index_constant_masks,
    wants_compile,
)
from ppvae.models import GMM

blr = ppvae.import_model(str(REPO_ROOT / "examples" / "blr.py:BayesianLinearRegression"))
schools = ppvae.import_model(str(REPO_ROOT / "examples" / "eight_schools.py:EightSchools"))
schools_module = __import__(schools.__module__, fromlist=["schools"])
needs_cxx = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler")


@pytest.fixture(scope="module")
def regression():
    return ppvae.load_dataset(f"{REPO_ROOT / 'examples' / 'data' / 'regression.csv'}:target=y")


@pytest.mark.slow
@needs_cxx
@pytest.mark.parametrize("case,guide,particles", [("blr", "auto_mvn", 3), ("schools", "auto_delta", 1)])
def test_compiled_step_equals_traced_step(case, guide, particles, regression):
    model, data = (blr(noise_sd=0.5), regression) if case == "blr" else (schools(), schools_module.schools())
    trainer = ppvae.Trainer(model, data, guide=guide, steps=10, lr=0.05, seed=1, num_particles=particles,
                            compile=True)
    engine = trainer.fast
    assert engine is not None and engine.compile, trainer.svi_path_reason
    for _ in range(3):  # compiles on the first step; moves the scales and off-diagonals off their initial values
        trainer.run_step()
    assert engine.compile_reason.startswith("compiled"), engine.compile_reason
    for seed in (0, 1):
        eps = torch.randn(engine.particles, engine.noise_dim, generator=torch.Generator().manual_seed(seed))
        got = engine.loss_and_grad(eps, data.batch())
        engine.compile = False
        want = engine.loss_and_grad(eps, data.batch())
        engine.compile = True
        for g, w in zip(got, want, strict=True):
            assert torch.allclose(g, w, rtol=1e-5, atol=1e-5 * (1 + float(w.abs().max()))), (g, w)


@pytest.mark.slow
@needs_cxx
def test_compiled_resume_is_bit_for_bit(tmp_path, regression):
    opts = dict(guide="auto_mvn", lr=0.05, seed=3, num_particles=2, progress=False, check_convergence=False,
                compile=True)
    full = ppvae.fit(blr(noise_sd=0.5), regression, steps=30, **opts)
    ppvae.fit(blr(noise_sd=0.5), regression, steps=14, checkpoint_dir=str(tmp_path), **opts)
    resumed = ppvae.fit(blr(noise_sd=0.5), regression, steps=30, resume=str(tmp_path), **opts)
    assert full.info["svi_compile"].startswith("compiled") and resumed.info["svi_compile"].startswith("compiled")
    assert full.history["loss"] == resumed.history["loss"]
    for (name, a), (_, b) in zip(full.guide.named_parameters(), resumed.guide.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_constant_masks_become_positions():
    """x[:, mask] with a mask built from constants (as the Cholesky transforms build theirs) -> x[:, positions]."""
    def fn(x):
        mask = torch.arange(4) % 2 == 0
        tril = torch.ones(3, 3).tril(-1) > 0
        return (x[:, mask] * 2).sum(-1), x[:, :3].unsqueeze(-1).expand(2, 3, 3)[:, tril], x[x > 0]

    x = torch.randn(2, 4)
    graph = make_fx(fn)(x)
    want = graph(x)
    assert _index_constant_masks(graph, (x,)) == 2  # x[x > 0] depends on the input: left alone
    got = graph(x)
    for g, w in zip(got[:2], want[:2], strict=True):
        assert torch.equal(g, w)
    y = torch.randn(2, 4)
    assert torch.equal(graph(y)[0], fn(y)[0]) and torch.equal(graph(y)[1], fn(y)[1])


def test_when_compilation_applies(regression):
    cpu = torch.device("cpu")
    assert not wants_compile(False, 10 ** 6, False, cpu)[0]
    assert not wants_compile("auto", AUTO_MIN_STEPS - 1, False, cpu)[0]
    assert not wants_compile(True, 10 ** 6, True, cpu)[0]  # minibatches
    # a closed-form gradient (a traced step of a few hundred microseconds) waits for more steps
    assert not wants_compile("auto", AUTO_MIN_STEPS_CLOSED_FORM - 1, False, cpu, closed_form=True)[0]
    if shutil.which("c++") or shutil.which("g++"):
        assert wants_compile("auto", AUTO_MIN_STEPS, False, cpu)[0] and wants_compile(True, 1, False, cpu)[0]
        assert wants_compile("auto", AUTO_MIN_STEPS_CLOSED_FORM, False, cpu, closed_form=True)[0]
        assert wants_compile(True, 1, False, cpu, closed_form=True)[0]
    fit = ppvae.fit(blr(noise_sd=0.5), regression, guide="auto_normal", steps=3, progress=False,
                    check_convergence=False)
    assert fit.info["svi_compile"] == f"compile='auto' and fewer than {AUTO_MIN_STEPS} steps"
    trainer = ppvae.Trainer(GMM(K=2), ppvae.load_dataset("faithful"), guide="auto_normal", steps=AUTO_MIN_STEPS)
    assert trainer.fast.potential.gradient == "closed form" and not trainer.fast.compile
    assert trainer.fast.compile_reason == (f"compile='auto' and fewer than {AUTO_MIN_STEPS_CLOSED_FORM} steps with a "
                                           "closed-form gradient")
    with pytest.raises(ppvae.PPVAEError, match="compile: expected True, False or 'auto'; got 'yes'"):
        ppvae.fit(blr(noise_sd=0.5), regression, steps=3, compile="yes")


@pytest.mark.slow
@needs_cxx
def test_the_compile_probes_no_simd_set_and_leaves_the_users_alone(tmp_path, monkeypatch):
    """The step is compiled to scalar loops, so no SIMD instruction set is probed (no test program in a fresh
    cache), and inductor's process-wide list of usable sets is not left empty for the user's own torch.compile."""
    from torch._inductor import cpu_vec_isa

    from ppvae.infer.svi.compiled import compile_step

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    cpu_vec_isa.valid_vec_isa_list.cache_clear()
    x = torch.linspace(-1.0, 1.0, 7)
    step = compile_step(lambda t: ((t.exp() * t).sum(), t.sin()), (x,))
    total, sines = step(x)
    torch.testing.assert_close(total, (x.exp() * x).sum())
    torch.testing.assert_close(sines, x.sin())
    sources = [p.read_text() for p in tmp_path.rglob("*.cpp")]
    assert sources, "nothing was compiled into the fresh cache"
    assert not any("_chk_kernel" in s for s in sources)
    assert cpu_vec_isa.valid_vec_isa_list.cache_info().currsize == 0
