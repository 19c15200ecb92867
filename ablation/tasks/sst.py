"""The Stanford Sentiment Treebank: PTB-format trees -> verified examples -> padded batches.

Socher et al. (2013) distribute one tree per line, every node labelled 0-4:

    (3 (2 (2 The) (2 Rock)) (4 (3 (2 is) ...

`find_sst_dir` finds the trees (``--data-dir``, ``$SST_DIR``, ``data/sst/``, ``../shared/data/sst``; see
docs/data.md), checked against the official SHA-256 sums below unless ``verify=False``. A split encodes to
ids (N, T_max), lengths (N,), labels (N,); a batch is ids (B, T), lengths (B,), labels (B,).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ablation.core.errors import AblationError, DataError
from ablation.core.spec import GRANULARITIES, LABEL_NAMES, LABELINGS, VOCABS  # noqa: F401  (re-exported)

SPLITS = ("train", "dev", "test")
# sha256 of the three files extracted from trainDevTestTrees_PTB.zip (trees/*.txt).
SHA256 = {
    "train": "e2f3f41b0b1e6d4dddc0effe3bfc2d27ed8928079aa9a03d652311614fc5feb7",
    "dev": "0e9336aed6e4730e19f58d00a77b3f0297efdb755f7b5e598c98a05e3f97ea40",
    "test": "6e54806dee95cf80cd918e7dfb3f6770f6df24bf826f289a4d1f709e1c8f6761",
}
SST_URL = "https://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip"
REPO_ROOT = Path(__file__).resolve().parents[2]
PAD, UNK = "<pad>", "<unk>"
# PTB escapes, undone only when asked (unescape=True): the files' text is the default.
PTB_ESCAPES = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


class TreeParseError(DataError):
    """A line that is not a well-formed labelled tree; names file, line and column."""

    def __init__(self, path: str | os.PathLike, line: int, col: int, why: str):
        super().__init__(f"{path}:{line}:{col}: malformed tree: {why}")
        self.path, self.line, self.col = str(path), line, col


class ChecksumError(DataError):
    """A data file whose SHA-256 is not the official one."""


class DataNotFoundError(AblationError, FileNotFoundError):
    """No copy of SST anywhere we look."""


@dataclass(frozen=True)
class Example:
    tokens: list[str]
    label: int


@dataclass(frozen=True)
class Tree:
    """A parsed sentence: its tokens and every node as (label, start, end) over them."""

    tokens: list[str]
    nodes: list[tuple[int, int, int]]  # root first (pre-order)

    @property
    def label(self) -> int:
        return self.nodes[0][0]


def parse_tree(line: str, *, path: str = "<string>", lineno: int = 1, unescape: bool = False) -> Tree:
    """Parse one PTB tree. Only ASCII spaces separate; a leaf runs to its ')' (so U+00A0 stays)."""
    line = line.rstrip("\r\n")
    tokens: list[str] = []
    nodes: list[tuple[int, int, int]] = []
    stack: list[tuple[int, int]] = []  # (index into nodes, token start)
    i, n = 0, len(line)

    def fail(why: str, col: int) -> TreeParseError:
        return TreeParseError(path, lineno, col + 1, why)

    while i < n:
        ch = line[i]
        if ch == " ":
            i += 1
        elif ch == "(":
            j = line.find(" ", i + 1)
            if j < 0 or not line[i + 1 : j].isdigit():
                raise fail("expected '(<label 0-4> '", i)
            label = int(line[i + 1 : j])
            if not 0 <= label <= 4:
                raise fail(f"label {label} outside 0-4", i + 1)
            nodes.append((label, len(tokens), -1))
            stack.append((len(nodes) - 1, len(tokens)))
            i = j + 1
            if i < n and line[i] not in "( ":  # a leaf (possibly empty: an error): its text runs to the next ')'
                k = line.find(")", i)
                if k < 0:
                    raise fail("unterminated leaf", i)
                text = line[i:k]
                if not text:
                    raise fail("empty leaf", i)
                if "(" in text:
                    raise fail("'(' inside a leaf", i + text.index("("))
                tokens.append(PTB_ESCAPES.get(text, text).replace("\\/", "/") if unescape else text)
                i = k
        elif ch == ")":
            if not stack:
                raise fail("unbalanced ')'", i)
            idx, start = stack.pop()
            if len(tokens) == start:
                raise fail("empty node", i)
            nodes[idx] = (nodes[idx][0], start, len(tokens))
            i += 1
            if not stack and line[i:].strip():
                raise fail("text after the root closes", i)
        else:
            raise fail(f"unexpected {ch!r}", i)
    if stack or not nodes:
        raise fail("unbalanced '('" if stack else "empty line", n)
    return Tree(tokens, nodes)


def read_trees(path: str | os.PathLike, *, unescape: bool = False) -> list[Tree]:
    with open(path, encoding="utf-8") as f:
        return [
            parse_tree(line, path=str(path), lineno=k, unescape=unescape)
            for k, line in enumerate(f, 1)
            if line.strip()
        ]


# --- where the data is ------------------------------------------------------------------------

def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_sst(data_dir: str | os.PathLike, sums: dict[str, str] = SHA256) -> None:
    for split, want in sums.items():
        path = Path(data_dir) / f"{split}.txt"
        got = sha256(path)
        if got != want:
            raise ChecksumError(f"{path}: sha256 {got} is not the official {want}")


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where to look: a folder the user named (argument, then SST_DIR) alone, else the defaults."""
    if data_dir is not None:
        return [Path(data_dir)]
    if os.environ.get("SST_DIR"):
        return [Path(os.environ["SST_DIR"])]
    return [REPO_ROOT / "data" / "sst", REPO_ROOT.parent / "shared" / "data" / "sst"]


