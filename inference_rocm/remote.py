"""The `remote` backend: a llama-server someone else runs, reached at an http(s):// URL.

Nothing is started and nothing is stopped: the model drives the server with the
same client as a child of ours, and `close()` only closes our connections. What
a local file would say (the context, the vocabulary, the size) comes from the
server's `/props` and `/v1/models`. A broken connection is `ConnectionLost`, never
a crash: the server may have restarted, and the next request connects anew.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, final

from inference_core._locations import redacted
from inference_core.errors import (
    ConnectionLost,
    GenerationError,
    GenerationTimeout,
    InvalidValue,
    KeyRefused,
    ServerNotReady,
    ServerUnreachable,
    TlsVerificationFailed,
    UnexpectedServer,
)
from inference_core.protocols import BackendStatus
from inference_core.streams import GenerationScope
from inference_core.types import LoadConfig, ModelInfo, refuse_options

from . import wire
from .client import RequestRejected, ServerClient
from .flags import SERVER_FIELDS
from .model import LlamaServerModel

if TYPE_CHECKING:
    import ssl

__all__ = ["KEY_VARIABLE", "RemoteBackend", "RemoteServer", "attach"]

logger = logging.getLogger(__name__)

KEY_VARIABLE = "LLAMA_API_KEY"  # the variable llama-server itself reads its key from
_SCHEMES = ("http", "https")
_LOADING_POLL = 0.25  # seconds between /health checks while the server loads its model
# A TCP connect and TLS handshake take a round trip or two: a server that lets one wait
# longer is not the server asked for (a plain one reading a ClientHello as a request).
_CONNECT_TIMEOUT = 10.0
# What to do about a certificate, by OpenSSL's verify code, where a CA is not the fix.
_VERIFY_ADVICE = {
    10: "it has expired: the server needs a new one",  # X509_V_ERR_CERT_HAS_EXPIRED
    9: "it is not valid yet: check the clocks of both machines",  # X509_V_ERR_CERT_NOT_YET_VALID
    62: "it was made for other names: use a host name it names, or give the server a "
    "certificate for this one",  # X509_V_ERR_HOSTNAME_MISMATCH
    64: "it was made for other addresses: use a host name or address it names, or give "
    "the server a certificate for this one",  # X509_V_ERR_IP_ADDRESS_MISMATCH
}
# Answers of a server (or the proxy before it) that will be ready: loading, restarting.
_NOT_READY = (502, 503, 504)


@final
class RemoteServer:
    """A llama-server someone else runs: our client to it, and nothing to stop."""

    def __init__(
        self,
        url: str,
        host: str,
        port: int,
        api_key: str | None,
        *,
        tls: ssl.SSLContext | None,
        base_path: str,
        model: str | None = None,
    ) -> None:
        self.url = url
        self.keyed = api_key is not None  # whether a key is sent (never the key itself)
        self.client = ServerClient(
            host,
            port,
            api_key,
            alive=lambda: True,  # a remote process cannot be watched; deadlines bound waits
            diagnose=self.diagnose,
            tls=tls,
            base_path=base_path,
            model=model,
        )

    def where(self) -> str:
        return f"at {self.url}"

    def diagnose(self, what: str) -> ConnectionLost:
        return ConnectionLost(
            f"the connection to the llama-server at {self.url} broke: {what}. It may have "
            "restarted or be out of reach; the model stays usable, and the next request "
            "connects anew"
        )

    def stop(self) -> None:
        self.client.close()

    restarts = 0  # not ours to start again

    @property
    def asleep(self) -> bool:
        return wire.props(self.client.request("GET", "/props")).sleeping


def _parse(url: str) -> tuple[str, str, int, str]:
    """scheme, host, port and path prefix of a server URL; anything else is refused,
    naming the URL without any user name or password it holds."""
    shown = redacted(url)
    if shown != url:
        raise InvalidValue(
            "path",
            f"{shown!r} holds a user name or password: give the key as api_key= or in "
            f"{KEY_VARIABLE}, where it stays out of logs and errors",
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidValue("path", f"{url!r} is not a valid URL: {error}") from None
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise InvalidValue(
            "path", f"{url!r} is not a server URL: the remote backend takes http:// or https://"
        )
    if parts.query or parts.fragment:
        raise InvalidValue("path", f"a server URL takes no query or fragment, got {url!r}")
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port or default, parts.path.rstrip("/")


def _tls_context(config: LoadConfig, url: str) -> ssl.SSLContext:
    """The system's trust store (or SSL_CERT_FILE), or only the named CA bundle."""
    import ssl

    if config.ca_bundle is not None and not os.path.isfile(config.ca_bundle):
        raise InvalidValue("ca_bundle", f"ca_bundle {config.ca_bundle!r} is not a file")
    try:
        context = ssl.create_default_context(cafile=config.ca_bundle)
    except ssl.SSLError as error:
        raise InvalidValue(
            "ca_bundle",
            f"ca_bundle {config.ca_bundle!r} holds no certificate OpenSSL can read "
            f"({error.reason or error}): it must be PEM, one or more "
            "'-----BEGIN CERTIFICATE-----' blocks",
        ) from None
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        logger.warning(
            "TLS certificate checks are off for %s (verify_tls=False): anyone on the way can "
            "read and change the prompts, the answers and the API key; name the server's CA "
            "with ca_bundle= instead",
            url,
        )
    return context


