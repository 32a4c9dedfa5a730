"""The population benchmark runs (tiny), so that it cannot rot; it reports and asserts no speed."""

from __future__ import annotations

import pytest

from benchmarks import population


def test_population_benchmark_prints_a_row_per_mode(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    population.main(["--sizes", "1,2", "--repeats", "1", "--seconds", "0.05", "--device", "cpu"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("mnist1d_cnn, Adam, batch 100, cpu")
    assert [line.split()[0] for line in out[2:]] == ["hand", "P=1", "P=2"]
