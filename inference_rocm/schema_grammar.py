"""JSON schemas as GBNF rules, for a grammar that holds JSON inside other text: a tool
call's arguments inside its model's own markup. llama-server's `json_schema` holds a
whole answer to one schema, so it cannot do this.

The JSON is written the way the chat template writes it (`layout`: the separators
between items and after keys, e.g. `", "` and `": "` for Jinja's `tojson`), with no
other whitespace, so that the model writes what it was trained on and cannot ramble
in spaces.

Held: `type` (one or a list), `properties` with `required` (in the schema's order; a
property it does not list is never written, whatever `additionalProperties` says),
`additionalProperties` as a schema when there are no `properties`, `items`, `minItems`,
`maxItems`, `minLength`, `maxLength`, `enum`, `const`, `anyOf`, `oneOf`, local `$ref`
(`#/$defs/...`, `#/definitions/...`, recursive ones too), and `minimum`/`maximum` of an
integer (a range of at most `MAX_LISTED_INTEGERS` values is listed; otherwise a minimum
of 0 or more keeps the sign). Not held (the value keeps to its type only): `pattern`,
`format`, the bounds of a number, `multipleOf`, `uniqueItems`, `allOf`, `not`,
`if`/`then`/`else`, `patternProperties`, remote `$ref`s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, final

from inference_core.errors import InvalidValue
from inference_core.types import MAX_GRAMMAR_RULES

__all__ = ["MAX_LISTED_INTEGERS", "SchemaGrammar", "literal"]

MAX_LISTED_INTEGERS = 256  # an integer range up to this size is held by listing its values
_MAX_DIGITS = 16  # digits of an integer or a fraction: beyond, a double loses them anyway
_REF_PREFIXES = ("#/$defs/", "#/definitions/")

# JSON's own pieces, shared by every schema of a grammar.
_BASICS = {
    "json-char": r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "json-string": r'"\"" json-char* "\""',
    "json-int": f'"-"? ("0" | [1-9] [0-9]{{0,{_MAX_DIGITS - 1}}})',
    "json-nat": f'"0" | [1-9] [0-9]{{0,{_MAX_DIGITS - 1}}}',
    "json-number": f'json-int ("." [0-9]{{1,{_MAX_DIGITS}}})? ([eE] [-+]? [0-9]{{1,3}})?',
    "json-boolean": '"true" | "false"',
    "json-null": '"null"',
}


def literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\r":
            escaped.append("\\r")
        elif char == "\t":
            escaped.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\x{ord(char):02X}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


@final
class SchemaGrammar:
    """GBNF rules for JSON schemas, gathered in `rules` (name to body): `rule(schema,
    name)` adds the rules of one schema and says which of them matches it."""

    def __init__(self, layout: tuple[str, str] = (", ", ": ")) -> None:
        self.rules: dict[str, str] = {}
        self._comma, self._colon = literal(layout[0]), literal(layout[1])
        self._layout = layout
        self._refs: dict[tuple[int, str], str] = {}

    def add(self, name: str, body: str) -> str:
        """Add a rule of the caller's; its name back."""
        if len(self.rules) >= MAX_GRAMMAR_RULES:
            raise InvalidValue(
                "tools",
                f"the tools' parameters need more than {MAX_GRAMMAR_RULES} grammar rules "
                "(MAX_GRAMMAR_RULES): simplify them",
            )
        self.rules[name] = body
        return name

    def rule(self, schema: Any, name: str) -> str:
        """The rule that matches JSON keeping to `schema` (whose `$ref`s point into it)."""
        return self._rule(schema, name, schema)

    def _basic(self, name: str) -> str:
        self.rules.setdefault(name, _BASICS[name])
        for used in ("json-char", "json-int"):
            if used in _BASICS[name]:
                self._basic(used)
        return name

    def _value(self) -> str:
        """Any JSON value."""
        if "json-value" not in self.rules:
            self.rules["json-value"] = ""  # reserved: the rules below refer back to it
            alternatives = (
                self._object_of("json-value", "json-object"),
                self._array_of("json-value", 0, None, "json-array"),
                *(self._basic(n) for n in ("json-string", "json-number", "json-boolean")),
                self._basic("json-null"),
            )
            self.rules["json-value"] = " | ".join(alternatives)
        return "json-value"

    def _rule(self, schema: Any, name: str, root: Any) -> str:
        if not isinstance(schema, Mapping) or not schema:
            return self._value()  # True, {}, or not a schema: any value
        if "$ref" in schema:
            return self._ref(schema["$ref"], name, root)
        if "const" in schema:
            return self.add(name, self._json(schema["const"]))
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.add(name, " | ".join(self._json(value) for value in schema["enum"]))
        for key in ("anyOf", "oneOf"):
            choices = schema.get(key)
            if isinstance(choices, list) and choices:
                return self._choices(name, choices, root)
        kind = schema.get("type")
        if isinstance(kind, list) and kind:
            return self._choices(name, [dict(schema, type=one) for one in kind], root)
        if kind is None and ("properties" in schema or "additionalProperties" in schema):
            kind = "object"
        return self._typed(schema, kind, name, root)

    def _choices(self, name: str, choices: list[Any], root: Any) -> str:
        rules = [self._rule(choice, f"{name}-{i}", root) for i, choice in enumerate(choices)]
        return self.add(name, " | ".join(rules))

    def _ref(self, ref: object, name: str, root: Any) -> str:
        """A local `$ref`'s rule, made once (a recursive schema refers back to it)."""
        target = _definition(ref, root)
        if target is None:
            return self._value()  # a remote or unknown $ref: not held
        key = (id(root), str(ref))
        if key not in self._refs:
            self._refs[key] = self.add(f"{name}-ref", "")  # reserved, filled below
            self.rules[f"{name}-ref"] = self._rule(target, f"{name}-def", root)
        return self._refs[key]

    def _typed(self, schema: Mapping[str, Any], kind: object, name: str, root: Any) -> str:
        if kind == "object":
            return self._object(schema, name, root)
        if kind == "array":
            item = self._rule(schema.get("items", True), f"{name}-item", root)
            low, high = _count(schema.get("minItems"), 0), _count(schema.get("maxItems"), None)
            return self._array_of(item, low or 0, high, name)
        if kind == "string":
            low, high = _count(schema.get("minLength"), 0), _count(schema.get("maxLength"), None)
            if not low and high is None:
                return self._basic("json-string")
            return self.add(name, f'"\\"" {self._basic("json-char")}{_times(low or 0, high)} "\\""')
        if kind == "integer":
            return self._integer(schema, name)
        if kind in ("number", "boolean", "null"):
            return self._basic(f"json-{kind}")
        return self._value()

    def _integer(self, schema: Mapping[str, Any], name: str) -> str:
        low = _bound(schema, "minimum", "exclusiveMinimum", 1)
        high = _bound(schema, "maximum", "exclusiveMaximum", -1)
        if low is not None and high is not None and 0 <= high - low < MAX_LISTED_INTEGERS:
            return self.add(name, " | ".join(literal(str(n)) for n in range(low, high + 1)))
        if low is not None and low >= 0:
            return self._basic("json-nat")
        return self._basic("json-int")

    def _object(self, schema: Mapping[str, Any], name: str, root: Any) -> str:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            extra = schema.get("additionalProperties", True)
            return self._object_of(self._rule(extra, f"{name}-value", root), name)
        listed = schema.get("required")
        required = set(listed) if isinstance(listed, list) else set()
        members = [
            (self._member(key, value, f"{name}-{i}", root), key in required)
            for i, (key, value) in enumerate(properties.items())
        ]
        return self.add(name, f'"{{" {self._tail(members, name, 0, True)} "}}"')

    def _member(self, key: str, schema: Any, name: str, root: Any) -> str:
        value = self._rule(schema, f"{name}-value", root)
        return self.add(name, f"{self._json(key)} {self._colon} {value}")

    def _tail(self, members: list[tuple[str, bool]], name: str, at: int, first: bool) -> str:
        """A rule for the members from `at` on, after others (a comma first) or none
        (`first`): required ones always, optional ones or not, in their order; "" when
        none are left. One rule per place keeps the grammar linear in the members."""
        if at == len(members):
            return ""
        key = f"{name}-from{at}{'-first' if first else ''}"
        if key not in self.rules:
            rule, required = members[at]
            lead = rule if first else f"{self._comma} {rule}"
            written = f"{lead} {self._tail(members, name, at + 1, False)}".rstrip()
            skipped = "" if required else self._tail(members, name, at + 1, first)
            # an empty alternative at a line's end would run on into the next rule
            body = written if required else f"{written} | {skipped}" if skipped else f"({written})?"
            self.add(key, body)
        return key

    def _object_of(self, value: str, name: str) -> str:
        member = f"{self._basic('json-string')} {self._colon} {value}"
        return self.add(name, f'"{{" ({member} ({self._comma} {member})*)? "}}"')

    def _array_of(self, item: str, low: int, high: int | None, name: str) -> str:
        if high == 0:
            return self.add(name, '"[" "]"')
        more = _times(max(low - 1, 0), None if high is None else high - 1)
        items = f"{item} ({self._comma} {item}){more}"
        return self.add(name, f'"[" {items} "]"' if low > 0 else f'"[" ({items})? "]"')

    def _json(self, value: Any) -> str:
        """A JSON value as the template writes it, as a literal."""
        return literal(json.dumps(value, ensure_ascii=False, separators=self._layout))


