"""Shared formatting of measured rates in summaries and tables."""

from moa.train.records import format_rate


def test_format_rate_separates_thousands_and_marks_a_missing_rate():
    assert format_rate(12345.6) == "12,346"
    assert format_rate(0.4) == "0"
    assert format_rate(None) == "—"
