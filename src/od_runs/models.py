"""Pydantic models at the edges: what callers send, what the API returns.

Pure data: this module imports nothing from the rest of the project.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

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
# Longest idle or wall-clock limit a run may ask for: one week.
MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000


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
    enabled: bool = True
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
    fast: bool = False


class SessionRef(_Model):
    """The agent's own session a run belongs to (Codex: its thread id)."""

    threadId: str | None = Field(default=None, pattern=ID_PATTERN)


class RunCreate(_Model):
    """Body of POST /api/runs and the MCP start_run tool."""

    agentId: str = Field(
        default="demo",
        pattern=ID_PATTERN,
        description="Which agent runs: demo, command, codex (GET /openapi.json lists no "
        "enum: the adapter registry decides, and an unknown id is a 422)",
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
    )
    cwd: str | None = Field(default=None, max_length=4096)
    env: dict[str, str] = Field(
        default_factory=dict,
        description="extra environment for the child; values of *TOKEN*/*KEY*/*SECRET*/"
        "*PASSWORD* names are scrubbed from everything the run emits",
    )
    demo: DemoOptions = Field(default_factory=DemoOptions)
    mediaExecution: MediaExecution = Field(default_factory=MediaExecution)
    toolBundle: ToolBundle | None = None
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\s\x00-]\S*$",
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
    lastEventId: int = 0
    mediaExecution: MediaExecution = Field(default_factory=MediaExecution)
    toolBundle: ToolBundleSummary | None = None
    sessionRef: SessionRef | None = None
    usage: TokenUsage | None = None


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


class Health(_Model):
    """Body of GET /api/health."""

    ok: bool = True
    version: str
    activeRuns: int
    openStreams: int = Field(description="SSE streams being served (runs and /api/events)")
    dataDir: DataDirUsage | None = Field(default=None, description="None without a data dir")


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
