"""Tests of ppvae.data.loaders and its loaders: numbers checked against the sources, not smoke."""

from __future__ import annotations

import gzip
import os
import struct
import warnings

import numpy as np
import pytest
import torch

from ppvae._util.validation import PPVAEError
from ppvae.data import loaders as data
from ppvae.data.loaders import Dataset, corpus_from_counts, corpus_from_texts, load_dataset

FASHION_ROOT = "/usr/share/datasets/fashion-mnist"


# ------------------------------------------------------------------------------------------------
# faithful, CSV, NPY


def test_faithful_rows_and_column_means():
    ds = load_dataset("faithful")
    assert ds.x.shape == (272, 2)
    assert ds.meta["columns"] == ["eruptions", "waiting"]
    means = ds.x.double().mean(0)
    assert means[0].item() == pytest.approx(3.4878, abs=1e-3)
    assert means[1].item() == pytest.approx(70.897, abs=1e-3)


def test_standardize_gives_mean_0_std_1():
    ds = load_dataset("faithful", standardize=True)
    assert torch.allclose(ds.x.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(ds.x.std(0), torch.ones(2), atol=1e-5)
    assert ds.meta["standardized"]["mean"][0] == pytest.approx(3.4878, abs=1e-3)


def test_csv_round_trip(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text('"",a,b\n1,1.5,-2\n2,3.25,4\n3,0,8.5\n')
    ds = load_dataset(path)
    assert ds.name == "mine" and ds.meta["columns"] == ["a", "b"]
    assert torch.equal(ds.x, torch.tensor([[1.5, -2.0], [3.25, 4.0], [0.0, 8.5]]))


def test_npy_round_trip(tmp_path):
    arr = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    np.save(tmp_path / "arr.npy", arr)
    ds = load_dataset(str(tmp_path / "arr.npy"))
    assert ds.x.dtype == torch.get_default_dtype()
    assert np.allclose(ds.x.numpy(), arr, atol=1e-6)


def test_a_file_says_what_it_holds_with_kind(tmp_path, capsys):
    """A user's own count matrix: ``FILE:kind=counts`` (a file cannot say it), checked like a bundled corpus; an LDA
    fit on it names its words by column."""
    counts = np.random.default_rng(0).poisson(0.5, size=(40, 12))
    np.save(tmp_path / "words.npy", counts)
    np.savetxt(tmp_path / "words.csv", counts, delimiter=",", fmt="%d")
    for name in ("words.npy", "words.csv"):
        ds = load_dataset(f"{tmp_path / name}:kind=counts")
        assert ds.kind == "counts" and torch.equal(ds.x, torch.as_tensor(counts, dtype=ds.x.dtype))
        assert load_dataset(str(tmp_path / name)).kind == "real"
    with pytest.raises(PPVAEError, match="kind: expected one of real, binary, image, counts; got 'bogus'"):
        load_dataset(f"{tmp_path / 'words.npy'}:kind=bogus")
    np.save(tmp_path / "halves.npy", counts + 0.5)
    with pytest.raises(PPVAEError, match="whole"):
        load_dataset(f"{tmp_path / 'halves.npy'}:kind=counts")
    from ppvae.cli import main

    assert main(["cavi", "lda", "topics=2", "--data", str(tmp_path / "words.npy"), "--out", str(tmp_path / "r0")]) == 0
    assert main(["cavi", "lda", "topics=2", "--method", "natural", "--steps", "5", "--batch-size", "10", "--data",
                 str(tmp_path / "words.npy"), "--out", str(tmp_path / "r1")]) == 2
    assert "--data FILE:kind=counts" in capsys.readouterr().err
    assert main(["cavi", "lda", "topics=2", "--method", "natural", "--steps", "5", "--batch-size", "10", "--data",
                 f"{tmp_path / 'words.npy'}:kind=counts", "--out", str(tmp_path / "r1")]) == 0
    assert "warning" not in capsys.readouterr().err  # the topics figure too: words w0, w1, ...
    assert (tmp_path / "r1" / "topics.png").exists() and (tmp_path / "r0" / "topics.png").exists()


def test_options_are_checked():
    with pytest.raises(PPVAEError, match="options: .*mnist5k.*'color'"):
        load_dataset("mnist5k", color=True)
    with pytest.raises(PPVAEError, match="no-such-set"):
        load_dataset("no-such-set")


def test_mmap_npy_equals_plain_load_and_never_writes_the_file(tmp_path):
    arr = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    path = str(tmp_path / "big.npy")
    np.save(path, arr)
    plain, mapped = load_dataset(path), load_dataset(path, mmap=True)
    assert mapped.meta["mmap"] is True
    assert torch.equal(plain.x, mapped.x)
    assert torch.equal(mapped.batch(torch.tensor([3, 7])).x, torch.from_numpy(arr[[3, 7]]))
    mapped.x.add_(1.0)  # copy-on-write: changes this process's pages only
    assert np.array_equal(np.load(path), arr)


def test_mmap_errors(tmp_path):
    np.save(tmp_path / "ints.npy", np.arange(6).reshape(3, 2))
    with pytest.raises(PPVAEError, match="mmap: expected a native float32 or float64"):
        load_dataset(str(tmp_path / "ints.npy"), mmap=True)
    with pytest.raises(PPVAEError, match="mmap: expected True or False"):
        load_dataset(str(tmp_path / "ints.npy"), mmap="yes")


# ------------------------------------------------------------------------------------------------
# mnist5k


@pytest.fixture(scope="module")
def mnist_parts():
    return {split: load_dataset("mnist5k", split=split) for split in ("train", "test")}


def test_mnist5k_split_sizes_disjoint_and_complete(mnist_parts):
    train, test = mnist_parts["train"], mnist_parts["test"]
    assert train.x.shape == (4000, 784) and test.x.shape == (1000, 784)
    assert train.kind == "image" and train.meta["image_shape"] == (28, 28)
    itrain, itest = set(train.meta["indices"]), set(test.meta["indices"])
    assert len(itrain) == 4000 and len(itest) == 1000 and not itrain & itest
    assert itrain | itest == set(range(5000))
    labels = torch.cat([train.y, test.y])
    assert labels.dtype == torch.long
    assert torch.bincount(labels, minlength=10).tolist() == [500] * 10


def test_mnist5k_binarization(mnist_parts):
    train = mnist_parts["train"]
    assert set(train.x.unique().tolist()) == {0.0, 1.0}
    grey = load_dataset("mnist5k", split="train", binarize="none")
    assert 0.0 <= grey.x.min() and grey.x.max() <= 1.0 and len(grey.x.unique()) > 100
    assert torch.equal(train.x, (grey.x > 0.5).to(train.x.dtype))
    assert torch.allclose(grey.x * 255, (grey.x * 255).round(), atol=1e-3)  # p / 255 for whole p
    dyn = load_dataset("mnist5k", split="test", binarize="dynamic")
    assert dyn.meta["dynamic_binarization"] is True and len(dyn.x.unique()) > 100
    with pytest.raises(PPVAEError, match="binarize: expected one of fixed, dynamic, none"):
        load_dataset("mnist5k", binarize="otsu")
    with pytest.raises(PPVAEError, match="split"):
        load_dataset("mnist5k", split="valid")


def test_mnist5k_split_is_fixed_and_matches_all(mnist_parts):
    again = load_dataset("mnist5k", split="train")
    assert again.meta["indices"] == mnist_parts["train"].meta["indices"]
    assert torch.equal(again.x, mnist_parts["train"].x) and torch.equal(again.y, mnist_parts["train"].y)
    whole = load_dataset("mnist5k", split="all")
    idx = torch.tensor(mnist_parts["test"].meta["indices"])
    assert len(whole) == 5000 and torch.equal(whole.x[idx], mnist_parts["test"].x)
    assert whole.y[:500].eq(0).all() and whole.y[-500:].eq(9).all()  # the file is sorted by label


# ------------------------------------------------------------------------------------------------
# fashion-mnist


def _fashion_present() -> bool:
    return all(
        any(os.path.exists(os.path.join(FASHION_ROOT, f"{p}-{k}-ubyte{gz}")) for gz in ("", ".gz"))
        for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
    )


@pytest.mark.skipif(not _fashion_present(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_shapes_and_labels():
    train = load_dataset("fashion-mnist", split="train")
    test = load_dataset("fashion-mnist", split="test", binarize="none")
    assert train.x.shape == (60000, 784) and test.x.shape == (10000, 784)
    assert train.y.min() == 0 and train.y.max() == 9 and test.y.min() == 0 and test.y.max() == 9
    assert torch.bincount(test.y).tolist() == [1000] * 10
    assert set(train.x.unique().tolist()) == {0.0, 1.0}
    assert 0.0 <= test.x.min() and test.x.max() <= 1.0 and train.meta["image_shape"] == (28, 28)
    assert train.meta["classes"][9] == "Ankle boot"


def test_fashion_mnist_missing_root_names_the_debian_package(tmp_path):
    with pytest.raises(PPVAEError, match="apt-get install dataset-fashion-mnist.*IDX/NPZ"):
        load_dataset("fashion-mnist", root=str(tmp_path))


# ------------------------------------------------------------------------------------------------
# IDX and NPZ files


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write(path, payload: bytes, gz: bool):
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        with open(path, "wb") as fh:
            fh.write(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_with_labels(tmp_path, gz):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    img_path = tmp_path / f"tiny-images-idx3-ubyte{suffix}"
    _write(img_path, _idx_bytes(images), gz)
    _write(tmp_path / f"tiny-labels-idx1-ubyte{suffix}", _idx_bytes(labels), gz)
    ds = load_dataset(str(img_path))
    assert ds.kind == "image" and ds.name == "tiny-images-idx3-ubyte"
    assert ds.meta["image_shape"] == (3, 4)
    assert np.allclose(ds.x.numpy(), images.reshape(5, 12) / 255.0, atol=1e-7)
    assert ds.y.tolist() == [3, 1, 4, 1, 5]
    fixed = load_dataset(str(img_path), binarize="fixed")
    assert np.array_equal(fixed.x.numpy(), (images.reshape(5, 12) > 127).astype(np.float32))


def test_idx_without_labels_and_errors(tmp_path):
    images = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "solo-images-idx3-ubyte"
    path.write_bytes(_idx_bytes(images))
    assert load_dataset(str(path)).y is None
    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34" + _idx_bytes(images)[2:])
    with pytest.raises(PPVAEError, match="magic number.*0x12340803"):
        load_dataset(str(bad))
    short = tmp_path / "short-images-idx3-ubyte.gz"
    _write(short, _idx_bytes(images)[:-5], gz=True)
    with pytest.raises(PPVAEError, match="expected 24 data bytes .* got 19 \\(truncated file\\)"):
        load_dataset(str(short))
    path2 = tmp_path / "odd-images-idx3-ubyte"
    path2.write_bytes(_idx_bytes(images))
    (tmp_path / "odd-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([1, 2, 3], dtype=np.uint8)))
    with pytest.raises(PPVAEError, match="expected 2 labels"):
        load_dataset(str(path2))
    with pytest.raises(PPVAEError, match="binarize"):
        load_dataset(str(path), binarize="yes")


def test_npz_round_trip(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, size=(6, 5, 5), dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", images=images, labels=np.arange(6))
    ds = load_dataset(str(tmp_path / "imgs.npz"))
    assert ds.x.shape == (6, 25) and ds.meta["image_shape"] == (5, 5) and ds.kind == "image"
    assert np.allclose(ds.x.numpy(), images.reshape(6, 25) / 255.0, atol=1e-7)
    assert ds.y.tolist() == list(range(6))
    rows = np.random.default_rng(3).normal(size=(4, 3))
    np.savez(tmp_path / "rows.npz", X=rows)
    real = load_dataset(str(tmp_path / "rows.npz"))
    assert real.kind == "real" and real.y is None and np.allclose(real.x.numpy(), rows, atol=1e-6)
    np.savez(tmp_path / "nokey.npz", z=rows)
    with pytest.raises(PPVAEError, match="named x, images or X"):
        load_dataset(str(tmp_path / "nokey.npz"))
    np.savez(tmp_path / "out.npz", x=np.full((2, 2, 2), 3.0))
    with pytest.raises(PPVAEError, match="values in \\[0, 1\\]"):
        load_dataset(str(tmp_path / "out.npz"))


# ------------------------------------------------------------------------------------------------
# reuters and corpora


def test_reuters_matches_the_lda_package():
    lda_datasets = pytest.importorskip("lda.datasets")
    ds = load_dataset("reuters")
    counts = lda_datasets.load_reuters()
    assert ds.x.shape == (395, 4258) and ds.kind == "counts"
    assert len(ds.meta["vocab"]) == 4258 and ds.meta["vocab"] == list(lda_datasets.load_reuters_vocab())
    assert ds.x.sum().item() == counts.sum()
    assert np.array_equal(ds.x.numpy(), counts)
    assert len(ds.meta["titles"]) == 395 and ds.meta["titles"][0].startswith("0 UK: Prince Charles")
    train, test = load_dataset("reuters", split="train"), load_dataset("reuters", split="test")
    assert (len(train), len(test)) == (316, 79)
    assert not set(train.meta["indices"]) & set(test.meta["indices"])
    assert train.x.sum().item() + test.x.sum().item() == counts.sum()
    assert np.array_equal(test.x.numpy(), counts[test.meta["indices"]])


TEXTS = ["The cat sat on the mat.", "The dog sat on the log, the dog barked!", "A cat and a dog."]


def test_corpus_from_texts_hand_counts():
    ds = corpus_from_texts(TEXTS)  # "the", "on", "and" are stop words; "a" is one letter
    assert ds.kind == "counts" and ds.meta["vocab"] == ["barked", "cat", "dog", "log", "mat", "sat"]
    assert ds.x.tolist() == [[0, 1, 0, 0, 1, 1], [1, 0, 2, 1, 0, 1], [0, 1, 1, 0, 0, 0]]
    keep2 = corpus_from_texts(TEXTS, min_df=2)
    assert keep2.meta["vocab"] == ["cat", "dog", "sat"]
    assert keep2.x.tolist() == [[1, 0, 1], [0, 2, 1], [1, 1, 0]]
    assert corpus_from_texts(TEXTS, min_df=0.6).meta["vocab"] == ["cat", "dog", "sat"]  # df >= 1.8
    assert corpus_from_texts(TEXTS, max_df=2).meta["vocab"] == ["barked", "cat", "dog", "log", "mat", "sat"]
    top2 = corpus_from_texts(TEXTS, vocab_size=2)  # dog 3, then cat/sat tie at 2 -> cat
    assert top2.meta["vocab"] == ["cat", "dog"] and top2.x.tolist() == [[1, 0], [0, 2], [1, 1]]
    raw = corpus_from_texts(TEXTS, stop_words=None, min_df=2)
    assert raw.meta["vocab"] == ["cat", "dog", "on", "sat", "the"]
    assert raw.x[:, 4].tolist() == [2, 3, 0]
    custom = corpus_from_texts(TEXTS, stop_words=["DOG", "the"], min_df=2)
    assert custom.meta["vocab"] == ["cat", "on", "sat"]
    cased = corpus_from_texts(TEXTS, lowercase=False, min_df=2)
    assert cased.meta["vocab"] == ["The", "cat", "dog", "sat"]


def test_corpus_from_texts_drops_empty_documents_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = corpus_from_texts(TEXTS, max_df=0.5)  # df <= 1.5: barked, log, mat; text 2 is left empty
    assert [str(w.message) for w in caught] == [
        "corpus: dropped 1 empty document(s) (all-zero rows) of 3; their original indices are in "
        "meta['dropped_empty_documents']"
    ]
    assert ds.meta["vocab"] == ["barked", "log", "mat"]
    assert ds.x.tolist() == [[0, 0, 1], [1, 1, 0]] and ds.meta["dropped_empty_documents"] == [2]


def test_corpus_from_texts_errors():
    with pytest.raises(PPVAEError, match="texts: expected a list of strings"):
        corpus_from_texts("one string")
    with pytest.raises(PPVAEError, match="max_df: expected at least as many documents as min_df"):
        corpus_from_texts(TEXTS, min_df=3, max_df=1)
    with pytest.raises(PPVAEError, match="min_df: expected a number <= 1.0"):
        corpus_from_texts(TEXTS, min_df=1.5)
    with pytest.raises(PPVAEError, match="vocab_size: expected an integer >= 1"):
        corpus_from_texts(TEXTS, vocab_size=0)
    with pytest.raises(PPVAEError, match="stop_words: expected one of english"):
        corpus_from_texts(TEXTS, stop_words="french")
    with pytest.raises(PPVAEError, match="expected some of the"):
        corpus_from_texts(["the and of", "on the"])


def test_corpus_from_counts_checks_and_warns():
    counts = np.array([[1, 0, 2], [0, 0, 0], [3, 1, 0], [0, 0, 0]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = corpus_from_counts(counts, ["a", "b", "c"], name="toy")
    assert len(caught) == 1 and "toy: dropped 2 empty document(s)" in str(caught[0].message)
    assert ds.x.tolist() == [[1, 0, 2], [3, 1, 0]] and ds.meta["dropped_empty_documents"] == [1, 3]
    assert ds.meta["vocab"] == ["a", "b", "c"] and ds.kind == "counts"
    with pytest.raises(PPVAEError, match="counts: expected values >= 0"):
        corpus_from_counts([[1, -1]], ["a", "b"])
    with pytest.raises(PPVAEError, match="counts: expected whole numbers"):
        corpus_from_counts(np.array([[1.5, 2.0]]), ["a", "b"])
    with pytest.raises(PPVAEError, match="vocab: expected 3 words, one per column of counts .*; got 2 words"):
        corpus_from_counts(np.ones((2, 3)), ["a", "b"])
    with pytest.raises(PPVAEError, match="counts: expected a 2-D array"):
        corpus_from_counts(np.ones(3), ["a", "b", "c"])
    with pytest.raises(PPVAEError, match="vocab: expected distinct words"):
        corpus_from_counts(np.ones((2, 2)), ["a", "a"])


def test_corpus_from_counts_sparse():
    sparse = pytest.importorskip("scipy.sparse")
    dense = np.array([[0, 2, 0], [1, 0, 4]])
    ds = corpus_from_counts(sparse.csr_matrix(dense), ["x", "y", "z"])
    assert ds.x.tolist() == dense.tolist()


def test_load_checks_values_against_kind(monkeypatch):
    bad = lambda: Dataset(torch.tensor([[0.5, 1.0]]), name="bad", kind="counts")  # noqa: E731
    monkeypatch.setitem(data._REGISTRY, "bad-counts", (bad, "test"))
    with pytest.raises(PPVAEError, match="data 'bad': expected whole numbers"):
        load_dataset("bad-counts")
    img = lambda: Dataset(torch.tensor([[0.5, 2.0]]), name="img", kind="image")  # noqa: E731
    monkeypatch.setitem(data._REGISTRY, "bad-image", (img, "test"))
    with pytest.raises(PPVAEError, match="data 'img': expected values <= 1"):
        load_dataset("bad-image")


def test_missing_optional_packages_say_what_to_install(monkeypatch):
    from ppvae.data import images as _data_images
    from ppvae.data import text as _data_text

    monkeypatch.setattr(_data_images.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PPVAEError, match=r"mnist5k: .*pip install 'ppvae\[mnist\]'"):
        load_dataset("mnist5k")
    monkeypatch.setitem(__import__("sys").modules, "lda", None)  # makes `import lda` raise ImportError
    _data_text._read_reuters.cache_clear()
    try:
        with pytest.raises(PPVAEError, match=r"reuters: .*pip install 'ppvae\[topics\]'"):
            load_dataset("reuters")
    finally:
        _data_text._read_reuters.cache_clear()


# ------------------------------------------------------------------------------------------------
# NAME:KEY=VALUE specs and headerless CSVs (issue 13, items 2, 4, 15)


def test_data_spec_string_equals_keyword_options(faithful):
    std = load_dataset("faithful:standardize=true")
    assert torch.equal(std.x, load_dataset("faithful", standardize=True).x)
    assert torch.equal(load_dataset("faithful:standardize=false").x, faithful.x)
    with pytest.raises(PPVAEError, match="standardize: expected true or false; got 'yes'"):
        load_dataset("faithful:standardize=yes")
    with pytest.raises(PPVAEError, match=r"data: expected NAME:KEY=VALUE"):
        load_dataset("faithful:standardize")
    with pytest.raises(PPVAEError, match=r"given both"):
        load_dataset("reuters:split=train", split="test")


def test_csv_without_header_keeps_every_row(tmp_path):
    # before: the first data row was taken as a header and dropped (4 rows -> "3 points")
    path = tmp_path / "plain.csv"
    path.write_text("1,2\n3,4.5\n5,6\n7,8\n")
    ds = load_dataset(str(path))
    assert len(ds) == 4 and ds.meta["header"] is False and ds.meta["columns"] == ["x0", "x1"]
    assert torch.equal(ds.x, torch.tensor([[1.0, 2.0], [3.0, 4.5], [5.0, 6.0], [7.0, 8.0]]))
    forced = load_dataset(f"{path}:header=true")  # explicit: the first row is a header after all
    assert len(forced) == 3 and forced.meta["columns"] == ["1", "2"]
    assert torch.equal(forced.x, ds.x[1:])


def test_csv_header_detected_and_explicit_false_refuses_a_text_row(tmp_path):
    path = tmp_path / "named.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    ds = load_dataset(str(path))
    assert len(ds) == 2 and ds.meta["header"] is True and ds.meta["columns"] == ["a", "b"]
    with pytest.raises(PPVAEError, match="row 1: could not convert string to float: 'a'"):
        load_dataset(str(path), header=False)
    single = tmp_path / "one.csv"
    single.write_text("1.5,2\n")
    assert torch.equal(load_dataset(str(single)).x, torch.tensor([[1.5, 2.0]]))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2\n3\n")
    with pytest.raises(PPVAEError, match="row 2 has 1"):
        load_dataset(str(ragged))


def test_mmap_on_a_csv_says_it_is_for_npy_files(tmp_path):
    (tmp_path / "t.csv").write_text("a\n1\n")
    with pytest.raises(PPVAEError, match=r"mmap: memory-mapping is for \.npy files"):
        load_dataset(str(tmp_path / "t.csv"), mmap=True)


# ------------------------------------------------------------------------------------------------
# bad files (issue 22): every one a PPVAEError naming the data, none a silent change of the values


def test_csv_with_a_utf8_byte_order_mark_keeps_its_first_row(tmp_path):
    rows = [[3.6, 79.0], [1.8, 54.0], [3.333, 74.0]]
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(f"{a},{b}" for a, b in rows).encode())
    ds = load_dataset(str(path))
    torch.testing.assert_close(ds.x, torch.tensor(rows))
    assert ds.meta["header"] is False and ds.meta["columns"] == ["x0", "x1"]
    path.write_bytes(b"\xef\xbb\xbfa,b\n1,2\n")  # a BOM before a header: the first column is 'a', not '\ufeffa'
    assert load_dataset(str(path)).meta["columns"] == ["a", "b"]


@pytest.mark.parametrize("kind, message", [
    ("latin1", "expected a UTF-8 text CSV"),
    ("directory", "expected a data file (.csv, .npy, .npz, IDX); got the directory"),
    ("strings_npy", "expected a non-empty numeric NPY array; got dtype <U1"),
    ("empty_npy", "expected a non-empty numeric NPY array; got dtype float64 and shape (0, 2)"),
    ("huge", "expected values of magnitude at most 1.8e+15 (their squares overflow torch.float32); got 1e+30"),
])
def test_bad_data_files_are_one_clear_error(tmp_path, kind, message):
    if kind == "latin1":
        path = tmp_path / "x.csv"
        path.write_bytes("caf\xe9,b\n1,2\n".encode("latin-1"))
    elif kind == "directory":
        path = tmp_path / "x.csv"
        path.mkdir()
    elif kind == "strings_npy":
        path = tmp_path / "x.npy"
        np.save(path, np.array(["a", "b"]))
    elif kind == "empty_npy":
        path = tmp_path / "x.npy"
        np.save(path, np.zeros((0, 2)))
    else:
        path = tmp_path / "x.csv"
        path.write_text("1e30,1\n2,3\n")
    with pytest.raises(PPVAEError) as info:
        load_dataset(str(path))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_data_fingerprint_tells_data_apart():
    from ppvae.data.dataset import data_fingerprint

    x = torch.arange(12.0).reshape(6, 2)
    same, other = Dataset(x.clone()), Dataset(x.flip(0))
    assert data_fingerprint(Dataset(x)) == data_fingerprint(same)
    assert data_fingerprint(Dataset(x)) != data_fingerprint(other)
    assert data_fingerprint(Dataset(x)) != data_fingerprint(Dataset(x, torch.zeros(6)))
