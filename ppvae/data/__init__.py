"""Data: the :class:`Dataset` and :class:`Batch` every model takes, the registry of named data sets, and the
loaders for CSV/NPY tables, image files (MNIST, Fashion-MNIST) and text corpora. Bundled data in ``bundled/``."""

from ppvae.data.dataset import Batch, Dataset
from ppvae.data.loaders import corpus_from_counts, corpus_from_texts, list_datasets, load_dataset, register_dataset

__all__ = ["Batch", "Dataset", "load_dataset", "list_datasets", "register_dataset", "corpus_from_texts",
           "corpus_from_counts"]
