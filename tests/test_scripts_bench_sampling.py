"""scripts/bench_sampling.py: the rates and the op's fraction of the read bound follow from the timings."""
import pytest

from script_module import load_script

bench = load_script("bench_sampling")


def test_small_run_reports_fraction_of_read_bound(capsys) -> None:
    out = bench.main(["--batch", "4", "--vocab", "4096", "--repeats", "2", "--json"])
    assert '"tracking_fraction_of_read_bound"' in capsys.readouterr().out
    (r,) = out["results"]
    assert (r["batch"], r["vocab"]) == (4, 4096)
    nbytes = 4 * 4096 * 4
    assert r["tracking_gbps"] == pytest.approx(nbytes / r["tracking_s"] / 1e9)
    assert r["row_sum_gbps"] == pytest.approx(nbytes / r["row_sum_s"] / 1e9)
    assert r["tracking_fraction_of_read_bound"] == pytest.approx(r["tracking_gbps"] / r["row_sum_gbps"])
    assert r["ratio_tracking_vs_categorical"] == pytest.approx(r["tracking_s"] / r["categorical_s"])
