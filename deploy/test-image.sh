#!/usr/bin/env bash
# Build the Dockerfile with Podman and run the image as a platform would: PORT set from outside,
# wait for its HEALTHCHECK, talk to it with `voice-agent talk` and load the page's RPCs, then
# SIGTERM and check the drain. Prints the image size and the cold start (start to SERVING).
#
# No container registry is reachable here, so the Dockerfile's PYTHON and NODE base images are
# made from Debian packages with mmdebstrap and `podman import` (kept between runs). The host's
# extra CA certificates (/usr/local/share/ca-certificates) go into them, so that apt, pip and
# npm inside the build trust the same TLS as the host does. The image is built in Docker format:
# the OCI format has no HEALTHCHECK, and Podman would drop it.
#
#   deploy/test-image.sh       (or `make image-test`; as root: it runs apt-get and podman)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${IMAGE_WORK_DIR:-${VOICE_AGENT_CACHE:-$HOME/.cache/voice-agent}/image}
TAG=${IMAGE_TAG:-localhost/voice-agent:test}
SUITE=bookworm
PYTHON_BASE=localhost/voice-agent-base-python:$SUITE
NODE_BASE=localhost/voice-agent-base-node:$SUITE
VENV_BIN=$ROOT/.venv/bin
mkdir -p "$WORK"

log() { printf '%s test-image: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }

# --- tools ------------------------------------------------------------------------------------
missing=""
for tool in podman:podman mmdebstrap:mmdebstrap runc:runc; do
	command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool##*:}"
done
if [ -n "$missing" ]; then
	log "installing Debian packages:$missing"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
[ -x "$VENV_BIN/voice-agent" ] || { log "run 'make setup' first (the host-side client)"; exit 1; }

# crun cannot set rlimits on these machines and does not support their cgroup mode: runc, and no
# default ulimits.
export CONTAINERS_CONF=$WORK/containers.conf
printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)

