"""Raw English text -> SST's tokens, for `predict` and for a user's own sentences (`tasks/tsv.py`).

SST's leaves are Penn Treebank tokens, cased as written (`The`, `the`): clitics split off
(`is n't`, `film 's`, `ca n't`), brackets as `-LRB-`/`-RRB-`, double quotes as `` and '',
punctuation apart (`,` `.` `...` `--` `;` `:`), hyphenated words whole (`well-made`), and
`/` and `*` escaped (`writer\\/director`). `tokenize` follows the Treebank tokenizer's
rules (R. MacIntyre's sed script, as in NLTK's `TreebankWordTokenizer`) with SST's escapes,
and keeps case, because the vocabulary (and GloVe's lookup) sees those tokens as they are.
"""

from __future__ import annotations

import re

from ablation.tasks.sst import PTB_ESCAPES

# (pattern, replacement), applied in order to " text "; each step of the Treebank script.
_RULES = [(re.compile(p), r) for p, r in [
    # opening double quotes
    (r'^"', "``"), (r"(``)", r" \1 "), (r'([ (\[{<])"', r"\1 `` "),  # '' stays closing, as in SST
    # punctuation
    (r"([:,])([^\d])", r" \1 \2"), (r"([:,])$", r" \1 "), (r"\.\.\.", " ... "),
    (r"[;@#$%&]", r" \g<0> "), (r'([^\.])(\.)([\]\)}>"\']*)\s*$', r"\1 \2\3 "), (r"[?!]", r" \g<0> "),
    (r"([^'])' ", r"\1 ' "),
    # brackets and dashes
    (r"[\]\[\(\)\{\}\<\>]", r" \g<0> "), (r"--", r" -- "),
    # closing double quotes, then clitics
    (r'"', " '' "), (r"(\S)('')", r"\1 \2 "),
    (r"([^' ])('[sS]|'[mM]|'[dD]|') ", r"\1 \2 "),
    (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", r"\1 \2 "),
    # words the Treebank writes as two
    *[(rf"(?i)\b({a})({b})\b", r" \1 \2 ") for a, b in
      [("can", "not"), ("d", "'ye"), ("gim", "me"), ("gon", "na"), ("got", "ta"), ("lem", "me"),
       ("more", "'n"), ("wan", "na")]],
    (r"(?i) ('t)(is)\b", r" \1 \2 "), (r"(?i) ('t)(was)\b", r" \1 \2 "),
]]
_TYPOGRAPHIC = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2013": "--",
                              "\u2014": "--", "\u2026": "...", "\u00a0": " "})
_BRACKETS = {v: k for k, v in PTB_ESCAPES.items()}  # "(" -> "-LRB-", ...
_ESCAPE = re.compile(r"(?<!\\)([/*])")  # SST writes / and * as \/ and \* (once: "\/" stays)


def tokenize(text: str) -> list[str]:
    """Raw English text -> SST tokens: 'It isn't (quite) "great".' ->
    ['It', 'is', "n't", '-LRB-', 'quite', '-RRB-', '``', 'great', "''", '.']"""
    text = f" {text.translate(_TYPOGRAPHIC)} "
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return [_ESCAPE.sub(r"\\\1", _BRACKETS.get(t, t)) for t in text.split()]
