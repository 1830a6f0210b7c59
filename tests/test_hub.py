"""hf:// names: fetched through huggingface_hub from a stand-in for the hub on loopback.

huggingface_hub reads its environment (HF_ENDPOINT, HF_HOME, HF_TOKEN,
HF_HUB_OFFLINE) when first imported, as in a user's program, so every load runs
in a process of its own (`tests.hub_child`, or the `inference` command) with the
environment the test sets. No test reaches the internet.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

import inference_core as ic
from inference_core import hub
from tests.hub_standin import COMMIT, Repo, StandIn
from tests.hub_standin import sha256 as sha256_of
from tests.test_cli import cli

ROOT = Path(__file__).parent.parent
SMOL = "hf://owner/smol/smol.gguf"
TOKEN = "hf_standin_secret_4f2a9c"
PART = b"GGUF" + bytes(100_000)  # split parts FakeBackend never reads
PROJECTOR = b"GGUF" + bytes(1000) + b"projector"  # nor projectors
# A revision a hostile mirror answers: refs/<it> is, from the repository's cache folder
# (HF_HOME/hub/models--owner--smol), the file `escaped` beside HF_HOME.
ESCAPE = "../../../../escaped"


@pytest.fixture(scope="session")
def smollm2_bytes(smollm2_path: str) -> bytes:
    return Path(smollm2_path).read_bytes()


@pytest.fixture
def standin(smollm2_bytes: bytes) -> Iterator[StandIn]:
    server = StandIn(
        {
            "owner/smol": Repo(
                {
                    "smol.gguf": smollm2_bytes,
                    "README.md": b"# smol\n",
                    "split/smol-00001-of-00002.gguf": PART + b"1",
                    "split/smol-00002-of-00002.gguf": PART + b"2",
                },
                branches=("main", "v1", ESCAPE),
            ),
            "owner/gated": Repo({"smol.gguf": smollm2_bytes}, token=TOKEN),
            "owner/seeing": Repo({"smol.gguf": smollm2_bytes, "mmproj-smol-f16.gguf": PROJECTOR}),
            "owner/two": Repo(
                {"smol.gguf": smollm2_bytes, "mmproj-a.gguf": PROJECTOR, "mmproj-b.gguf": PART}
            ),
            # The hub announces one file's sha256 (and size) and the CDN serves other bytes.
            "owner/altered": Repo(
                {"model.gguf": PART + b"announced"}, served={"model.gguf": PART + b"different"}
            ),
        }
    )
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path: Path, standin: StandIn) -> dict[str, str]:
    """What a user sets for a mirror: every other HF_ variable of this machine left out."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    environ.update(
        HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=standin.url, HF_HUB_DISABLE_TELEMETRY="1"
    )
    return environ


def child(action: str, name: str, env: Mapping[str, str], **extra: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.hub_child", action, name],
        env={**env, **extra},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def sha256(path: str | Path) -> str:
    return sha256_of(Path(path).read_bytes())


def cache_of(env: Mapping[str, str]) -> Path:
    return Path(env["HF_HOME"]) / "hub" / "models--owner--smol"


# -- names -------------------------------------------------------------------------


def is_ref_name(revision: str) -> bool:
    """What a revision may be: not blank, and no "..", leading "/", backslash or control."""
    unsafe = ".." in revision or revision.startswith("/") or "\\" in revision
    return bool(revision.strip()) and not unsafe and revision.isprintable()


ids = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9_]|[.-][A-Za-z0-9_]){0,20}", fullmatch=True)
segments = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.@ -]{0,12}", fullmatch=True)


@given(
    owner=ids,
    repo=ids,
    revision=st.none() | st.text(min_size=1).filter(is_ref_name),
    folders=st.lists(segments, max_size=3),
    stem=segments,
)
def test_a_name_parses_back_to_its_parts(
    owner: str, repo: str, revision: str | None, folders: list[str], stem: str
) -> None:
    file = hub.HubFile(f"{owner}/{repo}", "/".join([*folders, f"{stem}.gguf"]), revision)
    assert hub.parse(file.name) == file