def _check_config(config: LoadConfig, scheme: str) -> None:
    """Options that only shape a server we start, or only mean something for https."""
    refuse_options(
        config,
        SERVER_FIELDS,
        lambda name: (
            f"{name} is chosen by whoever starts the server; the remote backend "
            "attaches to a running one and cannot change it: leave it unset, or set it on that "
            "server's command line"
        ),
    )
    if scheme != "https":
        refuse_options(
            config, ("ca_bundle", "verify_tls"), lambda name: f"{name} is for https:// URLs only"
        )


def _connect_error(url: str, error: OSError, waited: float) -> ServerUnreachable:
    import ssl

    if isinstance(error, ssl.SSLCertVerificationError):
        advice = _VERIFY_ADVICE.get(
            error.verify_code,
            "name the CA that signed it with ca_bundle= (or SSL_CERT_FILE), or add it to "
            "the system's trust store",
        )
        return TlsVerificationFailed(
            url, f"the certificate of {url} is not trusted ({error.verify_message}): {advice}"
        )
    if isinstance(error, ssl.SSLError):
        return ServerUnreachable(
            url,
            f"the TLS handshake with {url} failed ({error.reason or error}): is it an "
            "https server? A plain one is reached with http://",
        )
    if isinstance(error, TimeoutError) and "handshake" in str(error):
        return ServerUnreachable(
            url,
            f"{url} did not complete a TLS handshake within {waited:.3g} s: is it an "
            "https server? A plain one is reached with http://",
        )
    if isinstance(error, TimeoutError):
        reason = f"no answer within {waited:.3g} s"
    else:
        reason = error.strerror or str(error)
    return ServerUnreachable(
        url,
        f"cannot reach a server at {url} ({reason}): check that it is running and that "
        "the host and port are right",
    )


def _key_refused(server: RemoteServer, detail: str) -> KeyRefused:
    if not server.keyed:
        return KeyRefused(
            server.url,
            f"the server at {server.url} asks for an API key ({detail}) and none was given: "
            f"set {KEY_VARIABLE}, or pass api_key=",
        )
    return KeyRefused(
        server.url,
        f"the server at {server.url} refused the API key ({detail}): give the right one as "
        f"api_key= or in {KEY_VARIABLE}",
    )


def _get(server: RemoteServer, path: str, deadline: float) -> Any:
    """One JSON GET within the load's deadline; a refused key is KeyRefused."""
    scope = GenerationScope(timeout=max(0.001, deadline - time.monotonic()))
    try:
        return server.client.request("GET", path, scope=scope)
    except RequestRejected as error:
        if error.status in (401, 403):
            raise _key_refused(server, error.server_message) from None
        raise UnexpectedServer(
            server.url,
            f"{server.url}{path} answered {error.status} ({error.server_message}): is this "
            "a llama-server, at the right path?",
        ) from None
    except GenerationTimeout:
        raise ServerNotReady(
            server.url, f"{server.url}{path} did not answer within the load timeout"
        ) from None
    except ConnectionLost as error:
        raise ServerUnreachable(server.url, str(error)) from None
    except GenerationError as error:
        raise UnexpectedServer(
            server.url, f"{server.url} does not answer as a llama-server does: {error}"
        ) from None


