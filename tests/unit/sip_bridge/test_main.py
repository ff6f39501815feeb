"""The bridge's command line: its default capacity and how it turns into worker processes."""

from __future__ import annotations

from sip_bridge.main import CALLS_PER_WORKER, parse_args, worker_count


def test_the_default_capacity_suits_a_small_office() -> None:
    args = parse_args([])
    assert args.max_calls == 16
    # more than one PJSIP process holds: a dispatcher in front of workers of 4 calls each
    assert CALLS_PER_WORKER == 4
    assert worker_count(args.max_calls, args.workers) == 4


def test_a_single_process_when_asked_for_its_capacity_or_less() -> None:
    assert worker_count(4, 0) == 1
    assert worker_count(5, 0) == 2
    assert worker_count(16, 2) == 2  # --workers wins
