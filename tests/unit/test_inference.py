"""CPU priority between the work a caller waits for and token generation."""

import threading
import time

from threadpoolctl import threadpool_info, threadpool_limits

from server.inference import CpuPriority, single_threaded_blas


def _background_step(cpu: CpuPriority, short: bool, at_most: float = 5.0) -> threading.Event:
    """A background step in another thread; the event is set once it has begun."""
    began = threading.Event()

    def run() -> None:
        with cpu.step(short=short, at_most=at_most):
            began.set()

    threading.Thread(target=run, daemon=True).start()
    return began


def test_pressing_work_leaves_background_work_the_other_cores() -> None:
    cpu = CpuPriority(cores=2)
    assert cpu.background_threads(2) == 2
    with cpu.pressing():
        assert cpu.background_threads(2) == 1
        assert _background_step(cpu, short=True).wait(5.0)  # a core is free: not paused
    assert cpu.background_threads(2) == 2


def test_background_steps_wait_while_pressing_work_takes_every_core() -> None:
    cpu = CpuPriority(cores=2)
    with cpu.pressing():
        with cpu.pressing():
            assert cpu.background_threads(2) == 1  # never none
            began = _background_step(cpu, short=True)
            assert not began.wait(0.2)
        assert began.wait(5.0)


def test_a_background_step_waits_no_longer_than_at_most() -> None:
    cpu = CpuPriority(cores=2)
    with cpu.urgent():
        began = _background_step(cpu, short=True, at_most=0.1)
        assert began.wait(5.0)  # generation for one call never stalls behind other calls


def test_urgent_work_pauses_background_work_until_it_ends() -> None:
    cpu = CpuPriority(cores=2)
    with cpu.urgent():
        began = _background_step(cpu, short=False)
        assert not began.wait(0.2)
    assert began.wait(5.0)


def test_urgent_work_lets_a_short_step_finish_before_it_starts() -> None:
    cpu = CpuPriority(cores=2, short_step_wait=5.0)
    order: list[str] = []
    in_step, release = threading.Event(), threading.Event()

    def token() -> None:
        with cpu.step(short=True):
            in_step.set()
            release.wait(5.0)
            order.append("step done")

    def synthesis() -> None:
        with cpu.urgent():
            order.append("urgent work")

    step = threading.Thread(target=token)
    step.start()
    assert in_step.wait(5.0)
    urgent = threading.Thread(target=synthesis)
    urgent.start()
    time.sleep(0.1)
    assert order == []  # waiting for the step
    release.set()
    step.join(5.0)
    urgent.join(5.0)
    assert order == ["step done", "urgent work"]


def test_urgent_work_does_not_wait_for_a_long_step() -> None:
    cpu = CpuPriority(cores=2, short_step_wait=5.0)
    release = threading.Event()
    in_step = threading.Event()

    def prompt_batch() -> None:
        with cpu.step(short=False):
            in_step.set()
            release.wait(5.0)

    step = threading.Thread(target=prompt_batch)
    step.start()
    assert in_step.wait(5.0)
    started = time.monotonic()
    with cpu.urgent():
        assert time.monotonic() - started < 1.0
    release.set()
    step.join(5.0)


def test_single_threaded_blas_leaves_numpy_one_blas_thread() -> None:
    import numpy  # noqa: F401  (loads its OpenBLAS)

    with threadpool_limits(2, user_api="blas"):  # as on a 2-core machine; restored after
        single_threaded_blas()
        blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert blas, "numpy's BLAS not found"
        assert all(pool["num_threads"] == 1 for pool in blas), blas
