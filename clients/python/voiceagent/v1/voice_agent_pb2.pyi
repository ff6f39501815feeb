from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    LINEAR16: _ClassVar[AudioEncoding]
    MULAW: _ClassVar[AudioEncoding]
    ALAW: _ClassVar[AudioEncoding]

class TurnDetectionMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TURN_DETECTION_MODE_UNSPECIFIED: _ClassVar[TurnDetectionMode]
    TURN_DETECTION_SEMANTIC: _ClassVar[TurnDetectionMode]
    TURN_DETECTION_SILENCE: _ClassVar[TurnDetectionMode]

class TurnEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TURN_EVENT_UNSPECIFIED: _ClassVar[TurnEvent]
    START_OF_TURN: _ClassVar[TurnEvent]
    UPDATE: _ClassVar[TurnEvent]
    EAGER_END_OF_TURN: _ClassVar[TurnEvent]
    TURN_RESUMED: _ClassVar[TurnEvent]
    END_OF_TURN: _ClassVar[TurnEvent]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    BARGE_IN: _ClassVar[EventType]
    CONFIG_APPLIED: _ClassVar[EventType]
    AGENT_TURN_DONE: _ClassVar[EventType]
    GOING_AWAY: _ClassVar[EventType]
    BACKCHANNEL: _ClassVar[EventType]
    CALL_ENDED: _ClassVar[EventType]
    TRANSFER: _ClassVar[EventType]

class BackendKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_KIND_UNSPECIFIED: _ClassVar[BackendKind]
    BACKEND_KIND_STT: _ClassVar[BackendKind]
    BACKEND_KIND_LLM: _ClassVar[BackendKind]
    BACKEND_KIND_TTS: _ClassVar[BackendKind]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
LINEAR16: AudioEncoding
MULAW: AudioEncoding
ALAW: AudioEncoding
TURN_DETECTION_MODE_UNSPECIFIED: TurnDetectionMode
TURN_DETECTION_SEMANTIC: TurnDetectionMode
TURN_DETECTION_SILENCE: TurnDetectionMode
TURN_EVENT_UNSPECIFIED: TurnEvent
START_OF_TURN: TurnEvent
UPDATE: TurnEvent
EAGER_END_OF_TURN: TurnEvent
TURN_RESUMED: TurnEvent
END_OF_TURN: TurnEvent
EVENT_TYPE_UNSPECIFIED: EventType
BARGE_IN: EventType
CONFIG_APPLIED: EventType
AGENT_TURN_DONE: EventType
GOING_AWAY: EventType
BACKCHANNEL: EventType
CALL_ENDED: EventType
TRANSFER: EventType
BACKEND_KIND_UNSPECIFIED: BackendKind
BACKEND_KIND_STT: BackendKind
BACKEND_KIND_LLM: BackendKind
BACKEND_KIND_TTS: BackendKind

class AudioFormat(_message.Message):
    __slots__ = ("encoding", "sample_rate_hertz")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    encoding: AudioEncoding
    sample_rate_hertz: int
    def __init__(self, encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hertz: _Optional[int] = ...) -> None: ...

class TurnDetection(_message.Message):
    __slots__ = ("eager_end_of_turn_silence_ms", "end_of_turn_silence_ms", "disable_eager_end_of_turn", "eot_threshold", "eager_eot_threshold", "mode", "max_silence_ms", "completion_threshold", "barge_in_on_any_speech")
    EAGER_END_OF_TURN_SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    END_OF_TURN_SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    DISABLE_EAGER_END_OF_TURN_FIELD_NUMBER: _ClassVar[int]
    EOT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EAGER_EOT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BARGE_IN_ON_ANY_SPEECH_FIELD_NUMBER: _ClassVar[int]
    eager_end_of_turn_silence_ms: int
    end_of_turn_silence_ms: int
    disable_eager_end_of_turn: bool
    eot_threshold: float
    eager_eot_threshold: float
    mode: TurnDetectionMode
    max_silence_ms: int
    completion_threshold: float
    barge_in_on_any_speech: bool
    def __init__(self, eager_end_of_turn_silence_ms: _Optional[int] = ..., end_of_turn_silence_ms: _Optional[int] = ..., disable_eager_end_of_turn: _Optional[bool] = ..., eot_threshold: _Optional[float] = ..., eager_eot_threshold: _Optional[float] = ..., mode: _Optional[_Union[TurnDetectionMode, str]] = ..., max_silence_ms: _Optional[int] = ..., completion_threshold: _Optional[float] = ..., barge_in_on_any_speech: _Optional[bool] = ...) -> None: ...

