"""Property-based tests over the public API's inputs (hypothesis): shapes, dtypes, NaN/inf, empty
arrays, huge or negative sizes, negative counts, junk names. Every case either works or raises
ppvae.PPVAEError with a one-line message; the CLI returns 2 and prints one line. Never an internal
traceback from deep inside Pyro or torch."""

import contextlib
import io
import os
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ppvae
from ppvae.cli.app import main
from ppvae.data.loaders import corpus_from_counts
from ppvae.infer.em import fit_em
from ppvae.models import GMM

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_, np.complex64])
junk = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                 st.text(max_size=6), st.lists(st.integers(), max_size=2))


def mostly(valid, bad):
    """Three cases in four from ``valid`` (a flat one_of would draw mostly from ``bad``'s many branches)."""
    return st.integers(0, 3).flatmap(lambda i: bad if i == 0 else valid)


def arrays(max_dims=5, max_side=4, min_side=0):
    return DTYPES.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=min_side,
                                                                     max_side=max_side)))


def small_real_data():
    """(N, D) float data with a few points; one case in six has a NaN or inf planted in it."""
    shape = st.tuples(st.integers(3, 8), st.integers(1, 3))
    clean = shape.flatmap(lambda s: hnp.arrays(np.float64, s, elements=st.floats(-5, 5, width=32)))
    bad = st.sampled_from([None] * 5 + [np.nan, np.inf])
    return st.tuples(clean, bad).map(lambda a: _plant(*a))


def _plant(x, bad):
    if bad is not None:
        x[-1, 0] = bad
    return x


@contextlib.contextmanager
def either_works_or_ppvae_error():
    """The body either returns normally or raises PPVAEError with a one-line message."""
    try:
        yield
    except ppvae.PPVAEError as exc:
        text = str(exc)
        assert text and "\n" not in text, f"multi-line message: {text!r}"
        event(f"PPVAEError {text.split(':')[0][:30]}")
    else:
        event("works")


@FAST
@given(x=mostly(arrays(min_side=1), arrays()), kind=st.sampled_from(["real", "binary", "image", "counts", "other"]))
def test_dataset_accepts_or_names_the_problem(x, kind):
    with either_works_or_ppvae_error():
        ds = ppvae.Dataset(x, kind=kind)
        assert ds.x.is_floating_point() and 2 <= ds.x.dim() <= 4 and len(ds) >= 1
        ds.batch(torch.arange(len(ds)))


@FAST
@given(x=arrays(max_dims=3), mmap=st.booleans(), kind=st.sampled_from(["npy", "csv"]))
def test_load_dataset_from_files(x, mmap, kind):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"data.{kind}")
        if kind == "npy":
            np.save(path, x)
        else:
            with open(path, "w") as fh:
                fh.write(",".join(f"c{i}" for i in range(x.shape[-1] if x.ndim else 1)) + "\n")
                for row in np.atleast_2d(x).reshape(-1, x.shape[-1] if x.ndim and x.shape[-1] else 1):
                    fh.write(",".join(str(v) for v in row) + "\n")
        with either_works_or_ppvae_error():
            ds = ppvae.load_dataset(path, **({"mmap": mmap} if kind == "npy" else {}))
            assert torch.isfinite(ds.x).all() and len(ds) >= 1


@FAST
@given(counts=hnp.arrays(np.int64, st.tuples(st.integers(0, 4), st.integers(0, 4)), elements=st.integers(-3, 5)))
def test_count_corpora_refuse_negative_counts(counts):
    vocab = [f"w{i}" for i in range(counts.shape[1])]
    with either_works_or_ppvae_error():
        ds = corpus_from_counts(counts, vocab)
        assert (ds.x >= 0).all() and not (counts < 0).any()


@FAST
@given(name=st.sampled_from(["gmm", "three_coin", "ppca", "normal_gamma", "nope"]),
       hparams=st.dictionaries(st.sampled_from(["K", "covariance", "concentration", "reg_covar", "latent_dim", "x"]),
                               mostly(st.sampled_from(["3", "-1", "abc", "1e9", "full", "diag", "nan", 2, 0.5]), junk),
                               max_size=3))
def test_build_model(name, hparams):
    with either_works_or_ppvae_error():
        ppvae.build_model(name, **hparams)


GUIDES = st.sampled_from(["auto_delta", "auto_normal", "auto_lowrank_mvn", "auto_mvn", "auto", "nope", "model"])

