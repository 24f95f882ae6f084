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
_SECRET_ARG = re.compile(r"^--?[\w-]*(token|key|secret|password|auth)[\w-]*=(.+)$", re.IGNORECASE)


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
        for arg in server.args:
            match = _SECRET_ARG.match(arg)
            if match:
                found.append(match.group(2))
    return found


class Scrubber:
    """Replaces known secret values, raw or JSON-escaped, with [REDACTED]."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET_LEN:
                continue
            forms.add(secret)
            # The same secret inside a serialised JSON string may be escaped.
            forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
            forms.add(json.dumps(secret)[1:-1])
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def scrub(self, text: str) -> str:
        """Return text with every secret replaced."""
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)


def daemon_secrets() -> list[str]:
    """Credential-like values in the daemon's own environment, which no event may carry."""
    return secret_env_values(os.environ)
