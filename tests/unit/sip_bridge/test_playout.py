from sip_bridge.playout import PlayoutBuffer

RATE = 8000
FRAME = RATE // 50 * 2  # bytes in 20 ms


def frames(count: int, value: int = 1) -> bytes:
    return bytes([value]) * (FRAME * count)


def test_silence_when_empty() -> None:
    buffer = PlayoutBuffer(RATE)
    assert buffer.pop() == bytes(FRAME)
    assert buffer.stats.underruns == 0


def test_waits_for_the_prebuffer_then_plays_frame_by_frame() -> None:
    buffer = PlayoutBuffer(RATE, prebuffer_ms=60)
    buffer.push(frames(1))
    assert buffer.pop() == bytes(FRAME)  # one frame of three: wait
    buffer.push(frames(2, 2))
    assert buffer.pop() == frames(1)
    assert buffer.pop() == frames(1, 2)
    assert buffer.pop() == frames(1, 2)
    assert buffer.stats.frames_played == 3


def test_a_short_chunk_plays_after_the_prebuffer_time_even_if_no_more_comes() -> None:
    buffer = PlayoutBuffer(RATE, prebuffer_ms=60)
    buffer.push(frames(1))
    played = [buffer.pop() for _ in range(4)]
    assert played.count(frames(1)) == 1  # late by at most the prebuffer, never stuck


def test_end_of_turn_plays_the_tail_padded_with_silence() -> None:
    buffer = PlayoutBuffer(RATE, prebuffer_ms=60)
    buffer.push(b"\x05" * 100)
    buffer.end_turn()
    tail = buffer.pop()
    assert tail == b"\x05" * 100 + bytes(FRAME - 100)
    assert buffer.pop() == bytes(FRAME)
    assert buffer.stats.underruns == 0


def test_running_dry_mid_turn_is_an_underrun_then_it_rebuffers() -> None:
    buffer = PlayoutBuffer(RATE, prebuffer_ms=40)
    buffer.push(frames(2))
    assert [buffer.pop() for _ in range(2)] == [frames(1)] * 2
    assert buffer.pop() == bytes(FRAME)
    assert buffer.stats.underruns == 1
    buffer.push(frames(1, 3))
    assert buffer.pop() == bytes(FRAME)  # rebuffering (1 of 2 frames)
    buffer.push(frames(1, 4))
    assert buffer.pop() == frames(1, 3)


def test_barge_in_flush_drops_everything_at_once() -> None:
    buffer = PlayoutBuffer(RATE, prebuffer_ms=20)
    buffer.push(frames(50))
    buffer.pop()
    dropped = buffer.flush()
    assert dropped == 49 * FRAME
    assert buffer.pop() == bytes(FRAME)
    assert buffer.stats.flushed_bytes == dropped
    assert buffer.buffered_ms() == 0


def test_memory_is_bounded_and_samples_stay_whole() -> None:
    buffer = PlayoutBuffer(RATE, max_seconds=1.0)
    pushed = RATE * 2 * 3 + 1  # 3 s and half a sample
    buffer.push(b"\x01" * pushed)
    assert buffer.buffered_ms() <= 1000
    assert (pushed - buffer.buffered_ms() / 1000 * RATE * 2) % 2 == 0  # dropped whole samples


def test_wideband_frames_are_640_bytes() -> None:
    buffer = PlayoutBuffer(16000, prebuffer_ms=20)
    assert len(buffer.pop()) == 640
