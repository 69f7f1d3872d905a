"""Text data: the Reuters sample shipped in ``lda`` and document x word count matrices from a user's texts.

What is computed:

* :func:`corpus_from_texts` turns documents into a bag-of-words count matrix, following the semantics
  of scikit-learn's ``CountVectorizer`` (Pedregosa et al., JMLR 12, 2011) without depending on it:
  optional lowercasing, tokens = all non-overlapping matches of ``token_pattern`` (by default words of
  two or more ASCII letters), removal of stop words, then document-frequency filters ``min_df`` /
  ``max_df`` (an int is an absolute number of documents, a float a fraction of them; a term is kept
  when ``min_df <= df <= max_df``), then the ``vocab_size`` terms with the largest total count (ties
  broken alphabetically). The vocabulary is sorted alphabetically; ``x[d, v]`` counts term ``v`` in
  document ``d``.
* :func:`corpus_from_counts` checks and wraps a ready count matrix (dense or ``scipy.sparse``).
* Both drop empty documents (all-zero rows, which carry no information for a topic model), with one
  warning, and record their original indices in ``meta["dropped_empty_documents"]``.
* ``reuters``: 395 Reuters news stories (titles dated August 1996) x a 4,258-word vocabulary, the
  example corpus of the PyPI package ``lda`` (https://github.com/lda-project/lda):
  ``lda.datasets.load_reuters()``, ``load_reuters_vocab()``, ``load_reuters_titles()``.

The built-in English stop-word list below is a list of common English function words in the
tradition of the SMART (Salton 1971) and Glasgow IR stop lists; it is written out here, not imported.
"""

from __future__ import annotations

import numbers
import re
import warnings
from collections import Counter
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
import torch

from ppvae._util.validation import PPVAEError, check_choice, check_float, check_int, check_tensor, describe_value
from ppvae.data.dataset import Dataset
from ppvae.data.registry import register_dataset

TOKEN_PATTERN = r"(?u)\b[a-zA-Z][a-zA-Z]+\b"
REUTERS_DOCS, REUTERS_TRAIN_FRACTION = 395, 0.8

ENGLISH_STOP_WORDS = frozenset("""
a about above across after afterwards again against all almost alone along already also although
always am among amongst an and another any anyhow anyone anything anyway anywhere are aren around as
at be became because become becomes becoming been before beforehand behind being below beside
besides between beyond both but by can cannot could couldn did didn do does doesn doing don done down
during each eg either else elsewhere enough etc even ever every everyone everything everywhere except
few for former formerly from further had hadn has hasn have haven having he hence her here hereafter
hereby herein hereupon hers herself him himself his how however ie if in inc indeed into is isn it
its itself just least less ltd many may me meanwhile might mine more moreover most mostly much must
my myself namely neither never nevertheless next no nobody none noone nor not nothing now nowhere of
off often on once one only onto or other others otherwise ought our ours ourselves out over own per
perhaps rather re same seem seemed seeming seems several shall she should shouldn since so some
somehow someone something sometime sometimes somewhere still such than that the their theirs them
themselves then thence there thereafter thereby therefore therein thereupon these they this those
though through throughout thru thus to together too toward towards un under until up upon us very
via was wasn we well were weren what whatever when whence whenever where whereafter whereas whereby
wherein whereupon wherever whether which while whither who whoever whole whom whose why will with
within without won would wouldn yet you your yours yourself yourselves
""".split())


# --------------------------------------------------------------------------------------------------
# count matrix -> Dataset


def _counts_dataset(x: torch.Tensor, vocab: list[str], name: str, meta: dict | None = None,
                    stacklevel: int = 3) -> Dataset:
    """Drop all-zero rows of the checked count matrix ``x`` (one warning) and wrap it as kind "counts"."""
    empty = (x.sum(dim=1) == 0).nonzero().flatten()
    if len(empty) == len(x):
        raise PPVAEError(f"counts: expected at least one non-empty document; got all {len(x)} rows zero")
    if len(empty):
        warnings.warn(f"{name}: dropped {len(empty)} empty document(s) (all-zero rows) of {len(x)}; their "
                      f"original indices are in meta['dropped_empty_documents']", UserWarning, stacklevel=stacklevel)
        x = x[(x.sum(dim=1) != 0)]
    meta = dict(meta or {}, vocab=list(vocab), dropped_empty_documents=empty.tolist())
    return Dataset(x.to(torch.get_default_dtype()), name=name, kind="counts", meta=meta)


