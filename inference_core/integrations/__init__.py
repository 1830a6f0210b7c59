"""Adapters that let applications built on a framework use inference_core's models.

Each lives in a module of its own, needs its framework (an extra of its own) and is
imported only when used, so importing `inference_core` imports no framework:

- `inference_core.integrations.langchain` (extra `langchain`): `ChatInference` and
  `InferenceEmbeddings`;
- `inference_core.integrations.llama_index` (extra `llama-index`): `InferenceLLM` and
  `InferenceEmbedding`;
- `inference_core.integrations.litellm` (extra `litellm`): a LiteLLM provider for the
  model names `inference/<path, URL or hf:// name>`, after `register()`.

They are built on the public `TextModel` protocol only, so any backend serves them; a
model named by its location loads once per process and is shared by every adapter
that names it with the same load options.
"""

from __future__ import annotations

__all__: list[str] = []
