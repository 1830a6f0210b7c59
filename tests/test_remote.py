"""The remote backend against real llama-servers started by hand on loopback.

Fakes stand in only where the real server cannot be made to do it on demand: a
server still loading its model, and one that accepts a connection and says nothing.
"""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import secrets
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import inference_core as ic
from inference_core import registry
from inference_core.testing import BackendContract, TextModelContract
from inference_rocm.model import LlamaServerModel
from inference_rocm.remote import RemoteBackend, RemoteServer, _parse

from .external import KEY, ExternalServer, health
from .procs import connection_inodes, free_port, wait_for
from .scripted import Serve, scripted_servers
from .test_cli import cli

pytestmark = pytest.mark.server

PROMPTS = ("The capital of France is", "def fibonacci(n):")
ENDLESS = "Count from one to a thousand: 1, 2, 3,"


@pytest.fixture(scope="module")
def remote(external_server: ExternalServer) -> Iterator[ic.TextModel]:
    with ic.load(external_server.url, api_key=KEY) as model:
        yield model


def _props(url: str) -> dict[str, object]:
    request = urllib.request.Request(f"{url}/props", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        value: dict[str, object] = json.load(answer)
        return value


def ids(model: ic.TextModel, prompt: str, tokens: int = 16) -> list[int]:
    return [token.id for token in model.generate(prompt, max_tokens=tokens)]


# -- the same model, through someone else's server --------------------------


def test_tokens_chat_and_classify_equal_a_local_load(
    remote: ic.TextModel, shared_model: ic.TextModel
) -> None:
    for prompt in PROMPTS:
        assert ids(remote, prompt) == ids(shared_model, prompt)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    assert remote.chat(question, max_tokens=16).text() == (
        shared_model.chat(question, max_tokens=16).text()
    )
    assert remote.classify(list(PROMPTS)) == shared_model.classify(list(PROMPTS))
    batch = remote.batch_generate(list(PROMPTS), max_tokens=8)
    assert [r.text for r in batch] == [
        r.text for r in shared_model.batch_generate(list(PROMPTS), max_tokens=8)
    ]


def test_what_a_file_would_say_comes_from_the_server(
    remote: ic.TextModel, external_server: ExternalServer, smollm2_path: str
) -> None:
    props = _props(external_server.url)
    settings = props["default_generation_settings"]
    assert isinstance(settings, dict)
    assert remote.context_len == settings["n_ctx"] == 2048
    from_file = ic.inspect_model(smollm2_path)
    assert remote.info.path == external_server.url
    assert remote.info.name == Path(smollm2_path).stem
    assert remote.info.vocab_size == from_file.vocab_size
    assert remote.info.embedding_length == from_file.embedding_length
    assert remote.info.context_length == from_file.context_length
    assert remote.info.file_type == props["model_ftype"]
    assert 0 < remote.info.file_size <= os.path.getsize(smollm2_path)
    assert remote.model_type == "unknown"  # llama-server does not report the architecture
    assert isinstance(remote, LlamaServerModel) and remote.slots == props["total_slots"] == 4


def test_metrics_are_the_servers_own(remote: ic.TextModel) -> None:
    stream = remote.generate(PROMPTS[0], max_tokens=8)
    assert len(list(stream)) == 8
    metrics = stream.metrics
    assert metrics is not None and metrics.generated_tokens == 8
    assert metrics.decode_tokens_per_second > 0


class TestRemoteModelContract(TextModelContract):
    @pytest.fixture
    def model(self, remote: ic.TextModel) -> Iterator[ic.TextModel]:
        yield remote


class TestRemoteBackendContract(BackendContract):
    load_options = {"api_key": KEY}  # noqa: RUF012

    @pytest.fixture
    def backend(self) -> ic.Backend:
        return RemoteBackend()

    @pytest.fixture
    def model_path(self, external_server: ExternalServer) -> str:
        return external_server.url


# -- choosing the backend ------------------------------------------------------


def test_auto_picks_remote_for_a_url_and_never_for_a_file(
    external_server: ExternalServer, smollm2_path: str
) -> None:
    with ic.load(external_server.url, api_key=KEY) as model:
        assert isinstance(model, LlamaServerModel) and isinstance(model.server, RemoteServer)
    with pytest.raises(ic.InvalidValue, match="backend 'llama_cpp' loads model files"):
        ic.load(external_server.url, backend="llama_cpp", api_key=KEY)
    with pytest.raises(ic.InvalidValue, match="backend 'remote' loads http:// or https://"):
        ic.load(smollm2_path, backend="remote")
    try:
        ic.unregister("llama_cpp")
        ic.unregister("rocm")
        assert [s.name for s in ic.backends()] == ["remote"]
        with pytest.raises(ic.NoBackendAvailable):
            ic.load(smollm2_path)
    finally:
        registry.reset()


def test_options_that_shape_a_server_are_refused(external_server: ExternalServer) -> None:
    shaping = (
        {"context_len": 512},
        {"threads": 2},
        {"rpc_servers": ("h:1",)},
        {"keep_alive": 5.0},
        {"restart": False},
        {"cache_type": "q8_0"},
        {"speculative": "ngram"},
    )
    for options in shaping:
        (name,) = options
        with pytest.raises(ic.InvalidValue, match=f"{name} is chosen by whoever starts") as error:
            ic.load(external_server.url, api_key=KEY, **options)
        assert error.value.field == name
    with pytest.raises(ic.InvalidValue, match="ca_bundle is for https:// URLs only"):
        ic.load(external_server.url, api_key=KEY, ca_bundle=__file__)


@given(
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z0-9-]{1,10}){0,3}", fullmatch=True),
    st.integers(1, 65535) | st.none(),
    st.from_regex(r"(/[a-z0-9_-]{1,8}){0,3}/?", fullmatch=True),
)
def test_a_server_url_parses_into_its_parts(
    scheme: str, host: str, port: int | None, path: str
) -> None:
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}{path}"
    default = 443 if scheme == "https" else 80
    assert _parse(url) == (scheme, host, port or default, path.rstrip("/"))


