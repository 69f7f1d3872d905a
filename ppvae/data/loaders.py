"""Data sets: tensors plus what the engine needs to batch them, loadable by name or path.

A :class:`Dataset` holds the observations ``x`` (first dimension = data points), optional labels
``y`` and metadata. :class:`Batch` is what a model's ``forward`` receives: a minibatch with the
indices of its points in the full data set and the full size ``N``, so the data plate can scale the
likelihood by ``N / M`` (the unbiased minibatch estimator of Hoffman et al. 2013, eq. 8).

Bundled data sets are registered with :func:`register_dataset` and listed by :func:`list_datasets`;
:func:`load_dataset` also reads a user's own CSV, NPY (optionally memory-mapped), NPZ or IDX file, and
:func:`corpus_from_texts` / :func:`corpus_from_counts` turn a user's documents into a count data set.
The image data sets live in ``_data_images.py``, the text ones in ``_data_text.py``; the containers in
``_dataset.py`` and the registry in ``_data_registry.py``, which those loaders import (downward).
Nothing is downloaded at run time.
"""

from __future__ import annotations

import csv
import inspect
import math
import os
from dataclasses import replace
from importlib import resources
from typing import Callable

import numpy as np
import torch

from ppvae._util.validation import PPVAEError, check_choice, check_tensor, one_line
from ppvae.data import images as _data_images
from ppvae.data.dataset import Batch, Dataset
from ppvae.data.registry import _REGISTRY, list_datasets, register_dataset
from ppvae.data.text import corpus_from_counts, corpus_from_texts

__all__ = [
    "Batch",
    "Dataset",
    "corpus_from_counts",
    "corpus_from_texts",
    "load_dataset",
    "list_datasets",
    "register_dataset",
]

KINDS = ("real", "binary", "image", "counts")


def _standardize(ds: Dataset) -> Dataset:
    # the moments of the observed entries only (missing ones hold 0 and stay 0 after the shift)
    x = ds.x if ds.mask is None else torch.where(ds.mask, ds.x, torch.nan)
    mean, std = x.nanmean(0), (x - x.nanmean(0)).pow(2).nansum(0).div((~torch.isnan(x)).sum(0) - 1).sqrt()
    if (std == 0).any():
        raise PPVAEError(f"standardize: data '{ds.name}' has a constant column; cannot divide by a zero std")
    meta = dict(ds.meta, standardized={"mean": mean.tolist(), "std": std.tolist()})
    z = (ds.x - mean) / std
    return replace(ds, x=z if ds.mask is None else torch.where(ds.mask, z, 0.0), meta=meta)


