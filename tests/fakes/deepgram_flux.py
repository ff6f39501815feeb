"""A local Deepgram Flux (/v2/listen) that turns the audio it receives into TurnInfo events.

Same URL shape and handshake as the real service (model=flux-general-en required, linear16,
`Authorization: Token <key>`), same message order (Connected first, then TurnInfo), Update about
every 0.25 s of audio in a turn, EagerEndOfTurn/TurnResumed only when eager_eot_threshold is in the
URL, EndOfTurn with the eager transcript, turn_index counting up after EndOfTurn, CloseStream
answered by closing the socket (1000). Speech is detected by energy in 20 ms windows, so the events
follow real audio; the words are the configured transcript of each turn, revealed as the turn grows.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from http import HTTPStatus
from itertools import count

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

from tests.fakes.websocket_server import FakeWebSocketServer, drop

WINDOW_SECONDS = 0.02
VOICED_RMS = 500
START_WINDOWS = 3  # 60 ms of speech starts a turn
UPDATE_SECONDS = 0.25
EAGER_SILENCE = 0.2
EOT_SILENCE = 0.5


class FakeFlux(FakeWebSocketServer):
    def __init__(
        self,
        transcripts: list[str] | None = None,
        api_key: str = "test-deepgram-key",
        keep_audio: bool = True,
    ) -> None:
        super().__init__()
        self.transcripts = transcripts or ["what is the capital of france"]
        self.api_key = api_key
        self.keep_audio = keep_audio
        self.received = bytearray()  # every audio byte, across connections, in arrival order
        self.received_digest = hashlib.sha256()  # the same, for calls too long to keep
        self.received_bytes = 0
        self.controls: list[dict[str, object]] = []  # JSON messages from the client
        self.events_sent: list[dict[str, object]] = []
        self._turns = count()  # turns across connections: which transcript comes next

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v2/listen"

    def reject(self, request: Request) -> tuple[HTTPStatus, str] | None:
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if url.path != "/v2/listen":
            return HTTPStatus.NOT_FOUND, "Flux is served on /v2/listen"
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            return (
                HTTPStatus.UNAUTHORIZED,
                '{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}',
            )
        if query.get("model") != ["flux-general-en"]:
            return HTTPStatus.BAD_REQUEST, "model must be a Flux model"
        if query.get("encoding", ["linear16"]) != ["linear16"]:
            return HTTPStatus.BAD_REQUEST, "this fake speaks linear16 only"
        return None

    async def handle(self, ws: ServerConnection) -> None:
        from urllib.parse import parse_qs, urlsplit

        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        turns = _Turns(
            self,
            ws,
            sample_rate=int(query.get("sample_rate", ["16000"])[0]),
            eager=("eager_eot_threshold" in query),
        )
        await self.send(ws, json.dumps(turns.stamp({"type": "Connected"})))
        received_here = 0
        try:
            async for message in ws:
                if isinstance(message, str):
                    control = json.loads(message)
                    self.controls.append(control)
                    if control.get("type") == "CloseStream":
                        await ws.close(1000)
                        return
                    continue
                if self.keep_audio:
                    self.received += message
                self.received_digest.update(message)
                self.received_bytes += len(message)
                received_here += len(message)
                faults = self.faults
                if faults.drop_after is not None and received_here >= faults.drop_after:
                    faults.fire("drop_after")
                    drop(ws)
                    return
                if faults.error_after is not None and received_here >= faults.error_after:
                    faults.fire("error_after")
                    error = {
                        "type": "Error",
                        "code": "INTERNAL_SERVER_ERROR",
                        "description": "fake failure",
                    }
                    await self.send(ws, json.dumps(turns.stamp(error)))
                    await ws.close(1011)
                    return
                if faults.malformed_after is not None and received_here >= faults.malformed_after:
                    faults.fire("malformed_after")
                    await self.send(ws, '{"type": "TurnInfo", "event": ')
                    continue
                await turns.feed(message)
        except ConnectionClosed:
            pass


class _Turns:
    """Flux's turn state machine, driven by the energy of the audio."""

    def __init__(self, fake: FakeFlux, ws: ServerConnection, sample_rate: int, eager: bool) -> None:
        self.fake, self.ws, self.rate, self.eager = fake, ws, sample_rate, eager
        self.window = int(sample_rate * WINDOW_SECONDS)
        self.request_id = str(uuid.uuid4())
        self.sequence = count()
        self.carry = b""
        self.samples = 0  # audio processed on this connection
        self.turn_index = 0
        self.in_turn = False
        self.voiced_run = 0
        self.silence = 0.0
        self.turn_start = 0
        self.voiced_in_turn = 0.0
        self.since_update = 0.0
        self.eager_sent = False
        self.transcript = ""
        self.words: list[str] = []

    def stamp(self, message: dict[str, object]) -> dict[str, object]:
        return {**message, "request_id": self.request_id, "sequence_id": next(self.sequence)}

    async def feed(self, data: bytes) -> None:
        data = self.carry + data
        usable = len(data) - len(data) % (2 * self.window)
        self.carry = data[usable:]
        pcm = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, self.window)
        for window in pcm:
            self.samples += self.window
            voiced = float(np.sqrt(np.mean(window.astype(np.float64) ** 2))) > VOICED_RMS
            await self.step(voiced)

    async def step(self, voiced: bool) -> None:
        if not self.in_turn:
            self.voiced_run = self.voiced_run + 1 if voiced else 0
            if self.voiced_run >= START_WINDOWS:
                self.in_turn, self.silence, self.since_update = True, 0.0, 0.0
                self.turn_start = self.samples - START_WINDOWS * self.window
                self.voiced_in_turn = START_WINDOWS * WINDOW_SECONDS
                self.eager_sent = False
                self.words = self.fake.transcripts[
                    next(self.fake._turns) % len(self.fake.transcripts)
                ].split()
                await self.emit("StartOfTurn", "")
            return
        self.since_update += WINDOW_SECONDS
        if voiced:
            self.voiced_in_turn += WINDOW_SECONDS
            if self.eager_sent:
                self.eager_sent = False
                await self.emit("TurnResumed", self.transcript)
            self.silence = 0.0
        else:
            self.silence += WINDOW_SECONDS
        if self.eager and not self.eager_sent and self.silence >= EAGER_SILENCE - 1e-9:
            self.eager_sent = True
            await self.emit("EagerEndOfTurn", self.words_so_far(), confidence=0.6)
            return
        if self.silence >= EOT_SILENCE - 1e-9:
            text = self.transcript if self.eager_sent else self.words_so_far()
            await self.emit("EndOfTurn", text, confidence=0.9)
            self.in_turn, self.voiced_run = False, 0
            self.turn_index += 1
            return
        if self.since_update >= UPDATE_SECONDS - 1e-9 and not self.eager_sent:
            self.since_update = 0.0
            await self.emit("Update", self.words_so_far())

    def words_so_far(self) -> str:
        """Words revealed in proportion to speech heard: four per second, all once speech ends."""
        if self.silence > 0:
            return " ".join(self.words)
        return " ".join(self.words[: max(1, int(self.voiced_in_turn * 4))])

    async def emit(self, event: str, transcript: str, confidence: float = 0.1) -> None:
        self.transcript = transcript
        message = self.stamp(
            {
                "type": "TurnInfo",
                "event": event,
                "turn_index": self.turn_index,
                "audio_window_start": round(self.turn_start / self.rate, 3),
                "audio_window_end": round(self.samples / self.rate, 3),
                "transcript": transcript,
                "words": [{"word": w, "confidence": 0.95} for w in transcript.split()],
                "end_of_turn_confidence": confidence,
            }
        )
        self.fake.events_sent.append(message)
        await self.fake.send(self.ws, json.dumps(message))
