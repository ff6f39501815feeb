"""The offline stack keeps numpy's BLAS to one thread: its spinning threads slowed every decode
and token beside them (server/inference.py single_threaded_blas)."""

from __future__ import annotations

from threadpoolctl import threadpool_info

from server.main import VoiceAgentServer


async def test_the_offline_stack_runs_numpy_blas_on_one_thread(
    offline_server: VoiceAgentServer,
) -> None:
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas, "numpy's BLAS not found"
    assert all(pool["num_threads"] == 1 for pool in blas), blas
