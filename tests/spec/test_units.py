"""cluster.units: the one home of walltime, memory and duration parsing and formatting."""

from __future__ import annotations

import pytest

import cluster.spec
import cluster.units as units
import train.contract


def test_one_implementation_each():
    assert units.parse_walltime is train.contract.parse_walltime
    for name in ("parse_walltime", "format_walltime", "parse_memory", "format_memory"):
        assert getattr(cluster.spec, name) is getattr(units, name), name


@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (0, "0:00:00"), (59, "0:00:59"), (3600, "1:00:00"), (93784, "26:03:04"),
    (59.9, "0:00:59"), (-5, "0:00:00"), (360000, "100:00:00"),
])
def test_format_duration(seconds, text):
    assert units.format_duration(seconds) == text


@pytest.mark.parametrize("text, seconds", [
    ("01:00:00", 3600), ("8760:00:00", 31536000), ("05:30", 330), ("42", 42), ("1-02:03:04", 93784),
    ("00:00:07.5", 7), ("  10:00 ", 600), ("0", 0),
    ("", None), (None, None), ("Infinite", None), ("UNLIMITED", None), ("INVALID", None),
    ("Partition_Limit", None), ("1:2:3:4", None), ("-5", None), ("abc", None), ("9" * 5000, None),
])
def test_parse_duration_text(text, seconds):
    assert units.parse_duration_text(text) == seconds


@pytest.mark.parametrize("seconds", [1, 59, 60, 3599, 86399, 93784, 365 * 86400])
def test_duration_round_trip(seconds):
    assert units.parse_duration_text(units.format_duration(seconds)) == seconds
    assert units.parse_duration_text(units.format_walltime(seconds)) == seconds


@pytest.mark.parametrize("value, why", [
    (1e308, "must be at most 65536G"), (float("inf"), "must be at most 65536G"), ("65537G", "must be at most 65536G"),
    (10 ** 30, "must be at most 65536G"), ("9" * 40, "^$"), ("1" * 100 + "G", "^$"),
])
def test_parse_memory_is_bounded(value, why):
    with pytest.raises(ValueError, match=why):
        units.parse_memory(value)


def test_parse_memory_upper_limit_is_allowed():
    assert units.parse_memory("64T") == units.MAX_MEMORY_MB
