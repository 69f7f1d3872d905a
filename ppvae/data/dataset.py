"""The data containers every layer above shares: :class:`Dataset` (the observations and labels) and
:class:`Batch` (what a model's ``forward`` receives). Loading lives in :mod:`ppvae.data.loaders`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ppvae._util import display as _display
from ppvae._util.validation import PPVAEError, check_float, check_int, check_tensor

__all__ = ["Batch", "Dataset"]


@dataclass
class Batch:
    """A minibatch: ``x`` (M, ...), optional labels or response ``y`` (M, ...), ``index`` (M,) into the full data set,
    ``size`` = N, the number of points in the full data set, and ``mask`` (M, ...) of x's shape, True where an entry
    is observed (None: all are; missing entries of ``x`` hold 0)."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    index: torch.Tensor | None = None
    size: int | None = None
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def num_total(self) -> int:
        return len(self) if self.size is None else int(self.size)

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.x), move(self.y), move(self.index), self.size, move(self.mask))


@dataclass
class Dataset:
    """Observations ``x`` with the data points along dimension 0, optional ``y`` and metadata.

    ``y`` is either integer class labels, shape (N,) (-1 = unlabeled; e.g. for M2), or, when it is a
    floating-point array, a real-valued response of shape (N,) or (N, K) for regression models, which
    read ``batch.y`` beside the covariates ``batch.x`` (``Dataset(x, y)``; ``--data file.csv:target=COLUMN``).

    ``kind`` tells models what the values are: ``"real"`` (continuous features), ``"binary"`` or
    ``"image"`` (values in [0, 1], images keep their 2-D shape in ``meta["image_shape"]``),
    ``"counts"`` (non-negative integers, e.g. a document x word matrix).

    Missing values: NaN entries of ``x`` are read as missing, or ``mask`` (a boolean array of x's shape, True =
    observed) says which are; either way ``mask`` holds the pattern and the missing entries of ``x`` hold 0. A
    point with no observed entry is refused. ``mask`` is None when every entry is observed. Only models that
    declare :class:`ppvae.ConditionsOnSubset` accept such data.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    name: str = "custom"
    kind: str = "real"
    meta: dict = field(default_factory=dict)
    mask: torch.Tensor | None = None

    def __post_init__(self):
        self.x, self.mask = missing_values(self.name, self.x, self.mask)
        self.x = check_tensor(f"data '{self.name}'", self.x, ndim=(1, 2, 3, 4), dtype="float")
        _check_magnitude(self.name, self.x)
        if self.x.dim() == 1:
            self.x = self.x.unsqueeze(-1)
            self.mask = None if self.mask is None else self.mask.unsqueeze(-1)
        if self.y is not None:
            self.y = _check_y(self.name, self.y, len(self.x))

    @property
    def has_response(self) -> bool:
        """Whether ``y`` is a real-valued response (regression) rather than integer class labels."""
        return self.y is not None and self.y.is_floating_point()

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, index: torch.Tensor | None = None) -> Batch:
        """The points at ``index`` (all points when ``None``) as a :class:`Batch` of this data set."""
        if index is None:
            return Batch(self.x, self.y, None, len(self), self.mask)
        return Batch(self.x[index], None if self.y is None else self.y[index], index, len(self),
                     None if self.mask is None else self.mask[index])

    def subset(self, index) -> "Dataset":
        index = torch.as_tensor(index, dtype=torch.long)
        return replace(self, x=self.x[index], y=None if self.y is None else self.y[index], meta=dict(self.meta),
                       mask=None if self.mask is None else self.mask[index])

    def hide_labels(self, per_class: int, seed: int = 0) -> "Dataset":
        """A copy that keeps ``per_class`` labels of every class (drawn with ``seed``) and sets the others
        to -1 (unlabeled), as in Kingma et al.'s (2014) 100-label MNIST setting (10 per class)."""
        per_class = check_int("labels_per_class", per_class, low=0)
        if self.y is None or self.has_response:
            what = "a real-valued response" if self.y is not None else "none"
            raise PPVAEError(f"labels_per_class: needs a data set with class labels; '{self.name}' has {what}")
        gen = torch.Generator().manual_seed(check_int("label_seed", seed, low=0))
        y = torch.full_like(self.y, -1)
        for c in torch.unique(self.y[self.y >= 0]).tolist():
            idx = (self.y == c).nonzero().squeeze(-1)
            keep = idx[torch.randperm(len(idx), generator=gen)[:per_class]]
            y[keep] = c
        return replace(self, y=y, meta={**self.meta, "labels_per_class": per_class})

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """A fixed random split into (train, test): a permutation drawn from ``seed``."""
        check_float("test_fraction", test_fraction, low=0.0, high=1.0, strict=True)
        n_test = int(round(len(self) * test_fraction))
        if n_test < 1 or n_test >= len(self):
            raise PPVAEError(f"test_fraction: leaves an empty part for {len(self)} points; got {test_fraction}")
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        train, test = self.subset(perm[n_test:]), self.subset(perm[:n_test])
        train.name, test.name = f"{self.name}[train]", f"{self.name}[test]"
        return train, test

    def to(self, device) -> "Dataset":
        """This data set on ``device``; itself when already there (a memory-mapped ``x`` stays mapped
        and is not scanned again)."""
        if self.x.device == torch.device(device) and (self.y is None or self.y.device == self.x.device):
            return self
        return replace(self, x=self.x.to(device), y=None if self.y is None else self.y.to(device),
                       mask=None if self.mask is None else self.mask.to(device))

    def __repr__(self) -> str:  # name, kind and shapes; never the values (a 60,000-image x is 7,807 characters)
        return _display.dataset_repr(self)

    def _repr_html_(self) -> str:
        return _display.dataset_html(self)


