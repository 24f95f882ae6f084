"""What Codex's error messages say: the patterns both Codex adapters read them by.

codex.py (`codex exec`) classifies a failed run with them; app_server_errors.py falls back
on them for a failed app-server turn that carries no HTTP status or error kind.
"""

from __future__ import annotations

import re

# A retry notice, "Reconnecting... 2/5": progress, not a failure.
RECONNECT = re.compile(r"^Reconnecting\.\.\.\s*(\d+)\s*/\s*(\d+)")
HTTP_STATUS = re.compile(r"\b([45]\d\d)\b")
# A tool-bundle server (required = true in the profile) that Codex could not start.
TOOL_SERVER = re.compile(r"required MCP servers failed to initialize: ([^\s:,]+)")
RESUME_GONE = re.compile(
    r"thread/resume|no rollout found|(?:thread|session|conversation) not found", re.I
)
AUTH = re.compile(
    r"\b40[13]\b|unauthori[sz]ed|forbidden|invalid[_ ]api[_ ]key|incorrect api key|"
    r"missing (?:environment variable|api key)|not logged in|log ?in again|sign in again|"
    r"refresh token|token (?:has )?expired|authenticat",
    re.I,
)
RATE = re.compile(r"\b429\b|too many requests|rate[_ -]?limit|usage limit|quota", re.I)
UNAVAILABLE = re.compile(
    r"\b5\d\d\b|service unavailable|internal server error|bad gateway|gateway timeout|"
    r"high demand|overloaded|stream disconnected|error sending request|connection (?:refused|"
    r"reset|closed)|timed out|timeout",
    re.I,
)