@given(st.text())
def test_any_other_text_is_an_invalid_model_file_or_a_name(text: str) -> None:
    for name in (text, "hf://" + text):
        try:
            parsed = hub.parse(name)
        except ic.InvalidModelFile as error:
            assert error.path == name
        else:
            assert hub.parse(parsed.name) == parsed


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("hf://owner/smol.gguf", "hf://OWNER/REPO[@REVISION]/FILE.gguf"),
        ("hf://owner/smol/model.safetensors", "not a GGUF file"),
        ("hf://-owner/smol/smol.gguf", "not a valid owner name"),
        ("hf://owner/sm--ol/smol.gguf", "not a valid repository name"),
        ("hf://owner/smol/../smol.gguf", "not a file path within a repository"),
        ("hf://owner/smol@/smol.gguf", "empty revision"),
    ],
)
def test_a_malformed_name_says_what_is_wrong(name: str, problem: str) -> None:
    with pytest.raises(ic.InvalidModelFile, match=problem.replace("[", r"\[")):
        ic.load(name)


@pytest.mark.parametrize("revision", ["..", "v1/../main", "/etc", "a\\b", "v1\n", "v1\x7f"])
def test_a_revision_that_is_no_ref_name_is_refused(revision: str) -> None:
    name = f"hf://owner/smol@{quote(revision, safe='')}/smol.gguf"
    with pytest.raises(ic.InvalidModelFile, match="is not a branch, tag or commit name"):
        hub.parse(name)  # what fetch and load do first: never a request on broken code either


def test_a_revision_leading_out_of_the_cache_asks_nothing_and_writes_nothing(
    env: dict[str, str], standin: StandIn, tmp_path: Path
) -> None:
    name = f"hf://owner/smol@{quote(ESCAPE, safe='')}/smol.gguf"
    result = child("load", name, env)
    assert result.get("error") == "InvalidModelFile", result
    assert f"revision {ESCAPE!r} is not a branch, tag or commit name" in result["message"]
    pulled = cli("pull", name, env=env)
    assert pulled.returncode == 1 and "is not a branch, tag or commit name" in pulled.stderr
    assert standin.requests == []
    assert [path.name for path in tmp_path.iterdir()] in ([], ["hf"])
    assert not (tmp_path / "escaped").exists()


def test_a_revision_with_a_slash_is_percent_encoded() -> None:
    file = hub.parse("hf://owner/smol@refs%2Fpr%2F1/smol.gguf")
    assert file.revision == "refs/pr/1"
    assert file.name == "hf://owner/smol@refs%2Fpr%2F1/smol.gguf"


# -- without the extra -------------------------------------------------------------------