def find_sst_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The SST folder; one the user named is used or is an error naming what it lacks."""
    for d in candidate_dirs(data_dir):
        if all((d / f"{s}.txt").is_file() for s in SPLITS):
            return d
    named = "data.data_dir (--data-dir)" if data_dir is not None else "SST_DIR" if os.environ.get("SST_DIR") else None
    if named:
        d = candidate_dirs(data_dir)[0]
        missing = [f"{s}.txt" for s in SPLITS if not (d / f"{s}.txt").is_file()]
        what = "does not exist" if not d.is_dir() else f"has no {', '.join(missing)}"
        raise DataNotFoundError(f"{named} {d} {what} (the SST trees train.txt, dev.txt, test.txt); "
                                "point it at the folder holding them, or run `ablation data --download "
                                f"--data-dir {d}`")
    looked = ", ".join(str(d) for d in candidate_dirs(data_dir))
    raise DataNotFoundError(
        f"no SST trees (train.txt, dev.txt, test.txt) in: {looked}. "
        "Run `ablation data` (or `make data`) to download the official copy, "
        "or point --data-dir / SST_DIR at a folder holding them."
    )


def download_sst(dest: str | os.PathLike | None = None, *, url: str = SST_URL,
                 sums: dict[str, str] = SHA256, timeout: float = 60.0) -> Path:
    """Fetch the official zip, verify trees/*.txt, then move them into ``dest`` (default data/sst).

    Nothing in ``dest`` changes unless all three files verify, so a bad download never
    replaces a good copy.
    """
    dest = Path(dest) if dest is not None else REPO_ROOT / "data" / "sst"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        payload = resp.read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            for split in SPLITS:
                name = f"trees/{split}.txt"
                if name not in zf.namelist():
                    raise DataNotFoundError(f"{url}: archive has no {name}")
                (Path(tmp) / f"{split}.txt").write_bytes(zf.read(name))
        for split, want in sums.items():
            got = sha256(Path(tmp) / f"{split}.txt")
            if got != want:
                raise ChecksumError(f"{url}!trees/{split}.txt: sha256 {got} is not the official {want}")
        dest.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            os.replace(Path(tmp) / f"{split}.txt", dest / f"{split}.txt")  # atomic per file
    return dest


# --- examples ---------------------------------------------------------------------------------

def binary_label(fine: int) -> int | None:
    """0-1 negative (0), 3-4 positive (1), 2 neutral (dropped)."""
    return None if fine == 2 else int(fine > 2)


def load_sst(split: str, *, granularity: str = "sentences", labels: str = "binary",
             data_dir: str | os.PathLike | None = None, verify: bool = True,
             unescape: bool = False) -> list[Example]:
    """Examples of one split. ``phrases`` = every distinct labelled subtree (first label kept)."""
    for name, value, valid in (("split", split, SPLITS), ("granularity", granularity, GRANULARITIES),
                               ("labels", labels, LABELINGS)):
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    d = find_sst_dir(data_dir)
    if verify:
        verify_sst(d, {split: SHA256[split]})
    out: list[Example] = []
    seen: set[tuple[str, ...]] = set()
    for tree in read_trees(d / f"{split}.txt", unescape=unescape):
        spans = tree.nodes if granularity == "phrases" else tree.nodes[:1]
        for fine, start, end in spans:
            label = fine if labels == "fine" else binary_label(fine)
            if label is None:
                continue
            toks = tree.tokens[start:end]
            if granularity == "phrases":
                key = tuple(toks)
                if key in seen:
                    continue
                seen.add(key)
            out.append(Example(toks, label))
    return out


# --- vocabulary and batches -------------------------------------------------------------------

class Vocab:
    """Token <-> id; id 0 is <pad>, id 1 is <unk>."""

    def __init__(self, tokens: Sequence[str]):
        self.itos = [PAD, UNK] + [t for t in dict.fromkeys(tokens) if t not in (PAD, UNK)]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def from_examples(cls, examples: Sequence[Example]) -> Vocab:
        return cls([t for ex in examples for t in ex.tokens])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(t, 1) for t in tokens]


@dataclass(frozen=True)
class Encoded:
    """A split as one right-padded id matrix: ids (N, T_max) int64, lengths (N,), labels (N,)."""

    ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> Encoded:
        return Encoded(self.ids.to(device), self.lengths.to(device), self.labels.to(device))

    def batch(self, idx: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids (B, T), lengths (B,), labels (B,)) with T the longest sequence of this batch (a language
        model's labels are next tokens, (B, T) too)."""
        idx = torch.as_tensor(idx)
        lengths = self.lengths[idx]
        T = int(lengths.max())
        labels = self.labels[idx]
        return self.ids[idx, :T], lengths, labels[:, :T] if labels.dim() > 1 else labels


def encode(examples: Sequence[Example], vocab: Vocab) -> Encoded:
    lengths = torch.tensor([len(ex.tokens) for ex in examples], dtype=torch.long)
    ids = torch.zeros(len(examples), int(lengths.max()), dtype=torch.long)
    for k, ex in enumerate(examples):
        ids[k, : len(ex.tokens)] = torch.tensor(vocab.encode(ex.tokens), dtype=torch.long)
    labels = torch.tensor([ex.label for ex in examples], dtype=torch.long)
    return Encoded(ids, lengths, labels)


def batch_order(lengths: np.ndarray | torch.Tensor, batch_size: int, *, seed: int, epoch: int,
                bucket: bool = True, chunk_batches: int = 50) -> list[np.ndarray]:
    """Indices of each batch of one epoch, determined by (seed, epoch) alone.

    With ``bucket``, the shuffled indices are cut into chunks of ``chunk_batches`` batches,
    each chunk is sorted by length (stable), cut into batches, and the batches are shuffled:
    little padding, yet a random order that the seed fixes.
    """
    lengths = np.asarray(lengths)
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    if not bucket:
        return [perm[k : k + batch_size] for k in range(0, len(perm), batch_size)]
    chunk = batch_size * chunk_batches
    batches = []
    for k in range(0, len(perm), chunk):
        part = perm[k : k + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    return [batches[j] for j in rng.permutation(len(batches))]
