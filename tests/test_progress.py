"""Progress lines and the one duration formatter (generator/progress.py)."""

from __future__ import annotations

import pytest

from generator.progress import duration


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (42, "42s"), (187, "3m07s"), (3600, "1h00m"), (6025, "1h40m")])
def test_one_duration_formatter(seconds, text):
    assert duration(seconds) == text