def test_a_password_in_a_url_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    shown = []
    for url in (
        "http://user:hunter2@host:99999",
        "ftp://user:hunter2@host/x",
        "http://u:hunter2@h",
    ):
        for backend in ("auto", "remote", "llama_cpp"):
            with pytest.raises((ic.InvalidValue, ic.NoBackendAvailable)) as error:
                ic.load(url, backend=backend)
            shown.append(str(error.value))
    assert sum("***@" in message for message in shown) >= 6, shown  # named, redacted
    assert all("hunter2" not in text for text in [*shown, caplog.text])


def test_a_ca_bundle_that_is_not_pem_is_an_invalid_value(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ic.InvalidValue, match="holds no certificate") as error:
        RemoteBackend().load_model("https://127.0.0.1:1", ic.LoadConfig(ca_bundle=garbage))
    assert error.value.field == "ca_bundle"


def test_options_for_a_remote_server_are_refused_for_a_file(smollm2_path: str) -> None:
    for options in ({"api_key": "k"}, {"ca_bundle": __file__}, {"verify_tls": False}):
        (name,) = options
        with pytest.raises(ic.InvalidValue, match=f"{name} is for a llama-server at") as error:
            ic.load(smollm2_path, backend="llama_cpp", **options)
        assert error.value.field == name


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://host", "takes http:// or https://"),
        ("http://", "takes http:// or https://"),
        ("http://host:99999", "not a valid URL"),
        ("http://user:secret@host", "user name or password"),
        ("http://user:secret@host:99999", "user name or password"),
        ("http://host/?key=1", "no query or fragment"),
    ],
)
def test_a_bad_url_is_an_invalid_value(url: str, problem: str) -> None:
    with pytest.raises(ic.InvalidValue, match=problem) as error:
        RemoteBackend().load_model(url, ic.LoadConfig())
    assert error.value.field == "path"
    assert "secret" not in str(error.value)


# -- the key -----------------------------------------------------------------


def test_the_key_comes_from_llama_api_key(external_server: ExternalServer) -> None:
    backend = RemoteBackend(environ={"LLAMA_API_KEY": KEY})
    with backend.load_model(external_server.url, ic.LoadConfig()) as model:
        assert ids(model, PROMPTS[0], 2)


def test_a_missing_or_wrong_key_is_refused_by_name(external_server: ExternalServer) -> None:
    backend = RemoteBackend(environ={})
    with pytest.raises(ic.KeyRefused, match=r"asks for an API key .* none was given") as missing:
        backend.load_model(external_server.url, ic.LoadConfig())
    assert missing.value.url == external_server.url and external_server.url in str(missing.value)
    wrong = "not-the-key-" + secrets.token_hex(8)
    with pytest.raises(ic.KeyRefused, match="refused the API key") as refused:
        backend.load_model(external_server.url, ic.LoadConfig(api_key=wrong))
    assert wrong not in str(refused.value)


def test_the_key_never_shows_in_a_repr_a_log_or_an_error(
    external_server: ExternalServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = ic.LoadConfig(api_key=KEY)
    with ic.load(external_server.url, config=config) as model:
        shown = [repr(config), str(config), repr(model)]
        list(model.generate(PROMPTS[0], max_tokens=4))
        with pytest.raises(ic.ContextOverflow) as overflow:
            list(model.generate("word " * 3000, max_tokens=4))
        shown.append(str(overflow.value))
    assert "'***'" in repr(config)
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    for text in [*shown, caplog.text]:
        assert KEY not in text


def test_the_cli_attaches_with_the_key_from_the_environment(
    external_server: ExternalServer,
) -> None:
    argv = ["run", "--model", external_server.url, "--temperature", "0", "--max-tokens", "8"]
    result = cli(*argv, PROMPTS[0], env={"LLAMA_API_KEY": KEY})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" Paris")


# -- servers that cannot be used -------------------------------------------------


