"""SST parsing, counts on the real files, checksums, the download, vocabulary and batches."""

import http.server
import io
import re
import shutil
import threading
import zipfile

import numpy as np
import pytest
import torch

from ablation import cli
from ablation.tasks.sst import (
    SHA256,
    ChecksumError,
    DataNotFoundError,
    TreeParseError,
    Vocab,
    batch_order,
    download_sst,
    encode,
    find_sst_dir,
    load_sst,
    parse_tree,
    read_trees,
    verify_sst,
)


def test_parse_simple_tree():
    tree = parse_tree("(3 (2 (2 The) (2 Rock)) (4 (2 is) (4 great)))")
    assert tree.tokens == ["The", "Rock", "is", "great"]
    assert tree.label == 3
    assert tree.nodes[:3] == [(3, 0, 4), (2, 0, 2), (2, 0, 1)]
    assert len(tree.nodes) == 7


def test_no_break_space_stays_inside_a_leaf():
    tree = parse_tree("(2 (2 8\u00a01\\/2) (2 hours))")
    assert tree.tokens == ["8\u00a01\\/2", "hours"]


def test_escapes_kept_by_default_and_unescaped_on_request():
    line = "(2 (2 -LRB-) (2 (2 a\\/b) (2 -RRB-)))"
    assert parse_tree(line).tokens == ["-LRB-", "a\\/b", "-RRB-"]
    assert parse_tree(line, unescape=True).tokens == ["(", "a/b", ")"]


def test_utf8_and_deep_nesting():
    depth = 200
    line = "(1 " * depth + "André" + ")" * depth
    tree = parse_tree(line)
    assert tree.tokens == ["André"] and len(tree.nodes) == depth


@pytest.mark.parametrize("line, why", [
    ("(2 (2 a) (2 b)", "unbalanced '('"),
    ("(2 a))", "text after the root"),
    (") (2 a)", "unbalanced ')'"),
    ("(2 (2 a (2 b)))", "'(' inside a leaf"),
    ("(7 a)", "label 7 outside 0-4"),
    ("(x a)", "expected '(<label"),
    ("(2 (2 a) (2 b)) (2 c)", "text after the root"),
    ("(2 )", "empty leaf"),
    ("(2  )", "empty node"),
])
def test_malformed_tree_names_file_and_line(tmp_path, line, why):
    path = tmp_path / "bad.txt"
    path.write_text("(2 (2 fine) (2 line))\n" + line + "\n", encoding="utf-8")
    with pytest.raises(TreeParseError, match=re.escape(why)) as e:
        read_trees(path)
    assert isinstance(e.value, ValueError)
    assert str(e.value).startswith(f"{path}:2:")
    assert e.value.line == 2


def test_real_counts(sst_dir):
    counts = {s: len(read_trees(sst_dir / f"{s}.txt")) for s in ("train", "dev", "test")}
    assert counts == {"train": 8544, "dev": 1101, "test": 2210}
    binary = {s: load_sst(s, data_dir=sst_dir) for s in ("train", "dev", "test")}
    assert {s: len(v) for s, v in binary.items()} == {"train": 6920, "dev": 872, "test": 1821}
    assert sum(ex.label for ex in binary["train"]) == 3610
    assert sum(ex.label for ex in binary["dev"]) == 444
    assert sum(ex.label for ex in binary["test"]) == 909
    phrases = load_sst("train", granularity="phrases", data_dir=sst_dir)
    assert len(phrases) == 77616
    assert len({tuple(ex.tokens) for ex in phrases}) == 77616
    assert len(load_sst("dev", labels="fine", data_dir=sst_dir)) == 1101
    nbsp = read_trees(sst_dir / "train.txt")[4341].tokens
    assert "8\u00a01\\/2" in nbsp


def test_checksum_mismatch_names_the_file(sst_dir, tmp_path):
    for s in ("train", "dev", "test"):
        shutil.copy(sst_dir / f"{s}.txt", tmp_path / f"{s}.txt")
    verify_sst(tmp_path)
    with open(tmp_path / "dev.txt", "a", encoding="utf-8") as f:
        f.write("(2 (2 extra) (2 tree))\n")
    with pytest.raises(ChecksumError, match="dev.txt"):
        load_sst("dev", data_dir=tmp_path)
    assert len(load_sst("dev", data_dir=tmp_path, verify=False)) == 872  # neutral root dropped
    load_sst("train", data_dir=tmp_path)  # the other files still verify


