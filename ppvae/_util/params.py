"""Module-local parameters for ppvae's models and guides, without changing Pyro's global settings.

Pyro's ``module_local_params`` setting keeps a ``PyroModule``'s parameters in the module instead of
the global param store, so two fits of the same model and guide in one process do not share
parameters by name. ppvae turns it on only around its own modules: a :class:`ppvae.Model` and the
guides of :func:`ppvae.make_guide` are built and called inside :func:`local_params`, and everything
else (a user's plain Pyro script with its autoguides and ``pyro.param``) sees Pyro's default, the
global store. Pyro reads the setting twice: when a ``PyroModule`` is built (its context gets a local
param state only if the setting is on) and on every attribute access inside a call, so both
construction and calls are wrapped (see ``pyro/nn/module.py``, ``_Context``).
"""

from __future__ import annotations

import pyro

__all__ = ["local_params", "LocalParams"]


def local_params():
    """A context in which ``PyroModule`` parameters are module-local; the previous setting is restored on exit."""
    return pyro.settings.context(module_local_params=True)


class LocalParams:
    """Mixin for a module class: every call runs inside :func:`local_params`."""

    def __call__(self, *args, **kwargs):
        with local_params():
            return super().__call__(*args, **kwargs)
