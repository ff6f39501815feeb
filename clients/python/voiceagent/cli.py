"""The `voice-agent` command: `talk` to a server from a wav file, `health`; where the server is
installed also `serve` it and assemble its `models`."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import time
import wave
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import soundfile
import soxr
from google.protobuf.json_format import MessageToDict

from voiceagent.client import VoiceAgentClient, linear16
from voiceagent.v1 import voice_agent_pb2 as pb

FRAME_MS = 20
RATES = (8000, 16000, 24000, 48000)
WAV_SUBTYPES = {"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"}


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """Mono int16 samples at a rate the server takes (resampled to 16 kHz if need be).

    Any PCM wav the usual tools write (8 to 32 bits, WAVE_FORMAT_EXTENSIBLE as sox writes it,
    float); anything else is a one-line SystemExit, not a traceback.
    """
    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, OSError) as err:
        raise SystemExit(f"{path}: cannot be read as a wav file ({err})") from None
    if info.format not in ("WAV", "WAVEX") or info.subtype not in WAV_SUBTYPES:
        raise SystemExit(
            f"{path}: {info.format_info}, {info.subtype_info}: only PCM (or float) wav files "
            "are supported"
        )
    if info.frames == 0:
        raise SystemExit(f"{path}: the wav file holds no audio")
    # as float (libsndfile does not scale float files to int16), mixed down to mono
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    pcm = np.round(np.clip(samples.mean(axis=1), -1.0, 1.0) * 32767).astype(np.int16)
    if rate not in RATES:
        pcm = np.asarray(soxr.resample(pcm, rate, 16000), dtype=np.int16)
        rate = 16000
    return np.ascontiguousarray(pcm, dtype=np.int16), int(rate)


def write_wav(path: str, audio: bytes, rate: int) -> None:
    with wave.open(path, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(audio)


@dataclass
class TalkState:
    """What the conversation has done so far, to know when it is over and to summarize it."""

    started: float = field(default_factory=time.monotonic)
    user_turn_open: bool = False
    agent_busy: bool = False
    last_activity: float = field(default_factory=time.monotonic)
    audio: bytearray = field(default_factory=bytearray)
    audio_chunks: int = 0
    transcripts: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    barge_ins: int = 0
    session_id: str = ""
    error: str = ""

    def on(self, response: pb.ConverseResponse) -> None:
        self.last_activity = time.monotonic()
        kind = response.WhichOneof("response")
        if kind == "session_started":
            self.session_id = response.session_started.session_id
        elif kind == "transcript":
            event = response.transcript.event
            if event == pb.START_OF_TURN:
                self.user_turn_open = True
            elif event == pb.END_OF_TURN:
                self.user_turn_open = False
                if response.transcript.text.strip():
                    self.transcripts.append(response.transcript.text)
                    self.agent_busy = True
        elif kind == "agent_text":
            if response.agent_text.final:
                self.replies.append(response.agent_text.text)
            else:
                self.agent_busy = True
        elif kind == "audio":
            self.audio += response.audio.audio
            self.audio_chunks += 1
        elif kind == "event":
            if response.event.type == pb.AGENT_TURN_DONE:
                self.agent_busy = False
            elif response.event.type == pb.BARGE_IN:
                self.barge_ins += 1
        elif kind == "metrics":
            self.metrics.append(MessageToDict(response.metrics, preserving_proto_field_name=True))
        elif kind == "error":
            self.error = response.error.message

    def idle(self, linger: float) -> bool:
        return (
            not self.user_turn_open
            and not self.agent_busy
            and time.monotonic() - self.last_activity >= linger
        )


def describe(response: pb.ConverseResponse, state: TalkState) -> dict[str, Any]:
    kind = response.WhichOneof("response") or "unknown"
    line: dict[str, Any] = {"type": kind, "t_ms": round((time.monotonic() - state.started) * 1000)}
    if kind == "audio":
        line.update(
            turn_id=response.audio.turn_id,
            bytes=len(response.audio.audio),
            chunk=state.audio_chunks,
        )
    else:
        fields = MessageToDict(getattr(response, kind), preserving_proto_field_name=True)
        if kind == "event":  # the event's own `type` would shadow the line's
            fields["event"] = fields.pop("type", "")
        line.update(fields)
    return line


def print_readable(response: pb.ConverseResponse) -> None:
    kind = response.WhichOneof("response")
    if kind == "session_started":
        cfg = response.session_started.config
        print(
            f"session {response.session_started.session_id} ({cfg.stt} / {cfg.llm}:{cfg.llm_model} / {cfg.tts}:{cfg.tts_voice})"
        )
    elif kind == "transcript" and response.transcript.event == pb.END_OF_TURN:
        print(f"you:   {response.transcript.text}")
    elif kind == "agent_text" and response.agent_text.final:
        print(f"agent: {response.agent_text.text}")
    elif kind == "event" and response.event.type == pb.BARGE_IN:
        print("       [barge-in: agent interrupted]")
    elif kind == "event" and response.event.type == pb.CONFIG_APPLIED:
        print(f"       [config applied: {response.event.message}]")
    elif kind == "metrics" and not response.metrics.HasField("barge_in_stop_ms"):
        m = response.metrics
        print(
            f"       [turn {m.turn_id}: voice-to-voice {m.voice_to_voice_ms:.0f} ms "
            f"(stt {m.stt_final_ms:.0f}, llm {m.llm_first_token_ms:.0f}, tts {m.tts_first_audio_ms:.0f})]"
        )
    elif kind == "error":
        print(f"error: {response.error.message}", file=sys.stderr)


TURN_MODES = {"semantic": pb.TURN_DETECTION_SEMANTIC, "silence": pb.TURN_DETECTION_SILENCE}


async def talk(args: argparse.Namespace) -> int:
    pcm, rate = read_wav(args.input)
    out_rate = args.output_rate or rate
    config = pb.SessionConfig(
        input_format=linear16(rate),
        output_format=linear16(out_rate),
        stt=args.stt or "",
        llm=args.llm_backend or "",
        llm_model=args.llm or "",
        tts=args.tts or "",
        tts_voice=args.voice or "",
        campaign_id=args.campaign or "",
        greeting=args.greeting or "",
        system_prompt=args.system_prompt or "",
        turn_detection=pb.TurnDetection(
            mode=TURN_MODES[args.turn_detection],
            max_silence_ms=args.max_silence_ms or 0,
            barge_in_on_any_speech=args.barge_in_on_any_speech,
        ),
    )
    state = TalkState(agent_busy=bool(args.greeting))
    frame = rate * FRAME_MS // 1000
    silence = np.zeros(frame, dtype=np.int16).tobytes()

    async with VoiceAgentClient(
        args.server, token=os.environ.get("VOICE_AGENT_TOKEN"), tls=args.tls, ca_file=args.ca
    ) as client:
        if args.wait:
            await client.wait_ready(args.wait)
        async with client.converse(config) as call:

            async def send() -> None:
                # Real time: frame k leaves at start + k * 20 ms; after the file, an open mic.
                start = time.monotonic()
                k = 0
                for offset in range(0, len(pcm), frame):
                    await asyncio.sleep(max(0.0, start + k * FRAME_MS / 1000 - time.monotonic()))
                    await call.send_audio(pcm[offset : offset + frame].tobytes())
                    k += 1
                ended = time.monotonic()
                while time.monotonic() - ended < args.timeout:
                    await asyncio.sleep(max(0.0, start + k * FRAME_MS / 1000 - time.monotonic()))
                    await call.send_audio(silence)
                    k += 1
                    if time.monotonic() - ended > 1.0 and state.idle(args.linger):
                        break
                await call.hangup()

            sender = asyncio.create_task(send())
            try:
                async for response in call:
                    state.on(response)
                    if args.json:
                        print(json.dumps(describe(response, state)), flush=True)
                    else:
                        print_readable(response)
            except grpc.aio.AioRpcError as err:
                state.error = f"{err.code().name}: {err.details()}"
                print(
                    json.dumps(
                        {"type": "rpc_error", "code": err.code().name, "message": err.details()}
                    )
                    if args.json
                    else f"error: {err.code().name}: {err.details()}",
                    file=sys.stdout if args.json else sys.stderr,
                )
            finally:
                sender.cancel()

    if args.output:
        write_wav(args.output, bytes(state.audio), out_rate)
    summary = {
        "type": "summary",
        "session_id": state.session_id,
        "user_turns": state.transcripts,
        "agent_turns": state.replies,
        "barge_ins": state.barge_ins,
        "audio_chunks": state.audio_chunks,
        "reply_seconds": round(len(state.audio) / 2 / out_rate, 2),
        "output": args.output or "",
        "metrics": state.metrics,
        "error": state.error,
    }
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print(
            f"{len(state.transcripts)} user turn(s), {summary['reply_seconds']} s of agent audio"
            + (f" in {args.output}" if args.output else "")
        )
    return 1 if state.error else 0


async def health(target: str) -> int:
    async with VoiceAgentClient(target) as client:
        try:
            await client.wait_ready(within=3)
        except (TimeoutError, grpc.aio.AioRpcError) as err:
            print(f"{target}: not serving ({err})", file=sys.stderr)
            return 1
    print(f"{target}: SERVING")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voice-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (offline stack by default)")
    serve.add_argument("--port", type=int, help="gRPC port (default $PORT or 50051)")
    serve.add_argument(
        "--http-port",
        type=int,
        help="web page, browser RPCs, /metrics and /healthz (default $HTTP_PORT or 8080)",
    )

    sub.add_parser("models", help="assemble the offline models into $VOICE_AGENT_CACHE")

    h = sub.add_parser("health", help="exit 0 when the server reports SERVING (container checks)")
    h.add_argument("--server", help="default 127.0.0.1:$PORT")

    t = sub.add_parser("talk", help="talk to a server from a wav file")
    t.add_argument("--server", default="127.0.0.1:50051")
    t.add_argument(
        "--input", required=True, help="PCM wav (8-32 bit or float), any rate (mono preferred)"
    )
    t.add_argument("--output", help="write the agent's audio here (wav)")
    t.add_argument(
        "--output-rate", type=int, choices=RATES, help="agent audio rate (default: input's)"
    )
    t.add_argument(
        "--json", action="store_true", help="one JSON object per response, then a summary"
    )
    t.add_argument("--campaign")
    t.add_argument("--voice")
    t.add_argument("--llm", help="LLM model id")
    t.add_argument("--llm-backend", help="LLM backend name")
    t.add_argument("--stt", help="STT backend name")
    t.add_argument("--tts", help="TTS backend name")
    t.add_argument("--greeting", help="have the agent speak first")
    t.add_argument(
        "--turn-detection",
        choices=sorted(TURN_MODES),
        default="semantic",
        help="how the end of your turn is found: semantic (a turn-completion model, the "
        "default) or silence (a fixed silence)",
    )
    t.add_argument(
        "--max-silence-ms",
        type=int,
        help="semantic mode: the longest pause the agent waits out when you sound unfinished "
        "(default 2000)",
    )
    t.add_argument(
        "--barge-in-on-any-speech",
        action="store_true",
        help="any speech interrupts the agent, even 'uh-huh' or 'okay'",
    )
    t.add_argument("--system-prompt")
    t.add_argument("--linger", type=float, default=1.5, help="quiet seconds that end the call")
    t.add_argument("--timeout", type=float, default=60.0, help="longest wait after the input ends")
    t.add_argument(
        "--wait", type=float, default=0.0, help="wait up to N s for the server to be ready"
    )
    t.add_argument("--tls", action="store_true", help="connect with TLS (system roots or --ca)")
    t.add_argument("--ca", help="PEM file of the CA (or self-signed cert) to trust; implies --tls")

    args = parser.parse_args(argv)
    if args.command in ("serve", "models") and importlib.util.find_spec("server") is None:
        raise SystemExit(
            f"voice-agent {args.command}: the server is not installed here (this is the client "
            "alone); install the repository root's distribution, e.g. `make setup`"
        )
    if args.command == "serve":
        if args.port:
            os.environ["PORT"] = str(args.port)
        if args.http_port:
            os.environ["HTTP_PORT"] = str(args.http_port)
        from server.assets import prepare_offline_assets
        from server.main import run

        prepare_offline_assets(progress=True)
        run()
        return 0
    if args.command == "models":
        from server.assets import prepare_offline_assets

        print(prepare_offline_assets(progress=True))
        return 0
    if args.command == "health":
        return asyncio.run(health(args.server or f"127.0.0.1:{os.environ.get('PORT', '50051')}"))
    return asyncio.run(talk(args))


if __name__ == "__main__":
    sys.exit(main())
