import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from voiceagent.v1 import voice_agent_pb2 as _voice_agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_OUTCOME_UNSPECIFIED: _ClassVar[CallOutcome]
    CALLER_HUNG_UP: _ClassVar[CallOutcome]
    AGENT_ENDED: _ClassVar[CallOutcome]
    TRANSFERRED: _ClassVar[CallOutcome]
    ERROR: _ClassVar[CallOutcome]
CALL_OUTCOME_UNSPECIFIED: CallOutcome
CALLER_HUNG_UP: CallOutcome
AGENT_ENDED: CallOutcome
TRANSFERRED: CallOutcome
ERROR: CallOutcome

class CallTurn(_message.Message):
    __slots__ = ("turn_id", "user_text", "agent_text", "barged_in", "metrics", "tool_calls")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_TEXT_FIELD_NUMBER: _ClassVar[int]
    AGENT_TEXT_FIELD_NUMBER: _ClassVar[int]
    BARGED_IN_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    turn_id: int
    user_text: str
    agent_text: str
    barged_in: bool
    metrics: _voice_agent_pb2.TurnMetrics
    tool_calls: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, turn_id: _Optional[int] = ..., user_text: _Optional[str] = ..., agent_text: _Optional[str] = ..., barged_in: _Optional[bool] = ..., metrics: _Optional[_Union[_voice_agent_pb2.TurnMetrics, _Mapping]] = ..., tool_calls: _Optional[_Iterable[str]] = ...) -> None: ...

class Call(_message.Message):
    __slots__ = ("id", "campaign_id", "start_time", "end_time", "transport", "sip_caller", "sip_called", "stt", "llm", "tts", "outcome", "status_code", "status_message", "barge_ins", "duration_seconds", "has_recording", "trace_id", "turns")
    ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    SIP_CALLER_FIELD_NUMBER: _ClassVar[int]
    SIP_CALLED_FIELD_NUMBER: _ClassVar[int]
    STT_FIELD_NUMBER: _ClassVar[int]
    LLM_FIELD_NUMBER: _ClassVar[int]
    TTS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BARGE_INS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HAS_RECORDING_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    id: str
    campaign_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    transport: str
    sip_caller: str
    sip_called: str
    stt: str
    llm: str
    tts: str
    outcome: CallOutcome
    status_code: str
    status_message: str
    barge_ins: int
    duration_seconds: float
    has_recording: bool
    trace_id: str
    turns: _containers.RepeatedCompositeFieldContainer[CallTurn]
    def __init__(self, id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., transport: _Optional[str] = ..., sip_caller: _Optional[str] = ..., sip_called: _Optional[str] = ..., stt: _Optional[str] = ..., llm: _Optional[str] = ..., tts: _Optional[str] = ..., outcome: _Optional[_Union[CallOutcome, str]] = ..., status_code: _Optional[str] = ..., status_message: _Optional[str] = ..., barge_ins: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., has_recording: _Optional[bool] = ..., trace_id: _Optional[str] = ..., turns: _Optional[_Iterable[_Union[CallTurn, _Mapping]]] = ...) -> None: ...

class ListCallsRequest(_message.Message):
    __slots__ = ("campaign_id", "start_after", "start_before", "page_size", "page_token")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    START_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    start_after: _timestamp_pb2.Timestamp
    start_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, campaign_id: _Optional[str] = ..., start_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCallsResponse(_message.Message):
    __slots__ = ("calls", "next_page_token")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[Call]
    next_page_token: str
    def __init__(self, calls: _Optional[_Iterable[_Union[Call, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetCallRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteCallRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetCallRecordingRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CallRecordingChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...
