"""The remote backend over https: a real TLS front (Debian's nginx) before a real
llama-server, with a certificate authority made here. `tox -e tls` runs these;
.ci/run installs nginx first. The certificate checks themselves (an untrusted CA, a
wrong name, verification off) run in the default run: tests/test_tls_default.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import inference_core as ic
from inference_core.testing import TextModelContract
from inference_rocm.remote import RemoteBackend

from .external import KEY, ExternalServer
from .test_remote import PROMPTS, ids
from .tls_front import TlsFront, make_pki, nginx_binary

pytestmark = [pytest.mark.tls, pytest.mark.server]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def front(
    pki: tuple[Path, Path, Path],
    external_server: ExternalServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TlsFront]:
    binary = nginx_binary()
    if binary is None:
        pytest.fail("nginx is not installed: .ci/run installs Debian's nginx-light for these tests")
    _, cert, key = pki
    tls = TlsFront(binary, tmp_path_factory.mktemp("nginx"), cert, key, external_server.port)
    yield tls
    tls.stop()


@pytest.fixture(scope="module")
def secure(front: TlsFront, pki: tuple[Path, Path, Path]) -> Iterator[ic.TextModel]:
    ca, _, _ = pki
    with ic.load(front.url, api_key=KEY, ca_bundle=ca) as model:
        yield model


def test_https_with_the_named_ca_gives_the_same_tokens(
    secure: ic.TextModel, shared_model: ic.TextModel
) -> None:
    for prompt in PROMPTS:
        assert ids(secure, prompt, 32) == ids(shared_model, prompt, 32)


class TestHttpsModelContract(TextModelContract):
    """Cancel, timeouts and threads over TLS, whose reads wait differently."""

    @pytest.fixture
    def model(self, secure: ic.TextModel) -> Iterator[ic.TextModel]:
        yield secure


def test_a_server_behind_a_path_is_reached_there(
    front: TlsFront, pki: tuple[Path, Path, Path], secure: ic.TextModel
) -> None:
    with ic.load(f"{front.url}/llm/", api_key=KEY, ca_bundle=pki[0]) as model:
        assert model.context_len == secure.context_len
        assert ids(model, PROMPTS[1]) == ids(secure, PROMPTS[1])


def test_ssl_cert_file_names_the_ca_too(
    front: TlsFront, pki: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki[0]))
    with ic.load(front.url, api_key=KEY) as model:
        assert ids(model, PROMPTS[0], 2)


def test_plain_http_to_the_tls_port_is_named(front: TlsFront) -> None:
    url = f"http://127.0.0.1:{front.port}"
    with pytest.raises(ic.UnexpectedServer, match=r"answered 400.*https://"):
        RemoteBackend().load_model(url, ic.LoadConfig(api_key=KEY))


def test_https_to_a_plain_server_is_named(external_server: ExternalServer) -> None:
    url = f"https://127.0.0.1:{external_server.port}"
    with pytest.raises(ic.ServerUnreachable, match=r"TLS handshake .* http://"):
        RemoteBackend().load_model(url, ic.LoadConfig(api_key=KEY))
