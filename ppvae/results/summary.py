"""A posterior summary table of one shape for every kind of result (``Result.summary()``).

One row per scalar entry of each global latent site (``locs[1,0]``), with the columns

    mean, sd, q5, q95, ess_bulk, r_hat

(``q5``/``q95``: the 5% and 95% quantiles for the default ``prob=0.9``). ``ess_bulk`` and ``r_hat``
apply to MCMC draws only (rank-normalized bulk ESS and split R-hat, Vehtari et al. 2021, computed by
``arviz.ess``/``arviz.rhat``; R-hat needs two or more chains); draws from a guide or an exact posterior are
independent, so their ESS is their number. A point estimate (EM, ``auto_delta``) fills ``mean`` only.
Entries constant over every draw (a Cholesky correlation factor's fixed 1s and 0s) are left out. With
``correlations=True`` the table also holds the Pearson correlation matrix of the entries across draws.
Missing values are ``None``; the object needs no pandas.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ppvae._util.validation import check_float

__all__ = ["Summary", "summarize", "COLUMNS"]

COLUMNS = ("mean", "sd", "q5", "q95", "ess_bulk", "r_hat")


@dataclass
class Summary:
    """``rows``: one dict per scalar entry, ``{"name": ..., "mean": ..., "sd": ..., "q5": ..., "q95": ...,
    "ess_bulk": ..., "r_hat": ...}`` (floats or None); ``correlations``: (names, matrix as nested lists)
    or None; ``method``: what produced the draws; ``num_draws``/``num_chains``; ``notes``."""

    rows: list[dict]
    method: str
    num_draws: int
    num_chains: int
    columns: tuple[str, ...] = COLUMNS
    correlations: tuple[list[str], list[list[float]]] | None = None
    notes: list[str] = field(default_factory=list)
    point: bool = False

    def row(self, name: str) -> dict:
        """The row of the entry ``name`` (e.g. ``"locs[1,0]"``)."""
        for r in self.rows:
            if r["name"] == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict:
        """JSON-ready: method, draws, chains, columns, rows, correlations, notes."""
        return {"method": self.method, "num_draws": self.num_draws, "num_chains": self.num_chains,
                "columns": list(self.columns), "rows": self.rows,
                "point_estimate": self.point, "correlations": None if self.correlations is None else
                {"names": self.correlations[0], "matrix": self.correlations[1]}, "notes": self.notes}

    def to_text(self, digits: int = 4) -> str:
        """The table as aligned text (``-`` where a column does not apply)."""
        def fmt(v):
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"

        width = max([len("entry")] + [len(r["name"]) for r in self.rows])
        head = "point estimate" if self.point else f"{self.num_chains} chain(s) x {self.num_draws} draw(s)"
        lines = [f"{self.method}: {head}",
                 " ".join([f"{'entry':<{width}}"] + [f"{c:>10}" for c in self.columns])]
        for r in self.rows:
            lines.append(" ".join([f"{r['name']:<{width}}"] + [f"{fmt(r[c]):>10}" for c in self.columns]))
        if self.correlations is not None:
            names, matrix = self.correlations
            w = max(len(n) for n in names)
            lines.append("correlations:")
            lines.append(" ".join([" " * w] + [f"{n[:8]:>8}" for n in names]))
            for n, row in zip(names, matrix, strict=True):
                lines.append(" ".join([f"{n:<{w}}"] + [f"{v:8.3f}" for v in row]))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _entries(name: str, value: torch.Tensor) -> list[str]:
    shape = tuple(value.shape[2:])
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


def summarize(draws: dict, *, method: str, point: bool = False, diagnostics: bool = False,
              correlations: bool = False, prob: float = 0.9, notes: list[str] | None = None) -> Summary:
    """The :class:`Summary` of ``draws`` (site -> (chains, draws, ...)); ``diagnostics`` adds bulk ESS
    and (with two or more chains) split R-hat by ArviZ; ``point``: the draws are one point estimate."""
    prob = check_float("prob", prob, low=0.0, high=1.0, strict=True)
    lo, hi = (1 - prob) / 2, (1 + prob) / 2
    names, columns = [], []  # flat entries: name and (chains, draws) array
    for site, value in draws.items():
        value = torch.as_tensor(value).detach().double()
        flat = value.reshape(value.shape[:2] + (-1,))
        for i, entry in enumerate(_entries(site, value)):
            names.append(entry)
            columns.append(flat[..., i].cpu().numpy())
    C, S = (columns[0].shape if columns else (1, 0))
    rows, kept = [], []
    ess = rhat = None
    if diagnostics and columns and not point:
        import arviz as az  # optional heavy dependency, loaded only for MCMC diagnostics

        with warnings.catch_warnings():  # arviz takes one (chains, draws) array at a time
            warnings.simplefilter("ignore", RuntimeWarning)
            ess = [float(az.ess(c, method="bulk")) for c in columns] if S >= 4 else None
            rhat = [float(az.rhat(c)) for c in columns] if C >= 2 and S >= 4 else None
    for i, (name, col) in enumerate(zip(names, columns, strict=True)):
        x = col.reshape(-1)
        if point:
            rows.append({"name": name, "mean": float(x[0]), "sd": None, "q5": None, "q95": None,
                         "ess_bulk": None, "r_hat": None})
            continue
        sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
        if sd == 0.0:  # constant by construction: no spread to summarize
            continue
        kept.append(i)
        rows.append({"name": name, "mean": float(x.mean()), "sd": sd, "q5": float(np.quantile(x, lo)),
                     "q95": float(np.quantile(x, hi)),
                     "ess_bulk": None if ess is None else float(ess[i]),
                     "r_hat": None if rhat is None else float(rhat[i])})
    corr = None
    if correlations and not point and len(kept) >= 2:
        m = np.corrcoef(np.stack([columns[i].reshape(-1) for i in kept]))
        corr = ([names[i] for i in kept], m.round(12).tolist())
    if not (prob == 0.9):
        notes = list(notes or []) + [f"q5/q95 hold the {100 * lo:g}% and {100 * hi:g}% quantiles"]
    return Summary(rows, method, int(S), int(C), correlations=corr, notes=list(notes or []), point=point)
