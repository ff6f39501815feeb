"""AI options: which models and voices exist (across backends), and the server-wide defaults.

A model or voice id names its backend: looking it up here is how a session, a campaign or
UpdateConfig switching to "llama-3.1-8b-instant" also switches to the `openai` backend.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Literal

from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.llm.base import LLM
from server.backends.registry import BackendError, Backends, Kind
from server.backends.tts.base import TTS
from server.campaign_store import CampaignStore, ConfigRecord


class OptionError(Exception):
    """A request names something that does not exist ("not_found"), cannot be used here
    ("unavailable") or is malformed ("invalid"); `field` says which part of the request."""

    def __init__(
        self,
        message: str,
        kind: Literal["not_found", "unavailable", "invalid"] = "not_found",
        field: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


BACKEND_KINDS: dict[pb.BackendKind, Kind] = {
    pb.BACKEND_KIND_STT: "stt",
    pb.BACKEND_KIND_LLM: "llm",
    pb.BACKEND_KIND_TTS: "tts",
}


def list_backends(
    backends: Backends, kind: pb.BackendKind = pb.BACKEND_KIND_UNSPECIFIED
) -> list[pb.Backend]:
    """Every backend of `kind` (unspecified: all), listed whether or not it can be used here:
    a client shows the unavailable ones with their reason (the speech-to-text picker has no
    models or voices of its own to carry it)."""
    if kind != pb.BACKEND_KIND_UNSPECIFIED and kind not in BACKEND_KINDS:
        raise OptionError(f"unknown backend kind {kind}", kind="invalid", field="kind")
    listed = []
    for proto_kind, name_kind in BACKEND_KINDS.items():
        if kind not in (pb.BACKEND_KIND_UNSPECIFIED, proto_kind):
            continue
        for name in backends.names(name_kind):
            reason = backends.unavailable_reason(name_kind, name) or ""
            backend = backends.instance(name_kind, name)
            listed.append(
                pb.Backend(
                    kind=proto_kind,
                    name=name,
                    display_name=backend.display_name or name,
                    available=not reason,
                    unavailable_reason=reason,
                    loaded=backends.loaded(name_kind, name),
                )
            )
    return listed


def list_models(backends: Backends) -> list[pb.Model]:
    models = []
    for name in backends.names("llm"):
        reason = backends.unavailable_reason("llm", name) or ""
        llm = backends.instance("llm", name)
        assert isinstance(llm, LLM)
        for model in llm.models():
            models.append(
                pb.Model(
                    id=model,
                    backend=name,
                    available=not reason,
                    unavailable_reason=reason,
                    loaded=backends.loaded("llm", name),
                )
            )
    return models


def list_voices(backends: Backends, backend: str = "") -> list[pb.Voice]:
    names = backends.names("tts")
    if backend and backend not in names:
        raise OptionError(
            f"unknown TTS backend {backend!r}; known: {', '.join(names)}", field="backend"
        )
    voices = []
    for name in [backend] if backend else names:
        reason = backends.unavailable_reason("tts", name) or ""
        tts = backends.instance("tts", name)
        assert isinstance(tts, TTS)
        for voice in tts.voices():
            voices.append(
                pb.Voice(
                    id=voice.id,
                    name=voice.name,
                    language=voice.language,
                    gender=voice.gender,
                    backend=name,
                    available=not reason,
                    unavailable_reason=reason,
                )
            )
    return voices


# Model ids that were renamed: still accepted wherever a model is named (a stored config or
# campaign keeps working) and read as the model's own name. Not listed by ListModels.
MODEL_ALIASES = {"qwen2.5-0.5b-instruct": "qwen2.5-coder-0.5b-instruct"}


def model_id(model: str) -> str:
    """The id a model is known by now, for `model` as a client or a stored row names it."""
    return MODEL_ALIASES.get(model, model)


def llm_backend_for(backends: Backends, model: str, field: str = "llm_model") -> str:
    """The LLM backend serving `model`; OptionError (NOT_FOUND) naming the choices if none."""
    entries = [(m.id, m.backend) for m in list_models(backends)]
    return _backend_of(entries, model_id(model), "model", field)


def tts_backend_for(backends: Backends, voice: str, field: str = "tts_voice") -> str:
    """The TTS backend speaking `voice`; OptionError (NOT_FOUND) naming the choices if none."""
    return _backend_of([(v.id, v.backend) for v in list_voices(backends)], voice, "voice", field)


def _backend_of(entries: list[tuple[str, str]], wanted: str, what: str, field: str) -> str:
    for entry_id, backend in entries:
        if entry_id == wanted:
            return backend
    known = ", ".join(entry_id for entry_id, _ in entries)
    raise OptionError(f"{field} {wanted!r} is not a known {what}; available: {known}", field=field)


def check_stt(backends: Backends, stt: str, field: str = "stt") -> None:
    try:
        reason = backends.unavailable_reason("stt", stt)
    except BackendError as err:
        raise OptionError(str(err), field=field) from err
    if reason:
        raise OptionError(
            f"STT backend {stt!r} is unavailable: {reason}", kind="unavailable", field=field
        )


@dataclass(frozen=True)
class Defaults:
    stt: str
    llm_model: str
    tts_voice: str
    system_prompt: str
    # The shared config's version in the store (the API's etag); 0 until an UpdateConfig.
    version: int = 0

    def to_proto(self) -> pb.Config:
        return pb.Config(
            stt=self.stt,
            llm_model=self.llm_model,
            tts_voice=self.tts_voice,
            system_prompt=self.system_prompt,
            etag=str(self.version),
        )


class ServerDefaults:
    """The defaults new sessions start from: this replica's own (from its environment) with the
    fields set by UpdateConfig on any replica on top, as the shared store holds them.

    It owns the task that follows the store (`start`/`close`), so a change made on another
    replica reaches this one's sessions and WatchConfig streams.
    """

    def __init__(self, own: Defaults, store: CampaignStore) -> None:
        self._own = own
        self._store = store
        self._value = own
        self._changed = asyncio.Condition()
        self._closed = False
        self._applied: ConfigRecord | None = None  # the newest store record applied
        self._follower: asyncio.Task[None] | None = None

    @property
    def value(self) -> Defaults:
        return self._value

    async def start(self) -> None:
        """Read the shared config now (a new replica starts with it), then follow its changes."""
        await self._apply(await asyncio.to_thread(self._store.get_config))
        self._follower = asyncio.create_task(self._follow(), name="follow-shared-config")

    async def _follow(self) -> None:
        changes = self._store.config_changes()
        try:
            async for record in changes:
                await self._apply(record)
        finally:
            await changes.aclose()

    async def _apply(self, record: ConfigRecord) -> None:
        async with self._changed:
            last = self._applied
            if last is not None and (record == last or record.version < last.version):
                # Seen already (the replica that wrote it applied it at once), or a re-read
                # that started before a newer write. The same version with other fields is
                # applied: a database restored from a backup counts its versions again.
                return
            self._applied = record
            fields = dict(record.fields)
            if "llm_model" in fields:
                fields["llm_model"] = model_id(fields["llm_model"])
            self._value = replace(self._own, **fields, version=record.version)
            self._changed.notify_all()

    async def update(self, fields: dict[str, str], expected_version: int | None = None) -> Defaults:
        """Write `fields` (checked by session_setup.config_update_fields) all at once to the
        shared store (ConfigConflict when `expected_version` is stale; store errors propagate)."""
        record = await asyncio.to_thread(self._store.update_config, fields, expected_version)
        await self._apply(record)
        return self._value

    async def watch(self) -> AsyncIterator[Defaults]:
        """The current value, then every change, until `close()`.

        The lock is never held across a yield: a slow subscriber cannot hold up `update`; it
        gets the latest value when it comes back (bursts coalesce).
        """
        seen: Defaults | None = None
        while True:
            async with self._changed:
                while not self._closed and self._value is seen:
                    await self._changed.wait()
                if self._closed:
                    return
                seen = self._value
            yield seen

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        async with self._changed:
            self._closed = True
            self._changed.notify_all()
