"""The reports' charts spread their data: latency buckets follow the data's span, every label fits
its chart, and the time axis reads as clock time."""

from __future__ import annotations

import re

import pytest

from smartpay import compliance, compliance_render


@pytest.mark.parametrize(("fastest", "slowest"), [(2100, 4900), (3, 14_000), (500, 990), (0.4, 2.2), (50, 60_000), (5200, 151_000)])
def test_latency_buckets_spread_the_data(fastest: float, slowest: float) -> None:
    bounds = compliance.latency_bounds(fastest, slowest)
    assert 4 <= len(bounds) <= 12 and bounds == sorted(bounds)
    assert fastest < bounds[0] and bounds[-1] <= slowest  # buckets inside the data, none empty by design
    labels = compliance.latency_labels(bounds)
    assert len(labels) == len(bounds) + 1 and len(set(labels)) == len(labels)


def test_duration_labels_use_the_unit_a_reader_reads() -> None:
    assert [compliance.duration_label(ms) for ms in (0.5, 500, 2000, 100_000, 1_200_000)] == [
        "0.5 ms", "500 ms", "2 s", "100 s", "20 min"]


def test_bar_labels_fit_inside_the_chart() -> None:
    svg = compliance_render._bars([("pending_in_grace / none", 3), ("buffr_ahead / healed", 4_500_000)], unit=" NAD")
    width = int(re.search(r'width="(\d+)"', svg).group(1))
    value_x = max(float(x) for x in re.findall(r'<text x="([\d.]+)"', svg))
    assert value_x + 7 * len("4,500,000 NAD") <= width
    label_end = 7 * len("pending_in_grace / none")
    assert all(float(x) >= label_end for x in re.findall(r'<rect x="([\d.]+)"', svg))


def test_the_time_axis_shows_clock_times() -> None:
    points = [{"at": f"2026-12-06T20:{m:02d}:00.123456+00:00", **dict.fromkeys(compliance.STATUSES, m)}
              for m in range(10)]
    svg = compliance_render._timeline_svg({"points": points, "step_seconds": 60})
    assert "20:00:00" in svg and "20:09:00" in svg and ".123456" not in svg and "2026-12-06" in svg
