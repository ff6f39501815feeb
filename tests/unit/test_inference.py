"""CPU priority between the work a caller waits for and token generation."""

import threading
import time

from server.inference import CpuPriority


def test_pressing_work_takes_a_thread_from_background_work_without_pausing_it() -> None:
    cpu = CpuPriority()
    assert cpu.background_threads(2) == 2
    with cpu.pressing(), cpu.pressing():
        assert cpu.background_threads(2) == 1
        assert cpu.background_threads(1) == 1  # never none
        started = time.monotonic()
        cpu.yield_to_urgent(at_most=5.0)
        assert time.monotonic() - started < 1.0  # not paused
    assert cpu.background_threads(2) == 2


def test_urgent_work_pauses_background_work_until_it_ends() -> None:
    cpu = CpuPriority()
    resumed = threading.Event()

    def background() -> None:
        cpu.yield_to_urgent(at_most=5.0)
        resumed.set()

    with cpu.urgent():
        worker = threading.Thread(target=background)
        worker.start()
        assert not resumed.wait(0.2)
    assert resumed.wait(5.0)
    worker.join()
