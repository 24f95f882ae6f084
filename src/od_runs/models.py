"""Pydantic models at the edges: what callers send, what the API returns.

Pure data: this module imports nothing from the rest of the project.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

RunState = Literal["queued", "running", "succeeded", "failed", "canceled"]
# How a run answers an agent's approval requests: allow all, deny all, or (default) allow
# what stays inside the run's cwd and deny the rest.
ApprovalPolicy = Literal["default", "allow", "deny"]
SessionState = Literal["active", "idle", "retired"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
STATUS_FILTERS = ("queued", "running", "succeeded", "failed", "canceled", "active")

# Ids travel in URLs and become directory names under runs_log/: keep them boring.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
RUN_ID_PATTERN = r"^run-[0-9a-f]{16}$"
SESSION_ID_PATTERN = r"^ses-[0-9a-f]{16}$"
# What Python's uuid.UUID() takes among ID_PATTERN strings (codex and claude thread ids):
# 32 hex digits, hyphens anywhere between or after them, an optional urn: / uuid: prefix.
UUID_PATTERN = r"^(urn:)?(uuid:)?[0-9A-Fa-f](-*[0-9A-Fa-f]){31}-*$"
# A command argument or an environment value: anything but NUL (exec cannot pass it).
NO_NUL_PATTERN = r"^[^\x00]*$"
# An environment variable name: not empty, no '=' (it ends the name), no NUL.
ENV_NAME_PATTERN = r"^[^=\x00]+$"
# Unicode White_Space, spelled out: regex engines disagree on \s (Rust's, which pydantic
# uses, has U+0085 and ECMA's, which JSON Schema tools use, has U+FEFF instead).
_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A model name: no whitespace, and not a flag (a leading '-') or a NUL.
MODEL_PATTERN = rf"^[^{_SPACE}\x00-][^{_SPACE}]*$"
# Longest idle or wall-clock limit a run may ask for: one week.
MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000


def _no_nul_items(schema: JsonDict) -> None:
    """The argv validator in the schema: no item holds a NUL (for list | None fields)."""
    branches = schema.get("anyOf")
    for branch in branches if isinstance(branches, list) else [schema]:
        if isinstance(branch, dict) and branch.get("type") == "array":
            branch["items"] = {"type": "string", "pattern": NO_NUL_PATTERN}


def _json_number(value: Any) -> Any:
    """A number field of a request body takes a JSON number, as its schema says.

    Lax pydantic would also read true, false and "12" as numbers. Strict mode is no cure:
    it refuses 5.0 for an int, which JSON Schema's "integer" allows.
    """
    if isinstance(value, bool | str):
        raise PydanticCustomError("number_type", "Input should be a number")
    return value


# A bool field of a request body: true or false, not 1 or "yes".
Bool = Annotated[bool, Field(strict=True)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class McpServerSpec(_Model):
    """One MCP server a run's agent should get; may hold secrets (env, headers, args, url)."""

    id: str = Field(pattern=ID_PATTERN)
    transport: Literal["stdio", "http", "sse"] = "stdio"
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    enabled: Bool = True
    label: str | None = Field(default=None, max_length=200)


class ToolBundle(_Model):
    """The MCP servers handed to a run's agent, stored whole, never shown whole."""

    mcpServers: list[McpServerSpec] = Field(default_factory=list, max_length=64)


class McpServerSummary(_Model):
    """What the status body may show of a bundle server: no command, args, env, url or headers."""

    id: str
    transport: str
    enabled: bool
    label: str | None = None


class ToolBundleSummary(_Model):
    """The redacted tool bundle on a status body."""

    mcpServers: list[McpServerSummary] = Field(default_factory=list)


class MediaExecution(_Model):
    """Which media surfaces a run may use; stored and shown as given."""

    mode: Literal["enabled", "disabled"] = "enabled"
    allowedSurfaces: list[str] | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Shown as given: a policy without allowedSurfaces has no such key.
        return {k: v for k, v in handler(self).items() if v is not None}