# --- base images from Debian packages ---------------------------------------------------------
make_base() { # name, packages, extra --change arguments...
	local name=$1 packages=$2
	shift 2
	if "${PODMAN[@]}" image exists "$name"; then
		return
	fi
	log "making $name from Debian packages ($packages)"
	local hooks=()
	for cert in /usr/local/share/ca-certificates/*.crt; do
		[ -e "$cert" ] || continue
		hooks+=(--customize-hook="copy-in $cert /usr/local/share/ca-certificates")
	done
	hooks+=(--customize-hook='chroot "$1" update-ca-certificates >/dev/null')
	mmdebstrap --quiet --variant=minbase --include="ca-certificates,$packages" \
		"${hooks[@]}" "$SUITE" "$WORK/base.tar"
	"${PODMAN[@]}" import "$@" "$WORK/base.tar" "$name" >/dev/null
	rm -f "$WORK/base.tar"
}
CA=/etc/ssl/certs/ca-certificates.crt
make_base "$PYTHON_BASE" python3,python3-venv,python-is-python3 \
	--change "ENV PIP_CERT=$CA" --change 'CMD ["python3"]'
make_base "$NODE_BASE" nodejs,npm \
	--change "ENV NODE_EXTRA_CA_CERTS=$CA" --change 'CMD ["node"]'

# --- build ------------------------------------------------------------------------------------
log "building $TAG"
started=$(now)
nice "${PODMAN[@]}" build --isolation=chroot --network=host --format docker \
	--build-arg PYTHON="$PYTHON_BASE" --build-arg NODE="$NODE_BASE" \
	-t "$TAG" "$ROOT" >"$WORK/build.log" 2>&1 || {
	tail -40 "$WORK/build.log"
	log "build failed (full log: $WORK/build.log)"
	exit 1
}
build_s=$(echo "$(now) - $started" | bc)
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$TAG")
log "built in ${build_s} s, image size $((size / 1000000)) MB"

# --- run as a platform would ------------------------------------------------------------------
free_port() { "$VENV_BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
HTTP_PORT=$(free_port)
NAME=voice-agent-test-$$
cleanup() { "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
started=$(now)
"${PODMAN[@]}" run -d --name "$NAME" --network=host -e PORT="$PORT" -e HTTP_PORT="$HTTP_PORT" \
	-e DRAIN_SECONDS=10 "$TAG" >/dev/null
# Cold start: from `podman run` to the gRPC health service saying SERVING, polled every 50 ms
# from one host process (a probe process per poll would take longer than the poll itself).
serving_s=$("$VENV_BIN/python" - "$PORT" "$started" <<'EOF'
import sys, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
port, started = sys.argv[1], float(sys.argv[2])
health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
while time.time() - started < 120:
    try:
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            print(f"{time.time() - started:.2f}")
            break
    except grpc.RpcError:
        pass
    time.sleep(0.05)
EOF
)
if [ -z "$serving_s" ]; then
	"${PODMAN[@]}" logs "$NAME" | tail -30
	log "not SERVING within 120 s"
	exit 1
fi
ready=$("${PODMAN[@]}" logs "$NAME" 2>&1 | grep -o 'ready in [0-9.]* s' | head -1)
log "SERVING ${serving_s} s after podman run (PORT=$PORT; the server logged: $ready)"
# What the platform's probe runs: the image's own HEALTHCHECK command, inside the container.
"${PODMAN[@]}" healthcheck run "$NAME" || {
	log "the image's HEALTHCHECK fails while the server is SERVING"
	exit 1
}
log "HEALTHCHECK passes"

# --- talk to it: a spoken question through the CLI, the page and its RPCs ---------------------
"$VENV_BIN/python" - "$WORK/question.wav" <<'EOF'
import sys, wave
import numpy as np
from tests.integration.conftest import speak
pcm = np.concatenate([speak("What is the capital of France?", varied=False), np.zeros(16000, np.int16)])
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(pcm.tobytes())
EOF
"$VENV_BIN/voice-agent" talk --server "127.0.0.1:$PORT" --input "$WORK/question.wav" \
	--output "$WORK/reply.wav" --json >"$WORK/talk.jsonl"
"$VENV_BIN/python" - "$WORK/talk.jsonl" <<'EOF'
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
finals = [l for l in lines if l.get("type") == "transcript" and l.get("is_final")]
agent = [l for l in lines if l.get("type") == "agent_text" and l.get("final")]
assert finals and agent, f"no answered turn in {sys.argv[1]}"
print(f"you: {finals[-1]['text']!r}\nagent: {agent[-1]['text']!r}", file=sys.stderr)
EOF
page=$(curl -fsS "http://127.0.0.1:$HTTP_PORT/")
grep -q '<script' <<<"$page" || { log "the page has no script"; exit 1; }
for asset in $(grep -o 'src="[^"]*"' <<<"$page" | cut -d'"' -f2); do
	curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/${asset#/}"
done
curl -fsS -H 'content-type: application/json' -d '{}' \
	"http://127.0.0.1:$HTTP_PORT/voiceagent.v1.VoiceAgent/ListVoices" | grep -q en_US-joe-medium
log "talk, the page and its RPCs answer"

# --- SIGTERM: a running call gets GOING_AWAY and the process drains and exits 0 ----------------
"$VENV_BIN/voice-agent" talk --server "127.0.0.1:$PORT" --input "$WORK/question.wav" --json \
	>"$WORK/drain.jsonl" 2>&1 &
talker=$!
sleep 2
stop_started=$(now)
"${PODMAN[@]}" kill --signal TERM "$NAME" >/dev/null
status=$("${PODMAN[@]}" wait "$NAME")
stop_s=$(echo "$(now) - $stop_started" | bc)
wait "$talker" || true
"${PODMAN[@]}" logs "$NAME" 2>&1 | grep -q "draining" || { log "no drain in the log"; exit 1; }
[ "$status" = 0 ] || { "${PODMAN[@]}" logs "$NAME" | tail -20; log "exit status $status after SIGTERM"; exit 1; }
grep -q GOING_AWAY "$WORK/drain.jsonl" || { cat "$WORK/drain.jsonl" | tail -5; log "the running call was not told GOING_AWAY"; exit 1; }
log "SIGTERM: drained and exited 0 in ${stop_s} s"
printf 'image %s: size %d MB, build %.0f s, cold start to SERVING %.2f s, drain %.1f s\n' \
	"$TAG" $((size / 1000000)) "$build_s" "$serving_s" "$stop_s"