def _count(value: object, default: int | None) -> int | None:
    return value if type(value) is int and value >= 0 else default


def _definition(ref: object, root: Any) -> Any:
    """What a local `$ref` points to in the root schema; None for any other."""
    for prefix in _REF_PREFIXES:
        if isinstance(ref, str) and ref.startswith(prefix) and isinstance(root, Mapping):
            definitions = root.get(prefix[2:-1])
            if isinstance(definitions, Mapping):
                return definitions.get(ref[len(prefix) :])
    return None


def _bound(schema: Mapping[str, Any], inclusive: str, exclusive: str, step: int) -> int | None:
    """An integer's least (`step` 1) or greatest (-1) value, from the schema's bounds."""
    bounds = []
    for key, shift in ((inclusive, 0), (exclusive, step)):
        value = schema.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            edge: int = math.ceil(value) if step > 0 else math.floor(value)
            bounds.append(edge + (shift if edge == value else 0))
    if not bounds:
        return None
    return max(bounds) if step > 0 else min(bounds)


def _times(low: int, high: int | None) -> str:
    """A GBNF repetition of `low` to `high` (None: no bound) times."""
    if high is None:
        return "*" if low == 0 else ("+" if low == 1 else f"{{{low},}}")
    return f"{{{low},{high}}}"
