"""Event times: parsing of epoch seconds / milliseconds / ISO text, and ISO formatting."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.event_time import LATEST_SECONDS, epoch_seconds, iso_utc, iso_utc_many


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1_700_000_000, 1_700_000_000.0),
        (1_700_000_000_500, 1_700_000_000.5),  # milliseconds
        ("1700000000.25", 1_700_000_000.25),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T22:13:20", 1_700_000_000.0),  # naive = UTC
        (True, None),
        (None, None),
        (-5, None),
        ("not a time", None),
        (1.7e15, None),  # microseconds: beyond year 9999 as milliseconds
        ([1], None),
    ],
)
def test_epoch_seconds(value: Any, seconds: float | None) -> None:
    assert epoch_seconds(value) == seconds


def test_iso_utc_format_and_unrepresentable_times() -> None:
    assert iso_utc(1_700_000_000.0137) == "2023-11-14T22:13:20.013+00:00"
    assert iso_utc(1_099_006_878.916) == "2004-10-28T23:41:18.916+00:00"  # float error must not cost a ms
    assert iso_utc(LATEST_SECONDS) == "9999-12-31T23:59:59.000+00:00"
    assert iso_utc(LATEST_SECONDS + 0.9) == "9999-12-31T23:59:59.900+00:00"
    assert iso_utc_many(np.array([np.nan, LATEST_SECONDS + 1, -1e300, 0.0])) == [
        None,
        None,
        None,
        "1970-01-01T00:00:00.000+00:00",
    ]


@given(st.integers(min_value=0, max_value=4_102_444_800_000))  # to 2100 (beyond, float seconds blur the ms)
def test_whole_milliseconds_format_exactly_as_datetime_does(millis: int) -> None:
    seconds = millis / 1000
    assert iso_utc(seconds) == datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


@given(st.floats(min_value=0, max_value=LATEST_SECONDS))
def test_iso_utc_agrees_with_datetime_to_the_millisecond(seconds: float) -> None:
    text = iso_utc(seconds)
    assert text is not None
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None
    assert parsed.timestamp() == pytest.approx(seconds, abs=1e-3 + 1e-12 * seconds)