# one argument at a time gets a bad or extreme value; the rest stay valid, so most cases really train
FIT_FAULTS = {
    "K": [-1, 0, 10**9, 2.5, "3"], "guide": ["nope", "model", None, 3], "elbo": ["nope", "meanfield", "iwae", 7],
    "steps": [0, -1, 2.5, "2", 3], "batch_size": [0, -2, 10**9, 1.5],
    "lr": [0.0, -1.0, float("nan"), float("inf"), "x"],
    "num_particles": [0, -2, 3], "seed": [-1, 2**70, "s"], "device": ["gpu", "cuda:7", 3], "patience": [0, -1],
    "lr_schedule": ["bogus"], "optimizer": ["sgd"], "clip_norm": [0.0, float("nan")], "tol": [-1.0, float("inf")],
    "guide_options": [{"bogus": 1}, "x"], "elbo_options": [{"bogus": 1}, None], "checkpoint_every": [0, 2],
    "unknown_option": [1],
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=small_real_data(), fault=st.sampled_from(sorted(FIT_FAULTS)).flatmap(
           lambda k: st.tuples(st.just(k), st.sampled_from(FIT_FAULTS[k]))) | st.none(),
       guide=st.sampled_from(["auto_delta", "auto_normal", "auto_lowrank_mvn"]), batch=st.sampled_from([None, 1, 2, 4]))
def test_fit_tiny(x, fault, guide, batch):
    kwargs = dict(K=2, guide=guide, elbo="auto", steps=2, batch_size=batch, lr=0.01, num_particles=1)
    if fault is not None:
        kwargs[fault[0]] = fault[1]
    K = kwargs.pop("K")
    with either_works_or_ppvae_error():
        fit = ppvae.fit(GMM(K=K, covariance="diag"), x, progress=False, **kwargs)
        assert fit.history["steps"] == kwargs["steps"] and all(np.isfinite(fit.history["loss"]))


@FAST
@given(x=small_real_data(), K=st.sampled_from([2] * 6 + [-1, 0, 1, 10**9]), restarts=st.sampled_from([1, 2, 1, 0, -1]),
       max_iter=st.sampled_from([1, 3, 3, 0, -5]), tol=st.sampled_from([1e-8, 1e-8, 1e-8, -1.0, float("nan")]),
       covariance=st.sampled_from(["full", "diag"]))
def test_fit_em_tiny(x, K, restarts, max_iter, tol, covariance):
    with either_works_or_ppvae_error():
        result = fit_em(GMM(K=K, covariance=covariance), x, restarts=restarts, max_iter=max_iter, ll_tol=tol)
        assert np.isfinite(result.log_likelihood_total)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=mostly(GUIDES, junk), init=st.none() | st.dictionaries(st.sampled_from(["locs", "weights", "zzz"]),
                                                             st.sampled_from([torch.zeros(2, 2), torch.ones(3), 1.0]),
                                                             max_size=2),
       options=mostly(st.just({}), st.dictionaries(st.sampled_from(["rank", "num_transforms", "init_scale", "bogus"]),
                                             junk | st.integers(-3, 3) | st.floats(-1, 1), max_size=1)))
def test_make_guide(spec, init, options):
    with either_works_or_ppvae_error():
        ppvae.make_guide(spec, GMM(K=2), init_values=init, **options)


@FAST
@given(name=mostly(st.sampled_from(["auto", "trace", "meanfield", "enum", "iwae", "nope"]), junk),
       has_discrete=st.booleans(), nesting=st.sampled_from([0, 1, 2, -1, 10**6, "1"]),
       particles=st.sampled_from([1, 1, 3, 3, 0, -1, 10**9, 1.5, "2"]), vectorize=st.booleans())
def test_make_elbo(name, has_discrete, nesting, particles, vectorize):
    with either_works_or_ppvae_error():
        ppvae.make_elbo(name, has_discrete=has_discrete, max_plate_nesting=nesting, num_particles=particles,
                        vectorize_particles=vectorize)


TOKENS = ["K=2", "K=-1", "K=x", "K=1000000000", "covariance=none", "zz=1", "--steps", "1", "0", "-3", "x",
          "--batch-size", "--lr", "nan", "-1", "--epochs", "--data", "nope.csv", "--seed", "--guide", "auto_delta",
          "bad", "--elbo", "--num-particles", "--patience", "--device", "cuda:9", "--restarts", "--max-iter",
          "--tol", "--checkpoint-every", "--resume", "--frobnicate", "--mmap"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(["fit", "em", "bogus"]), model=st.sampled_from(["gmm", "three_coin", "nope"]),
       tokens=st.lists(st.sampled_from(TOKENS), max_size=6))
def test_cli_returns_0_or_2_with_one_line(command, model, tokens):
    with tempfile.TemporaryDirectory() as tmp:
        base = [command, model, *tokens, "--data", "faithful", "--out", os.path.join(tmp, "run")]
        fast = ["--steps", "1"] if command == "fit" else ["--restarts", "1", "--max-iter", "2"]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(base + fast)
        assert code in (0, 2)
        event(f"exit {code}")
        if code == 2:
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("ppvae: error: "), err.getvalue()


@pytest.mark.parametrize("bad", [np.full((3, 2), np.nan), np.zeros((0, 2)), np.ones((2, 0)), np.array([[1, -1]])])
def test_explicit_edge_cases_are_refused(bad):
    with pytest.raises(ppvae.PPVAEError):
        ppvae.fit(GMM(K=1), ppvae.Dataset(bad, kind="counts" if (bad < 0).any() else "real"), steps=1, progress=False)
