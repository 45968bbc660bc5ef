import pytest

from handler_base.messaging.backoff import backoff_delay


def test_no_wait_before_the_first_attempt() -> None:
    assert backoff_delay(0, 0.5, 5.0) == 0.0
    assert backoff_delay(-3, 0.5, 5.0) == 0.0


def test_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, 0.5, 5.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_huge_attempt_counts_stay_at_the_cap() -> None:
    assert backoff_delay(10_000, 0.5, 5.0) == 5.0


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_jitter_only_shortens(rand: float) -> None:
    delay = backoff_delay(3, 1.0, 10.0, jitter=0.2, rand=lambda: rand)
    assert 4.0 * 0.8 <= delay <= 4.0
    assert delay == pytest.approx(4.0 * (1 - 0.2 * rand))