def test_without_huggingface_hub_an_hf_name_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import` now raises ImportError
    with pytest.raises(ic.HubNotInstalled, match=r"inference-core\[hub\]") as raised:
        ic.load(SMOL)
    assert isinstance(raised.value, ic.ModelLoadError) and raised.value.name == SMOL


def test_importing_the_core_and_its_command_line_leaves_huggingface_hub_out() -> None:
    code = "import sys, inference_core, inference_core.cli; print('huggingface_hub' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# -- loading -------------------------------------------------------------------------------


def test_load_fetches_into_the_cache_and_the_backend_gets_a_plain_file(
    env: dict[str, str], standin: StandIn, smollm2_path: str
) -> None:
    path = child("load", SMOL, env)["path"]
    assert path == str(cache_of(env) / "snapshots" / COMMIT / "smol.gguf")
    assert sha256(path) == sha256(smollm2_path)
    assert len(standin.downloads()) == 1


def test_a_second_load_downloads_nothing_and_a_pinned_commit_asks_nothing(
    env: dict[str, str], standin: StandIn
) -> None:
    first = child("load", SMOL, env)["path"]
    standin.requests.clear()
    assert child("load", SMOL, env)["path"] == first
    # A branch is looked up again (one HEAD: it may have moved on); its file is not fetched.
    # The listing of the model's commit says whether a projector is beside it.
    listing = ("GET", "hub", f"/api/models/owner/smol/tree/{COMMIT}")
    assert [(r.method, r.origin, r.path) for r in standin.requests] == [
        ("HEAD", "hub", "/owner/smol/resolve/main/smol.gguf"),
        listing,
    ]
    standin.requests.clear()
    assert child("load", f"hf://owner/smol@{COMMIT}/smol.gguf", env)["path"] == first
    assert [(r.method, r.origin, r.path) for r in standin.requests] == [listing]


def test_a_backend_that_cannot_load_it_downloads_nothing(
    env: dict[str, str], standin: StandIn
) -> None:
    result = child("misnamed", SMOL, env)
    assert result.get("error") == "BackendNotFound", result
    assert "no-such-backend" in result["message"]
    assert standin.requests == []


def test_hf_hub_cache_is_honoured(env: dict[str, str], tmp_path: Path) -> None:
    path = child("load", SMOL, env, HF_HUB_CACHE=str(tmp_path / "elsewhere"))["path"]
    assert path.startswith(str(tmp_path / "elsewhere" / "models--owner--smol"))


def test_offline_loads_come_from_the_cache_with_the_hub_gone(
    env: dict[str, str], standin: StandIn
) -> None:
    path = child("load", SMOL, env)["path"]
    standin.stop()
    assert child("load", SMOL, env, HF_HUB_OFFLINE="1")["path"] == path
    assert child("load", SMOL, env)["path"] == path  # no network: the cached file still loads


def test_a_projector_beside_the_model_is_fetched_with_it(env: dict[str, str]) -> None:
    loaded = child("load", "hf://owner/seeing/smol.gguf", env)
    assert loaded["mmproj"] is not None and loaded["mmproj"].endswith("/mmproj-smol-f16.gguf")
    assert Path(loaded["mmproj"]).read_bytes() == PROJECTOR
    assert Path(loaded["mmproj"]).parent == Path(loaded["path"]).parent  # the same commit


def test_an_hf_draft_model_is_fetched_and_the_backend_gets_its_file(
    env: dict[str, str], standin: StandIn
) -> None:
    loaded = child("load-drafted", SMOL, env)
    assert loaded["draft_model"] == loaded["path"]
    assert loaded["path"].startswith(str(cache_of(env)))


def test_mmproj_empty_fetches_no_projector(env: dict[str, str], standin: StandIn) -> None:
    loaded = child("load-without-projector", "hf://owner/seeing/smol.gguf", env)
    assert loaded["mmproj"] == "" and not any("mmproj" in r.path for r in standin.requests)


def test_a_repository_with_several_projectors_gets_none_chosen(env: dict[str, str]) -> None:
    assert child("load", "hf://owner/two/smol.gguf", env)["mmproj"] is None


def test_offline_the_cached_projector_is_found(env: dict[str, str], standin: StandIn) -> None:
    first = child("load", "hf://owner/seeing/smol.gguf", env)
    standin.stop()
    again = child("load", "hf://owner/seeing/smol.gguf", env, HF_HUB_OFFLINE="1")
    assert again["mmproj"] == first["mmproj"]


def test_pull_fetches_the_projector_too_and_says_so(env: dict[str, str]) -> None:
    result = cli("pull", "hf://owner/seeing/smol.gguf", env=env)
    assert result.returncode == 0, result.stderr
    projector = result.stderr.strip().splitlines()[-1].rsplit(": ", 1)[-1]
    assert "its projector" in result.stderr and Path(projector).read_bytes() == PROJECTOR
    assert result.stdout.strip().endswith("/smol.gguf")  # stdout: the model's path alone
    described = json.loads(cli("pull", "--json", "hf://owner/seeing/smol.gguf", env=env).stdout)
    assert described["projector"]["path"] == projector
    assert described["projector"]["sha256"] == sha256_of(PROJECTOR)


def test_a_split_model_fetches_every_part_and_loads_the_first(
    env: dict[str, str], standin: StandIn
) -> None:
    path = child("load", "hf://owner/smol/split/smol-00002-of-00002.gguf", env)["path"]
    assert path.endswith("/split/smol-00001-of-00002.gguf")
    second = Path(path).with_name("smol-00002-of-00002.gguf")
    assert Path(path).read_bytes() == PART + b"1" and second.read_bytes() == PART + b"2"
    # The other parts come from the commit the first came from, should the branch move on.
    asked = [r.path for r in standin.requests if r.method == "HEAD"]
    assert asked == [
        "/owner/smol/resolve/main/split/smol-00001-of-00002.gguf",
        f"/owner/smol/resolve/{COMMIT}/split/smol-00002-of-00002.gguf",
    ]


def test_a_cut_connection_resumes_to_the_same_bytes(
    env: dict[str, str], standin: StandIn, smollm2_path: str
) -> None:
    standin.cuts = [50_000_000]  # past the library's 10 MiB chunks, so some are on disk
    path = child("load", SMOL, env)["path"]
    assert sha256(path) == sha256(smollm2_path)
    first, resumed = standin.downloads()
    assert first.range is None
    assert resumed.range is not None and resumed.range.startswith("bytes=")
    assert 0 < int(resumed.range.removeprefix("bytes=").rstrip("-")) <= 50_000_000


@pytest.mark.server
def test_a_hub_model_generates_through_the_real_server(env: dict[str, str]) -> None:
    result = child("generate", SMOL, env)
    assert result["path"].endswith("/smol.gguf") and result["text"].strip()


# -- errors ----------------------------------------------------------------------------------


def assert_error(result: dict[str, Any], kind: type[ic.HubError], *needles: str) -> None:
    assert result.get("error") == kind.__name__, result
    assert "ModelLoadError" in result["kinds"]
    for needle in needles:
        assert needle in result["message"], result["message"]


def test_no_such_repo(env: dict[str, str]) -> None:
    result = child("load", "hf://owner/nothing/smol.gguf", env)
    assert_error(result, ic.HubRepoNotFound, "no repository owner/nothing", "HF_TOKEN")


def test_no_such_revision(env: dict[str, str]) -> None:
    result = child("load", "hf://owner/smol@v9/smol.gguf", env)
    assert_error(result, ic.HubRepoNotFound, "has no revision 'v9'")


def test_no_such_file_lists_the_gguf_files_the_repo_has(env: dict[str, str]) -> None:
    result = child("load", "hf://owner/smol@v1/big.gguf", env)
    assert_error(result, ic.HubFileNotFound, "has no file big.gguf at revision 'v1'")
    assert result["files"] == ["smol.gguf", "split/smol-00001-of-00002.gguf"]
    assert "its GGUF files: smol.gguf, split/smol-00001-of-00002.gguf" in result["message"]


def test_a_gated_repo_needs_the_token_which_is_never_shown(
    env: dict[str, str], standin: StandIn
) -> None:
    result = child("load", "hf://owner/gated/smol.gguf", env)
    assert_error(result, ic.HubAccessDenied, "gated repository", "no token is set", "HF_TOKEN")
    result = child("load", "hf://owner/gated/smol.gguf", env, HF_TOKEN="hf_not_the_right_one")
    assert_error(result, ic.HubAccessDenied, "has no access")
    assert "hf_not_the_right_one" not in result["message"] + result["repr"]
    assert child("load", "hf://owner/gated/smol.gguf", env, HF_TOKEN=TOKEN)["path"]
    # The token goes to the hub, never to the CDN the file comes from.
    assert any(r.authorized for r in standin.requests if r.origin == "hub")
    assert not any(r.authorized for r in standin.requests if r.origin == "cdn")


def test_the_token_is_not_in_any_log_or_error_even_with_debug(env: dict[str, str]) -> None:
    environ = {**env, "HF_TOKEN": TOKEN, "HF_DEBUG": "1"}
    pulled = cli("--debug", "pull", "hf://owner/gated/smol.gguf", env=environ)
    assert pulled.returncode == 0, pulled.stderr
    missing = cli("--debug", "pull", "hf://owner/gated/missing.gguf", env=environ)
    assert missing.returncode == 1 and "has no file missing.gguf" in missing.stderr
    for result in (pulled, missing):
        assert TOKEN not in result.stdout + result.stderr


def test_no_network_says_offline_mode_uses_the_cache_and_whether_it_is_cached(
    env: dict[str, str], standin: StandIn
) -> None:
    standin.stop()
    result = child("load", SMOL, env)
    assert_error(result, ic.HubUnreachable, "cannot reach the hub", "HF_HUB_OFFLINE=1")
    assert "smol.gguf is not in the cache" in result["message"] and result["cached"] is False


def test_offline_mode_names_what_is_not_cached(env: dict[str, str]) -> None:
    result = child("load", SMOL, env, HF_HUB_OFFLINE="1")
    assert_error(result, ic.HubUnreachable, "HF_HUB_OFFLINE=1 keeps us off the network")
    assert "smol.gguf is not in the cache" in result["message"] and result["cached"] is False


def test_a_download_cut_short_that_cannot_resume_keeps_nothing(
    env: dict[str, str], standin: StandIn
) -> None:
    standin.cuts = [50_000_000] + [0] * 10  # then every attempt to resume is cut at once
    result = child("load", SMOL, env)
    assert_error(result, ic.HubDownloadFailed, "could not resume", "nothing partial was kept")
    left = [p.name for p in cache_of(env).rglob("*") if p.is_file()]
    assert not [name for name in left if name.endswith(".incomplete") or "gguf" in name], left
    offline = child("load", SMOL, env, HF_HUB_OFFLINE="1")
    assert_error(offline, ic.HubUnreachable, "not in the cache")


def test_a_download_that_is_not_the_announced_file_is_removed_and_fails(
    env: dict[str, str],
) -> None:
    name, announced = "hf://owner/altered/model.gguf", sha256_of(PART + b"announced")
    for result in (child("load", name, env), child("load", name, env)):  # nothing kept between
        assert_error(
            result,
            ic.HubDownloadFailed,
            "model.gguf downloaded from http://127.0.0.1:",
            f"is not the file the hub announced: its sha256 is {sha256_of(PART + b'different')}",
            f"not {announced}; it was removed from the cache. Try again",
        )
    pulled = cli("pull", name, env=env)
    assert pulled.returncode == 1 and "is not the file the hub announced" in pulled.stderr
    cached = Path(env["HF_HOME"]) / "hub" / "models--owner--altered"
    assert [p.name for p in cached.rglob("*") if "gguf" in p.name or announced in p.name] == []


def test_only_a_file_just_downloaded_is_hashed(env: dict[str, str]) -> None:
    checking = "checking smol.gguf against the sha256 the hub announced"
    first = cli("--debug", "pull", SMOL, env=env)
    assert first.returncode == 0 and checking in first.stderr, first.stderr
    again = cli("--debug", "pull", SMOL, env=env)
    assert again.returncode == 0 and checking not in again.stderr, again.stderr


# -- the command line ----------------------------------------------------------------------------


def test_pull_prints_the_path_and_json_gives_size_and_sha256(
    env: dict[str, str], smollm2_path: str
) -> None:
    result = cli("pull", SMOL, env=env)
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip()
    assert sha256(path) == sha256(smollm2_path)
    described = json.loads(cli("pull", "--json", SMOL, env=env).stdout)
    assert described["path"] == path and described["name"] == SMOL
    assert described["size"] == os.path.getsize(smollm2_path)
    assert described["sha256"] == sha256(smollm2_path)
    assert [part["path"] for part in described["parts"]] == [path]


def test_pull_resumes_a_cut_connection_and_says_so_once(
    env: dict[str, str], standin: StandIn, smollm2_path: str
) -> None:
    standin.cuts = [50_000_000]
    result = cli("pull", SMOL, env=env)
    assert result.returncode == 0, result.stderr
    assert sha256(result.stdout.strip()) == sha256(smollm2_path)
    assert result.stderr.count("Trying to resume download") == 1, result.stderr


def test_pull_draws_the_progress_bar_on_a_terminal(env: dict[str, str]) -> None:
    controller, terminal = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, and the bar fits itself into none.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    with os.fdopen(controller, "rb", buffering=0) as screen:
        process = subprocess.Popen(
            [sys.executable, "-m", "inference_core", "pull", SMOL],
            stdout=subprocess.PIPE,
            stderr=terminal,
            env=env,
        )
        os.close(terminal)
        stdout, _ = process.communicate(timeout=120)
        drawn = b""
        while True:
            try:
                chunk = screen.read(65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            drawn += chunk
    assert process.returncode == 0
    assert stdout.decode().strip().endswith("/smol.gguf")
    assert b"100%" in drawn and b"smol.gguf" in drawn, drawn[-500:]


def test_pull_refuses_a_name_that_is_not_hf() -> None:
    result = cli("pull", "model.gguf")
    assert result.returncode == 2 and "hf://OWNER/REPO/FILE.gguf" in result.stderr


def test_a_hub_error_is_one_line_from_the_command_line(env: dict[str, str]) -> None:
    result = cli("pull", "hf://owner/nothing/smol.gguf", env=env)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("inference: error: hf://owner/nothing/smol.gguf: no repository owner/nothing")
    )


def test_models_lists_the_cache_by_hf_name_besides_the_demo_model(
    env: dict[str, str], smollm2_path: str
) -> None:
    assert cli("pull", SMOL, env=env).returncode == 0
    assert cli("pull", "hf://owner/smol@v1/split/smol-00001-of-00002.gguf", env=env).returncode == 0
    rows = cli("models", env=env).stdout.splitlines()
    assert rows[0].split()[0] == "PATH"
    assert rows[1].startswith(smollm2_path)
    assert rows[2].startswith(SMOL + " ") and rows[2].split()[1:5] == [
        "llama",
        "135M",
        "Q4_1",
        "8192",
    ]
    assert rows[3].startswith("hf://owner/smol/split/smol-00001-of-00002.gguf (2 parts)")
    entries = json.loads(cli("models", "--json", env=env).stdout)
    assert [entry["name"] for entry in entries] == [
        None,
        SMOL,
        "hf://owner/smol/split/smol-00001-of-00002.gguf",
    ]


def test_models_without_huggingface_hub_lists_the_demo_model_and_says_why(
    smollm2_path: str,
) -> None:
    code = (
        "import sys; sys.modules['huggingface_hub'] = None\n"  # `import` now raises ImportError
        "from inference_core.cli import main; sys.exit(main(['models']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert [row.split()[0] for row in result.stdout.splitlines()] == ["PATH", smollm2_path]
    assert "listing the Hugging Face cache needs huggingface_hub" in result.stderr
    assert "inference-core[hub]" in result.stderr


def test_info_reads_a_cached_hub_model_and_says_how_to_get_one_that_is_not(
    env: dict[str, str],
) -> None:
    missing = cli("info", SMOL, env=env)
    assert missing.returncode == 1 and f"`inference pull {SMOL}` downloads it" in missing.stderr
    assert child("inspect", SMOL, env)["error"] == "InvalidModelFile"  # as for a missing file
    assert cli("pull", SMOL, env=env).returncode == 0
    info = json.loads(cli("info", "--json", SMOL, env=env).stdout)
    assert info["info"]["architecture"] == "llama"
    assert child("inspect", SMOL, env)["path"] == info["path"]


@pytest.mark.server
def test_run_takes_a_hub_model(env: dict[str, str]) -> None:
    result = cli(
        "run", "-m", SMOL, "--temperature", "0", "-n", "4", "The capital of France is", env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