def load_dataset(name_or_path: str | os.PathLike, *, standardize: bool = False, labels_per_class: int | None = None,
                 label_seed: int = 0, **options) -> Dataset:
    """Load a bundled data set by name (see :func:`list_datasets`) or a user's file.

    ``name_or_path`` may carry options as on the command line, ``NAME:KEY=VALUE[,KEY=VALUE]`` (e.g.
    ``"mnist5k:split=test"``, ``"faithful:standardize=true"``; see :func:`parse_data_spec`).
    A CSV's first row is a header when it holds a cell that is not a number (``header="auto"``, the
    default), else it is data and the columns are named ``x0, x1, ...``; ``header=True`` / ``False``
    says so explicitly. Numeric columns become features (a leading ``""``, ``Unnamed: 0`` or
    ``rownames`` index column of a header, as R and pandas write, is dropped). An NPY holds an (N, D)
    array; ``mmap=True`` maps it instead of reading it (see :func:`_read_npy`). An IDX file
    (``*-images-idx3-ubyte[.gz]``, LeCun's MNIST format) or an NPZ (arrays ``x``/``images``/``X`` and
    optional ``y``/``labels``) holds images; for these the option ``binarize`` in {"none" (default),
    "fixed", "dynamic"} applies. ``standardize`` rescales each column to mean 0 and standard deviation 1
    and records the constants in ``meta["standardized"]``. ``labels_per_class`` keeps that many labels
    per class (drawn with ``label_seed``) and marks the rest -1, unlabeled (:meth:`Dataset.hide_labels`;
    for semi-supervised models such as M2).

    The values are checked against the data set's kind: ``"counts"`` must be non-negative whole
    numbers, ``"image"`` and ``"binary"`` must lie in [0, 1]. A CSV or NPY file holds ``"real"`` values unless the
    option ``kind`` says otherwise (``"words.npy:kind=counts"``, a document x word count matrix for LDA).

    Example (Old Faithful ships inside the package; options after a colon, as on the command line):

    >>> import ppvae
    >>> ppvae.load_dataset("faithful").x.shape
    torch.Size([272, 2])
    >>> ppvae.load_dataset("faithful:standardize=true").x.std(0).round(decimals=4)
    tensor([1., 1.])
    """
    key = str(name_or_path)
    if key not in _REGISTRY and not os.path.exists(key) and ":" in key:
        key, spec = parse_data_spec(key)
        twice = sorted(set(spec) & set(options))
        if twice:
            raise PPVAEError(f"data: options {twice} given both in '{name_or_path}' and as arguments; give each once")
        standardize = _flag("standardize", spec.pop("standardize", standardize)) or standardize
        labels_per_class = spec.pop("labels_per_class", labels_per_class)
        label_seed = spec.pop("label_seed", label_seed)
        options.update(spec)
    if key in _REGISTRY:
        fn = _REGISTRY[key][0]
        _check_options(key, fn, options)
        ds = fn(**options)
    elif os.path.exists(key):
        ds = _load_path(key, **options)
    else:
        names = ", ".join(sorted(_REGISTRY))
        raise PPVAEError(f"data: expected a data set name ({names}) or an existing file path; got '{key}'")
    if len(ds) == 0:
        raise PPVAEError(f"data: '{key}' holds no data points")
    _check_values(ds)
    if labels_per_class is not None:
        ds = ds.hide_labels(_cli_int(labels_per_class), _cli_int(label_seed))
    return _standardize(ds) if _flag("standardize", standardize) else ds


def parse_data_spec(text: str) -> tuple[str, dict]:
    """Split ``"NAME:KEY=VALUE[,KEY=VALUE]"`` into ``(NAME, {KEY: VALUE})``; ``true``/``false`` become
    booleans, other values stay text (loaders convert whole numbers themselves)."""
    name, _, extra = str(text).partition(":")
    options = {}
    for item in extra.split(","):
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise PPVAEError(f"data: expected NAME:KEY=VALUE[,KEY=VALUE] such as mnist5k:split=test; got '{text}'")
        low = v.strip().lower()
        options[k.strip()] = True if low == "true" else False if low == "false" else v.strip()
    return name, options


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise PPVAEError(f"{name}: expected true or false; got {value!r}")
    return value


def _cli_int(value):
    """A whole number given as text on the command line (``--data mnist5k:labels_per_class=10``) as an int."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def _check_options(key: str, fn: Callable[..., Dataset], options: dict) -> None:
    """Raise when ``options`` holds a keyword that the loader ``fn`` of data set ``key`` does not take."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        known = ", ".join(sorted(params)) or "none"
        raise PPVAEError(f"options: expected options of data set '{key}' among ({known}); got {unknown}")


def _check_values(ds: Dataset) -> None:
    """Check ``ds.kind`` and that the values fit it: counts >= 0 and whole, images/binary in [0, 1]."""
    check_choice(f"kind of '{ds.name}'", ds.kind, KINDS)
    if ds.kind == "counts":
        check_tensor(f"data '{ds.name}'", ds.x, low=0, integer=True)
    elif ds.kind in ("image", "binary"):
        check_tensor(f"data '{ds.name}'", ds.x, low=0.0, high=1.0)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


