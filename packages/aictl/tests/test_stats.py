"""The paired bootstrap interval on cases whose answer is known."""

import pytest

from aictl.evaluation.stats import PairedInterval, paired_bootstrap


def test_a_method_better_on_every_question_has_an_interval_above_zero() -> None:
    baseline = [0.2, 0.5, 0.4, 0.9, 0.1, 0.6, 0.3, 0.7, 0.5, 0.4] * 3
    better = [b + 0.1 + 0.02 * (i % 3) for i, b in enumerate(baseline)]
    interval = paired_bootstrap(better, baseline)
    assert interval.mean == pytest.approx(0.12, abs=1e-9)
    assert 0 < interval.low <= interval.mean <= interval.high
    assert interval.low >= 0.1
    assert interval.high <= 0.14
    assert interval.verdict == "better"
    assert interval.n == 30
    # and the other way round: the same interval, mirrored
    worse = paired_bootstrap(baseline, better)
    assert worse.verdict == "worse"
    assert worse.mean == pytest.approx(-interval.mean)


def test_gains_and_losses_that_cancel_give_an_interval_across_zero() -> None:
    baseline = [0.5] * 40
    method = [0.5 + (0.3 if i % 2 else -0.3) for i in range(40)]
    method[0] += 0.02  # a mean just above 0
    interval = paired_bootstrap(method, baseline)
    assert interval.mean == pytest.approx(0.0005, abs=1e-9)
    assert interval.low < 0 < interval.high
    assert interval.verdict == "tie"


def test_pairing_sees_a_small_steady_gain_that_separate_spreads_would_hide() -> None:
    # Scores spread widely across questions, the method always 0.01 above: paired, the
    # difference is certain, although each method's own scores vary by far more.
    baseline = [i / 50 for i in range(50)]
    method = [b + 0.01 for b in baseline]
    interval = paired_bootstrap(method, baseline)
    assert interval.low == pytest.approx(0.01)
    assert interval.high == pytest.approx(0.01)
    assert interval.verdict == "better"


def test_the_same_seed_gives_the_same_interval_and_resamples_count() -> None:
    a = [0.1, 0.9, 0.4, 0.7, 0.3, 0.8, 0.2]
    b = [0.3, 0.6, 0.5, 0.5, 0.4, 0.6, 0.1]
    first = paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7) == first
    assert paired_bootstrap(a, b, seed=8) != first
    assert first.resamples == 10_000
    assert first.confidence == 0.95
    narrow = paired_bootstrap(a, b, confidence=0.5, resamples=2_500)
    assert first.low < narrow.low <= narrow.high < first.high


def test_identical_methods_tie_at_zero() -> None:
    interval = paired_bootstrap([0.3, 0.6, 1.0], [0.3, 0.6, 1.0])
    assert (interval.mean, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert interval.verdict == "tie"


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="2 scores for 3 baseline scores"):
        paired_bootstrap([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no questions"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([0.1], [0.2], confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap([0.1], [0.2], resamples=0)


def test_the_interval_reads_as_text_and_as_json() -> None:
    interval = PairedInterval(mean=0.0142, low=-0.0101, high=0.0391, n=60)
    assert str(interval) == "+0.014 [-0.010, +0.039]"
    assert interval.as_dict() == {
        "mean": 0.0142,
        "low": -0.0101,
        "high": 0.0391,
        "n": 60,
        "verdict": "tie",
    }
