"""Certificate checks in the default run: a TLS front of Python's own `ssl` (tests/relay.py)
before a real llama-server, its certificate signed by a CA made here. nginx and the
fuller https suite are `tox -e tls` (tests/test_tls.py)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import inference_core as ic

from .external import KEY, ExternalServer
from .relay import Relay, server_context
from .test_cli import GREEDY, assert_one_line_error, cli
from .test_remote import PROMPTS, ids
from .tls_front import make_pki

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def front(pki: tuple[Path, Path, Path], external_server: ExternalServer) -> Iterator[Relay]:
    _, cert, key = pki
    relay = Relay(external_server.port, tls=server_context(cert, key))
    yield relay
    relay.close()


@pytest.fixture
def no_trust_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test names is trusted (and the system's store, which lacks our CA)."""
    for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.usefixtures("no_trust_from_the_environment")
def test_a_certificate_from_a_ca_not_trusted_is_refused_before_a_request(
    front: Relay, tmp_path: Path
) -> None:
    someone_elses_ca, _, _ = make_pki(tmp_path)
    for config in (
        ic.LoadConfig(api_key=KEY),
        ic.LoadConfig(api_key=KEY, ca_bundle=someone_elses_ca),
    ):
        with pytest.raises(ic.TlsVerificationFailed, match=r"is not trusted .*ca_bundle=") as no:
            ic.load(front.url, config=config)
        assert isinstance(no.value, ic.ServerUnreachable) and no.value.url == front.url
    assert front.requests() == [], "a request (and its key) went to an untrusted server"


def test_the_ca_that_signed_it_gives_the_servers_own_tokens(
    front: Relay, pki: tuple[Path, Path, Path], external_server: ExternalServer
) -> None:
    with (
        ic.load(front.url, api_key=KEY, ca_bundle=pki[0]) as secure,
        ic.load(external_server.url, api_key=KEY) as plain,
    ):
        for prompt in PROMPTS:
            assert ids(secure, prompt) == ids(plain, prompt)
    assert "/completion" in {request.path for request in front.requests()}  # through TLS


def test_a_name_the_certificate_does_not_hold_is_refused(
    front: Relay, pki: tuple[Path, Path, Path]
) -> None:
    url = f"https://localhost:{front.port}"  # the certificate names 127.0.0.1 and tls.test
    with pytest.raises(ic.TlsVerificationFailed, match="made for other names") as refused:
        ic.load(url, api_key=KEY, ca_bundle=pki[0])
    assert "ca_bundle=" not in str(refused.value)  # the CA is trusted: naming it is no help


@pytest.mark.usefixtures("no_trust_from_the_environment")
def test_verification_off_works_and_is_warned_about(
    front: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="inference_rocm")
    with ic.load(front.url, api_key=KEY, verify_tls=False) as model:
        assert ids(model, PROMPTS[0], 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"certificate checks are off for {front.url}" in w for w in warnings), warnings
    assert all(KEY not in record.getMessage() for record in caplog.records)


# -- the command line ----------------------------------------------------------------


UNTRUSTING = {"LLAMA_API_KEY": KEY, "SSL_CERT_FILE": None, "SSL_CERT_DIR": None}


def run_through(front: Relay, *options: str) -> subprocess.CompletedProcess[str]:
    """`inference run` against the front, its key from the environment, SSL_CERT_FILE unset."""
    return cli("run", "--model", front.url, *options, *GREEDY, PROMPTS[0], env=UNTRUSTING)


def test_the_cli_trusts_the_ca_given_with_ca_bundle_and_no_other(
    front: Relay, pki: tuple[Path, Path, Path]
) -> None:
    trusted = run_through(front, "--ca-bundle", str(pki[0]))
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.startswith(" Paris")
    refused = run_through(front)
    assert_one_line_error(refused, f"the certificate of {front.url} is not trusted")
    assert refused.stderr.rstrip().endswith("(here: --ca-bundle FILE)")


def test_the_cli_with_no_verify_tls_connects_and_warns(front: Relay) -> None:
    result = run_through(front, "--no-verify-tls")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" Paris")
    assert "WARNING" in result.stderr
    assert f"certificate checks are off for {front.url}" in result.stderr