def _check_vocab(vocab, n_columns: int) -> list[str]:
    """``vocab`` as a list of distinct strings, one per column of the count matrix."""
    if isinstance(vocab, str) or not isinstance(vocab, (Sequence, np.ndarray)):
        raise PPVAEError(f"vocab: expected a list of {n_columns} words; got {describe_value(vocab)}")
    words = list(vocab)
    if len(words) != n_columns:
        raise PPVAEError(f"vocab: expected {n_columns} words, one per column of counts (counts has "
                         f"{n_columns} columns); got {len(words)} words")
    if not all(isinstance(w, str) for w in words):
        bad = next(w for w in words if not isinstance(w, str))
        raise PPVAEError(f"vocab: expected strings; got {describe_value(bad)}")
    if len(set(words)) != len(words):
        dup = next(w for w, c in Counter(words).items() if c > 1)
        raise PPVAEError(f"vocab: expected distinct words; got '{dup}' more than once")
    return words


def corpus_from_counts(counts, vocab: Sequence[str], *, name: str = "corpus") -> Dataset:
    """A count data set from a document x word matrix ``counts`` (dense array/tensor or scipy.sparse).

    Checks that ``counts`` is 2-D, finite, non-negative and whole, and that ``len(vocab)`` equals its
    number of columns. Empty documents are dropped (one warning). Returns kind ``"counts"`` with
    ``x`` float (D, V), ``meta["vocab"]`` and ``meta["dropped_empty_documents"]``.
    """
    if hasattr(counts, "toarray") and hasattr(counts, "tocsr"):  # scipy.sparse, without importing scipy
        counts = counts.toarray()
    x = check_tensor("counts", counts, ndim=2, dtype="float", low=0, integer=True)
    words = _check_vocab(vocab, x.shape[1])
    return _counts_dataset(x, words, str(name), {"source": "counts"})


# --------------------------------------------------------------------------------------------------
# texts -> count matrix


