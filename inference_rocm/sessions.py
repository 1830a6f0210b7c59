"""Saved sessions: a conversation's KV cache written to disk by llama-server, read back later.

llama-server saves a slot's cache to a file (`POST /slots/N?action=save`, under its
`--slot-save-path`) and restores it into a slot, so that a prompt that starts with the
saved tokens skips their prefill. It checks neither which model wrote the file nor for
which context: a file from another model restores "fine" and answers garbage. So each
session's file has a record beside it: the model's fingerprint, the context and cache
type it ran with, the slot, and the conversation's messages; a restore checks the record
first and refuses with a typed error what the server would take.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from inference_core.errors import InvalidValue, SessionMismatch, SessionNotFound
from inference_core.types import LoadConfig, Message, Session

from . import wire
from .client import RequestRejected, ServerClient
from .gguf_meta import GgufHeader
from .rendering import tool_calls_field

__all__ = ["SESSION_NAME", "SessionIdentity", "SessionStore", "fingerprint", "sessions_folder"]

logger = logging.getLogger(__name__)

SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_RECORD_VERSION = 1
_MAX_RECORD_BYTES = 64 << 20  # a record is small; one larger is not ours
_SAMPLE = 1 << 20  # the end of the file read into a fingerprint besides its header


def sessions_folder(cache: Path) -> Path:
    """Where sessions live: `sessions/` in the library's cache folder."""
    return cache / "sessions"


def fingerprint(path: str, data_offset: int) -> str:
    """A model file's identity, cheap to take: its size, its header (metadata, vocabulary
    and tensor table) and its last MiB of weights. A copy of the file has the same one."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        digest.update(size.to_bytes(8, "little"))
        digest.update(file.read(data_offset))
        file.seek(max(data_offset, size - _SAMPLE))
        digest.update(file.read(_SAMPLE))
    return digest.hexdigest()


def _checked_name(name: object) -> str:
    if not isinstance(name, str) or not SESSION_NAME.fullmatch(name):
        raise InvalidValue(
            "name",
            "a session's name is 1 to 100 letters, digits, '.', '_' or '-', starting with "
            f"a letter or digit, got {name!r}",
        )
    return name


def _message_record(message: Message) -> dict[str, Any]:
    record: dict[str, Any] = {
        "role": message.role,
        "content": message.content if isinstance(message.content, str) else list(message.content),
    }
    if message.tool_calls:
        record["tool_calls"] = tool_calls_field(message.tool_calls)
    if message.tool_call_id is not None:
        record["tool_call_id"] = message.tool_call_id
    if message.reasoning is not None:
        record["reasoning"] = message.reasoning
    return record


def _session(name: str, tokens: int, record: dict[str, Any]) -> Session:
    prompt = record.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"its prompt is {type(prompt).__name__}, not text")
    messages = record.get("messages", ())
    if not isinstance(messages, list | tuple):
        raise ValueError(f"its messages are {type(messages).__name__}, not a list")
    return Session(name, tokens, messages, prompt)  # its converter reads the messages


@attrs.frozen
class SessionIdentity:
    """What a restore must match: the model file and the LoRA adapter on it (their
    fingerprints), the context of a slot and the cache's type."""

    model: str
    model_path: str
    adapter: str | None
    context_len: int
    cache_type: str

    @classmethod
    def of(cls, header: GgufHeader, config: LoadConfig) -> SessionIdentity:
        """The identity of a model being loaded with `config` (its context still unknown:
        the server says it once it runs). Reads the files now, while they are there."""
        adapter = config.adapter_path
        adapter_print = None if adapter is None else fingerprint(adapter, _SAMPLE)
        model = fingerprint(header.path, header.data_offset)
        return cls(model, header.path, adapter_print, 0, config.cache_type)


