"""What od-runs tells a model over MCP: server instructions and the delegate_run prompt.

Written for a model to read: short sentences, what to do next, what each error means.
"""

from __future__ import annotations

INSTRUCTIONS = """\
od-runs runs coding agents in the background and records every event they emit. A run takes \
seconds (the demo agent) to hours (a real agent on a large task).

How to use it:
- start_run starts a run and returns its id at once (pass waitSeconds to wait up to 50 s first).
- Follow it with wait_run in a loop, passing back nextCursor as `after`, until `done` is true. \
Each call waits up to 50 s and reports progress while it waits. A quiet run is still working: \
keep calling wait_run. Do not cancel it and do not start it again because it seems slow.
- get_run shows the status, the error if any, and a `tail -F` command for the run's log file. \
get_run_events pages through every event the run emitted.
- Resources: runs://{runId} (status JSON), runs://{runId}/events (recent events as JSONL), \
runs://active. Subscribe to a run resource to be told whenever that run changes.
- cancel_run stops a run for good. Use it only when the user asks.

Tool errors start with a code:
NOT_FOUND: no run has that id; check the id. INVALID_REQUEST or BAD_REQUEST: fix the \
arguments as the message says. IDEMPOTENCY_CONFLICT: that clientRequestId was already used \
for a different request. DAEMON_UNAVAILABLE: the od-runs daemon is not running; start it with \
`od-runs serve`. UNAVAILABLE: the daemon is shutting down; retry in a moment.

A failed run has run.errorCode, and run.retryable says whether starting it again later may work:
AGENT_NOT_FOUND or AGENT_SPAWN_FAILED: the agent's program is missing or cannot start. \
AGENT_EXITED: it exited with an error; read its last events. AGENT_STALLED: it printed nothing \
for too long. AGENT_TIMEOUT: it outlived its time limit. AGENT_PROTOCOL_ERROR: it ended without \
a proper final event. AGENT_INCOMPLETE: it ended its turn unfinished (a token or turn limit, a \
refusal). PERMISSION_DENIED: it gave up after the run's approvalPolicy refused what it asked; \
retry with approvalPolicy "allow" only if the user agrees. TOOL_SERVER_FAILED: an MCP server of \
the run's toolBundle could not start; fix or disable it. PROVIDER_AUTH_FAILED, \
PROVIDER_RATE_LIMITED, PROVIDER_UNAVAILABLE, PROVIDER_REJECTED: the model provider refused the \
credentials, rate-limited the agent, was down, or rejected the request. \
PROVIDER_CREDENTIALS_MISSING: the agent's configuration names a key variable the daemon lacks; \
the error names it (set it where `od-runs serve` starts). SESSION_RESUME_FAILED: \
the session to continue is gone. LOG_WRITE_FAILED: the run's log could not be written (disk \
full?). DAEMON_RESTARTED: the daemon stopped during the run; start the run again. \
WORKSPACE_FAILED: the run's git worktree could not be made; the error says why. \
INTERNAL_ERROR: a bug in od-runs."""


def delegate_prompt(task: str, agent: str = "demo", project: str | None = None) -> str:
    """The delegate_run prompt: start the run, follow it with wait_run, tail its log."""
    args = f'prompt=<the task above>, agentId="{agent}"'
    if project:
        args += f', projectId="{project}"'
    if agent == "command":
        args += ", command=<the argv to run>"
    return f"""\
Delegate this task to an od-runs run and see it through to the end.

Task:
{task}

1. Call start_run with {args}. It returns at once with the run's `id` and `eventsLogPath`.
2. Follow the run: call wait_run with runId=<id>, after=<nextCursor of the previous call \
(0 the first time)> and timeoutSeconds=50, again and again until `done` is true. Runs take \
minutes to hours. A run that is quiet is still working: keep waiting. Do not cancel it, and \
do not start it again, because it is slow.
3. To watch it live from a shell, run: tail -F <eventsLogPath>  (one JSON event per line).
4. When `done` is true, look at run.status. succeeded: the agent's answer is in the last \
events (get_run_events pages through all of them). failed: run.errorCode and run.error say \
why. Report the outcome to the user.

Call cancel_run only if the user asks you to stop the run."""