MISSING_CELLS = ("", "na", "nan", "n/a", "null")  # read as missing values (NaN, then the data set's mask)


def _cell(text: str) -> float:
    return math.nan if text.strip().lower() in MISSING_CELLS else float(text)


def _read_csv(path: str, name: str, header: bool | str = "auto", target: str | None = None) -> Dataset:
    """Read a numeric CSV. ``header="auto"`` takes the first row as column names when one of its cells is
    not a number and as data otherwise, so no row is ever dropped unseen; ``True``/``False`` force it.
    ``target`` (a column name, or a 0-based column index) is taken out of ``x`` as the real-valued
    response ``y`` of a regression (``--data file.csv:target=price``)."""
    if header not in ("auto", True, False):
        raise PPVAEError(f"header: expected auto, true or false; got {header!r}")
    try:  # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark that would hide the first number
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r]
    except UnicodeDecodeError as exc:
        raise PPVAEError(f"data: expected a UTF-8 text CSV; {path} is not ({exc.reason} at byte {exc.start}); "
                         "save it as CSV UTF-8") from None
    except (OSError, csv.Error) as exc:
        raise PPVAEError(f"data: cannot read the CSV {path}: {exc}") from None
    if header == "auto":
        header = bool(rows) and not all(_is_number(v) for v in rows[0])
    if len(rows) < 1 + header:
        what = "a header row and at least one data row" if header else "at least one data row"
        raise PPVAEError(f"data: expected a CSV with {what}; got {len(rows)} rows in {path}")
    if header:
        names, body = rows[0], rows[1:]
        drop_first = names[0].strip() in ("", "Unnamed: 0", "rownames")
        cols = [c.strip() for c in (names[1:] if drop_first else names)]
    else:
        body, drop_first = rows, False
        cols = [f"x{j}" for j in range(len(rows[0]))]
    values = []
    for i, r in enumerate(body, start=1 + header):
        cells = r[1:] if drop_first else r
        if len(cells) != len(cols):
            raise PPVAEError(f"data: expected {len(cols)} values on every row of {path}; row {i} has {len(cells)}")
        try:
            values.append([_cell(v) for v in cells])
        except ValueError as exc:
            hint = " (the first row is data; pass header=true, e.g. --data file.csv:header=true)" if i == 1 else ""
            raise PPVAEError(f"data: expected numeric CSV values in {path}; row {i}: {exc}{hint}") from None
    x = torch.as_tensor(np.array(values, dtype=np.float64), dtype=torch.get_default_dtype())
    meta = {"columns": cols, "source": path, "header": header}
    if target is None:
        return Dataset(x, name=name, meta=meta)
    j = _target_column(str(target), cols, path)
    if len(cols) < 2:
        raise PPVAEError(f"target: the CSV {path} has one column; expected covariates beside the response")
    keep = [i for i in range(len(cols)) if i != j]
    meta.update(columns=[cols[i] for i in keep], target=cols[j])
    return Dataset(x[:, keep], x[:, j], name=name, meta=meta)


def _target_column(target: str, cols: list[str], path: str) -> int:
    """The index of the response column ``target``: a column name, else a 0-based index (negative from the end)."""
    if target in cols:
        return cols.index(target)
    try:
        j = int(target)
    except ValueError:
        raise PPVAEError(f"target: expected a column of {path} (one of {', '.join(cols)}, or a 0-based index); "
                         f"got '{target}'") from None
    if not -len(cols) <= j < len(cols):
        raise PPVAEError(f"target: expected a column index in 0..{len(cols) - 1} for the {len(cols)} columns of "
                         f"{path}; got {j}")
    return j % len(cols)