def test_nothing_listening_is_unreachable_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ic.ServerUnreachable, match="Connection refused") as error:
        RemoteBackend().load_model(url, ic.LoadConfig(load_timeout=30))
    assert error.value.url == url and "check that it is running" in str(error.value)


def test_an_unknown_host_is_unreachable() -> None:
    with pytest.raises(ic.ServerUnreachable, match=r"no-such-host\.invalid"):
        RemoteBackend().load_model("http://no-such-host.invalid:8080", ic.LoadConfig())


@pytest.fixture
def web_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server that is not a llama-server: the standard library's file server."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_web_server_that_is_not_a_llama_server_is_named(web_root: tuple[Path, str]) -> None:
    root, url = web_root
    with pytest.raises(ic.UnexpectedServer, match="/health answered 404"):
        RemoteBackend().load_model(url, ic.LoadConfig())
    (root / "health").write_text("{}")
    (root / "props").write_text('{"name": "something else"}')
    with pytest.raises(ic.UnexpectedServer, match="/props is not a llama-server's"):
        RemoteBackend().load_model(url, ic.LoadConfig())


@pytest.fixture
def scripted() -> Iterator[Serve]:
    """Servers answering as a test says: a llama-server still loading, or a proxy before
    one that is down, which the real server cannot be made to be on demand."""
    with scripted_servers() as serve:
        yield serve


LOADING = b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}'
BAD_GATEWAY = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@pytest.mark.parametrize(
    "answer", [(503, LOADING), (502, BAD_GATEWAY), (504, b"")], ids=["loading", "502", "504"]
)
def test_a_server_not_ready_yet_is_waited_for_then_named(
    scripted: Serve, answer: tuple[int, bytes]
) -> None:
    url = scripted({"/health": answer})
    started = time.monotonic()
    with pytest.raises(ic.ServerNotReady, match=r"still not ready .* after 1 s"):
        RemoteBackend().load_model(url, ic.LoadConfig(load_timeout=1))
    assert time.monotonic() - started >= 0.75, "it gave up without waiting for the load"


def test_a_proxys_error_page_for_the_key_is_a_refused_key(
    scripted: Serve,
) -> None:
    url = scripted({"/health": (200, b"{}"), "/props": (401, b"<html>401 Authorization</html>")})
    with pytest.raises(ic.KeyRefused, match="401 Authorization"):
        RemoteBackend().load_model(url, ic.LoadConfig(api_key="k"))


def test_a_server_that_never_answers_fails_within_the_load_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ic.UnexpectedServer, match="does not answer HTTP"):
            RemoteBackend().load_model(url, ic.LoadConfig(load_timeout=1))
        # Under the 10 s a connection may take by itself: the load timeout bounds it.
        assert time.monotonic() - started < 8, "it waited far past its load timeout"


# -- the server's life is not ours --------------------------------------------


def test_close_closes_our_connections_and_leaves_the_server_running(
    external_server: ExternalServer,
) -> None:
    others = connection_inodes(external_server.port)  # the module's model holds some
    model = ic.load(external_server.url, api_key=KEY)
    assert ids(model, PROMPTS[0], 2)
    assert model.classify([PROMPTS[0]])  # a whole answer: its connection is kept alive
    ours = connection_inodes(external_server.port) - others
    assert ours, "no kept-alive connection to close"
    model.close()
    assert not connection_inodes(external_server.port) & ours
    assert external_server.running() and health(external_server.url) == 200
    with pytest.raises(ic.ModelClosed):
        list(model.generate(PROMPTS[0], max_tokens=2))


def test_a_remote_model_says_whether_its_server_sleeps(
    llama_server_binary: str, smollm2_path: str, tmp_path: Path
) -> None:
    server = ExternalServer(
        llama_server_binary,
        smollm2_path,
        KEY,
        "--sleep-idle-seconds",
        "1",
        log=tmp_path / "server.log",
    )
    try:
        with ic.load(server.url, api_key=KEY) as model:
            assert isinstance(model, LlamaServerModel)
            before = ids(model, PROMPTS[0])
            assert wait_for(lambda: model.asleep, 60.0)
            assert ids(model, PROMPTS[0]) == before
            assert not model.asleep
            assert model.restarts == 0  # not ours to start again
    finally:
        server.stop()


def test_a_restart_fails_the_stream_in_flight_and_the_next_request_works(
    llama_server_binary: str, smollm2_path: str, tmp_path: Path
) -> None:
    server = ExternalServer(llama_server_binary, smollm2_path, KEY, log=tmp_path / "server.log")
    try:
        with ic.load(server.url, api_key=KEY) as model:
            before = ids(model, PROMPTS[0])
            stream = model.generate(ENDLESS, max_tokens=5000)
            next(stream)
            server.stop()
            with pytest.raises(ic.ConnectionLost, match="the next request connects anew"):
                list(stream)
            assert isinstance(stream.err(), ic.ConnectionLost)
            with pytest.raises(ic.ConnectionLost):  # down: a typed error, not a hang
                list(model.generate(PROMPTS[0], max_tokens=2))
            server.start()
            assert ids(model, PROMPTS[0]) == before
    finally:
        server.stop()
