"""JSON with comments (JSONC, as Zed and VS Code settings use): read it, and set one member
without touching the rest of the text, so comments and formatting survive an edit."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_WS_OR_COMMENT = re.compile(r"(?:\s+|//[^\n]*|/\*.*?\*/)*", re.DOTALL)
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")


class JsoncError(ValueError):
    """The text is not JSON with comments, or a member on the path is not an object."""


@dataclass
class _Member:
    key: str
    key_start: int
    value: _Value


@dataclass
class _Value:
    start: int
    end: int
    members: list[_Member] | None = None  # set for objects
    trailing_comma: bool = False  # an object whose last member is followed by a comma
    data: Any = field(default=None, repr=False)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> JsoncError:
        line = self.text.count("\n", 0, self.pos) + 1
        return JsoncError(f"{what} at line {line}")

    def skip(self) -> None:
        match = _WS_OR_COMMENT.match(self.text, self.pos)
        self.pos = match.end() if match else self.pos
        if self.text.startswith("/*", self.pos):
            raise self.fail("unterminated comment")

    def value(self) -> _Value:
        self.skip()
        start, char = self.pos, self.text[self.pos : self.pos + 1]
        if char == "{":
            return self.obj()
        if char == "[":
            return self.array()
        match = _STRING.match(self.text, start) if char == '"' else _SCALAR.match(self.text, start)
        if not match:
            raise self.fail("expected a JSON value")
        self.pos = match.end()
        return _Value(start, self.pos, data=json.loads(match.group()))

    def expect(self, char: str) -> None:
        self.skip()
        if not self.text.startswith(char, self.pos):
            raise self.fail(f"expected {char!r}")
        self.pos += 1

    def obj(self) -> _Value:
        start = self.pos
        self.pos += 1
        members: list[_Member] = []
        trailing = False
        while True:
            self.skip()
            if self.text.startswith("}", self.pos):
                break
            key_start = self.pos
            match = _STRING.match(self.text, key_start)
            if not match:
                raise self.fail("expected a member name")
            self.pos = match.end()
            self.expect(":")
            members.append(_Member(json.loads(match.group()), key_start, self.value()))
            self.skip()
            trailing = self.text.startswith(",", self.pos)
            if trailing:
                self.pos += 1
            elif not self.text.startswith("}", self.pos):
                raise self.fail("expected ',' or '}'")
        self.pos += 1
        data = {m.key: m.value.data for m in members}
        return _Value(start, self.pos, members, trailing and bool(members), data)

    def array(self) -> _Value:
        start = self.pos
        self.pos += 1
        items: list[Any] = []
        while True:
            self.skip()
            if self.text.startswith("]", self.pos):
                break
            items.append(self.value().data)
            self.skip()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith("]", self.pos):
                raise self.fail("expected ',' or ']'")
        self.pos += 1
        return _Value(start, self.pos, data=items)

    def document(self) -> _Value:
        root = self.value()
        self.skip()
        if self.pos != len(self.text):
            raise self.fail("unexpected text after the JSON value")
        return root


def loads(text: str) -> Any:
    """Parse JSON that may hold // and /* */ comments and trailing commas."""
    return _Parser(text).document().data


def _line_indent(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    line = text[start:pos]
    return line[: len(line) - len(line.lstrip())]


def _dump(value: Any, indent: str) -> str:
    """JSON of value, two-space indented, continuation lines starting at indent."""
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + indent)


def set_member(text: str, path: Sequence[str], value: Any) -> str:
    """The text with the member at path (object keys) set to value; the rest stays as it was."""
    if not path:
        raise ValueError("empty path")
    if not text.strip():
        nested: Any = value
        for key in reversed(path):
            nested = {key: nested}
        return json.dumps(nested, indent=2, ensure_ascii=False) + "\n"
    node = _Parser(text).document()
    for depth, key in enumerate(path):
        if node.members is None:
            raise JsoncError(f"{'.'.join(path[:depth]) or 'the top level'} is not an object")
        member = next((m for m in reversed(node.members) if m.key == key), None)
        if member is None:
            nested = value
            for inner in reversed(path[depth + 1 :]):
                nested = {inner: nested}
            return _insert(text, node, key, nested)
        node = member.value
        if depth == len(path) - 1:
            indent = _line_indent(text, member.key_start)
            return text[: node.start] + _dump(value, indent) + text[node.end :]
    raise AssertionError("unreachable")


def _insert(text: str, obj: _Value, key: str, value: Any) -> str:
    """Add `"key": value` as the last member of obj."""
    assert obj.members is not None
    close = obj.end - 1
    outer = _line_indent(text, obj.start)
    if obj.members:
        indent = _line_indent(text, obj.members[0].key_start)
        if text.rfind("\n", obj.start, obj.members[0].key_start) < 0:
            indent = outer + "  "  # members on the brace's own line: pick an indent
    else:
        indent = outer + "  "
    member = f"{json.dumps(key)}: {_dump(value, indent)}"
    head = text[:close]
    before_close = head[head.rfind("\n") + 1 :] if "\n" in head else None
    if before_close is not None and not before_close.strip():
        # The closing brace sits on its own line: add a line before it.
        cut = len(head) - len(before_close)
        addition = f"{indent}{member}\n"
    else:
        cut = close
        addition = f"\n{indent}{member}\n{outer}"
    if obj.members and not obj.trailing_comma:
        last = obj.members[-1].value.end
        return text[:last] + "," + text[last:cut] + addition + text[cut:]
    return text[:cut] + addition + text[cut:]
