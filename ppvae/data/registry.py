"""The registry of data sets loadable by name: :func:`register_dataset` adds one, :func:`list_datasets`
lists them. The loaders (``data.py``, ``_data_images.py``, ``_data_text.py``) register into it; it
imports none of them."""

from __future__ import annotations

from typing import Callable

from ppvae.data.dataset import Dataset

__all__ = ["register_dataset", "list_datasets"]


_REGISTRY: dict[str, tuple[Callable[..., Dataset], str]] = {}


def register_dataset(name: str, description: str):
    """Decorator: register ``fn(**options) -> Dataset`` as the bundled data set ``name``."""

    def wrap(fn):
        _REGISTRY[name] = (fn, description)
        return fn

    return wrap


def list_datasets() -> dict[str, str]:
    """Names of the data sets loadable by name, with one-line descriptions."""
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}
