"""The local backend's tool grammar and how its constrained replies are read (no model needed;
the model itself: tests/integration/test_agent_actions_local.py, bench/tool_choice.py)."""

from __future__ import annotations

from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.llm.llama_cpp import parse_calls, tool_grammar
from server.tools.spec import builtin_specs


def test_grammar_names_only_offered_tools_and_their_arguments() -> None:
    specs = builtin_specs(pb.BuiltinTools(end_call=True, transfer_targets=["sip:desk@pbx"]))
    grammar = tool_grammar(specs)
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert rules["root"] == "say | say? call (ws call)*"
    assert rules["say"] == "[^{<]+"  # words cannot start a call
    assert '\\"end_call\\"' in rules["call"] and '\\"transfer_call\\"' in rules["call"]
    assert rules["arguments0"] == '"{" space  "}" space'  # end_call takes nothing
    assert '"\\"sip:desk@pbx\\""' in grammar  # transfer_call's target is one of the list


def test_calls_are_read_one_after_the_other() -> None:
    text = '{"name": "lookup", "arguments": {"id": "A1"}}\n{"name": "end_call", "arguments": {}}'
    assert parse_calls(text) == [
        {"name": "lookup", "arguments": {"id": "A1"}},
        {"name": "end_call", "arguments": {}},
    ]
    assert parse_calls('{"name": "lookup", "argu') == []  # cut by max_tokens: no call
    assert parse_calls("") == []
