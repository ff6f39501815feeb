"""The agent's audio on its way to the caller: a small jitter-tolerant playout buffer.

The server sends the agent's speech in bursts (a sentence at a time, faster than real time);
the media clock takes one 20 ms frame per tick. The asyncio side pushes, PJSIP's clock thread
pops, so every method takes the lock. After running dry the buffer waits for `prebuffer_ms` of
audio (or that long since audio came back) before playing again, so a late chunk from the
server becomes one short pause instead of a stutter of frames and silences.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

FRAME_MS = 20  # RTP packet time; the media clock may tick every 2 packets (SipSettings.tick_ms)


@dataclass
class PlayoutStats:
    frames_played: int = 0  # frames that carried agent audio
    underruns: int = 0  # times the buffer ran dry while the agent was speaking
    flushed_bytes: int = 0  # audio dropped on barge-in


class PlayoutBuffer:
    """Bytes of 16-bit mono PCM at `rate`; `pop()` returns exactly one frame (silence if none)."""

    def __init__(
        self,
        rate: int,
        prebuffer_ms: int = 60,
        max_seconds: float = 120.0,
        frame_ms: int = FRAME_MS,
    ) -> None:
        self.rate = rate
        self.frame_bytes = rate * frame_ms // 1000 * 2
        self.prebuffer_frames = max(1, -(-prebuffer_ms // frame_ms))
        self._max_bytes = int(max_seconds * rate) * 2
        self.silence = bytes(self.frame_bytes)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._playing = False
        self._turn_open = False  # audio pushed and no end_turn() since
        self._waited = 0  # ticks since audio arrived while not playing
        self.stats = PlayoutStats()

    def push(self, audio: bytes) -> None:
        """Queue agent audio; beyond `max_seconds` the oldest audio is dropped (never unbounded)."""
        with self._lock:
            self._turn_open = True
            self._buf += audio
            excess = len(self._buf) - self._max_bytes
            if excess > 0:
                excess += excess % 2  # keep samples whole
                del self._buf[:excess]

    def end_turn(self) -> None:
        """The agent's turn has no more audio coming: play what is left, however short."""
        with self._lock:
            self._turn_open = False

    def flush(self) -> int:
        """Drop everything queued (barge-in): the caller hears the agent stop at once."""
        with self._lock:
            dropped = len(self._buf)
            self._buf.clear()
            self._playing = False
            self._turn_open = False
            self._waited = 0
            self.stats.flushed_bytes += dropped
            return dropped

    def buffered_ms(self) -> float:
        with self._lock:
            return len(self._buf) / 2 / self.rate * 1000

    def pop(self) -> bytes:
        """One frame for the media clock's tick: agent audio, or silence."""
        with self._lock:
            size = len(self._buf)
            if not self._playing:
                if not size:
                    return self.silence
                self._waited += 1
                ready = (
                    size >= self.prebuffer_frames * self.frame_bytes
                    or not self._turn_open
                    or self._waited > self.prebuffer_frames
                )
                if not ready:
                    return self.silence
                self._playing, self._waited = True, 0
            if size < self.frame_bytes and self._turn_open:  # ran dry mid-turn
                self._playing = False
                self.stats.underruns += 1
                return self.silence
            if not size:  # the turn's audio is all played
                self._playing = False
                return self.silence
            frame = bytes(self._buf[: self.frame_bytes])
            del self._buf[: self.frame_bytes]
            self.stats.frames_played += 1
            return frame + self.silence[len(frame) :]
