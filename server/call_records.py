"""Call records: what each Converse session said, how fast, and how it ended, kept in the store.

A `CallRecorder` watches one session's requests and responses as they pass through the
servicer (whatever the transport), and writes as the call goes: the call's row when it starts,
each agent turn when its text is final (again when metrics arrive or a barge-in cuts it), the
end. So a crash loses at most the turn in progress. Writes go through one task per call, off
the audio path; a store that fails makes the record lost (logged), never the call.

With RECORD_CALLS=1 a `CallRecording` also keeps both sides: each into a raw file at its place
on the call's timeline (the caller's audio end to end; the agent's from when it was sent, cut
where a barge-in flushed it), mixed at the end into one 16 kHz mono wav.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict
from voiceagent.v1 import voice_agent_pb2 as pb

from server.audio import Format, InboundAudio
from server.campaign_store import CampaignStore, StoredCall, StoredTurn

log = logging.getLogger("voice_agent.calls")
RECORDING_RATE = 16000
# Converse metadata the SIP bridge sets (sip_bridge/bridge.py).
SIP_CALLER_METADATA = "x-voice-agent-sip-caller"
SIP_CALLED_METADATA = "x-voice-agent-sip-called"
MAX_METADATA_VALUE = 128
# How long the end of a call waits for its pending writes before giving the record up.
FINISH_TIMEOUT_SECONDS = 5.0
_QUEUE_LIMIT = 256  # pending writes per call; a store this far behind has lost the record


def recordings_dir(data_dir: Path) -> Path:
    return data_dir / "recordings"


class CallRecording:
    """Both sides of one call on disk, mixed into `<id>.wav` by `finish` (in a worker thread)."""

    def __init__(self, folder: Path, call_id: str, input_format: Format, output_format: Format):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{call_id}.wav"
        self._caller_file = (folder / f"{call_id}.caller.raw").open("w+b")
        self._agent_file = (folder / f"{call_id}.agent.raw").open("w+b")
        self._caller_in = InboundAudio(input_format, RECORDING_RATE)
        self._agent_in = InboundAudio(output_format, RECORDING_RATE)
        self._caller_samples = 0  # the caller's timeline: every sample it sent, end to end
        self._agent_cursor = 0
        self._started = time.monotonic()

    def _now(self) -> int:
        """The call's current position: the caller's audio so far, or the clock when it sends
        none (typed turns)."""
        if self._caller_samples:
            return self._caller_samples
        return int((time.monotonic() - self._started) * RECORDING_RATE)

    def caller_audio(self, data: bytes) -> None:
        pcm = self._caller_in.push(data)
        self._caller_file.seek(self._caller_samples * 2)
        self._caller_file.write(pcm.astype("<i2").tobytes())
        self._caller_samples += len(pcm)

    def agent_audio(self, data: bytes) -> None:
        pcm = self._agent_in.push(data)
        self._agent_cursor = max(self._agent_cursor, self._now())
        self._agent_file.seek(self._agent_cursor * 2)
        self._agent_file.write(pcm.astype("<i2").tobytes())
        self._agent_cursor += len(pcm)

    def barge_in(self) -> None:
        """The client dropped the agent audio it had not played yet: so does the recording."""
        now = self._now()
        if self._agent_cursor > now:
            self._agent_file.seek(now * 2)
            self._agent_file.write(bytes((self._agent_cursor - now) * 2))
            self._agent_cursor = now

    def finish(self) -> Path:
        """Mix the two sides into the wav, a second at a time, and remove the raw files."""
        total = max(self._caller_samples, self._agent_cursor)
        tmp = self.path.with_suffix(".wav.partial")
        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(RECORDING_RATE)
            for offset in range(0, total, RECORDING_RATE):
                count = min(RECORDING_RATE, total - offset)
                mixed = _read(self._caller_file, offset, count) + _read(
                    self._agent_file, offset, count
                )
                out.writeframes(np.clip(mixed, -32768, 32767).astype("<i2").tobytes())
        os.replace(tmp, self.path)
        self.discard(keep_wav=True)
        return self.path

    def discard(self, keep_wav: bool = False) -> None:
        for handle in (self._caller_file, self._agent_file):
            handle.close()
            Path(handle.name).unlink(missing_ok=True)
        if not keep_wav:
            self.path.unlink(missing_ok=True)


def _read(handle: object, offset: int, count: int) -> np.ndarray:
    """`count` samples from `offset` of a sparse raw file, zeros past its end, as int32."""
    assert hasattr(handle, "seek") and hasattr(handle, "read")
    handle.seek(offset * 2)
    raw = handle.read(count * 2)
    samples = np.zeros(count, dtype=np.int32)
    got = np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2")
    samples[: len(got)] = got
    return samples


@dataclass
class _Turn:
    user_text: str = ""
    agent_text: str = ""
    barged_in: bool = False
    metrics_json: str = ""
    tool_calls: list[dict[str, str]] = field(default_factory=list)

    def stored(self, turn_id: int) -> StoredTurn:
        calls = json.dumps([json.dumps(call, sort_keys=True) for call in self.tool_calls])
        return StoredTurn(
            turn_id, self.user_text, self.agent_text, self.barged_in, self.metrics_json, calls
        )


@dataclass
class CallRecorder:
    """One session's record. `observe_request`/`observe_response` are called for every message
    (cheap: they only note what changed); `finish` writes the end and waits for the writes."""

    store: CampaignStore
    call: StoredCall
    recording: CallRecording | None = None
    lost: bool = False
    _turns: dict[int, _Turn] = field(default_factory=dict)
    _user_text: str = ""  # the last final transcript or typed turn, for the next agent turn
    _hung_up: bool = False
    _transferred: bool = False
    _started: float = field(default_factory=time.monotonic)
    _writes: asyncio.Queue[Callable[[], None] | None] = field(
        default_factory=lambda: asyncio.Queue(_QUEUE_LIMIT)
    )
    _writer: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._writer = asyncio.create_task(self._write_all(), name=f"call-record-{self.call.id}")
        self._write(self.store.start_call, self.call)

    def observe_request(self, request: pb.ConverseRequest) -> None:
        kind = request.WhichOneof("request")
        if kind == "audio" and self.recording is not None:
            self.recording.caller_audio(request.audio)
        elif kind == "text":
            self._user_text = request.text
        elif kind == "hangup":
            self._hung_up = True

    def observe_response(self, response: pb.ConverseResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "audio":
            if self.recording is not None:
                self.recording.agent_audio(response.audio.audio)
        elif kind == "transcript":
            if response.transcript.is_final:
                self._user_text = response.transcript.text
        elif kind == "agent_text":
            text = response.agent_text
            turn = self._turn(text.turn_id)
            if text.final:
                turn.agent_text = text.text  # the last final is the text as heard
                self._save(text.turn_id)
        elif kind == "tool_call":
            call = response.tool_call
            self._turn(call.turn_id).tool_calls.append(
                {"id": call.id, "name": call.name, "arguments": call.arguments_json}
            )
            self._save(call.turn_id)
        elif kind == "tool_result":
            result = response.tool_result
            turn = self._turn(result.turn_id)
            for entry in turn.tool_calls:
                if entry["id"] == result.id:
                    entry.update(result=result.result_json, error=result.error)
            self._save(result.turn_id)
        elif kind == "event" and response.event.type == pb.TRANSFER:
            self._transferred = True
        elif kind == "event" and response.event.type == pb.BARGE_IN:
            self.call = replace(self.call, barge_ins=self.call.barge_ins + 1)
            cut = self._turns.get(response.event.turn_id)
            if cut is not None:
                cut.barged_in = True
            if self.recording is not None:
                self.recording.barge_in()
        elif kind == "metrics":
            metrics = response.metrics
            turn = self._turn(metrics.turn_id)
            turn.metrics_json = json.dumps(
                MessageToDict(metrics, preserving_proto_field_name=True), sort_keys=True
            )
            self._save(metrics.turn_id)

    def _turn(self, turn_id: int) -> _Turn:
        if turn_id not in self._turns:
            # A new agent turn answers what the caller said last (the greeting answers nothing).
            self._turns[turn_id] = _Turn(user_text=self._user_text if turn_id else "")
            self._user_text = ""
        return self._turns[turn_id]

    def _save(self, turn_id: int) -> None:
        self._write(self.store.save_turn, self.call.id, self._turns[turn_id].stored(turn_id))

    async def finish(self, code: grpc.StatusCode, message: str) -> None:
        """Write the end (outcome, status, duration), mix the recording, wait for the writes."""
        if code == grpc.StatusCode.OK and self._transferred:
            outcome = "TRANSFERRED"
        elif code == grpc.StatusCode.OK:
            outcome = "CALLER_HUNG_UP" if self._hung_up else "AGENT_ENDED"
        elif code == grpc.StatusCode.CANCELLED:
            outcome = "CALLER_HUNG_UP"  # the client closed the stream
        else:
            outcome = "ERROR"
        recording = ""
        if self.recording is not None:
            try:
                recording = (await asyncio.to_thread(self.recording.finish)).name
            except OSError as err:
                log.warning("call %s: recording lost: %s", self.call.id, err)
        self.call = replace(
            self.call,
            end_time=self.call.start_time + timedelta(seconds=time.monotonic() - self._started),
            outcome=outcome,
            status_code=code.name,
            status_message=message[:1000],
            duration_seconds=round(time.monotonic() - self._started, 3),
            recording=recording,
        )
        self._write(self.store.end_call, self.call)
        with contextlib.suppress(asyncio.QueueFull):
            self._writes.put_nowait(None)
        assert self._writer is not None
        try:
            async with asyncio.timeout(FINISH_TIMEOUT_SECONDS):
                await asyncio.shield(self._writer)
        except TimeoutError:
            self._lose("the store did not take the writes in time")
            await self.close()

    async def close(self) -> None:
        """Stop writing (the owner's cleanup when the session goes away without `finish`)."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    def _write(self, method: Callable[..., None], *args: object) -> None:
        if self.lost:
            return
        try:
            self._writes.put_nowait(lambda: method(*args))
        except asyncio.QueueFull:
            self._lose(f"{_QUEUE_LIMIT} writes queued behind a slow store")

    async def _write_all(self) -> None:
        while (write := await self._writes.get()) is not None:
            if self.lost:
                continue
            try:
                await asyncio.to_thread(write)
            except Exception as err:  # the store is down: the call goes on without its record
                self._lose(f"{type(err).__name__}: {err}")

    def _lose(self, why: str) -> None:
        if not self.lost:
            self.lost = True
            log.error("call record %s lost: %s", self.call.id, why)


def sip_users(metadata: object) -> tuple[str, str]:
    """The SIP caller and called users the bridge passed, if any (cut to a sane length)."""
    values: dict[str, str] = {}
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key in (SIP_CALLER_METADATA, SIP_CALLED_METADATA) and isinstance(value, str):
            values[key] = value[:MAX_METADATA_VALUE]
    return values.get(SIP_CALLER_METADATA, ""), values.get(SIP_CALLED_METADATA, "")


def utc_now() -> datetime:
    return datetime.now(UTC)
