"""Issue 14, case 3 with the real local LLM (llama-cpp, its context window cut to 1,024 tokens
so that a few turns fill it): the history is trimmed to the window (oldest turns first, the
system prompt kept) and a prompt of the largest allowed size is cut to fit, so no turn ends in
INTERNAL ("Requested tokens exceed context window")."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc

from server.limits import MAX_SYSTEM_PROMPT
from tests.abuse.conftest import ServerProcess, start, stop

WORDS = "the quick brown fox jumps over the lazy dog while a careful reader counts every word "


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start(tmp_path_factory.mktemp("llama"), llm="llama", context=1024)
    yield running
    stop(running)


def typed_turns(
    server: ServerProcess, session: pb.SessionConfig, turns: list[str]
) -> tuple[list[pb.ConverseResponse], grpc.StatusCode, str]:
    """Each turn once the previous one is done, then a hangup."""
    answered = threading.Semaphore(0)

    def requests() -> Iterator[pb.ConverseRequest]:
        yield pb.ConverseRequest(config=session)
        for text in turns:
            yield pb.ConverseRequest(text=text)
            if not answered.acquire(timeout=120):
                return
        yield pb.ConverseRequest(hangup=pb.Hangup())

    stub = pb_grpc.VoiceAgentStub(grpc.insecure_channel(server.target))
    responses: list[pb.ConverseResponse] = []
    try:
        for response in stub.Converse(requests()):
            responses.append(response)
            if response.HasField("event") and response.event.type == pb.AGENT_TURN_DONE:
                answered.release()
    except grpc.RpcError as err:
        return responses, err.code(), err.details() or ""
    return responses, grpc.StatusCode.OK, ""


def done_turns(responses: list[pb.ConverseResponse]) -> list[int]:
    return [
        r.event.turn_id
        for r in responses
        if r.HasField("event") and r.event.type == pb.AGENT_TURN_DONE
    ]


def test_turns_past_the_context_window_are_all_answered(llama: ServerProcess) -> None:
    turns = [f"Turn {i}: " + (WORDS * 20)[:1000] for i in range(5)]  # ~1,100 tokens in all
    responses, code, details = typed_turns(
        llama, pb.SessionConfig(input_format=linear16(16000)), turns
    )
    assert code == grpc.StatusCode.OK, details
    assert done_turns(responses) == [1, 2, 3, 4, 5]
    assert not [r.error for r in responses if r.HasField("error")]


def test_the_longest_system_prompt_is_cut_to_fit(llama: ServerProcess) -> None:
    session = pb.SessionConfig(
        input_format=linear16(16000), system_prompt=(WORDS * 200)[:MAX_SYSTEM_PROMPT]
    )
    responses, code, details = typed_turns(llama, session, ["Hello?", "And now?"])
    assert code == grpc.StatusCode.OK, details
    assert done_turns(responses) == [1, 2]
    finals = [r.agent_text for r in responses if r.HasField("agent_text") and r.agent_text.final]
    assert all(f.text for f in finals)
