"""Bach chorales as piano rolls: the next-frame task of Greff et al. (2017)'s JSB Chorales experiment,
built from the chorales music21's corpus ships (pinned in pyproject.toml's `tasks` extra, so a run id
names its data).

- **Which chorales.** Every `bwv*` score of the corpus with exactly four parts (soprano, alto, tenor,
  bass): 368 of its 413. They are split by chorale in the order of their file names: the 4th of every 5
  to dev, the 5th to test, the rest to train (222 / 73 / 73), near JSB Chorales' 229 / 76 / 77
  (Boulanger-Lewandowski et al. 2012).
- **The roll.** One frame a quarter note, as JSB Chorales: frame k holds the pitches sounding at
  offset k (a note from its onset up to its end, exclusive), so an eighth note between two beats is not
  seen. Notes are MIDI 36-81 (C2-A5), the range of these chorales: 46 binary inputs and outputs.
- **The task.** The input at step t is frame t, the target frame t + 1 (a sequence of n frames gives
  n - 1 steps). Each output is one note's logit; the loss is the per-note Bernoulli negative
  log-likelihood summed over the 46 notes: the metric is its mean per frame in nats (Greff et al.
  report it per time step). The trivial baseline is each note's training frequency, independently.

Parsing the 368 scores takes about two minutes, so the rolls are kept in a cache file, written
atomically and named by the music21 version (`cache_path`).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ablation.core.config import TaskConfig
from ablation.core.errors import need
from ablation.tasks.registry import Splits
from ablation.tasks.sst import Encoded

LOW, HIGH = 36, 81  # MIDI pitches of the roll, inclusive: C2 to A5
NOTES = HIGH - LOW + 1
VOICES = 4
STEP = 1.0  # quarter lengths a frame
PAD = -1.0  # a target frame past a sequence's end (every note); `PackedClassifier.step_mask` reads it


def roll(score) -> np.ndarray:
    """A music21 score -> its piano roll (frames, NOTES) of 0/1, one frame a quarter note."""
    frames = int(math.ceil(float(score.highestTime) / STEP))
    out = np.zeros((frames, NOTES), dtype=np.float32)
    for part in score.parts:
        for note in part.flatten().notes:
            start, end = float(note.offset), float(note.offset + note.quarterLength)
            first, last = math.ceil(start / STEP), math.ceil(end / STEP)  # frames k with start <= k < end
            for pitch in note.pitches:
                if not LOW <= pitch.midi <= HIGH:
                    raise ValueError(f"{score.metadata.title if score.metadata else 'a chorale'}: MIDI {pitch.midi} "
                                     f"outside the roll's {LOW}-{HIGH}")
                out[first:last, pitch.midi - LOW] = 1.0
    return out


def chorale_paths() -> list[Path]:
    """The corpus's chorale scores (bwv*), sorted by file name."""
    corpus = need("music21.corpus", "tasks", "task.name = 'chorales'")
    return sorted((Path(p) for p in corpus.getComposer("bach") if Path(p).name.startswith("bwv")),
                  key=lambda p: p.name)


def cache_path() -> Path:
    music21 = need("music21", "tasks", "task.name = 'chorales'")
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ablation"
    return root / f"chorales-music21-{music21.__version__}-{LOW}-{HIGH}.npz"


def rolls() -> dict[str, np.ndarray]:
    """{file name: roll} of every four-part chorale, from the cache, else parsed and cached."""
    path = cache_path()
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from music21 import corpus

    out = {}
    for p in chorale_paths():
        score = corpus.parse(p)
        if len(score.parts) == VOICES:
            out[p.name] = roll(score)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")  # whole or absent: a killed parse leaves no cache
    with os.fdopen(fd, "wb") as f:
        np.savez_compressed(f, **out)
    os.replace(tmp, path)
    return out


def split_names(names: list[str]) -> dict[str, list[str]]:
    """By chorale, in file-name order: the 4th of every 5 to dev, the 5th to test, the rest to train."""
    names = sorted(names)
    return {"train": [n for k, n in enumerate(names) if k % 5 < 3], "dev": names[3::5], "test": names[4::5]}


def encode(frames: list[np.ndarray]) -> Encoded:
    """Rolls -> inputs (N, T, NOTES) of frames 0 .. n-2, lengths n - 1, targets (N, T, NOTES) of frames
    1 .. n-1, `PAD` past each length."""
    lengths = torch.tensor([len(f) - 1 for f in frames])
    T = int(lengths.max())
    inputs = torch.zeros(len(frames), T, NOTES)
    targets = torch.full((len(frames), T, NOTES), PAD)
    for k, f in enumerate(frames):
        inputs[k, : len(f) - 1] = torch.from_numpy(f[:-1])
        targets[k, : len(f) - 1] = torch.from_numpy(f[1:])
    return Encoded(inputs, lengths, targets)


def load(task: TaskConfig) -> Splits:
    data = rolls()
    parts = split_names(list(data))
    train, dev, test = (encode([data[n] for n in parts[s]]) for s in ("train", "dev", "test"))
    return Splits(train, dev, test, vocab_size=1, input_size=NOTES, num_outputs=NOTES)
