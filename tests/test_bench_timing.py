"""vagent_jax/bench_timing.py: the call counts and results of the timing helpers, best <= median, and a
matmul peak that is a FLOP rate of the right order (2 n^3 per call)."""
import pytest

from vagent_jax.bench_timing import best_seconds, fp32_matmul_peak, time_calls, timed_calls


def _counter():
    calls = []

    def fn():
        calls.append(len(calls))
        return len(calls)
    return fn, calls


def test_timed_calls_counts_warmup_and_repeats():
    fn, calls = _counter()
    times, last = timed_calls(fn, 3, warmup=2)
    assert len(calls) == 5 and len(times) == 3 and last == 5
    fn, calls = _counter()
    best, last = best_seconds(fn, 4)
    assert len(calls) == 4 and last == 4 and best >= 0
    fn, calls = _counter()
    best, median = time_calls(fn, 5)
    assert len(calls) == 6 and best <= median  # one warm-up by default
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        timed_calls(fn, 0)


def test_matmul_peak_is_a_flop_rate():
    peak = fp32_matmul_peak(128, 3)
    assert 1e7 < peak < 1e15  # any CPU that runs jax: more than 10 MFLOP/s; less than a PFLOP/s
