"""Memory given back (web/memory.py): when the worker trims, and that glibc's trim really returns memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.support.helpers import make_radiograph
from web.memory import MemoryRelease, load_glibc, memory_release_enabled


class FakeWorker:
    """Resident memory and predictions in flight set by the test; counts the trims."""

    def __init__(self) -> None:
        self.resident, self.in_flight, self.trims = 500.0, 0, 0

    def trim(self) -> None:
        self.trims += 1
        self.resident = 300.0  # what the trim gave back


def test_the_last_prediction_out_trims_once_memory_grew_past_the_threshold() -> None:
    worker = FakeWorker()
    release = MemoryRelease(lambda: worker.in_flight, worker.trim, lambda: worker.resident, threshold_mib=64)
    assert release.after_prediction() and worker.trims == 1 and release.floor_mib == 300.0  # the first one
    worker.resident = 360.0
    assert not release.after_prediction()  # 60 MiB above the floor: within the threshold
    worker.resident, worker.in_flight = 2000.0, 1
    assert not release.after_prediction()  # another prediction still runs: its memory is in use
    worker.in_flight = 0
    assert release.after_prediction() and worker.trims == 2 and release.trims == 2


def test_without_glibc_or_when_disabled_nothing_is_trimmed() -> None:
    release = MemoryRelease(lambda: 0, None, lambda: 10_000.0)
    assert not release.after_prediction() and release.trims == 0
    assert not memory_release_enabled({"TRIAGE_MEMORY_RELEASE": "off"})
    assert memory_release_enabled({}) and memory_release_enabled({"TRIAGE_MEMORY_RELEASE": "on"})


@pytest.mark.skipif(load_glibc() is None, reason="malloc_trim is glibc's")
def test_glibc_trim_returns_freed_memory_that_free_kept() -> None:
    # In a process of its own: 2 KB blocks (past Python's small-object allocator, so glibc's malloc) freed
    # below a block still in use stay resident until malloc_trim gives their pages back.
    script = textwrap.dedent("""
        from web.memory import load_glibc, resident_mib
        blocks = [bytes(2048) + bytes([index % 251]) for index in range(100_000)]
        keep = bytes(2048) + b"top"
        del blocks
        before = resident_mib()
        load_glibc().malloc_trim(0)
        print(before, resident_mib())
    """)
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    before, after = map(float, output.split())
    assert before - after > 100, (before, after)  # about 200 MiB were freed but resident


@pytest.mark.skipif(load_glibc() is None, reason="malloc_trim is glibc's")
def test_the_app_trims_after_a_prediction_is_answered(app) -> None:
    release = app.extensions["memory_release"]
    release.floor_mib = None  # as in a fresh worker: its first prediction trims
    trims = release.trims
    response = app.test_client().post("/predict", data=make_radiograph(), content_type="image/png")
    assert response.status_code == 200 and release.trims == trims  # not before the answer is sent
    response.close()
    assert release.trims == trims + 1
