"""The public API in ppvae/__init__.py: complete (issue 14) and every name documented."""

import inspect

import ppvae


def test_public_exports_include_errors_warnings_and_local_posterior_tools():
    for name in ("MCMCDivergenceError", "ImportanceWarning", "fitted_proposal", "local_posterior"):
        assert name in ppvae.__all__ and hasattr(ppvae, name), name
    assert issubclass(ppvae.MCMCDivergenceError, ppvae.PPVAEError)
    assert issubclass(ppvae.ImportanceWarning, UserWarning)


def test_every_public_name_has_its_own_docstring():
    missing = []
    for name in ppvae.__all__:
        obj = getattr(ppvae, name)
        doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not (doc and doc.strip()):
            missing.append(name)
    assert not missing, f"public names without a docstring: {missing}"
