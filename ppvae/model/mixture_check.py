"""A fitted mixture component that holds no data point: named in a warning after a fit (``ppvae fit``, ``ppvae em``).

A component k "holds no points" when it is no point's most probable component, argmax_j r_ij != k for
every i (r_ij = p(z_i = j | x_i, theta-hat), the responsibilities). Such a fit is legitimate (K = 3 on two
clusters puts a third component somewhere with weight ~0), but its log-likelihood is then usually no better
than the fit with one component fewer, so the user should hear about it rather than read ``w = 0.00``.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["EmptyComponentWarning", "empty_components", "warn_empty_components"]


class EmptyComponentWarning(UserWarning):
    """A fitted mixture has a component that is no data point's most probable one."""


def empty_components(resp: torch.Tensor) -> list[int]:
    """Components (columns of the (N, K) responsibilities ``resp``) that are no row's argmax."""
    resp = torch.as_tensor(resp)
    counts = torch.bincount(resp.argmax(-1).reshape(-1), minlength=resp.shape[-1])
    return [int(k) for k in torch.nonzero(counts == 0).reshape(-1)]


def warn_empty_components(name: str, resp: torch.Tensor, weights=None) -> list[int]:
    """Warn (:class:`EmptyComponentWarning`) naming every component of ``resp`` that holds no point, with its
    weight when ``weights`` are given; returns those components."""
    empty = empty_components(resp)
    if empty:
        K = torch.as_tensor(resp).shape[-1]
        w = None if weights is None else torch.as_tensor(weights).reshape(-1)
        named = ", ".join(f"{k}" + ("" if w is None else f" (weight {float(w[k]):.2f})") for k in empty)
        warnings.warn(f"{name}: mixture component(s) {named} of K={K} hold no data points (no point's most "
                      f"probable component): the fit uses {K - len(empty)} of its {K} components; a smaller K "
                      "may fit as well", EmptyComponentWarning, stacklevel=2)
    return empty
