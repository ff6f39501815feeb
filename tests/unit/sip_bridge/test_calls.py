import pytest

from sip_bridge.calls import (
    BUSY_HERE,
    CallRecord,
    CallState,
    CallStateError,
    DigitCollector,
    RtpWatch,
    admission,
)


def test_call_answers_once_and_ends_once() -> None:
    call = CallRecord(1, "c1", 8000)
    call.answer()
    assert call.state is CallState.ANSWERED
    with pytest.raises(CallStateError):
        call.answer()
    assert call.end("BYE") is True
    assert call.end("stream ended") is False  # BYE and stream end race: the first wins
    assert call.end_reason == "BYE"


def test_cancelled_call_cannot_be_answered() -> None:
    call = CallRecord(2, "", 8000)
    assert call.end("487 Request Terminated")
    with pytest.raises(CallStateError):
        call.answer()


def test_admission() -> None:
    assert admission(0, 4) == 0
    assert admission(3, 4) == 0
    assert admission(4, 4) == BUSY_HERE
    assert admission(0, 0) == BUSY_HERE


def test_rtp_watch_times_out_only_without_packets_and_not_on_hold() -> None:
    watch = RtpWatch()
    assert not watch.timed_out(10, False, now=0.0, timeout=30)
    assert not watch.timed_out(20, False, now=10.0, timeout=30)  # packets flowing
    assert not watch.timed_out(20, False, now=11.0, timeout=30)  # stopped at 11
    assert not watch.timed_out(20, False, now=40.0, timeout=30)
    assert watch.timed_out(20, False, now=41.0, timeout=30)
    held = RtpWatch()
    for t in range(0, 100, 10):
        assert not held.timed_out(5, True, now=float(t), timeout=30)


def test_digits_become_one_text_turn() -> None:
    digits = DigitCollector(pause=1.5)
    assert digits.add("1", 0.0) is None
    assert digits.add("2", 0.5) is None
    assert digits.due(1.0) is None
    text = digits.due(2.0)
    assert text is not None and "1 2" in text
    assert digits.due(5.0) is None


def test_pound_sends_the_digits_at_once() -> None:
    digits = DigitCollector()
    digits.add("4", 0.0)
    digits.add("2", 0.1)
    text = digits.add("#", 0.2)
    assert text is not None and "4 2" in text
    assert digits.add("#", 0.3) is None  # nothing pressed before it
