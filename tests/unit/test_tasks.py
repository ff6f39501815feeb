"""The async toolkit: cancel_and_wait, run_to_completion and TaskSet (ownership, pruning,
failure reports)."""

from __future__ import annotations

import asyncio

import pytest

from server.tasks import TaskSet, cancel_and_wait, run_to_completion


async def test_cancel_and_wait_stops_every_task_and_ignores_none() -> None:
    tasks = [asyncio.create_task(asyncio.sleep(60)) for _ in range(3)]
    await cancel_and_wait(*tasks, None)
    assert all(task.cancelled() for task in tasks)


async def test_cancel_and_wait_does_not_swallow_a_cancellation_of_its_caller() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(60)  # takes its time to stop

    inner = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    outer = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    inner.cancel()
    await asyncio.wait([inner])


async def test_task_set_prunes_finished_tasks_and_reports_only_failures() -> None:
    failures: list[tuple[str, BaseException]] = []
    tasks = TaskSet(lambda task, exc: failures.append((task.get_name(), exc)), name_prefix="t:")

    async def fail() -> None:
        raise ValueError("broken")

    done = tasks.spawn(asyncio.sleep(0), "ok")
    failed = tasks.spawn(fail(), "bad")
    cancelled = tasks.spawn(asyncio.sleep(60), "cancelled")
    assert len(tasks) == 3
    await asyncio.wait([done, failed])
    cancelled.cancel()
    await asyncio.wait([cancelled])
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert len(tasks) == 0
    assert [(name, str(exc)) for name, exc in failures] == [("t:bad", "broken")]


async def test_cancel_all_spares_the_task_that_calls_it() -> None:
    tasks = TaskSet(lambda task, exc: None)
    sleeper = tasks.spawn(asyncio.sleep(60), "sleeper")

    async def close_from_inside() -> str:
        await tasks.cancel_all()
        return "closed"

    closer = tasks.spawn(close_from_inside(), "closer")
    assert await closer == "closed"
    assert sleeper.cancelled()


async def test_run_to_completion_finishes_its_work_through_cancellations_and_raises_after() -> None:
    """A hung-up Converse handler is cancelled again while its session's end is written."""
    steps: list[str] = []
    release = asyncio.Event()

    async def clean_up() -> str:
        steps.append("started")
        await release.wait()
        steps.append("written")
        return "done"

    async def handler() -> None:
        await run_to_completion(clean_up())
        steps.append("after")  # never: the handler's cancellation is raised

    task = asyncio.create_task(handler())
    await asyncio.sleep(0)
    for _ in range(2):  # cancelled twice while the clean-up waits
        task.cancel()
        await asyncio.sleep(0)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["started", "written"]


async def test_run_to_completion_returns_the_result_or_raises_the_works_own_error() -> None:
    async def result() -> int:
        await asyncio.sleep(0)
        return 7

    async def failing() -> None:
        raise ValueError("store gone")

    assert await run_to_completion(result()) == 7
    with pytest.raises(ValueError, match="store gone"):
        await run_to_completion(failing())