class DemoOptions(_Model):
    """Knobs of the built-in demo agent."""

    events: int = Field(default=40, ge=4, le=10_000_000)
    durationSeconds: float = Field(default=4.0, ge=0, le=3600)
    fast: Bool = False

    @field_validator("events", "durationSeconds", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return _json_number(value)


class SessionRef(_Model):
    """The agent's own session a run belongs to (Codex: its thread id)."""

    threadId: str | None = Field(default=None, pattern=ID_PATTERN)


WorkspaceKeep = Literal["always", "changed", "never"]


class WorkspaceSpec(_Model):
    """Run the agent in a git worktree of `repo` on its own branch (see workspaces.py)."""

    mode: Literal["worktree"] = "worktree"
    repo: str = Field(min_length=1, max_length=4096, description="A git checkout (not bare)")
    base: str = Field(
        default="HEAD",
        min_length=1,
        max_length=256,
        pattern=r"^[^-\s\x00][^\s\x00]*$",
        description="Commit-ish the worktree's branch starts from",
    )
    keep: WorkspaceKeep = Field(
        default="changed",
        description="When the conversation's last run ends: always keep the worktree, keep "
        "it if it has changes (default), or never (removed unless it has uncommitted changes)",
    )


class FileChange(_Model):
    """One file changed against the base; insertions/deletions are null for binary files."""

    path: str
    insertions: int | None = None
    deletions: int | None = None


class WorkspaceInfo(_Model):
    """A run's worktree and, once the run has ended, what changed in it."""

    id: str
    path: str
    repo: str
    branch: str
    baseCommit: str
    headCommit: str | None = None
    dirty: bool | None = Field(default=None, description="Uncommitted changes (incl. untracked)")
    files: list[FileChange] = Field(default_factory=list)
    truncated: int = Field(default=0, description="Changed files left out of files")
    keep: WorkspaceKeep = "changed"
    removed: bool = False


class WorktreeEntry(_Model):
    """One worktree od-runs made: GET /api/worktrees."""

    id: str
    path: str
    repo: str
    branch: str
    baseCommit: str
    headCommit: str | None = None
    keep: WorkspaceKeep = "changed"
    conversationId: str | None = None
    runIds: list[str] = Field(default_factory=list)
    createdAt: str = ""
    exists: bool = True
    dirty: bool | None = None
    inUse: bool = False


class WorktreeList(_Model):
    """Body of GET /api/worktrees and POST /api/worktrees/prune (the removed ones)."""

    worktrees: list[WorktreeEntry]


class DiffPage(_Model):
    """A page of a run's diff against its base (GET /api/runs/{id}/diff?format=json)."""

    diff: str
    offset: int
    nextOffset: int
    hasMore: bool


class RunCreate(_Model):
    """Body of POST /api/runs and the MCP start_run tool."""

    agentId: str = Field(
        default="demo",
        pattern=ID_PATTERN,
        description="Which agent runs; an id no adapter is registered for is a 422 "
        "(GET /openapi.json lists the registered ones, each with the fields it takes)",
    )
    prompt: str = Field(default="", max_length=1_000_000)
    projectId: str | None = Field(default=None, pattern=ID_PATTERN)
    conversationId: str | None = Field(default=None, pattern=ID_PATTERN)
    clientRequestId: str | None = Field(default=None, pattern=ID_PATTERN)
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="argv for agentId=command; for acp, the ACP agent's argv (default codex-acp)",
        json_schema_extra=_no_nul_items,
    )
    cwd: str | None = Field(default=None, max_length=4096)
    env: dict[str, str] = Field(
        default_factory=dict,
        description="extra environment for the child; values of *TOKEN*/*KEY*/*SECRET*/"
        "*PASSWORD* names are scrubbed from everything the run emits",
        json_schema_extra={
            "propertyNames": {"pattern": ENV_NAME_PATTERN},
            "additionalProperties": {"type": "string", "pattern": NO_NUL_PATTERN},
        },
    )
    demo: DemoOptions = Field(default_factory=DemoOptions)
    mediaExecution: MediaExecution = Field(default_factory=MediaExecution)
    toolBundle: ToolBundle | None = None
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=MODEL_PATTERN,
        description="Model the agent should use; omitted, the agent's own config decides",
    )
    idleTimeoutMs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TIMEOUT_MS,
        description="Fail with AGENT_STALLED after this long without any output; "
        "0 turns the watchdog off, null takes the agent's default",
    )
    timeoutMs: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TIMEOUT_MS,
        description="Wall-clock limit (AGENT_TIMEOUT); null: none",
    )
    sessionRef: SessionRef | None = Field(
        default=None,
        description="Continue this agent session; without it a run in a conversation "
        "continues the conversation's last session",
    )
    postToolIdleTimeoutMs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TIMEOUT_MS,
        description="Fail with AGENT_STALLED after this long without any output once a tool "
        "call has finished (agents that report tool calls: codex-app-server); 0 turns it "
        "off, null takes the agent's default",
    )
    approvalPolicy: ApprovalPolicy = Field(
        default="default",
        description="How the agent's approval requests are answered: allow, deny, or "
        "default (allow what stays inside cwd, deny the rest)",
    )
    workspace: WorkspaceSpec | None = Field(
        default=None,
        description="Run in a git worktree of its own; cwd is then relative to the worktree",
    )

    @field_validator("idleTimeoutMs", "timeoutMs", "postToolIdleTimeoutMs", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return _json_number(value)

    @field_validator("command")
    @classmethod
    def _no_nul(cls, argv: list[str] | None) -> list[str] | None:
        if argv is not None and any("\x00" in a for a in argv):
            raise ValueError("command arguments must not contain NUL bytes")
        return argv

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not name or "=" in name or "\x00" in name or "\x00" in value:
                raise ValueError(f"invalid environment variable name or value: {name!r}")
        return env


class TokenUsage(_Model):
    """Tokens a run's turn used, as the agent reported them."""

    inputTokens: int = 0
    cachedInputTokens: int = 0
    outputTokens: int = 0
    reasoningOutputTokens: int = 0
    totalTokens: int = 0


class RunStatus(_Model):
    """The status body: what GET /api/runs/{id} returns (OD-compatible names)."""

    id: str
    projectId: str | None = None
    conversationId: str | None = None
    agentId: str
    status: RunState
    createdAt: str
    updatedAt: str
    startedAt: str | None = None
    finishedAt: str | None = None
    cancelRequested: bool = False
    childPid: int | None = None
    exitCode: int | None = None
    signal: str | None = None
    error: str | None = None
    errorCode: str | None = None
    retryable: bool | None = None
    eventsLogPath: str | None = None
    workerId: str | None = Field(
        default=None, description="The daemon executing the run (several daemons); None alone"
    )
    eventsLogHost: str | None = Field(
        default=None, description="The host whose disk holds eventsLogPath (several daemons)"
    )
    lastEventId: int = 0
    mediaExecution: MediaExecution = Field(default_factory=MediaExecution)
    toolBundle: ToolBundleSummary | None = None
    sessionRef: SessionRef | None = None
    usage: TokenUsage | None = None
    workspace: WorkspaceInfo | None = None


class SessionEvent(_Model):
    """Something that happened to a session: spawned, thread resumed, a turn, retired."""

    ts: str
    type: str
    data: dict[str, Any] = Field(default_factory=dict)


class SessionStatus(_Model):
    """A live agent session: one agent process serving a conversation's runs as turns."""

    id: str
    conversationId: str | None = None
    agentId: str
    threadId: str | None = None
    status: SessionState
    pid: int | None = None
    lastRunId: str | None = None
    lastTurnStatus: str | None = None
    retiredReason: str | None = None
    createdAt: str
    updatedAt: str


class SessionDetail(SessionStatus):
    """GET /api/sessions/{id}: the session plus its recent events, oldest first."""

    recentEvents: list[SessionEvent] = Field(default_factory=list)


class SessionList(_Model):
    """Body of GET /api/sessions."""

    sessions: list[SessionStatus]


class Event(_Model):
    """One line of events.jsonl: dense id per run, event name, data, ISO-8601 UTC ts."""

    id: int
    event: str
    data: Any = None
    ts: str


class EventPage(_Model):
    """A JSON page of events after a cursor."""

    items: list[Event]
    nextCursor: int
    hasMore: bool


class RunList(_Model):
    """Body of GET /api/runs."""

    runs: list[RunStatus]


class CancelResult(_Model):
    """Body of POST /api/runs/{id}/cancel."""

    ok: bool = True
    run: RunStatus


class DataDirUsage(_Model):
    """How much the data dir holds and how much its filesystem has left (cached briefly)."""

    bytes: int = Field(description="Bytes under the data dir (the database and every run log)")
    freeBytes: int = Field(description="Bytes free on the data dir's filesystem")


class WorkerInfo(_Model):
    """One daemon of a cluster on PostgreSQL, as its heartbeats show it."""

    id: str
    host: str
    started: str
    heartbeat: str
    alive: bool = Field(description="Heartbeat within the lease (OD_RUNS_LEASE_SECONDS)")
    activeRuns: int = Field(description="Runs it has claimed that are queued or running")


class Health(_Model):
    """Body of GET /api/health."""

    ok: bool = True
    version: str
    activeRuns: int
    openStreams: int = Field(description="SSE streams being served (runs and /api/events)")
    dataDir: DataDirUsage | None = Field(default=None, description="None without a data dir")
    workerId: str | None = Field(default=None, description="This daemon (several daemons)")
    workers: list[WorkerInfo] | None = Field(
        default=None, description="Every daemon on the database; None without one"
    )


class ErrorBody(_Model):
    """The inside of an error response."""

    code: str
    message: str


class ApiErrorBody(_Model):
    """Every error response: {"error": {"code", "message"}}."""

    error: ErrorBody


class RunError(_Model):
    """A structured run failure."""

    code: str
    message: str
    retryable: bool = False
