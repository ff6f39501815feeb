"""retry_before_first_output: the cloud backends' one retry rule."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from server.backends.base import retry_before_first_output


class Flaky:
    """Attempt k fails with `errors[k]` after yielding `before[k]` items (None: succeeds)."""

    def __init__(self, errors: list[Exception | None], before: list[int]) -> None:
        self.errors, self.before = errors, before
        self.attempts: list[int] = []
        self.closed = 0

    async def attempt(self, number: int) -> AsyncGenerator[str, None]:
        self.attempts.append(number)
        try:
            for i in range(self.before[number]):
                yield f"{number}.{i}"
            if (error := self.errors[number]) is not None:
                raise error
            yield f"{number}.done"
        finally:
            self.closed += 1


async def collect(flaky: Flaky, retries: int = 2) -> list[str]:
    return [
        item
        async for item in retry_before_first_output(
            flaky.attempt, retries, lambda n: 0.0, lambda err: isinstance(err, ConnectionError)
        )
    ]


async def test_a_failure_before_the_first_item_is_retried() -> None:
    flaky = Flaky([ConnectionError("refused"), None], [0, 0])
    assert await collect(flaky) == ["1.done"]
    assert flaky.attempts == [0, 1] and flaky.closed == 2


async def test_a_failure_after_the_first_item_propagates() -> None:
    flaky = Flaky([ConnectionError("dropped"), None], [1, 0])
    with pytest.raises(ConnectionError, match="dropped"):
        await collect(flaky)
    assert flaky.attempts == [0]


async def test_retries_run_out_and_other_errors_are_not_retried() -> None:
    flaky = Flaky([ConnectionError("a"), ConnectionError("b"), ConnectionError("c")], [0, 0, 0])
    with pytest.raises(ConnectionError, match="c"):
        await collect(flaky, retries=2)
    assert flaky.attempts == [0, 1, 2]
    other = Flaky([ValueError("bad request"), None], [0, 0])
    with pytest.raises(ValueError):
        await collect(other)
    assert other.attempts == [0]


async def test_a_consumer_that_stops_early_closes_the_attempt() -> None:
    flaky = Flaky([None], [3])
    stream = retry_before_first_output(flaky.attempt, 2, lambda n: 0.0, lambda err: True)
    assert await anext(stream) == "0.0"
    await stream.aclose()
    assert flaky.closed == 1
