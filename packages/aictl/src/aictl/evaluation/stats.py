"""The paired bootstrap: is one method's mean score above another's on the same questions?

Two methods scored on the same questions differ question by question; the questions are
a sample, so the mean of those differences is uncertain. The paired bootstrap resamples
the questions (with replacement, ``resamples`` times, from a fixed seed so that a run
repeats) and takes the mean difference of each resample; the middle 95% of those means
is the interval (the percentile interval). Resampling pairs, not each method's scores
alone, keeps what the methods share (a hard question is hard for both), which is what
makes a paired interval narrower than two separate ones.

Read it as: the interval above 0, the method is better than the baseline on questions
like these; below 0, worse; across 0, the set cannot tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
_BLOCK = 1_000
"""Resamples drawn at once (bounds the memory at ``_BLOCK * n`` indices)."""


@dataclass(frozen=True)
class PairedInterval:
    """The mean of ``method - baseline`` over the questions, and its bootstrap interval.

    Attributes:
        mean: The mean difference over the questions themselves.
        low: The interval's lower bound.
        high: The interval's upper bound.
        n: Questions.
        confidence: The interval's coverage (0.95: the 2.5th to the 97.5th percentile).
        resamples: Bootstrap resamples drawn.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95
    resamples: int = DEFAULT_RESAMPLES

    @property
    def verdict(self) -> str:
        """``"better"`` (the interval is above 0), ``"worse"`` (below 0) or ``"tie"``."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "tie"

    def as_dict(self, digits: int = 4) -> dict[str, float | int | str]:
        """The figures, rounded, for a JSON result."""
        return {
            "mean": round(self.mean, digits),
            "low": round(self.low, digits),
            "high": round(self.high, digits),
            "n": self.n,
            "verdict": self.verdict,
        }

    def __str__(self) -> str:
        """``+0.014 [-0.010, +0.039]``."""
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_bootstrap(
    scores: Sequence[float],
    baseline: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> PairedInterval:
    """The mean of ``scores - baseline`` and its paired bootstrap percentile interval.

    Args:
        scores: The method's score of each question.
        baseline: The baseline's score of the same questions, in the same order.
        resamples: Resamples of the questions.
        confidence: The interval's coverage, in (0, 1).
        seed: The random generator's seed: the same inputs give the same interval.

    Raises:
        ValueError: The two lists differ in length or are empty, or an argument is out of
            range.
    """
    if len(scores) != len(baseline):
        raise ValueError(f"{len(scores)} scores for {len(baseline)} baseline scores")
    if not scores:
        raise ValueError("no questions to compare")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), not {confidence}")
    differences = np.asarray(scores, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = len(differences)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, _BLOCK):
        size = min(_BLOCK, resamples - start)
        picks = rng.integers(0, n, size=(size, n))
        means[start : start + size] = differences[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return PairedInterval(
        mean=float(differences.mean()),
        low=float(low),
        high=float(high),
        n=n,
        confidence=confidence,
        resamples=resamples,
    )
