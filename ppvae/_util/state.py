"""No global side effects (issue 22, item 7): a public call that seeds Pyro or clears its param store leaves the
caller's process state as it found it.

Pyro draws from the global torch, numpy and Python generators, so a seeded ppvae run must set them; and Pyro's
autoguides and ``pyro.param`` live in the global param store. :func:`leaves_global_state` saves, around one call,
every generator's state (torch CPU, CUDA where initialized, numpy, ``random``), the param store's contents and
matplotlib's ``rcParams`` (when matplotlib is loaded), and puts them back afterwards: the user's next
``torch.rand()`` is the number it would have been without the call, and a parameter the user put in the param store
is still there. Parameters the call itself left in the store (a user's guide written with ``pyro.param``) stay too;
on a name clash the call's value wins, as if the user had run the same Pyro code.
"""

from __future__ import annotations

import contextlib
import functools
import random
import sys
from typing import Callable, Iterator

import numpy as np
import pyro
import torch

__all__ = ["preserved_global_state", "leaves_global_state"]


@contextlib.contextmanager
def preserved_global_state() -> Iterator[None]:
    """Run the body with the process's RNG states, Pyro param store and matplotlib rcParams restored after it."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    rng = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else None, np.random.get_state(),
           random.getstate())
    store = pyro.get_param_store()
    params = store.get_state()
    mpl = sys.modules.get("matplotlib")
    rc = dict(mpl.rcParams) if mpl is not None else None
    try:
        yield
    finally:
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state_all(rng[1])
        np.random.set_state(rng[2])
        random.setstate(rng[3])
        left = store.get_state()  # what the call put in the store (set_state merges: the call's values win)
        store.set_state(params)
        store.set_state(left)
        if rc is not None:
            dict.update(mpl.rcParams, rc)  # the stored values as they were, without re-validating each


def leaves_global_state(fn: Callable) -> Callable:
    """Decorate a public function so that it runs inside :func:`preserved_global_state`."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with preserved_global_state():
            return fn(*args, **kwargs)

    return wrapped
