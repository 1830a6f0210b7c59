"""The exception tree: every failure a caller can handle is an `InferenceError`.

Messages say what happened, to which file or process, and what to do about it.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = [
    "BackendNotFound",
    "BackendUnavailable",
    "Cancelled",
    "ConnectionLost",
    "ContextOverflow",
    "GenerationError",
    "GenerationTimeout",
    "HubAccessDenied",
    "HubDownloadFailed",
    "HubError",
    "HubFileNotFound",
    "HubNotInstalled",
    "HubRepoNotFound",
    "HubUnreachable",
    "IncompatibleDraftModel",
    "InferenceError",
    "InvalidChatTemplate",
    "InvalidModelFile",
    "InvalidValue",
    "KeyRefused",
    "ModelClosed",
    "ModelLoadError",
    "NoBackendAvailable",
    "ServerCrashed",
    "ServerNotReady",
    "ServerStartError",
    "ServerUnreachable",
    "SessionMismatch",
    "SessionNotFound",
    "TlsVerificationFailed",
    "UnexpectedServer",
    "UnsupportedOption",
    "WorkersUnreachable",
]


class InferenceError(Exception):
    """Base of every error this library raises on purpose."""


class InvalidValue(ValueError):
    """A field of a config or value type was given a value it does not take.

    A `ValueError` (a mistake in the call, not a failure at run time); `field`
    names the field, for callers that map it back to an option of their own.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class BackendNotFound(InferenceError, LookupError):
    """No backend of that name is registered."""


class BackendUnavailable(InferenceError):
    """The named backend exists but cannot run here; the message says why."""

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


class NoBackendAvailable(InferenceError):
    """`backend="auto"` found nothing usable; the message lists every backend and why."""


class ModelLoadError(InferenceError):
    """The model could not be loaded."""


class InvalidModelFile(ModelLoadError, ValueError):
    """The model file is missing, unreadable or not a valid GGUF file."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class IncompatibleDraftModel(ModelLoadError, ValueError):
    """The draft model for speculative decoding (`LoadConfig.draft_model`) has another
    vocabulary than the model's, so its guesses cannot be checked; `path` is the draft."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class InvalidChatTemplate(ModelLoadError, ValueError):
    """The chat template given for a model (`LoadConfig.chat_template`) does not parse or
    does not render; `problem` is what the template engine said."""

    def __init__(self, template: str, problem: str) -> None:
        super().__init__(f"the chat template {template} cannot be used: {problem}")
        self.template = template
        self.problem = problem


class _RemoteFailure(ModelLoadError):
    """A server the model lives on, not started by us, could not be used: `url` is where."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(message)
        self.url = url


class ServerUnreachable(_RemoteFailure):
    """Nothing answers at the address (refused, no such host, a timeout, a TLS failure)."""


class TlsVerificationFailed(ServerUnreachable):
    """The server's certificate was not trusted: name its CA (`ca_bundle`), never
    turn verification off outside a test."""


class KeyRefused(_RemoteFailure):
    """The server refused the API key (or asked for one that was not given)."""


class UnexpectedServer(_RemoteFailure):
    """Something answers at the address, but not as the server the backend drives."""


class ServerNotReady(_RemoteFailure):
    """The server is up but still loading its model, past the load timeout."""


class WorkersUnreachable(ModelLoadError):
    """Workers a model was to be split over (`LoadConfig.rpc_servers`) cannot be reached;
    `workers` lists them."""

    def __init__(self, workers: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.workers = workers


class HubError(ModelLoadError):
    """A model named `hf://OWNER/REPO/FILE.gguf` could not be fetched from the Hugging Face
    Hub or found in its cache; `name` is the hf:// name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class HubNotInstalled(HubError):
    """hf:// names need `huggingface_hub`, the `hub` extra, which is not installed."""


class HubRepoNotFound(HubError, LookupError):
    """The hub has no such repository or revision (or a private one the token cannot see)."""


class HubFileNotFound(HubError, LookupError):
    """The repository has no such file; `files` lists the GGUF files it has, when the hub
    could list them (empty otherwise)."""

    def __init__(self, name: str, message: str, files: tuple[str, ...] = ()) -> None:
        super().__init__(name, message)
        self.files = files


class HubAccessDenied(HubError):
    """A gated or private repository refused us: no token (HF_TOKEN) or one without access."""


class HubUnreachable(HubError):
    """The hub (or the mirror HF_ENDPOINT names) could not be reached and the file is not
    in the cache; `cached` says whether the file, or some of its parts, are."""

    def __init__(self, name: str, message: str, *, cached: bool) -> None:
        super().__init__(name, message)
        self.cached = cached


class HubDownloadFailed(HubError):
    """A download was cut short and could not be resumed, or its bytes did not match the
    sha256 the hub announced; nothing partial or altered is kept."""


_Failure = TypeVar("_Failure", bound="_ServerFailure")


class _ServerFailure(InferenceError):
    """A server process failed: `summary` is what happened, `log_tail` its last log
    lines (the message holds both), `returncode` its exit status, negative for a
    signal, and `log` as much of its log as was kept (its first lines and its last)."""

    def __init__(
        self,
        message: str,
        *,
        log_tail: str = "",
        returncode: int | None = None,
        log: str = "",
    ) -> None:
        full = f"{message}\n--- server log (last lines) ---\n{log_tail}" if log_tail else message
        super().__init__(full)
        self.summary = message
        self.log_tail = log_tail
        self.returncode = returncode
        self.log = log or log_tail

    def retold(self, kind: type[_Failure], message: str | None = None) -> _Failure:
        """This failure as a `kind`, told with `message` (default: the same summary),
        carrying the same log, exit status and log tail."""
        return kind(
            self.summary if message is None else message,
            log_tail=self.log_tail,
            returncode=self.returncode,
            log=self.log,
        )


class ServerStartError(_ServerFailure, ModelLoadError):
    """The inference server exited, stalled or could not bind while loading."""


class GenerationError(InferenceError):
    """A generation failed; the message carries the server's own words."""


class ServerCrashed(_ServerFailure, GenerationError):
    """The server process died or dropped the connection mid-request."""


class ConnectionLost(GenerationError):
    """The connection to a server we did not start broke mid-request. The server may
    have restarted: the model stays usable and the next request connects anew."""


class ContextOverflow(GenerationError):
    """The prompt (plus what was asked to generate) does not fit the context."""

    def __init__(self, message: str, *, prompt_tokens: int = 0, context_len: int = 0) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.context_len = context_len


class GenerationTimeout(GenerationError, TimeoutError):
    """The `timeout` given to a generation ran out."""


class UnsupportedOption(InferenceError):
    """The backend cannot honour an option of the call (`json_schema`, `grammar`,
    `logprobs`, `tools`, ...); `option` names it. Raised before any token."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class _SessionError(InferenceError):
    """A saved session (`save_session`) could not be used: `name` is which."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class SessionNotFound(_SessionError, LookupError):
    """No session of that name was saved (the message lists those that were)."""


class SessionMismatch(_SessionError, ValueError):
    """The session was saved by another model, or with another context or cache type,
    whose cache this model cannot take."""


class ModelClosed(InferenceError):
    """The model was closed; load it again to use it."""


class Cancelled(InferenceError):
    """The generation was cancelled. Returned by `err()`, never raised from a stream."""
