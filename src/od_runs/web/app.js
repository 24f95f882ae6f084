// od-runs monitor: the list of runs at /, one run at /runs/{id}. Plain DOM, no build step.
//
// The list follows every run over ONE connection (GET /api/events), so a page never runs out
// of the browser's six HTTP/1.1 connections per host. A run view follows its run's SSE stream;
// it renders each event once (ids are dense, so anything <= the last rendered id is a
// duplicate) and keeps what it rendered in sessionStorage, so a reload resumes with ?after=.
"use strict";

(() => {
  const TOKEN_KEY = "od-runs:token";
  const CACHE_PREFIX = "od-runs:run:";
  // Characters of events a run view keeps in sessionStorage; past it, a reload replays the rest.
  const CACHE_BUDGET = 2_000_000;
  const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
  // Event names the daemon and its adapters emit; any other name is fetched as a gap.
  const EVENT_NAMES = ["start", "agent", "stdout", "stderr", "error", "end", "message", "status", "log"];
  const MAX_ROWS = 500;

  const $ = (selector) => document.querySelector(selector);

  // Token ------------------------------------------------------------------------------------

  function takeTokenFromUrl() {
    const url = new URL(location.href);
    const given = url.searchParams.get("token");
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given);
      url.searchParams.delete("token");
      history.replaceState(null, "", url);
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  // EventSource cannot send headers: the daemon accepts ?token= instead.
  function streamUrl(path, params) {
    const query = new URLSearchParams(params);
    if (token()) query.set("token", token());
    const text = query.toString();
    return text ? `${path}?${text}` : path;
  }

  function showTokenForm() {
    const form = $("#token-form");
    form.hidden = false;
    form.onsubmit = (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
      location.reload();
    };
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (token()) headers.set("Authorization", `Bearer ${token()}`);
    if (options.body !== undefined) headers.set("Content-Type", "application/json");
    const response = await fetch(path, { ...options, headers });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (response.status === 401) showTokenForm();
    if (!response.ok) {
      const error = (body && body.error) || {};
      throw new ApiError(response.status, error.code || "HTTP_ERROR", error.message || response.statusText);
    }
    return body;
  }

  // Small helpers ----------------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else node[key] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function setConn(state, text) {
    const conn = $("#conn");
    conn.dataset.state = state;
    conn.textContent = text || state;
  }

  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    const sameDay = date.toDateString() === new Date().toDateString();
    return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
  }

  function formatDuration(ms) {
    if (!Number.isFinite(ms) || ms < 0) return "";
    if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
    const seconds = Math.round(ms / 1000);
    if (seconds < 60) return `${seconds} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${String(seconds % 60).padStart(2, "0")} s`;
    return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
  }

  function runDuration(run) {
    const from = run.startedAt || run.createdAt;
    if (!from) return "";
    const to = run.finishedAt ? Date.parse(run.finishedAt) : TERMINAL.has(run.status) ? NaN : Date.now();
    return formatDuration(to - Date.parse(from));
  }

  function usageText(data) {
    const parts = [["in", data.inputTokens], ["cached", data.cachedInputTokens], ["out", data.outputTokens], ["reasoning", data.reasoningOutputTokens]];
    return `Tokens: ${parts.filter(([, n]) => n !== undefined && n !== null).map(([k, n]) => `${k} ${n}`).join(", ")}`;
  }

  function badge(node, status) {
    node.textContent = status || "";
    node.className = `badge status-${status || "unknown"}`;
  }

  // The list ---------------------------------------------------------------------------------

  function listView() {
    $("#list-view").hidden = false;
    document.title = "od-runs";
    const filtersForm = $("#filters");
    const params = new URLSearchParams(location.search);
    for (const name of ["projectId", "conversationId", "status"]) {
      filtersForm.elements[name].value = params.get(name) || "";
    }
    const runs = new Map();
    const tbody = $("#runs");
    const table = tbody.closest("table");
    let source = null;
    let retryTimer = null;
    let retryDelay = 1000;

    const filters = () => {
      const out = {};
      for (const name of ["projectId", "conversationId", "status"]) {
        const value = filtersForm.elements[name].value.trim();
        if (value) out[name] = value;
      }
      return out;
    };

    function matches(run) {
      const f = filters();
      if (f.projectId && run.projectId !== f.projectId) return false;
      if (f.conversationId && run.conversationId !== f.conversationId) return false;
      if (f.status === "active") return !TERMINAL.has(run.status);
      return !f.status || run.status === f.status;
    }

    const newer = (a, b) => (a.createdAt === b.createdAt ? a.id > b.id : a.createdAt > b.createdAt);

    function fillRow(row, run) {
      row.dataset.status = run.status;
      const cells = row.children;
      badge(cells[1].firstChild, run.status);
      cells[2].textContent = run.agentId;
      cells[3].textContent = run.workerId || "";
      cells[3].title = run.eventsLogHost ? `log on ${run.eventsLogHost}` : "";
      // Once one run has a worker the daemon is on a database: show the column from then on.
      if (run.workerId) table.dataset.workers = "";
      cells[4].textContent = run.projectId || "";
      cells[5].textContent = run.conversationId || "";
      cells[6].textContent = formatTime(run.createdAt);
      cells[6].title = run.createdAt;
      cells[7].textContent = runDuration(run);
      cells[8].textContent = run.exitCode ?? (run.signal || "");
    }

    function newRow(run) {
      const row = el(
        "tr",
        { "data-run-id": run.id },
        el("td", {}, el("a", { href: `/runs/${encodeURIComponent(run.id)}`, text: run.id, class: "run-link" })),
        el("td", {}, el("span", { class: "badge" })),
        el("td"), el("td", { class: "worker-col" }), el("td"), el("td"), el("td"), el("td"),
        el("td", { class: "num" }),
      );
      fillRow(row, run);
      return row;
    }

    function place(row, run) {
      // Newest first: walk from the top, since new runs are almost always the newest.
      let before = tbody.firstElementChild;
      while (before && before !== row && !newer(run, runs.get(before.dataset.runId))) {
        before = before.nextElementSibling;
      }
      if (before !== row) tbody.insertBefore(row, before);
    }

    function upsert(run) {
      const row = tbody.querySelector(`tr[data-run-id="${CSS.escape(run.id)}"]`);
      if (!matches(run)) {
        runs.delete(run.id);
        if (row) row.remove();
      } else if (row) {
        runs.set(run.id, run);
        fillRow(row, run);
      } else {
        runs.set(run.id, run);
        place(newRow(run), run);
        while (tbody.children.length > MAX_ROWS) {
          runs.delete(tbody.lastElementChild.dataset.runId);
          tbody.lastElementChild.remove();
        }
      }
      $("#runs-empty").hidden = tbody.children.length > 0;
    }

    function forget(runId) {
      runs.delete(runId);
      const row = tbody.querySelector(`tr[data-run-id="${CSS.escape(runId)}"]`);
      if (row) row.remove();
      $("#runs-empty").hidden = tbody.children.length > 0;
    }

    function snapshot(list) {
      runs.clear();
      tbody.replaceChildren();
      for (const run of list) if (matches(run)) runs.set(run.id, run);
      const sorted = [...runs.values()].sort((a, b) => (newer(a, b) ? -1 : 1)).slice(0, MAX_ROWS);
      tbody.append(...sorted.map(newRow));
      $("#runs-empty").hidden = tbody.children.length > 0;
    }

    function connect() {
      clearTimeout(retryTimer);
      if (source) source.close();
      setConn("connecting", "connecting…");
      source = new EventSource(streamUrl("/api/events", filters()));
      const current = source;
      source.addEventListener("snapshot", (event) => {
        snapshot(JSON.parse(event.data).runs);
        retryDelay = 1000;
        setConn("live");
      });
      source.addEventListener("run", (event) => upsert(JSON.parse(event.data)));
      source.addEventListener("deleted", (event) => forget(JSON.parse(event.data).id));
      source.onerror = () => {
        if (current !== source) return;
        setConn("reconnecting", "reconnecting…");
        // CLOSED means the browser gave up (an HTTP error): find out why, then try again.
        if (source.readyState === EventSource.CLOSED) {
          api("/api/health").then(
            () => schedule(),
            (error) => { if (!(error instanceof ApiError && error.status === 401)) schedule(); },
          );
        }
      };
    }

    function schedule() {
      retryTimer = setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 5000);
    }

    let typing = null;
    filtersForm.addEventListener("input", (event) => {
      // One reconnect per pause in typing, not one per keystroke.
      clearTimeout(typing);
      typing = setTimeout(() => {
        const url = new URL(location.href);
        url.search = new URLSearchParams(filters()).toString();
        history.replaceState(null, "", url);
        connect();
      }, event.target.tagName === "SELECT" ? 0 : 250);
    });
    filtersForm.addEventListener("submit", (event) => event.preventDefault());

    setInterval(() => {
      for (const row of tbody.querySelectorAll('tr[data-status="running"], tr[data-status="queued"]')) {
        const run = runs.get(row.dataset.runId);
        if (run) row.children[7].textContent = runDuration(run);
      }
    }, 1000);

    startForm();
    connect();
  }

  function startForm() {
    const form = $("#start-form");
    const commandField = form.querySelector(".command-only");
    const syncAgent = () => {
      commandField.hidden = form.elements.agentId.value !== "command";
    };
    form.elements.agentId.addEventListener("change", syncAgent);
    syncAgent();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = $("#start-error");
      error.textContent = "";
      const body = { agentId: form.elements.agentId.value, prompt: form.elements.prompt.value };
      for (const name of ["projectId", "conversationId"]) {
        const value = form.elements[name].value.trim();
        if (value) body[name] = value;
      }
      if (body.agentId === "command") {
        body.command = form.elements.command.value.trim().split(/\s+/).filter(Boolean);
      }
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const run = await api("/api/runs", { method: "POST", body: JSON.stringify(body) });
        location.assign(`/runs/${encodeURIComponent(run.id)}`);
      } catch (failure) {
        error.textContent = failure.message;
        button.disabled = false;
      }
    });
  }

  // One run ----------------------------------------------------------------------------------

  class EventView {
    // Renders events into #events; each event's element carries data-event-id, and blocks
    // that gather several events (a message, a tool call) hold one such element per event.
    constructor(container) {
      this.container = container;
      this.calls = new Map(); // callId -> {details, state, hadOutput}
    }

    lastBlock() {
      return this.container.lastElementChild;
    }

    add(block) {
      this.container.append(block);
      return block;
    }

    mark(node, event) {
      node.setAttribute("data-event-id", String(event.id));
      node.dataset.event = event.event;
      node.title = `#${event.id} ${event.event} · ${event.ts}`;
      return node;
    }

    render(event) {
      const data = event.data;
      switch (event.event) {
        case "start":
          this.add(this.mark(el("div", { class: "sys", text: `Started ${data?.agentId ?? "agent"}${data?.pid ? ` (pid ${data.pid})` : ""}` }), event));
          break;
        case "agent":
          this.agent(event);
          break;
        case "stdout":
        case "stderr":
          this.stream(event, event.event);
          break;
        case "error":
          this.error(event);
          break;
        case "end":
          this.end(event);
          break;
        default:
          this.generic(event, event.event);
      }
    }

    agent(event) {
      const data = event.data || {};
      switch (data.type) {
        case "text_delta":
          this.text(event, data.delta ?? "");
          break;
        case "message":
          if (data.final) {
            this.add(this.mark(el("div", { class: "final" }, el("div", { class: "label", text: "Final answer" }), el("div", { class: "text", text: data.text ?? "" })), event));
          } else {
            this.text(event, data.text ?? "", data.role || "assistant");
            this.container.lastElementChild.dataset.closed = "true";
          }
          break;
        case "status":
          this.add(this.mark(el("div", { class: "sys status-line", text: data.text ?? "" }), event));
          break;
        case "tool_call":
          this.toolCall(event, data);
          break;
        case "tool_output":
          this.toolOutput(event, data);
          break;
        case "file_change":
          this.fileChange(event, data);
          break;
        case "warning":
          this.add(this.mark(el("div", { class: "warning", text: data.text ?? "" }), event));
          break;
        case "plan":
          this.plan(event, data);
          break;
        case "session":
          this.add(this.mark(el("div", { class: "sys", text: `Session ${data.sessionId ? `${data.sessionId} · thread ` : ""}${data.threadId ?? ""}${data.resumed ? " (resumed)" : ""}` }), event));
          break;
        case "usage":
          this.add(this.mark(el("div", { class: "sys", text: usageText(data) }), event));
          break;
        case "suppressed":
          this.add(this.mark(el("div", { class: "sys", text: `${data.total ?? 0} updates not shown (${(data.kinds || []).map((k) => `${k.kind} ${k.count}`).join(", ")})` }), event));
          break;
        default:
          this.generic(event, `agent ${data.type ?? ""}`.trim());
      }
    }

    text(event, text, role = "assistant") {
      let block = this.lastBlock();
      if (!block || !block.classList.contains("msg") || block.dataset.closed || block.dataset.role !== role) {
        block = this.add(el("div", { class: `msg ${role}`, "data-role": role }, el("div", { class: "label", text: role })));
      }
      block.append(this.mark(el("span", { class: "delta", text }), event));
    }

    callBlock(data, event) {
      const id = data.callId || `call-at-${event.id}`;
      const known = this.calls.get(id);
      // A block that is no longer last gets a continuation, so the page keeps event order.
      if (known && known.details === this.lastBlock()) return known;
      const name = data.name || (known && known.name) || "tool";
      const summaryText = data.summary || (known && known.summaryText) || "";
      const state = el("span", { class: "tool-state", text: known ? known.state.textContent : "" });
      const summary = el(
        "summary",
        {},
        el("span", { class: "tool-name", text: name }),
        " ",
        el("code", { class: "tool-summary", text: summaryText }),
        " ",
        state,
      );
      const details = this.add(el("details", { class: known ? "tool continued" : "tool", "data-call-id": id }, summary));
      const call = { details, summary, state, name, summaryText, hadOutput: known ? known.hadOutput : false };
      this.calls.set(id, call);
      return call;
    }

    toolCall(event, data) {
      const call = this.callBlock(data, event);
      if (data.phase === "started" && !call.summary.hasAttribute("data-event-id")) {
        this.mark(call.summary, event);
        call.state.textContent = "running…";
        call.state.dataset.state = "running";
        if (data.input !== undefined) {
          call.details.append(el("pre", { class: "tool-input", text: JSON.stringify(data.input, null, 2) }));
        }
        return;
      }
      const done = this.mark(el("div", { class: "tool-done" }), event);
      const hasExit = data.exitCode !== undefined && data.exitCode !== null;
      const failed = (hasExit && data.exitCode !== 0) || Boolean(data.error) || ["failed", "declined"].includes(data.status);
      let state = data.phase || "update";
      if (data.phase === "completed") state = hasExit ? `exit ${data.exitCode}` : data.status && data.status !== "completed" ? data.status : "done";
      done.textContent = state;
      if (data.error) done.append(el("div", { class: "tool-error", text: data.error }));
      if (data.phase === "completed" && !call.hadOutput && data.output) {
        done.append(el("pre", { class: "tool-output", text: data.output }));
      }
      call.details.append(done);
      call.state.textContent = state;
      call.state.dataset.state = failed ? "failed" : "done";
    }

    toolOutput(event, data) {
      const call = this.callBlock(data, event);
      call.hadOutput = true;
      call.details.append(this.mark(el("pre", { class: "tool-output", text: data.text ?? data.output ?? "" }), event));
    }

    fileChange(event, data) {
      const call = this.callBlock({ callId: data.callId, name: "apply_patch" }, event);
      const list = el("ul", { class: "changes" }, ...(data.changes || []).map((c) => el("li", {}, el("span", { class: "kind", text: c.kind }), " ", el("code", { text: c.path }))));
      call.details.append(this.mark(el("div", { class: "tool-done" }, list), event));
    }

    plan(event, data) {
      const items = (data.items || []).map((item) => el("li", { class: item.done ? "done" : "" }, el("span", { class: "check", text: item.done ? "☑" : "☐" }), " ", item.text));
      this.add(this.mark(el("div", { class: "plan" }, el("div", { class: "label", text: "plan" }), el("ul", {}, ...items)), event));
    }

    stream(event, name) {
      let block = this.lastBlock();
      if (!block || !block.classList.contains("stream") || block.dataset.stream !== name) {
        block = this.add(el("pre", { class: `stream ${name}`, "data-stream": name }));
      }
      const data = event.data || {};
      const text = typeof data === "string" ? data : data.text ?? JSON.stringify(data);
      block.append(this.mark(el("span", { text: data.partial ? text : `${text}\n` }), event));
    }

    error(event) {
      const data = event.data || {};
      const inner = (data && typeof data.error === "object" && data.error) || {};
      const code = inner.code || data.code || "ERROR";
      const message = inner.message || data.message || JSON.stringify(data);
      this.add(this.mark(el("div", { class: "error" }, el("strong", { text: code }), " ", message), event));
    }

    end(event) {
      const data = event.data || {};
      const parts = [`Run ${data.status}`];
      if (data.code !== null && data.code !== undefined) parts.push(`exit ${data.code}`);
      if (data.signal) parts.push(data.signal);
      const block = this.mark(el("div", { class: `end status-${data.status}` }, el("strong", { text: parts.join(" · ") })), event);
      if (data.errorCode || data.error) {
        block.append(el("div", { class: "end-error", text: [data.errorCode, data.error].filter(Boolean).join(": ") }));
      }
      this.add(block);
    }

    generic(event, name) {
      this.add(this.mark(el("div", { class: "generic" }, el("span", { class: "name", text: name }), " ", el("code", { text: JSON.stringify(event.data) })), event));
    }
  }

  class EventCache {
    // What a run view rendered, kept in sessionStorage so a reload resumes where it was.
    constructor(runId) {
      this.key = CACHE_PREFIX + runId;
      this.events = [];
      this.size = 0;
      this.full = false;
      this.timer = null;
    }

    load() {
      try {
        const saved = JSON.parse(sessionStorage.getItem(this.key) || "null");
        if (saved && Array.isArray(saved.events)) {
          this.events = saved.events;
          this.full = Boolean(saved.full);
          this.size = JSON.stringify(saved.events).length;
        }
      } catch {
        this.events = [];
      }
      return this.events;
    }

    push(event) {
      if (this.full) return;
      const size = JSON.stringify(event).length;
      if (this.size + size > CACHE_BUDGET) {
        this.full = true; // later events are replayed by the server after a reload
      } else {
        this.events.push(event);
        this.size += size;
      }
      if (!this.timer) this.timer = setTimeout(() => this.save(), 250);
    }

    save() {
      clearTimeout(this.timer);
      this.timer = null;
      const text = JSON.stringify({ events: this.events, full: this.full });
      try {
        sessionStorage.setItem(this.key, text);
      } catch {
        // Storage is full: forget other runs' caches, then try once more.
        for (const key of Object.keys(sessionStorage)) {
          if (key.startsWith(CACHE_PREFIX) && key !== this.key) sessionStorage.removeItem(key);
        }
        try {
          sessionStorage.setItem(this.key, text);
        } catch {
          sessionStorage.removeItem(this.key);
        }
      }
    }
  }

  function runView(runId) {
    $("#run-view").hidden = false;
    document.title = `${runId} · od-runs`;
    $("#run-id").textContent = runId;
    const view = new EventView($("#events"));
    const cache = new EventCache(runId);
    let lastId = 0;
    let ended = false;
    let status = null;
    let source = null;
    let retryTimer = null;
    let retryDelay = 1000;
    let chain = Promise.resolve();
    let scrollPending = false;

    function follow() {
      // Stick to the bottom while the reader is there; leave them alone if they scrolled up.
      const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
      if (!atBottom || scrollPending) return;
      scrollPending = true;
      requestAnimationFrame(() => {
        scrollPending = false;
        window.scrollTo(0, document.body.scrollHeight);
      });
    }

    function showStatus(run) {
      status = run;
      badge($("#run-status"), run.status);
      for (const dd of document.querySelectorAll("#run-meta [data-field]")) {
        const field = dd.dataset.field;
        dd.replaceChildren();
        if (field === "duration") dd.textContent = runDuration(run);
        else if (field === "toolBundle") dd.append(bundleList(run.toolBundle));
        else if (field === "workerId") {
          // The log path above is a path on the executing daemon's host, not on this one's.
          dd.textContent = run.workerId ?? "";
          if (run.workerId && run.eventsLogHost) dd.append(el("span", { class: "muted", text: ` · log on ${run.eventsLogHost}` }));
        } else if (field.endsWith("At")) {
          dd.textContent = formatTime(run[field]);
          dd.title = run[field] || "";
        } else dd.textContent = run[field] ?? "";
        dd.parentElement.classList.toggle("unset", dd.textContent === "");
      }
      $("#copy-log").hidden = !run.eventsLogPath;
      const cancel = $("#cancel");
      const terminal = TERMINAL.has(run.status);
      cancel.disabled = terminal || run.cancelRequested;
      cancel.textContent = run.cancelRequested && !terminal ? "Canceling…" : "Cancel";
    }

    function bundleList(bundle) {
      const servers = (bundle && bundle.mcpServers) || [];
      if (!servers.length) return document.createTextNode("none");
      return el("ul", { class: "bundle" }, ...servers.map((s) => el("li", {}, el("code", { text: s.id }), ` ${s.transport}${s.enabled ? "" : " (disabled)"}${s.label ? ` · ${s.label}` : ""}`)));
    }

    async function refreshStatus() {
      try {
        showStatus(await api(`/api/runs/${encodeURIComponent(runId)}`));
        return true;
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          const box = $("#run-error");
          box.hidden = false;
          box.textContent = `No run with id ${runId}.`;
          setConn("ended", "not found");
          ended = true;
          if (source) source.close();
          return false;
        }
        return !(error instanceof ApiError && error.status === 401);
      }
    }

    function apply(event) {
      if (event.id <= lastId) {
        // The end of a run we already rendered whole: the stream is over.
        if (event.event === "end") finish();
        return;
      }
      view.render(event);
      lastId = event.id;
      cache.push(event);
      $("#event-count").textContent = `${lastId}`;
      follow();
      if (event.event === "start" || event.event === "error") refreshStatus();
      if (event.event === "end") finish();
    }

    async function fillGap(upto) {
      // An event under a name we do not listen for arrived (or was skipped): fetch it.
      while (lastId < upto) {
        const page = await api(`/api/runs/${encodeURIComponent(runId)}/events?format=json&after=${lastId}&limit=500`);
        const items = page.items.filter((item) => item.id <= upto);
        items.forEach(apply);
        if (!items.length) break;
      }
    }

    function accept(event) {
      chain = chain
        .then(async () => {
          if (event.id > lastId + 1) await fillGap(event.id - 1);
          apply(event);
        })
        .catch((error) => console.error("od-runs: could not render an event", error));
    }

    function finish() {
      if (ended) return;
      ended = true;
      clearTimeout(retryTimer);
      if (source) source.close();
      cache.save();
      setConn("ended", "stream ended");
      refreshStatus();
    }

    function onMessage(message) {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (typeof event.id === "number") accept(event);
    }

    function connect() {
      clearTimeout(retryTimer);
      if (ended) return;
      if (source) source.close();
      const url = streamUrl(`/api/runs/${encodeURIComponent(runId)}/events`, { after: String(lastId) });
      source = new EventSource(url);
      const current = source;
      for (const name of EVENT_NAMES) source.addEventListener(name, onMessage);
      source.onmessage = onMessage;
      source.onopen = () => {
        retryDelay = 1000;
        if (!ended) setConn("live");
      };
      source.onerror = () => {
        if (ended || current !== source) return;
        setConn("reconnecting", "reconnecting…");
        if (source.readyState === EventSource.CLOSED) {
          // The browser gave up (an HTTP error, not a dropped connection): ask why, retry.
          refreshStatus().then((retry) => {
            if (retry && !ended) {
              retryTimer = setTimeout(connect, retryDelay);
              retryDelay = Math.min(retryDelay * 2, 5000);
            }
          });
        }
      };
    }

    $("#cancel").addEventListener("click", async () => {
      const button = $("#cancel");
      button.disabled = true;
      button.textContent = "Canceling…";
      try {
        showStatus((await api(`/api/runs/${encodeURIComponent(runId)}/cancel`, { method: "POST" })).run);
      } catch (error) {
        const box = $("#run-error");
        box.hidden = false;
        box.textContent = error.message;
        if (status) showStatus(status);
      }
    });

    $("#copy-log").addEventListener("click", async () => {
      const path = status && status.eventsLogPath;
      if (!path) return;
      const button = $("#copy-log");
      try {
        await navigator.clipboard.writeText(path);
      } catch {
        const range = document.createRange();
        range.selectNodeContents(document.querySelector('[data-field="eventsLogPath"]'));
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        document.execCommand("copy");
      }
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    });

    window.addEventListener("pagehide", () => cache.save());
    setInterval(() => {
      if (status && !TERMINAL.has(status.status)) {
        document.querySelector('#run-meta [data-field="duration"]').textContent = runDuration(status);
      }
    }, 1000);

    // What this tab already rendered comes back from sessionStorage; ?after=N skips ahead.
    const restored = cache.load();
    for (const event of restored) {
      view.render(event);
      lastId = event.id;
    }
    const skip = Number(new URLSearchParams(location.search).get("after"));
    if (!restored.length && Number.isInteger(skip) && skip > 0) {
      lastId = skip;
      view.add(el("div", { class: "sys", text: `Events up to #${skip} are not shown.` }));
    }
    $("#event-count").textContent = lastId ? `${lastId}` : "";
    const endedBefore = restored.length > 0 && restored[restored.length - 1].event === "end";
    refreshStatus().then((found) => {
      if (!found || ended) return;
      if (endedBefore) finish();
      else connect();
    });
  }

  // Start ------------------------------------------------------------------------------------

  takeTokenFromUrl();
  const match = location.pathname.match(/^\/runs\/([^/]+)\/?$/);
  if (match) runView(decodeURIComponent(match[1]));
  else listView();
})();