@attrs.frozen
class SessionStore:
    """Sessions of one loaded model, in `folder` (the server's --slot-save-path)."""

    folder: Path
    identity: SessionIdentity

    def with_context(self, context_len: int) -> SessionStore:
        return attrs.evolve(self, identity=attrs.evolve(self.identity, context_len=context_len))

    def _record_path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def save(
        self,
        client: ServerClient,
        slot: int,
        name: str,
        conversation: str | Sequence[Message],
        held: int,
    ) -> Session | None:
        """Write slot `slot`'s cache as session `name`, with the conversation it holds,
        `held` tokens of it; None when the slot held another number of tokens by the
        time it was written (another generation took it), and nothing is recorded."""
        name = _checked_name(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        answer = client.request("POST", f"/slots/{slot}?action=save", {"filename": f"{name}.slot"})
        tokens = wire.slot_tokens(answer, "n_saved")
        if tokens != held:  # the file is another conversation's: no record may name it
            logger.info("session %r: slot %d held %d tokens, not %d", name, slot, tokens, held)
            self._record_path(name).unlink(missing_ok=True)
            return None
        record = {
            "version": _RECORD_VERSION,
            **attrs.asdict(self.identity),
            "slot": slot,
            "tokens": tokens,
        }
        if isinstance(conversation, str):
            record["prompt"] = conversation
        else:
            record["messages"] = [_message_record(message) for message in conversation]
        partial = self._record_path(name).with_suffix(".json.partial")
        partial.write_text(json.dumps(record), encoding="utf-8")
        os.replace(partial, self._record_path(name))  # a reader never sees half a record
        logger.info("saved session %r: %d tokens of slot %d", name, tokens, slot)
        return _session(name, tokens, record)

    def _read_record(self, name: str) -> dict[str, Any]:
        path = self._record_path(name)
        slot_file = self.folder / f"{name}.slot"
        if not path.is_file() or not slot_file.is_file():
            saved = sorted(p.stem for p in self.folder.glob("*.json"))
            raise SessionNotFound(
                name,
                f"no session {name!r} in {self.folder}"
                + (f" (saved: {', '.join(saved[:20])})" if saved else " (none saved yet)"),
            )
        try:
            if path.stat().st_size > _MAX_RECORD_BYTES:
                raise ValueError(f"larger than {_MAX_RECORD_BYTES} bytes")
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or record.get("version") != _RECORD_VERSION:
                raise ValueError("not a session record of this library")
            return record
        except (OSError, ValueError, RecursionError) as error:
            raise SessionMismatch(
                name, f"the record of session {name!r} ({path}) cannot be read: {error}"
            ) from None

    def restore(self, client: ServerClient, name: str, slots: int) -> Session:
        """Read session `name` into the slot it was saved from (slot 0 if this server has
        fewer slots)."""
        name = _checked_name(name)
        record = self._read_record(name)
        identity = self.identity
        differences = [
            f"{field} {repr(record.get(field))[:300]}, not {getattr(identity, field)!r}"
            for field in ("context_len", "cache_type")
            if record.get(field) != getattr(identity, field)
        ]
        if record.get("adapter") != identity.adapter:
            differences.insert(0, "another LoRA adapter (adapter_path)")
        if record.get("model") != identity.model:
            model = repr(record.get("model_path"))[:300]
            differences.insert(0, f"the model {model}, not {identity.model_path!r}")
        if differences:
            raise SessionMismatch(
                name,
                f"session {name!r} was saved with {'; '.join(differences)}: load that model "
                "with the same adapter_path, context_len and cache_type to restore it",
            )
        try:
            session = _session(name, 0, record)
        except (TypeError, ValueError, RecursionError) as error:
            raise SessionMismatch(name, f"session {name!r} holds a bad message: {error}") from None
        saved_slot = record.get("slot")
        slot = saved_slot if isinstance(saved_slot, int) and 0 <= saved_slot < slots else 0
        try:
            answer = client.request(
                "POST", f"/slots/{slot}?action=restore", {"filename": f"{name}.slot"}
            )
        except RequestRejected as rejected:
            raise SessionMismatch(
                name, f"llama-server could not restore session {name!r}: {rejected.server_message}"
            ) from None
        tokens = wire.slot_tokens(answer, "n_restored")
        logger.info("restored session %r: %d tokens into slot %d", name, tokens, slot)
        return attrs.evolve(session, tokens=tokens)