def _check_texts(texts) -> list[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise PPVAEError(f"texts: expected a list of strings (one per document); got {describe_value(texts)}")
    docs = list(texts)
    if not docs:
        raise PPVAEError("texts: expected at least one document; got an empty list")
    bad = next((d for d in docs if not isinstance(d, str)), None)
    if bad is not None:
        raise PPVAEError(f"texts: expected every document to be a string; got {describe_value(bad)}")
    return docs


def _stop_set(stop_words, lowercase: bool) -> frozenset[str]:
    """The stop words: the built-in English list, none, or the user's list (lowercased if ``lowercase``)."""
    if stop_words is None:
        return frozenset()
    if isinstance(stop_words, str):
        check_choice("stop_words", stop_words, ("english",))
        return ENGLISH_STOP_WORDS
    if not isinstance(stop_words, Iterable) or not all(isinstance(w, str) for w in stop_words):
        raise PPVAEError(f"stop_words: expected 'english', None or a list of strings; got {describe_value(stop_words)}")
    return frozenset(w.lower() if lowercase else w for w in stop_words)


def _compile(token_pattern: str) -> re.Pattern:
    if not isinstance(token_pattern, str):
        raise PPVAEError(f"token_pattern: expected a regular expression string; got {describe_value(token_pattern)}")
    try:
        pattern = re.compile(token_pattern)
    except re.error as exc:
        raise PPVAEError(f"token_pattern: expected a valid regular expression; got {token_pattern!r} ({exc})") from None
    if pattern.groups > 1:
        raise PPVAEError(f"token_pattern: expected at most one capturing group; got {pattern.groups}")
    return pattern


def _df_bound(name: str, value, n_docs: int) -> float:
    """A document-frequency bound as a number of documents: an int as is, a float as a fraction of them."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return float(check_int(name, value, low=1))
    if isinstance(value, float):
        return check_float(name, value, low=0.0, high=1.0) * n_docs
    raise PPVAEError(f"{name}: expected an int >= 1 (documents) or a float in [0, 1] (fraction); "
                     f"got {describe_value(value)}")


def _select_vocab(tokens: list[list[str]], min_df, max_df, vocab_size) -> list[str]:
    """The sorted vocabulary: terms with min_df <= df <= max_df, then the vocab_size most frequent."""
    df, tf = Counter(), Counter()
    for doc in tokens:
        tf.update(doc)
        df.update(set(doc))
    lo, hi = _df_bound("min_df", min_df, len(tokens)), _df_bound("max_df", max_df, len(tokens))
    if hi < lo:
        raise PPVAEError(f"max_df: expected at least as many documents as min_df ({lo:g}); got {hi:g} "
                         f"(max_df={max_df!r}, min_df={min_df!r})")
    kept = [w for w, d in df.items() if lo <= d <= hi]
    if not kept:
        raise PPVAEError(f"min_df/max_df: expected some of the {len(df)} terms to remain after filtering "
                         f"(and stop-word removal); got none")
    if vocab_size is not None:
        kept = sorted(kept, key=lambda w: (-tf[w], w))[: check_int("vocab_size", vocab_size, low=1)]
    return sorted(kept)


def corpus_from_texts(
    texts: Iterable[str],
    *,
    vocab_size: int | None = None,
    min_df: int | float = 1,
    max_df: int | float = 1.0,
    stop_words: str | Iterable[str] | None = "english",
    lowercase: bool = True,
    token_pattern: str = TOKEN_PATTERN,
    name: str = "corpus",
) -> Dataset:
    """A count data set (documents x words) from raw ``texts``, as described in the module docstring.

    ``stop_words`` is "english" (the built-in :data:`ENGLISH_STOP_WORDS`), None, or a list of words.
    ``min_df``/``max_df``: an int counts documents, a float is a fraction of the documents. Documents
    left with no kept token are dropped (one warning; indices in ``meta["dropped_empty_documents"]``).
    """
    docs = _check_texts(texts)
    if not isinstance(lowercase, bool):
        raise PPVAEError(f"lowercase: expected True or False; got {describe_value(lowercase)}")
    stops, pattern = _stop_set(stop_words, lowercase), _compile(token_pattern)
    tokens = [[t for t in pattern.findall(d.lower() if lowercase else d) if t not in stops] for d in docs]
    vocab = _select_vocab(tokens, min_df, max_df, vocab_size)
    column = {w: j for j, w in enumerate(vocab)}
    counts = np.zeros((len(docs), len(vocab)), dtype=np.float64)
    for i, doc in enumerate(tokens):
        for word, c in Counter(t for t in doc if t in column).items():
            counts[i, column[word]] = c
    meta = {"source": "texts", "stop_words": stop_words if isinstance(stop_words, (str, type(None))) else "custom"}
    return _counts_dataset(torch.from_numpy(counts), vocab, str(name), meta)


# --------------------------------------------------------------------------------------------------
# reuters (lda)


@lru_cache(maxsize=1)
def _read_reuters() -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """(counts (395, 4258) read-only, vocab, titles) from the lda package, parsed once per process."""
    try:
        from lda import datasets as lda_datasets  # optional extra (ppvae[topics])
    except ImportError:
        raise PPVAEError("reuters: expected the PyPI package lda, which ships the Reuters sample; got it not "
                         "installed (pip install 'ppvae[topics]' or pip install lda)") from None
    counts = np.asarray(lda_datasets.load_reuters())
    counts.setflags(write=False)
    return counts, tuple(lda_datasets.load_reuters_vocab()), tuple(lda_datasets.load_reuters_titles())


@register_dataset("reuters", "395 Reuters news stories x 4,258-word counts (titles, vocabulary) shipped in lda")
def _reuters(split: str = "all") -> Dataset:
    """Reuters from the ``lda`` package: ``split`` "all" (395), or a seed-0 ``torch.randperm(395)`` whose
    first round(0.8 * 395) = 316 documents are "train" and last 79 "test". x float counts (D, 4258),
    ``meta["vocab"]`` the words, ``meta["titles"]`` and ``meta["indices"]`` the documents' titles and rows."""
    check_choice("split", split, ("all", "train", "test"))
    counts, vocab, titles = _read_reuters()
    if split == "all":
        index = np.arange(len(counts))
    else:
        perm = torch.randperm(len(counts), generator=torch.Generator().manual_seed(0)).numpy()
        n_train = int(round(REUTERS_TRAIN_FRACTION * len(counts)))
        index = perm[:n_train] if split == "train" else perm[n_train:]
    ds = corpus_from_counts(counts[index], vocab, name="reuters")
    dropped = set(ds.meta["dropped_empty_documents"])
    kept = [int(i) for j, i in enumerate(index) if j not in dropped]
    ds.meta.update(source="Reuters sample shipped in the PyPI package lda (lda.datasets.load_reuters)",
                   split=split, indices=kept, titles=[titles[i] for i in kept],
                   dropped_empty_documents=[int(index[j]) for j in sorted(dropped)])
    return ds
