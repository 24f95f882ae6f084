"""jsonc: read JSON with comments and set one member without touching the rest."""

from __future__ import annotations

import json

import pytest

from od_runs import jsonc

ZED = """// Zed settings
{
  "theme": "One Dark", // my theme
  /* a block
     comment */
  "buffer_font_size": 15,
}
"""


def test_comments_and_trailing_commas_are_read() -> None:
    """// and /* */ comments and a trailing comma parse; slashes inside strings stay text."""
    assert jsonc.loads('{"a": "http://x/*y*/", /* c */ "b": [1, 2,], // d\n}') == {
        "a": "http://x/*y*/",
        "b": [1, 2],
    }


def test_adding_a_nested_member_keeps_every_comment_and_line() -> None:
    """A new `context_servers.od-runs` goes in as the last member; all old text is still there."""
    text = jsonc.set_member(ZED, ["context_servers", "od-runs"], {"command": "/x", "args": []})
    assert jsonc.loads(text) == {
        "theme": "One Dark",
        "buffer_font_size": 15,
        "context_servers": {"od-runs": {"command": "/x", "args": []}},
    }
    kept = [line for line in ZED.splitlines() if line != "}"]
    assert all(line in text.splitlines() for line in kept)
    assert '  "context_servers": {\n    "od-runs": {\n      "command": "/x",' in text


def test_replacing_a_member_touches_only_its_value() -> None:
    """Setting an existing member rewrites its value only; setting it again changes nothing."""
    first = jsonc.set_member(ZED, ["servers", "a"], 1)
    second = jsonc.set_member(first, ["servers", "a"], {"b": 2})
    assert jsonc.loads(second)["servers"] == {"a": {"b": 2}}
    assert second.replace('{\n      "b": 2\n    }', "1") == first
    assert jsonc.set_member(second, ["servers", "a"], {"b": 2}) == second


def test_a_comma_is_added_after_a_last_member_without_one() -> None:
    """Inserting after a member that ends in a line comment keeps the comment on its line."""
    text = jsonc.set_member('{\n  "a": 1 // note\n}\n', ["b"], True)
    assert text == '{\n  "a": 1, // note\n  "b": true\n}\n'
    assert json.loads(jsonc.set_member("{}", ["b"], [1])) == {"b": [1]}
    assert json.loads(jsonc.set_member("", ["a", "b"], 1)) == {"a": {"b": 1}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1]", "the top level is not an object"),
        ('{"a": 1', "expected ',' or '}' at line 1"),
        ('{"a": 1}\nx', "unexpected text after the JSON value at line 2"),
        ("{/* open", "unterminated comment"),
        ('{"servers": 3}', "servers is not an object"),
    ],
)
def test_text_it_cannot_edit_safely_is_refused(text: str, message: str) -> None:
    """Broken JSON, or a path through a non-object, raises JsoncError with a line number."""
    with pytest.raises(jsonc.JsoncError, match=message):
        jsonc.set_member(text, ["servers", "od-runs"], {})
