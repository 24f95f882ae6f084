"""Schemathesis hooks of test_fuzz_openapi (loaded by `st run` through SCHEMATHESIS_HOOKS).

Generated runs must stay harmless and short: no arbitrary program, no long demo, no HOME
or CODEX_HOME of the fuzzer's choosing (Codex writes a tool-bundle profile there), and a
working directory that exists (the schema cannot say which directories exist, so a random
cwd is a 400 the fuzzer would count against the contract). Schemathesis re-judges a case
after this hook edits it, so a negative case the edit makes valid is then held to the
positive checks.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import schemathesis
from schemathesis import Case
from schemathesis.hooks import HookContext

# A directory every generated run may use as its cwd (set by the test).
CWD_ENV = "OD_RUNS_FUZZ_CWD"


def defuse(body: dict[str, Any]) -> None:
    """Make a generated run body safe to start, keeping its shape (types stay as generated)."""
    if isinstance(body.get("command"), list):
        body["command"] = [sys.executable, "-c", "pass"]
    if isinstance(body.get("cwd"), str):
        body["cwd"] = os.environ.get(CWD_ENV, os.getcwd())
    demo = body.get("demo")
    if isinstance(demo, dict):
        demo.update(events=4, durationSeconds=0, fast=True)
    env = body.get("env")
    if isinstance(env, dict):
        for name in ("HOME", "CODEX_HOME"):
            env.pop(name, None)
    # A worktree needs a real git repository and base ref, which no schema can promise;
    # tests/test_worktrees.py covers each way a workspace can be wrong.
    body.pop("workspace", None)


@schemathesis.hook
def before_call(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    """Defuse every run body before it is sent."""
    if isinstance(case.body, dict) and case.method.upper() == "POST":
        defuse(case.body)
