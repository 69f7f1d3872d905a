"""The scalars of a posterior as every table and figure shows them: one label per scalar, one meaning everywhere.

Labels are ``site[i,j]`` with 0-based integer indices and no spaces (``locs[1,0]``: component 1, coordinate 0),
in ``summary``, ``mcmc``'s table and summary.csv, ``compare``'s table and every figure -- never a data column's
name, which the site's axes do not always follow. Two kinds of entries are left out, being no information:

* entries constant over every draw (sd 0, e.g. a point mass's fixed coordinate), and
* the fixed parts of a correlation matrix. A site whose draws are Cholesky factors of correlation matrices
  (lower-triangular with rows of unit norm, as ``LKJCholesky`` draws; Lewandowski, Kurowicka & Joe 2009) is
  shown as the correlation matrix R = L L^T, and only its entries below the diagonal ``corr[k,i,j]``, i > j,
  are kept: R's diagonal is 1 and its upper triangle repeats the lower one. The factor's own entries mean
  nothing to a reader (L[1,1] = sqrt(1 - R[1,0]^2)); its 1s and 0s broke density and rank panels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["is_cholesky_correlation", "scalar_series", "label"]

_TOL = 1e-5


def label(name: str, index: tuple) -> str:
    """``name[i,j]`` (``name`` for a scalar site)."""
    return f"{name}[{','.join(str(int(i)) for i in index)}]" if index else str(name)


def is_cholesky_correlation(value: np.ndarray, lead: int) -> bool:
    """Whether every draw of ``value`` (``lead`` leading draw axes) is a Cholesky factor of a correlation matrix."""
    v = np.asarray(value)
    if v.ndim < lead + 2 or v.shape[-1] != v.shape[-2] or v.shape[-1] < 2 or not np.issubdtype(v.dtype, np.floating):
        return False
    upper = np.triu(np.ones(v.shape[-2:], dtype=bool), 1)
    if np.any(v[..., upper] != 0):
        return False
    return bool(np.allclose(np.sqrt((v * v).sum(-1)), 1.0, atol=_TOL))


def scalar_series(draws: dict, lead: int, *, drop_constant: bool = True) -> list[tuple[str, np.ndarray]]:
    """(label, draws of that scalar) for every informative scalar of ``draws`` (site -> array whose first
    ``lead`` axes index draws, e.g. (chains, draws, ...) for ``lead=2``), in site order; see the module docstring."""
    out = []
    for name, value in draws.items():
        v = np.asarray(value, dtype=np.float64)
        corr = is_cholesky_correlation(v, lead)
        if corr:
            v = v @ np.swapaxes(v, -1, -2)
        event = v.shape[lead:]
        for index in np.ndindex(*event) if event else [()]:
            if corr and not index[-2] > index[-1]:
                continue
            x = v[(Ellipsis,) + index] if index else v
            if drop_constant and x.size > 1 and np.ptp(x) == 0:
                continue
            out.append((label(name, index), x))
    return out