class SessionConfig(_message.Message):
    __slots__ = ("input_format", "output_format", "stt", "llm", "llm_model", "tts", "tts_voice", "campaign_id", "system_prompt", "greeting", "language", "turn_detection", "tools", "builtin_tools")
    INPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    STT_FIELD_NUMBER: _ClassVar[int]
    LLM_FIELD_NUMBER: _ClassVar[int]
    LLM_MODEL_FIELD_NUMBER: _ClassVar[int]
    TTS_FIELD_NUMBER: _ClassVar[int]
    TTS_VOICE_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    GREETING_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TURN_DETECTION_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_TOOLS_FIELD_NUMBER: _ClassVar[int]
    input_format: AudioFormat
    output_format: AudioFormat
    stt: str
    llm: str
    llm_model: str
    tts: str
    tts_voice: str
    campaign_id: str
    system_prompt: str
    greeting: str
    language: str
    turn_detection: TurnDetection
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    builtin_tools: BuiltinTools
    def __init__(self, input_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., output_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., stt: _Optional[str] = ..., llm: _Optional[str] = ..., llm_model: _Optional[str] = ..., tts: _Optional[str] = ..., tts_voice: _Optional[str] = ..., campaign_id: _Optional[str] = ..., system_prompt: _Optional[str] = ..., greeting: _Optional[str] = ..., language: _Optional[str] = ..., turn_detection: _Optional[_Union[TurnDetection, _Mapping]] = ..., tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., builtin_tools: _Optional[_Union[BuiltinTools, _Mapping]] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "description", "parameters_json", "webhook", "client")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_json: str
    webhook: WebhookTool
    client: ClientTool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_json: _Optional[str] = ..., webhook: _Optional[_Union[WebhookTool, _Mapping]] = ..., client: _Optional[_Union[ClientTool, _Mapping]] = ...) -> None: ...

class WebhookTool(_message.Message):
    __slots__ = ("url", "headers", "timeout_ms")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    URL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    url: str
    headers: _containers.ScalarMap[str, str]
    timeout_ms: int
    def __init__(self, url: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class ClientTool(_message.Message):
    __slots__ = ("timeout_ms",)
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    timeout_ms: int
    def __init__(self, timeout_ms: _Optional[int] = ...) -> None: ...

class BuiltinTools(_message.Message):
    __slots__ = ("end_call", "transfer_targets")
    END_CALL_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_TARGETS_FIELD_NUMBER: _ClassVar[int]
    end_call: bool
    transfer_targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, end_call: _Optional[bool] = ..., transfer_targets: _Optional[_Iterable[str]] = ...) -> None: ...

