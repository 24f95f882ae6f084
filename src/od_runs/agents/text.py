"""How an agent's text reads in our events: on one line, cut short, bounded, cwd-relative.

Pure functions shared by the adapters (codex, codex-app-server, claude, acp) and the approval
policy, so that a tool call's summary or output looks the same whichever agent made it.
"""

from __future__ import annotations

import shlex

# How much of a tool's output one event carries.
MAX_OUTPUT_CHARS = 64 * 1024
# How long a tool call's one-line summary may be.
SUMMARY_CHARS = 160
# Shells whose `-c SCRIPT` wrapper a summary leaves out.
WRAPPED_SHELLS = ("bash", "sh", "zsh", "dash")


def one_line(text: str) -> str:
    """Whitespace runs (newlines included) as single spaces."""
    return " ".join(text.split())


def short(text: str, limit: int = 200) -> str:
    """One line of at most limit characters, with an ellipsis where it was cut."""
    line = one_line(text)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def bounded(text: str) -> str:
    """A tool's output, its last MAX_OUTPUT_CHARS characters if it is longer."""
    return text if len(text) <= MAX_OUTPUT_CHARS else text[-MAX_OUTPUT_CHARS:]


def relative(path: str, cwd: str | None) -> str:
    """A path inside cwd as relative to it; any other path as it is."""
    if cwd and path.startswith(cwd.rstrip("/") + "/"):
        return path[len(cwd.rstrip("/")) + 1 :]
    return path


def unwrap_shell(command: str) -> str:
    """The script of `/bin/bash -lc 'script'`, or the command itself."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return command
    if (
        len(argv) == 3
        and argv[0].rsplit("/", 1)[-1] in WRAPPED_SHELLS
        and argv[1] in ("-c", "-lc", "-ic")
    ):
        return argv[2]
    return command


def command_summary(command: str) -> str:
    """A shell command as a one-line summary: `/bin/bash -lc 'make test'` reads `make test`."""
    return short(unwrap_shell(command), SUMMARY_CHARS)
