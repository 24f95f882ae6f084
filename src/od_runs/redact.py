"""Tool-bundle summaries and secret scrubbing of everything that leaves the process."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping

from .models import McpServerSummary, ToolBundle, ToolBundleSummary

REDACTED = "[REDACTED]"
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
# Shorter values would scrub ordinary words ("true", "1234") out of every event.
MIN_SECRET_LEN = 6
# In an event line a secret is JSON-escaped once if the child printed it raw, twice if it
# printed it inside JSON, three times if inside a JSON string inside JSON (tool arguments).
JSON_DEPTH = 3
_SECRET_ARG = re.compile(r"^--?[\w-]*(token|key|secret|password|auth)[\w-]*=(.+)$", re.IGNORECASE)
# The same flag without "=": its value is the next argument ("--token VALUE").
_SECRET_FLAG = re.compile(r"^--?[\w-]*(token|key|secret|password|auth)[\w-]*$", re.IGNORECASE)
# A JSON string literal, escapes included (the unrolled form of "(?:[^"\\]|\\.)*").
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def summarize_bundle(bundle: ToolBundle | None) -> ToolBundleSummary | None:
    """Return the part of a tool bundle that may be shown: id, transport, enabled, label."""
    if bundle is None:
        return None
    return ToolBundleSummary(
        mcpServers=[
            McpServerSummary(id=s.id, transport=s.transport, enabled=s.enabled, label=s.label)
            for s in bundle.mcpServers
        ]
    )


def secret_env_values(env: Mapping[str, str]) -> list[str]:
    """Values of env vars whose names look like credentials."""
    return [v for k, v in env.items() if SECRET_NAME.search(k)]


def bundle_secrets(bundle: ToolBundle | None) -> list[str]:
    """Every value in a bundle that could be a credential: env, headers, url, secret-ish args."""
    if bundle is None:
        return []
    found: list[str] = []
    for server in bundle.mcpServers:
        found += server.env.values()
        found += server.headers.values()
        for header in server.headers.values():
            # "Bearer abc" leaks "abc" even when printed without its scheme.
            found += header.split()[1:]
        if server.url:
            found.append(server.url)
        for i, arg in enumerate(server.args):
            match = _SECRET_ARG.match(arg)
            if match:
                found.append(match.group(2))
            elif _SECRET_FLAG.match(arg) and i + 1 < len(server.args):
                found.append(server.args[i + 1])
    return found


class Scrubber:
    """Replaces known secret values, raw or JSON-escaped, with [REDACTED].

    scrub() is for plain text. scrub_json() is for serialised JSON (event lines), where a
    secret shows up escaped up to JSON_DEPTH times; a match only ever replaces whole escape
    sequences inside a string, so the line stays valid JSON.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        plain: set[str] = set()
        encoded: set[str] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET_LEN:
                continue
            plain.add(secret)
            level = {secret}
            for _ in range(JSON_DEPTH):
                level = {_escape(form, flag) for form in level for flag in (False, True)}
                encoded |= level
        self._pattern = _alternation(plain | encoded)
        self._encoded = _alternation(encoded)
        # An escape sequence is consumed whole unless a secret starts there, so no match
        # begins halfway through one ("\\" + "u00e9..." must not become "\\[REDACTED]").
        self._aligned = (
            re.compile(f"({self._encoded.pattern})|\\\\.", re.DOTALL) if self._encoded else None
        )

    def __bool__(self) -> bool:
        return self._pattern is not None

    def scrub(self, text: str) -> str:
        """Return plain text with every secret replaced."""
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def scrub_json(self, text: str) -> str:
        """Return serialised JSON with every secret inside its strings replaced."""
        if self._encoded is None or not self._encoded.search(text):
            return text  # the common case: one search, no secret anywhere
        return _JSON_STRING.sub(self._scrub_string, text)

    def _scrub_string(self, literal: re.Match[str]) -> str:
        text = literal.group()
        assert self._encoded is not None and self._aligned is not None
        if not self._encoded.search(text):
            return text
        return self._aligned.sub(_redact_token, text)


def _escape(text: str, ensure_ascii: bool) -> str:
    """text as it reads inside a JSON string."""
    return json.dumps(text, ensure_ascii=ensure_ascii)[1:-1]


def _alternation(forms: set[str]) -> re.Pattern[str] | None:
    # Longest first, so a secret that contains another is replaced whole.
    ordered = sorted(forms, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


def _redact_token(match: re.Match[str]) -> str:
    return REDACTED if match.group(1) is not None else match.group()


def daemon_secrets() -> list[str]:
    """Credential-like values in the daemon's own environment, which no event may carry."""
    return secret_env_values(os.environ)