def missing_values(name: str, x, mask) -> tuple:
    """(x with missing entries set to 0, mask or None): NaN entries of ``x`` are missing; an explicit ``mask``
    (boolean, x's shape, True = observed) must agree (a NaN it calls observed is refused)."""
    if not isinstance(x, torch.Tensor) and (mask is not None or np.issubdtype(np.asarray(x).dtype, np.floating)):
        x = torch.as_tensor(np.asarray(x))
    nan = torch.isnan(x) if isinstance(x, torch.Tensor) and x.is_floating_point() else None
    if mask is None and (nan is None or not bool(nan.any())):
        return x, None
    if mask is not None:
        mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if mask.dtype != torch.bool:
            raise PPVAEError(f"mask of '{name}': expected a boolean array (True = observed); got dtype {mask.dtype}")
        if tuple(mask.shape) != tuple(x.shape):
            raise PPVAEError(f"mask of '{name}': expected the data's shape {tuple(x.shape)}; got {tuple(mask.shape)}")
        if nan is not None and bool((nan & mask).any()):
            raise PPVAEError(f"mask of '{name}': {int((nan & mask).sum())} NaN entries are marked observed; "
                             "mark them False (missing)")
    mask = (~nan if mask is None else mask.to(x.device)).contiguous()
    empty = ~mask.reshape(len(mask), -1).any(1) if mask.dim() > 1 else ~mask
    if bool(empty.any()):
        rows = empty.nonzero().squeeze(-1)[:5].tolist()
        raise PPVAEError(f"data '{name}': {int(empty.sum())} point(s) have no observed value (rows {rows}...); "
                         "drop them (a point with nothing observed carries no information)")
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)), mask


def _check_magnitude(name: str, x: torch.Tensor) -> None:
    """Refuse values whose squares overflow ``x``'s float type (|x| above sqrt(max) / 1e4: 1.8e15 in float32):
    distances, variances and Gaussian log-densities of such data are inf or NaN in every model."""
    if not x.numel():
        return
    limit = torch.finfo(x.dtype).max ** 0.5 / 1e4
    biggest = x.abs().max().item()
    if biggest > limit:
        raise PPVAEError(f"data '{name}': expected values of magnitude at most {limit:.2g} (their squares overflow "
                         f"{x.dtype}); got {biggest:.3g}; rescale the data (other units, or standardize)")


def _check_y(name: str, y, n: int) -> torch.Tensor:
    """Integer labels (N,) stay long; a floating ``y`` is a real-valued response (N,) or (N, K), finite."""
    is_float = (y.is_floating_point() if isinstance(y, torch.Tensor)
                else np.issubdtype(np.asarray(y).dtype, np.floating) if isinstance(y, (np.ndarray, list, tuple))
                else False)
    label = "response y" if is_float else "labels"
    y = check_tensor(f"{label} of '{name}'", y, ndim=(1, 2) if is_float else 1, dtype="float" if is_float else "long")
    if len(y) != n:
        raise PPVAEError(f"{label} of '{name}': expected {n} {'values' if is_float else 'labels'}, one per data "
                         f"point; got {len(y)}")
    return y


def data_fingerprint(ds: Dataset) -> str:
    """A short identity of ``ds``'s values: shape, dtype and a BLAKE2b digest of the bytes of ``x`` (and ``y``).
    Checkpoints store it so that ``resume`` refuses a checkpoint trained on other data."""
    digest = hashlib.blake2b(digest_size=12)
    for t in (ds.x, ds.y, ds.mask):
        if t is not None:
            flat = t.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{tuple(t.shape)}{t.dtype};".encode())
            digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")
    return f"{len(ds)} points, {digest.hexdigest()}"
