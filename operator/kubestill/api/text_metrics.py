"""ROUGE-L between two texts or token sequences, one definition for the judge and the trainer (C.-Y. Lin, "ROUGE: A
Package for Automatic Evaluation of Summaries", ACL Workshop 2004, sec. 3.1): the longest common subsequence (LCS)
of the two token sequences, as an F-measure of its recall against the reference and its precision in the candidate.
beta = 1 (F1), and tokens are lower-cased runs of letters and digits, as in Google's `rouge-score` package (not
installed here; this is its definition, without stemming). Pure; O(len(a) * len(b)) time, O(len(b)) memory.

>>> rouge_l("the cat sat on the mat", "the cat is on the mat")  # LCS "the cat on the mat": 5 of 6 each way
0.8333333333333334
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lower-cased runs of ASCII letters and digits: `rouge-score`'s default tokenizer without stemming."""
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence, by the classic dynamic programme one row at a time.

    >>> lcs_length("ABCBDAB", "BDCABA")
    4
    """
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 of `candidate` against `reference`, in [0, 1]: 1 for the same tokens in the same order, 0 when
    they share none. Two answers without any token are identical (1.0); one empty answer scores 0."""
    return rouge_l_tokens(tokens(reference), tokens(candidate))


def rouge_l_tokens(ref: Sequence[Hashable], cand: Sequence[Hashable]) -> float:
    """ROUGE-L F1 of two token sequences (words, or token ids as the trainer compares generations), in [0, 1]
    (Lin 2004, sec. 3.1 with beta = 1: symmetric in its arguments). Two empty sequences score 1."""
    if not ref and not cand:
        return 1.0
    lcs = lcs_length(ref, cand)
    if lcs == 0:
        return 0.0
    recall, precision = lcs / len(ref), lcs / len(cand)
    return 2 * recall * precision / (recall + precision)
