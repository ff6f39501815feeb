"""The Calls service: the call records (server/call_records.py writes them) read back, deleted,
and their recordings streamed; plus the retention sweep (CALL_RETENTION_DAYS)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf import empty_pb2
from google.protobuf.json_format import ParseDict
from voiceagent.v1 import calls_pb2 as cpb
from voiceagent.v1 import calls_pb2_grpc as cpb_grpc

from server.call_records import utc_now
from server.campaign_store import (
    CallNotFound,
    CampaignStore,
    InvalidPageToken,
    StoredCall,
    StoredTurn,
)
from server.campaigns import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from server.status import StatusError, abort

T = TypeVar("T")
log = logging.getLogger("voice_agent.calls")
RECORDING_CHUNK_BYTES = 64 * 1024
RETENTION_SWEEP_SECONDS = 3600.0


def to_proto(call: StoredCall, turns: list[StoredTurn] | None = None) -> cpb.Call:
    message = cpb.Call(
        id=call.id,
        campaign_id=call.campaign_id,
        transport=call.transport,
        sip_caller=call.sip_caller,
        sip_called=call.sip_called,
        stt=call.stt,
        llm=call.llm,
        tts=call.tts,
        outcome=call.outcome or "CALL_OUTCOME_UNSPECIFIED",
        status_code=call.status_code,
        status_message=call.status_message,
        barge_ins=call.barge_ins,
        duration_seconds=call.duration_seconds,
        has_recording=bool(call.recording),
        trace_id=call.trace_id,
    )
    message.start_time.FromDatetime(call.start_time)
    if call.end_time is not None:
        message.end_time.FromDatetime(call.end_time)
    for turn in turns or []:
        entry = message.turns.add(
            turn_id=turn.turn_id,
            user_text=turn.user_text,
            agent_text=turn.agent_text,
            barged_in=turn.barged_in,
            tool_calls=json.loads(turn.tool_calls_json or "[]"),
        )
        if turn.metrics_json:
            ParseDict(json.loads(turn.metrics_json), entry.metrics)
    return message


class CallsService(cpb_grpc.CallsServicer):
    def __init__(self, store: CampaignStore, recordings: Path, retention_days: int) -> None:
        self._store = store
        self._recordings = recordings
        self._retention_days = retention_days
        self._sweeper: asyncio.Task[None] | None = None

    async def ListCalls(
        self, request: cpb.ListCallsRequest, context: grpc.aio.ServicerContext
    ) -> cpb.ListCallsResponse:
        if request.page_size < 0:
            await abort(
                context,
                StatusError(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative"),
            )
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = request.start_after.ToDatetime(UTC) if request.HasField("start_after") else None
        before = request.start_before.ToDatetime(UTC) if request.HasField("start_before") else None
        try:
            calls, token = await self._stored(
                context,
                lambda: self._store.list_calls(
                    size, request.page_token, request.campaign_id, after, before
                ),
            )
        except InvalidPageToken:
            await abort(
                context,
                StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT, "page_token is not one this server returned"
                ),
            )
        return cpb.ListCallsResponse(calls=[to_proto(c) for c in calls], next_page_token=token)

    async def GetCall(
        self, request: cpb.GetCallRequest, context: grpc.aio.ServicerContext
    ) -> cpb.Call:
        call, turns = await self._find(request.id, context)
        return to_proto(call, turns)

    async def DeleteCall(
        self, request: cpb.DeleteCallRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._find(request.id, context)
        call = await self._stored(context, lambda: self._store.delete_call(request.id))
        self._remove_recording(call)
        return empty_pb2.Empty()

    async def GetCallRecording(
        self, request: cpb.GetCallRecordingRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cpb.CallRecordingChunk]:
        call, _ = await self._find(request.id, context)
        path = self._recordings / call.recording if call.recording else None
        if path is None or not path.is_file():
            await abort(
                context,
                StatusError(
                    grpc.StatusCode.NOT_FOUND,
                    f"call {request.id!r} has no recording (the server records with RECORD_CALLS=1)",
                ),
            )
        with path.open("rb") as wav:
            while chunk := await asyncio.to_thread(wav.read, RECORDING_CHUNK_BYTES):
                yield cpb.CallRecordingChunk(data=chunk)

    async def _find(
        self, call_id: str, context: grpc.aio.ServicerContext
    ) -> tuple[StoredCall, list[StoredTurn]]:
        if not call_id:
            await abort(context, StatusError(grpc.StatusCode.INVALID_ARGUMENT, "id is required"))
        try:
            return await self._stored(context, lambda: self._store.get_call(call_id))
        except CallNotFound:
            await abort(
                context, StatusError(grpc.StatusCode.NOT_FOUND, f"call {call_id!r} not found")
            )

    async def _stored(self, context: grpc.aio.ServicerContext, read: Callable[[], T]) -> T:
        """A store call in a worker thread; a database that cannot be reached is UNAVAILABLE."""
        try:
            return await asyncio.to_thread(read)
        except (CallNotFound, InvalidPageToken):
            raise
        except Exception as err:
            await abort(
                context,
                StatusError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"call store unavailable: {type(err).__name__}: {err}",
                ),
            )

    def _remove_recording(self, call: StoredCall) -> None:
        if call.recording:
            (self._recordings / call.recording).unlink(missing_ok=True)

    # --- retention ------------------------------------------------------------------------

    def start(self) -> None:
        if self._retention_days > 0:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="call-retention")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def sweep(self, now: datetime | None = None) -> int:
        """Delete the records and recordings older than the retention; how many went."""
        cutoff = (now or utc_now()) - timedelta(days=self._retention_days)
        old = await asyncio.to_thread(self._store.delete_calls_before, cutoff)
        for call in old:
            self._remove_recording(call)
        if old:
            log.info("retention: deleted %d call(s) that started before %s", len(old), cutoff)
        return len(old)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as err:  # the store is away: try again at the next sweep
                log.warning("retention sweep failed: %s: %s", type(err).__name__, err)
            await asyncio.sleep(RETENTION_SWEEP_SECONDS)
