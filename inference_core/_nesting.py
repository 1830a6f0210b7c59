"""How deep a grammar or a JSON value nests, measured without recursion.

What we send is bounded by it: llama-server parses a grammar, and turns a schema into
one, recursively, and a deep enough one crashes it for every caller of the model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

__all__ = ["gbnf_depth", "gbnf_rules", "json_depth"]

# A GBNF token that matters for nesting: a quoted string or a character class (whose
# parentheses are characters, skipped whole, to the end of the text if never closed),
# a comment (to the end of its line), a parenthesis, or the "::=" that defines a rule.
_GBNF_TOKEN = re.compile(
    r'"(?:\\.?|[^"\\])*(?:"|\Z)|\[(?:\\.?|[^\]\\])*(?:\]|\Z)|#[^\r\n]*|[()]|::=', re.DOTALL
)


def gbnf_depth(grammar: str) -> int:
    """The deepest nesting of parenthesised groups in a GBNF grammar: how deep
    llama.cpp's parser recurses on it. An unbalanced ")" is left to the parser."""
    depth = deepest = 0
    for token in _GBNF_TOKEN.finditer(grammar):
        if token.group() == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif token.group() == ")":
            depth = max(0, depth - 1)
    return deepest


def gbnf_rules(grammar: str) -> int:
    """How many rules a GBNF grammar defines: llama.cpp's parser follows a chain of rules
    that each name the next recursively as well."""
    return sum(1 for token in _GBNF_TOKEN.finditer(grammar) if token.group() == "::=")


def _items(value: object) -> Iterator[object] | None:
    """What a JSON container holds (a dict's values); None for anything else."""
    if isinstance(value, Mapping):
        return iter(value.values())
    if isinstance(value, (list, tuple)):
        return iter(value)
    return None


_END = object()


def json_depth(value: object) -> int:
    """How deep dicts and lists nest in `value`: 0 for a scalar, 1 for `{}` or `[1, 2]`.

    A value that holds itself has no depth: a `ValueError`, as `json.dumps` raises.
    """
    items = _items(value)
    if items is None:
        return 0
    path = [(id(value), items)]  # the containers from the top down to the one being read
    on_path = {id(value)}
    deepest = 1
    while path:
        item = next(path[-1][1], _END)
        if item is _END:
            on_path.discard(path.pop()[0])
            continue
        inner = _items(item)
        if inner is None:
            continue
        if id(item) in on_path:
            raise ValueError("it holds itself (a circular reference)")
        on_path.add(id(item))
        path.append((id(item), inner))
        deepest = max(deepest, len(path))
    return deepest
