"""`consumer bench` refuses settings that would make it measure less than it says."""

from __future__ import annotations

import pytest

from consumer.bench.worker import BenchOptions, run_bench
from consumer.errors import ConfigurationError
from consumer.settings import load_settings


def test_more_processes_than_partitions_is_refused_before_anything_runs() -> None:
    options = BenchOptions(events=10, partitions=2, processes=3)
    with pytest.raises(ConfigurationError, match="at least as many partitions"):
        run_bench(load_settings(), options, say=lambda _line: None)
