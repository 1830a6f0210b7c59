"""`model.capabilities` of SmolLM2 on the real llama-server, and `inference info --load`:
what the library does with the model, not what the server could do."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

import inference_core as ic
from inference_rocm.model import LlamaServerModel

from .external import KEY, ExternalServer
from .test_cli import cli

pytestmark = pytest.mark.server

# A template that renders tools and calls in the Hermes shape, written here: llama-server
# then reports that the template takes tools, and chat uses its format.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n<tools>{{ tools | tojson }}</tools><|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}'
    "</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def smollm2(**changes: object) -> ic.Capabilities:
    """What SmolLM2 on llama-server does through this library, as the shared model runs."""
    fields: dict[str, object] = {
        "tools": "generic",
        "parallel_tool_calls": True,
        "reasoning": False,
        "vision": False,
        "audio": False,
        "embeddings": False,
        "context_len": 2048,
        "slots": 4,
    }
    return ic.Capabilities(**{**fields, **changes})  # type: ignore[arg-type]


def test_smollm2_does_generic_tools_on_four_slots(shared_model: ic.TextModel) -> None:
    assert shared_model.capabilities == smollm2()


def test_a_model_loaded_for_embeddings_declares_them(smollm2_path: str) -> None:
    with ic.load(
        smollm2_path, backend="llama_cpp", context_len=512, parallel_slots=1, embeddings=True
    ) as model:
        assert model.capabilities == smollm2(embeddings=True, context_len=512, slots=1)


def test_the_remote_backend_declares_what_the_server_runs(external_server: ExternalServer) -> None:
    with ic.load(external_server.url, api_key=KEY) as model:
        assert model.capabilities == smollm2()


def test_a_template_with_its_own_tool_format_gets_native_tools(smollm2_path: str) -> None:
    """Declared is what chat does: the template's own format, measured from what it renders
    (several calls a turn: its Jinja loops over them)."""
    with ic.load(
        smollm2_path, backend="llama_cpp", context_len=512, chat_template=TOOL_TEMPLATE
    ) as model:
        assert isinstance(model, LlamaServerModel) and model.props is not None
        assert model.props.template_tools  # llama-server saw a template that takes tools
        assert model.capabilities.tools == "native"
        assert model.capabilities.parallel_tool_calls


def test_capabilities_are_a_frozen_value_checked_on_construction() -> None:
    with pytest.raises(ic.InvalidValue, match="tools must be one of native, generic, none"):
        smollm2(tools="json")
    with pytest.raises(ic.InvalidValue, match="slots must be an integer >= 1"):
        smollm2(slots=0)
    with pytest.raises(ic.InvalidValue, match="vision must be True or False"):
        smollm2(vision=1)
    with pytest.raises(AttributeError):
        smollm2().tools = "none"  # type: ignore[misc]


# -- inference info ---------------------------------------------------------------------


def test_info_load_shows_the_capabilities(smollm2_path: str) -> None:
    result = cli("info", smollm2_path, "--load", "--ctx", "1024")
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert fields["architecture"].strip() == "llama"  # the file's own, as without --load
    assert fields["context (running)"].strip() == "1024 tokens per sequence"
    assert fields["tools"].strip() == "generic (parallel calls: yes)"
    assert fields["embeddings"].strip() == "no"


def test_info_json_holds_the_capabilities_only_when_loaded(smollm2_path: str) -> None:
    loaded = json.loads(cli("info", "--json", "--load", "--ctx", "1024", smollm2_path).stdout)
    capabilities = attrs.asdict(smollm2(context_len=1024))
    capabilities["reasoning_tags"] = list(capabilities["reasoning_tags"])  # as JSON has it
    assert loaded["capabilities"] == capabilities
    assert "capabilities" not in json.loads(cli("info", "--json", smollm2_path).stdout)


def test_info_on_a_server_url_loads_it(external_server: ExternalServer) -> None:
    result = cli("info", "--json", external_server.url, env={"LLAMA_API_KEY": KEY})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["capabilities"]["slots"] == 4 and shown["capabilities"]["tools"] == "generic"
    assert shown["info"]["vocab_size"] == 49152 and shown["info"]["path"] == external_server.url


def test_info_load_with_a_broken_template_fails_naming_it(
    tmp_path: Path, smollm2_path: str
) -> None:
    broken = tmp_path / "broken.jinja"
    broken.write_text("{{ unclosed ")
    result = cli("info", smollm2_path, "--load", "--chat-template", str(broken))
    assert result.returncode == 1 and str(broken) in result.stderr