def test_other_corpus_in_tree_format_loads_unverified(tmp_path):
    for s in ("train", "dev", "test"):
        (tmp_path / f"{s}.txt").write_text("(4 (3 good) (2 film))\n(0 (1 bad) (2 film))\n(2 (2 a) (2 b))\n")
    exs = load_sst("train", data_dir=tmp_path, verify=False)
    assert [(e.tokens, e.label) for e in exs] == [(["good", "film"], 1), (["bad", "film"], 0)]
    phrases = load_sst("train", granularity="phrases", data_dir=tmp_path, verify=False)
    assert [(e.tokens, e.label) for e in phrases] == [(["good", "film"], 1), (["good"], 1),
                                                      (["bad", "film"], 0), (["bad"], 0)]


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError, match="ablation data"):
        find_sst_dir(tmp_path / "nowhere")


def test_bad_arguments_name_the_valid_ones(sst_dir):
    with pytest.raises(ValueError, match="valid: sentences, phrases"):
        load_sst("train", granularity="words", data_dir=sst_dir)
    with pytest.raises(ValueError, match="valid: train, dev, test"):
        load_sst("validation", data_dir=sst_dir)


class _Server:
    """A real HTTP server on 127.0.0.1 serving one zip from memory."""

    def __init__(self, payload: bytes):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/trainDevTestTrees_PTB.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"trees/{name}", data)
    return buf.getvalue()


def test_download_verifies_and_a_bad_download_leaves_the_good_copy(sst_dir, tmp_path):
    good = {f"{s}.txt": (sst_dir / f"{s}.txt").read_bytes() for s in ("train", "dev", "test")}
    dest = tmp_path / "sst"
    with _Server(_zip(good)) as server:
        assert download_sst(dest, url=server.url) == dest
    verify_sst(dest)
    bad = dict(good, **{"test.txt": good["test.txt"].replace(b"(", b"[", 1)})
    with _Server(_zip(bad)) as server, pytest.raises(ChecksumError, match="test.txt"):
        download_sst(dest, url=server.url)
    verify_sst(dest)  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sst"]  # no temporaries left
    # and through the command line: --download fetches a copy into --data-dir (without it, an
    # empty --data-dir is an error naming what it lacks: tests/test_faults.py)
    with _Server(_zip(good)) as server:
        assert cli.main(["data", "--url", server.url, "--data-dir", str(tmp_path / "cli"), "--download"]) == 0
    verify_sst(tmp_path / "cli")


def test_cli_data_reports_counts(sst_dir, capsys):
    assert cli.main(["data", "--data-dir", str(sst_dir)]) == 0
    out = capsys.readouterr().out
    assert "train  8544 trees,  6920 binary sentences" in out
    assert "77616 distinct binary phrases" in out
    assert SHA256["train"] not in out  # reports, does not dump


def test_vocab_and_encoding():
    from ablation.tasks.sst import Example

    exs = [Example(["a", "b", "a"], 1), Example(["c"], 0)]
    v = Vocab.from_examples(exs)
    assert v.itos == ["<pad>", "<unk>", "a", "b", "c"]
    assert v.encode(["a", "zzz"]) == [2, 1]
    enc = encode(exs, v)
    assert enc.ids.tolist() == [[2, 3, 2], [4, 0, 0]]
    ids, lengths, labels = enc.batch(np.array([1]))
    assert ids.tolist() == [[4]] and lengths.tolist() == [1] and labels.tolist() == [0]


def test_batch_order_is_seeded_complete_and_bucketed():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=1003)
    a = batch_order(lengths, 10, seed=1, epoch=1)
    assert [x.tolist() for x in a] == [x.tolist() for x in batch_order(lengths, 10, seed=1, epoch=1)]
    assert [x.tolist() for x in a] != [x.tolist() for x in batch_order(lengths, 10, seed=1, epoch=2)]
    assert [x.tolist() for x in a] != [x.tolist() for x in batch_order(lengths, 10, seed=2, epoch=1)]
    assert sorted(np.concatenate(a).tolist()) == list(range(1003))
    plain = batch_order(lengths, 10, seed=1, epoch=1, bucket=False)
    pad = lambda order: sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in order)  # noqa: E731
    assert pad(a) < pad(plain) / 3
    firsts = [int(lengths[b].max()) for b in a[:20]]
    assert firsts != sorted(firsts)  # batches are not in length order


def test_encoded_to_device_keeps_values():
    from ablation.tasks.sst import Example

    v = Vocab(["x"])
    enc = encode([Example(["x"], 1)], v).to(torch.device("cpu"))
    assert enc.ids.tolist() == [[2]]