def _read_npy(path: str, name: str, mmap: bool = False) -> Dataset:
    """Read an NPY array, or with ``mmap=True`` map it into memory without reading it.

    Without ``mmap`` the array is read and converted to torch's default float dtype (as before). With
    ``mmap`` the file is opened with ``np.load(mmap_mode="c")`` and wrapped by ``torch.from_numpy``: no
    copy is made and pages are read from disk when touched, so ``x`` keeps the file's dtype, which must
    be float32 or float64 (save as float32 to match torch's default). Treat ``x`` as read-only:
    copy-on-write mode means an in-place write changes only this process's pages, never the file.
    Indexing (``ds.batch(index)``, ``ds.subset``) materializes just the selected rows; ``standardize``
    or ``.to(device)`` make a full in-memory copy. Loading scans the file once to check it is finite.
    """
    if not isinstance(mmap, bool):
        raise PPVAEError(f"mmap: expected True or False; got {mmap!r}")
    try:
        arr = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 -- numpy raises ValueError, OSError, EOFError or UnpicklingError
        raise PPVAEError(f"data: cannot read NPY file {path}: {one_line(exc)}") from None
    if arr.dtype.kind not in "biuf" or arr.size == 0:  # strings, dates, complex numbers; or no values
        raise PPVAEError(f"data: expected a non-empty numeric NPY array; got dtype {arr.dtype} and shape "
                         f"{arr.shape} in {path}")
    if not mmap:
        return Dataset(torch.as_tensor(np.asarray(arr, dtype=np.float64), dtype=torch.get_default_dtype()),
                       name=name, meta={"source": path})
    if arr.dtype not in (np.float32, np.float64) or not arr.dtype.isnative:
        raise PPVAEError(f"mmap: expected a native float32 or float64 NPY file to map without a copy; "
                         f"got dtype {arr.dtype} in {path} (use mmap=False, or save it as float32)")
    return Dataset(torch.from_numpy(arr), name=name, meta={"source": path, "mmap": True})


def _load_path(path: str, **options) -> Dataset:
    name = os.path.splitext(os.path.basename(path))[0]
    if os.path.isdir(path):
        raise PPVAEError(f"data: expected a data file (.csv, .npy, .npz, IDX); got the directory '{path}'")
    if _data_images.is_image_file(path):
        allowed = {"binarize"}
    elif path.endswith(".npy"):
        allowed = {"mmap", "kind"}
    elif path.endswith(".csv"):
        allowed = {"header", "target", "kind"}
    else:
        allowed = set()
    if "mmap" in options and "mmap" not in allowed:
        raise PPVAEError(f"mmap: memory-mapping is for .npy files (numpy.save); got '{path}' (drop --mmap)")
    extra = sorted(set(options) - allowed)
    if extra and not allowed:
        raise PPVAEError(f"data: options {extra} apply only to named data sets; got a path '{path}'")
    if extra:
        raise PPVAEError(f"data: expected options among {sorted(allowed)} for the file '{path}'; got {extra}")
    if _data_images.is_image_file(path):
        return _data_images.load_image_file(path, **options)
    kind = options.pop("kind", None)  # what the values are (a file cannot say it: FILE:kind=counts)
    if kind is not None:
        check_choice("kind", kind, KINDS)
    if path.endswith(".csv"):
        ds = _read_csv(path, name, **options)
    elif path.endswith(".npy"):
        ds = _read_npy(path, name, **options)
    else:
        raise PPVAEError(f"data: expected a .csv, .npy, .npz or IDX (*-idx3-ubyte[.gz]) file; got '{path}'")
    return ds if kind is None else replace(ds, kind=kind)


@register_dataset("faithful", "Old Faithful geyser: 272 eruptions x (eruption minutes, waiting minutes); R datasets")
def _faithful() -> Dataset:
    path = resources.files("ppvae.data") / "bundled" / "faithful.csv"
    with resources.as_file(path) as p:
        ds = _read_csv(str(p), "faithful")
    ds.meta["source"] = "R datasets::faithful (Haerdle 1991; Azzalini & Bowman 1990), bundled"
    ds.meta["units"] = ["min", "min"]  # eruption length and waiting time to the next eruption; axis labels use them
    return ds

