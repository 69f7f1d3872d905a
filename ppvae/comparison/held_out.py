"""Which part of the data ``compare`` holds out, by what the model's rows are (``Model.data_structure``).

* ``"points"`` (i.i.d. rows given the globals): a random ``test_fraction`` of the rows, as ``Dataset.split``;
  when that leaves an empty part (a handful of rows) no split, and PSIS-LOO over the rows scores the methods.
* ``"groups"`` (one row per group, its effect a global of the posterior): no split. A held-out group's effect
  is informed by its own row only, so its held-out density is the prior predictive's, not the fit's; PSIS-LOO
  over the groups (Vehtari, Gelman & Gabry 2017) estimates the same leave-one-group-out score from one fit.
* ``"sequence"`` and ``"record"`` (one likelihood term for the whole data set): no split and no LOO: a row of a
  sequence is not exchangeable with the others, and a record has no rows to leave out.

The reason is returned with the parts and goes into the comparison's notes.
"""

from __future__ import annotations

from ppvae.data.loaders import Dataset
from ppvae.model.enumeration import has_rows
from ppvae.model.structure import declared_structure

__all__ = ["held_out", "loo_applies"]


def loo_applies(model) -> bool:
    """Whether PSIS-LOO over the rows means something for ``model`` (one likelihood term per row)."""
    return has_rows(model)


def held_out(model, data: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset | None, str | None]:
    """(train, test, note): the held-out part ``compare`` scores (None: no split) and why, when it is not the
    random split of i.i.d. rows (module docstring)."""
    kind = declared_structure(model)
    if kind == "points":
        n_test = int(round(len(data) * test_fraction))
        if 1 <= n_test < len(data):
            return (*data.split(test_fraction, seed), None)
        return data, None, (f"no held-out part: test_fraction {test_fraction} of {len(data)} rows leaves an empty "
                            "part; the methods are scored by PSIS-LOO over the rows")
    if kind == "groups":
        return data, None, ("no held-out part: the model's rows are groups whose effects are globals of the "
                            "posterior (a held-out group is informed by its own row only); the methods are scored by "
                            f"PSIS-LOO over the {len(data)} groups")
    return data, None, (f"no held-out part and no PSIS-LOO: the data are one {kind} (one likelihood term, "
                        "log p(x | globals), for all its rows); the methods are compared by their posteriors and "
                        "the in-sample log predictive density")
