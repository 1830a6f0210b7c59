"""What `inference serve` decides before it starts anything: who may connect, and which
models of the folders the router is shown, under which names."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import inference_core as ic
from inference_core._cli_models import find_models
from inference_rocm import serve


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_needs_no_key(host: str) -> None:
    listen = serve.check_listen(host, 8080, None)
    assert (listen.host, listen.port, listen.api_key) == (host, 8080, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::"])
def test_any_other_address_needs_a_key(host: str) -> None:
    with pytest.raises(ic.InvalidValue, match="--api-key") as refused:
        serve.check_listen(host, 8080, "")
    assert host in str(refused.value)
    assert serve.check_listen(host, 8080, "k").api_key == "k"


@given(st.integers().filter(lambda port: not 1 <= port <= 65535))
def test_a_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(ic.InvalidValue, match="--port"):
        serve.check_listen("127.0.0.1", port, None)


def test_the_key_never_shows_in_a_listen_repr() -> None:
    assert "sekrit" not in repr(serve.check_listen("0.0.0.0", 8080, "sekrit"))


def _catalog(entries: list[Path], tmp_path: Path) -> dict[str, list[str]]:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    found = [entry for path in entries for entry in find_models(str(path))]
    serve._link(serve._usable(found), str(catalog))
    return {
        item.name: sorted(os.listdir(item)) if item.is_dir() else [os.readlink(item)]
        for item in sorted(catalog.iterdir())
    }


def test_models_of_several_folders_are_linked_under_names_that_do_not_clash(
    tmp_path: Path, smollm2_path: str
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        shutil.copy(smollm2_path, folder / "Model.gguf")
    (second / "model.gguf").symlink_to(first / "Model.gguf")
    linked = _catalog([first, second], tmp_path)
    assert sorted(linked) == ["Model-2.gguf", "Model.gguf", "model-3.gguf"]
    assert linked["Model.gguf"] == [str(first / "Model.gguf")]
    assert linked["model-3.gguf"] == [str(first / "Model.gguf")]  # a link, resolved


def test_a_split_model_gets_a_folder_and_broken_files_are_left_out(
    tmp_path: Path, smollm2_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    data = Path(smollm2_path).read_bytes()
    (models / "big-00001-of-00002.gguf").write_bytes(data)
    (models / "big-00002-of-00002.gguf").write_bytes(b"GGUF")
    (models / "broken.gguf").write_bytes(b"not a model")
    (models / "half-00001-of-00002.gguf").write_bytes(data)  # its second part is missing
    linked = _catalog([models], tmp_path)
    assert linked == {"big-00001-of-00002": ["big-00001-of-00002.gguf", "big-00002-of-00002.gguf"]}
    assert "broken.gguf" in caplog.text and "half-00001-of-00002.gguf" in caplog.text
