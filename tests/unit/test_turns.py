"""The VAD + STT turn detector, fed at 4x real time (decodes take 10 ms of wall time)."""

import asyncio

import numpy as np

from server.backends.stt.base import TurnEventKind as K
from server.backends.stt.base import TurnOptions, TurnUpdate
from server.turns import VadTurnStream
from tests.unit.scripted import EnergyVAD, ScriptedTranscriber, silence, tone

VAD = EnergyVAD()  # one detector for every stream, as in a server


async def run(
    audio: np.ndarray, options: TurnOptions | None = None, settle: float = 0.3
) -> list[TurnUpdate]:
    stream = VadTurnStream(ScriptedTranscriber(), VAD, options or TurnOptions())
    events: list[TurnUpdate] = []

    async def collect() -> None:
        async for event in stream.events():
            events.append(event)

    collector = asyncio.create_task(collect())
    t = 0.0
    for start in range(0, len(audio), 320):  # 20 ms frames at 4x real time
        await stream.push(audio[start : start + 320], received_at=t)
        t += 0.02
        await asyncio.sleep(0.005)
    await asyncio.sleep(settle)
    await stream.aclose()
    await collector
    return events


def kinds(events: list[TurnUpdate]) -> list[K]:
    return [e.kind for e in events if e.kind != K.UPDATE]


async def test_one_utterance_gives_the_flux_sequence() -> None:
    events = await run(np.concatenate([silence(0.3), tone(1.2), silence(1.0)]))
    assert kinds(events) == [K.START_OF_TURN, K.EAGER_END_OF_TURN, K.END_OF_TURN]
    assert any(e.kind == K.UPDATE and e.transcript for e in events)
    eager, end = events[-2], events[-1]
    assert end.transcript == eager.transcript and end.transcript.startswith("said ")
    # speech ended at 1.5 s of audio; the frame carrying its last voiced window arrived then
    assert end.speech_end is not None and 1.4 <= end.speech_end <= 1.56


async def test_a_500_ms_hesitation_is_one_turn() -> None:
    audio = np.concatenate([tone(0.8), silence(0.5), tone(0.8), silence(1.0)])
    events = await run(audio)
    assert kinds(events).count(K.START_OF_TURN) == 1
    assert kinds(events).count(K.END_OF_TURN) == 1
    assert K.TURN_RESUMED in kinds(events)  # eager fired in the pause, then speech resumed
    final = next(e for e in events if e.kind == K.END_OF_TURN)
    assert int(final.transcript.split()[1]) >= 45  # both halves: ~50 voiced windows


async def test_two_questions_three_seconds_apart_are_two_turns() -> None:
    events = await run(np.concatenate([tone(1.0), silence(3.0), tone(0.6), silence(1.0)]))
    ends = [e for e in events if e.kind == K.END_OF_TURN]
    assert [e.turn_index for e in ends] == [0, 1]
    assert ends[0].transcript != ends[1].transcript


async def test_without_eager_the_end_of_turn_still_comes() -> None:
    events = await run(np.concatenate([tone(1.0), silence(1.0)]), TurnOptions(eager_enabled=False))
    assert kinds(events) == [K.START_OF_TURN, K.END_OF_TURN]


async def test_a_click_is_not_a_turn() -> None:
    events = await run(np.concatenate([silence(0.5), tone(0.03), silence(1.0)]))
    assert events == []
