"""Runtime settings: the GC thresholds of the worker and the gateway."""

from __future__ import annotations

import gc

import pytest

from lapverse_streams.runtime import tune_gc
from lapverse_streams.settings import Settings


def test_gc_thresholds_are_three_positive_numbers() -> None:
    assert Settings.from_env({"LAPVERSE_GC_THRESHOLDS": "5000,20,30"}).gc_threshold_values == (
        5000,
        20,
        30,
    )
    for bad in ("1,2", "a,b,c", "0,1,1", "1,2,3,4"):
        with pytest.raises(ValueError, match="LAPVERSE_GC_THRESHOLDS"):
            Settings.from_env({"LAPVERSE_GC_THRESHOLDS": bad})


def test_tune_gc_sets_the_thresholds_and_freezes_startup() -> None:
    before = gc.get_threshold()
    try:
        tune_gc((12345, 11, 12))
        assert gc.get_threshold() == (12345, 11, 12)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_batch_window_defaults_by_guarantee_unless_set() -> None:
    assert Settings.from_env({}).batch_window_s == 0.005
    exactly_once = {"LAPVERSE_PROCESSING_GUARANTEE": "exactly_once"}
    assert Settings.from_env(exactly_once).batch_window_s == 0.020
    assert (
        Settings.from_env({**exactly_once, "LAPVERSE_BATCH_WITHIN_MS": "7"}).batch_window_s == 0.007
    )
    with pytest.raises(ValueError, match="LAPVERSE_BATCH_WITHIN_MS"):
        Settings.from_env({"LAPVERSE_BATCH_WITHIN_MS": "-1"})
