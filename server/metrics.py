"""Prometheus histograms of the per-turn latency figures that every TurnMetrics message carries."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from voiceagent.v1 import voice_agent_pb2 as pb

_BUCKETS = (50, 100, 200, 300, 400, 500, 600, 700, 800, 1000, 1200, 1500, 2000, 3000, 5000, 10000)

STT_FINAL = Histogram(
    "voice_agent_stt_final_ms", "End of speech to final transcript", buckets=_BUCKETS
)
LLM_FIRST_TOKEN = Histogram(
    "voice_agent_llm_first_token_ms", "End of speech to first LLM token", buckets=_BUCKETS
)
TTS_FIRST_AUDIO = Histogram(
    "voice_agent_tts_first_audio_ms", "End of speech to first synthesized audio", buckets=_BUCKETS
)
VOICE_TO_VOICE = Histogram(
    "voice_agent_voice_to_voice_ms", "End of speech to first agent audio sent", buckets=_BUCKETS
)
BARGE_IN_STOP = Histogram(
    "voice_agent_barge_in_stop_ms", "Detected user speech to agent audio stopped", buckets=_BUCKETS
)
TURN_MODEL_MS = Histogram(
    "voice_agent_turn_model_ms",
    "One run of the turn-completion model (Smart Turn), features included, per batch",
    buckets=(5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000),
)
TURN_MODEL_BATCH = Histogram(
    "voice_agent_turn_model_batch",
    "Turns scored together in one run of the turn-completion model",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
BACKCHANNELS = Counter(
    "voice_agent_backchannels_total",
    "Short acknowledgements or noises heard while the agent talked that did not interrupt it",
)
INTERIMS_SKIPPED = Counter(
    "voice_agent_interims_skipped_total",
    "Interim decodes skipped because every STT worker was busy (the final decodes go first)",
)
FINAL_LOOPS = Counter(
    "voice_agent_final_decode_loops_total",
    "Final decodes that looped: decoded again loop-free (retried) or cut where the loop began",
    ["outcome"],
)
OPEN_ENDINGS = Counter(
    "voice_agent_open_ending_checks_total",
    "Turns whose last word was checked for a misheard 'to', 'for'... (held: the turn waited)",
    ["outcome"],
)
UNHEARD_ANSWERS = Counter(
    "voice_agent_unheard_answers_dropped_total",
    "Turns that ended too soon: the caller went on before any of the answer was sent",
)
SESSIONS_ACTIVE = Gauge("voice_agent_sessions_active", "Converse streams open now")
SESSIONS_TOTAL = Counter("voice_agent_sessions_total", "Converse streams accepted")
EVENT_LOOP_LAG = Gauge(
    "voice_agent_event_loop_lag_ms",
    "How late the event loop runs a 50 ms timer (median of the last second)",
)


def observe_turn(metrics: pb.TurnMetrics) -> None:
    if metrics.HasField("barge_in_stop_ms"):
        BARGE_IN_STOP.observe(metrics.barge_in_stop_ms)
        return  # the turn's other figures were observed when it was first reported
    STT_FINAL.observe(metrics.stt_final_ms)
    LLM_FIRST_TOKEN.observe(metrics.llm_first_token_ms)
    TTS_FIRST_AUDIO.observe(metrics.tts_first_audio_ms)
    VOICE_TO_VOICE.observe(metrics.voice_to_voice_ms)