class ConfigUpdate(_message.Message):
    __slots__ = ("llm_model", "tts_voice", "system_prompt", "update_mask")
    LLM_MODEL_FIELD_NUMBER: _ClassVar[int]
    TTS_VOICE_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    llm_model: str
    tts_voice: str
    system_prompt: str
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, llm_model: _Optional[str] = ..., tts_voice: _Optional[str] = ..., system_prompt: _Optional[str] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class Hangup(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConverseRequest(_message.Message):
    __slots__ = ("config", "audio", "update", "text", "hangup", "tool_result")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    HANGUP_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    config: SessionConfig
    audio: bytes
    update: ConfigUpdate
    text: str
    hangup: Hangup
    tool_result: ToolResult
    def __init__(self, config: _Optional[_Union[SessionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ..., update: _Optional[_Union[ConfigUpdate, _Mapping]] = ..., text: _Optional[str] = ..., hangup: _Optional[_Union[Hangup, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResult, _Mapping]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("session_id", "config")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    config: SessionConfig
    def __init__(self, session_id: _Optional[str] = ..., config: _Optional[_Union[SessionConfig, _Mapping]] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("text", "is_final", "event", "turn_index", "audio_window_start_ms", "audio_window_end_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TURN_INDEX_FIELD_NUMBER: _ClassVar[int]
    AUDIO_WINDOW_START_MS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_WINDOW_END_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    is_final: bool
    event: TurnEvent
    turn_index: int
    audio_window_start_ms: int
    audio_window_end_ms: int
    def __init__(self, text: _Optional[str] = ..., is_final: _Optional[bool] = ..., event: _Optional[_Union[TurnEvent, str]] = ..., turn_index: _Optional[int] = ..., audio_window_start_ms: _Optional[int] = ..., audio_window_end_ms: _Optional[int] = ...) -> None: ...

class AgentText(_message.Message):
    __slots__ = ("turn_id", "delta", "final", "text")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    turn_id: int
    delta: str
    final: bool
    text: str
    def __init__(self, turn_id: _Optional[int] = ..., delta: _Optional[str] = ..., final: _Optional[bool] = ..., text: _Optional[str] = ...) -> None: ...

class Audio(_message.Message):
    __slots__ = ("audio", "turn_id")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    turn_id: int
    def __init__(self, audio: _Optional[bytes] = ..., turn_id: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "turn_id", "message")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    type: EventType
    turn_id: int
    message: str
    def __init__(self, type: _Optional[_Union[EventType, str]] = ..., turn_id: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("id", "name", "arguments_json", "turn_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    arguments_json: str
    turn_id: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., turn_id: _Optional[int] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("id", "name", "result_json", "error", "turn_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    result_json: str
    error: str
    turn_id: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., result_json: _Optional[str] = ..., error: _Optional[str] = ..., turn_id: _Optional[int] = ...) -> None: ...

class TurnMetrics(_message.Message):
    __slots__ = ("turn_id", "stt_final_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms", "barge_in_stop_ms", "from_text")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    STT_FINAL_MS_FIELD_NUMBER: _ClassVar[int]
    LLM_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    TTS_FIRST_AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    VOICE_TO_VOICE_MS_FIELD_NUMBER: _ClassVar[int]
    BARGE_IN_STOP_MS_FIELD_NUMBER: _ClassVar[int]
    FROM_TEXT_FIELD_NUMBER: _ClassVar[int]
    turn_id: int
    stt_final_ms: float
    llm_first_token_ms: float
    tts_first_audio_ms: float
    voice_to_voice_ms: float
    barge_in_stop_ms: float
    from_text: bool
    def __init__(self, turn_id: _Optional[int] = ..., stt_final_ms: _Optional[float] = ..., llm_first_token_ms: _Optional[float] = ..., tts_first_audio_ms: _Optional[float] = ..., voice_to_voice_ms: _Optional[float] = ..., barge_in_stop_ms: _Optional[float] = ..., from_text: _Optional[bool] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ConverseResponse(_message.Message):
    __slots__ = ("session_started", "transcript", "agent_text", "audio", "event", "metrics", "error", "tool_call", "tool_result")
    SESSION_STARTED_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    AGENT_TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    session_started: SessionStarted
    transcript: Transcript
    agent_text: AgentText
    audio: Audio
    event: Event
    metrics: TurnMetrics
    error: Error
    tool_call: ToolCall
    tool_result: ToolResult
    def __init__(self, session_started: _Optional[_Union[SessionStarted, _Mapping]] = ..., transcript: _Optional[_Union[Transcript, _Mapping]] = ..., agent_text: _Optional[_Union[AgentText, _Mapping]] = ..., audio: _Optional[_Union[Audio, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., metrics: _Optional[_Union[TurnMetrics, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCall, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResult, _Mapping]] = ...) -> None: ...

class ListBackendsRequest(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: BackendKind
    def __init__(self, kind: _Optional[_Union[BackendKind, str]] = ...) -> None: ...

class Backend(_message.Message):
    __slots__ = ("kind", "name", "display_name", "available", "unavailable_reason", "loaded")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    kind: BackendKind
    name: str
    display_name: str
    available: bool
    unavailable_reason: str
    loaded: bool
    def __init__(self, kind: _Optional[_Union[BackendKind, str]] = ..., name: _Optional[str] = ..., display_name: _Optional[str] = ..., available: _Optional[bool] = ..., unavailable_reason: _Optional[str] = ..., loaded: _Optional[bool] = ...) -> None: ...

class ListBackendsResponse(_message.Message):
    __slots__ = ("backends",)
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    backends: _containers.RepeatedCompositeFieldContainer[Backend]
    def __init__(self, backends: _Optional[_Iterable[_Union[Backend, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "backend", "available", "unavailable_reason", "loaded")
    ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    id: str
    backend: str
    available: bool
    unavailable_reason: str
    loaded: bool
    def __init__(self, id: _Optional[str] = ..., backend: _Optional[str] = ..., available: _Optional[bool] = ..., unavailable_reason: _Optional[str] = ..., loaded: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ("backend",)
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    backend: str
    def __init__(self, backend: _Optional[str] = ...) -> None: ...

class Voice(_message.Message):
    __slots__ = ("id", "name", "language", "gender", "backend", "available", "unavailable_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    language: str
    gender: str
    backend: str
    available: bool
    unavailable_reason: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., language: _Optional[str] = ..., gender: _Optional[str] = ..., backend: _Optional[str] = ..., available: _Optional[bool] = ..., unavailable_reason: _Optional[str] = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices",)
    VOICES_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[Voice]
    def __init__(self, voices: _Optional[_Iterable[_Union[Voice, _Mapping]]] = ...) -> None: ...

class PreviewVoiceRequest(_message.Message):
    __slots__ = ("voice", "text", "output_format")
    VOICE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    voice: str
    text: str
    output_format: AudioFormat
    def __init__(self, voice: _Optional[str] = ..., text: _Optional[str] = ..., output_format: _Optional[_Union[AudioFormat, _Mapping]] = ...) -> None: ...

class PreviewVoiceResponse(_message.Message):
    __slots__ = ("audio", "output_format")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    output_format: AudioFormat
    def __init__(self, audio: _Optional[bytes] = ..., output_format: _Optional[_Union[AudioFormat, _Mapping]] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Config(_message.Message):
    __slots__ = ("stt", "llm_model", "tts_voice", "system_prompt", "etag")
    STT_FIELD_NUMBER: _ClassVar[int]
    LLM_MODEL_FIELD_NUMBER: _ClassVar[int]
    TTS_VOICE_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    stt: str
    llm_model: str
    tts_voice: str
    system_prompt: str
    etag: str
    def __init__(self, stt: _Optional[str] = ..., llm_model: _Optional[str] = ..., tts_voice: _Optional[str] = ..., system_prompt: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class UpdateConfigRequest(_message.Message):
    __slots__ = ("config", "update_mask")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    config: Config
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, config: _Optional[_Union[Config, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class WatchConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