def _wait_until_ready(server: RemoteServer, deadline: float, timeout: float) -> None:
    """`/health` until 200: connection problems raise at once; a 503 (loading), or a
    proxy's 502 or 504 (the server behind it restarting), waits."""
    url = server.url
    connected = False  # a failed connection is told apart by opening one on its own
    while True:
        remaining = max(0.001, min(_CONNECT_TIMEOUT, deadline - time.monotonic()))
        status = server.client.status_of("/health", timeout=remaining) if connected else 0
        if status == 0:
            try:
                server.client.connect(remaining).close()
            except OSError as error:
                raise _connect_error(url, error, remaining) from None
            if not connected:
                connected = True
                continue
        if status == 200:
            return
        if status in (401, 403):
            raise _key_refused(server, f"/health answered {status}")
        if status not in _NOT_READY:
            answer = f"answered {status}" if status else "does not answer HTTP"
            raise UnexpectedServer(
                url,
                f"{url}/health {answer}: is this a llama-server, at the right path? (an "
                "https server is reached with https://)",
            )
        if time.monotonic() + _LOADING_POLL > deadline:
            raise ServerNotReady(
                url,
                f"the llama-server at {url} was still not ready (loading its model, or "
                f"restarting behind a proxy) after {timeout:g} s: try again once it answers "
                f"{url}/health with 200, or give it a longer load_timeout (--load-timeout)",
            )
        time.sleep(_LOADING_POLL)


def _size_label(parameters: int) -> str:
    if parameters >= 1_000_000_000:
        return f"{parameters / 1e9:.1f}B"
    return f"{round(parameters / 1e6)}M" if parameters else ""


def _listed(names: Sequence[str], most: int = 20) -> str:
    """A server's model names for a message: the first `most`, each cut to 100 characters
    (a hostile server's list would otherwise fill it)."""
    shown = ", ".join(f"{name:.100}" for name in names[:most]) or "none"
    return f"{shown} and {len(names) - most} more" if len(names) > most else shown


def _model_info(url: str, props: wire.Props, meta: wire.ModelMeta) -> ModelInfo:
    """What /props and /v1/models say of the model; llama-server reports no architecture
    and no layer count, so those stay empty."""
    parameters, size = meta.parameters, meta.size
    name = os.path.basename(props.model_path)
    return ModelInfo(
        architecture="",
        name=name[: -len(".gguf")] if name.lower().endswith(".gguf") else name,
        context_length=meta.trained_context,
        block_count=0,
        vocab_size=meta.vocab_size,
        embedding_length=meta.embedding_length,
        file_type=props.file_type or meta.file_type or "unknown",
        quant_bits=round(size * 8 / parameters, 2) if parameters else 0.0,
        size_label=_size_label(parameters),
        path=url,
        file_size=size,
    )


def attach(
    url: str, config: LoadConfig, *, environ: Mapping[str, str] | None = None
) -> LlamaServerModel[RemoteServer]:
    """A model over the llama-server at `url`, the whole load within `config.load_timeout`."""
    scheme, host, port, base_path = _parse(url)
    _check_config(config, scheme)
    env = os.environ if environ is None else environ
    key = config.api_key or env.get(KEY_VARIABLE) or None
    tls = _tls_context(config, url) if scheme == "https" else None
    server = RemoteServer(url, host, port, key, tls=tls, base_path=base_path, model=config.model)
    deadline = time.monotonic() + config.load_timeout
    try:
        _wait_until_ready(server, deadline, config.load_timeout)
        props_answer = _get(server, "/props", deadline)
        if config.model is None and wire.is_router(props_answer):
            served = wire.model_ids(_get(server, "/v1/models", deadline))
            raise InvalidValue(
                "model",
                f"{url} is a llama-server router serving several models: name one with "
                f"model=NAME; it serves {_listed(served)}",
            )
        props = wire.props(props_answer)
        models = _get(server, "/v1/models", deadline)
        info = _model_info(url, props, wire.model_meta(models, config.model))
    except wire.BadAnswer as bad:
        server.stop()
        raise UnexpectedServer(
            url, f"{url}{bad.endpoint} is not a llama-server's: {bad.field} {bad.problem}"
        ) from None
    except BaseException:
        server.stop()
        raise
    logger.info("attached to the llama-server at %s (%s)", url, info.name or "unnamed model")
    return LlamaServerModel(
        server,
        info,
        model_type=info.architecture or "unknown",
        context_len=props.context_len,
        slots=props.slots or 1,
        embed_batch=props.context_len if config.embeddings else None,
        props=props,
    )


@final
class RemoteBackend:
    """A running llama-server at an http:// or https:// URL: `load("http://host:8080")`."""

    name = "remote"
    priority = 0
    schemes = _SCHEMES

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def available(self) -> bool:
        return True  # it needs nothing here but a URL

    def status(self) -> BackendStatus:
        env = os.environ if self._environ is None else self._environ
        key = "set" if env.get(KEY_VARIABLE) else "not set"
        return BackendStatus(
            self.name,
            self.priority,
            True,
            (),
            (
                f"attaches to a running llama-server at an http:// or https:// URL; "
                f"{KEY_VARIABLE} is {key}",
            ),
        )

    def load_model(self, path: str, config: LoadConfig) -> LlamaServerModel[RemoteServer]:
        return attach(path, config, environ=self._environ)
