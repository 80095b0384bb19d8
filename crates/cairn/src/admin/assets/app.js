// Cairn dashboard: plain ES module, no framework, no build step, nothing fetched but the API.
//
// Routes (hash): #/workflows[?filters] (default), #/workflows/<id>, #/queues, #/schedules.
// Every element a test looks for carries a data-testid.

const STATUSES = [
  "PENDING",
  "ENQUEUED",
  "DELAYED",
  "SUCCESS",
  "ERROR",
  "CANCELLED",
  "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
];
const TERMINAL = new Set(["SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"]);
const PAGE_SIZE = 50;
const REFRESH_MS = 2000;
const CHILD_DEPTH = 3;
const TOKEN_KEY = "cairn.dashboard.token";

// --- API ------------------------------------------------------------------------------------

/** Reads `?token=` once, keeps it for the session, and takes it out of the address bar. */
function initToken() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

/** A failed API call, carrying the server's `{"error": ...}` message. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  // Relative to the page, so the dashboard also works mounted under a path prefix.
  const response = await fetch(new URL(`api/${path}`, document.baseURI), {
    method: options.method || "GET",
    headers,
    body,
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const message = data && data.error ? data.error : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

const enc = encodeURIComponent;

// --- DOM helpers ----------------------------------------------------------------------------

/** Builds an element: h("td", {class: "x", dataset: {...}, onclick}, child, "text", ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") el.style.cssText = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  append(el, children);
  return el;
}

function badge(status, big) {
  const text = status || "UNKNOWN";
  return h("span", {
    class: `badge s-${text}${big ? " big" : ""}`,
    dataset: { testid: "status-badge", status: text },
    title: text,
  }, text === "MAX_RECOVERY_ATTEMPTS_EXCEEDED" ? "MAX RECOVERY" : text);
}

function workflowLink(id, attrs = {}) {
  return h("a", { href: `#/workflows/${enc(id)}`, class: "mono", ...attrs }, id);
}

let toastTimer;
function toast(message, isError) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = `toast${isError ? " error" : ""}`;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), isError ? 6000 : 3000);
}

// --- formatting -----------------------------------------------------------------------------

function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms < 1) return "<1 ms";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return Math.round(s % 60) ? `${m}m ${Math.round(s % 60)}s` : `${m} min`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours}h ${m % 60}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

function formatAbsolute(ms) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function formatRelative(ms) {
  if (ms === null || ms === undefined) return "–";
  const delta = Date.now() - ms;
  const future = delta < 0;
  const s = Math.abs(delta) / 1000;
  let text;
  if (s < 5) return future ? "in a moment" : "just now";
  if (s < 60) text = `${Math.floor(s)}s`;
  else if (s < 3600) text = `${Math.floor(s / 60)}m`;
  else if (s < 86400) text = `${Math.floor(s / 3600)}h`;
  else text = `${Math.floor(s / 86400)}d`;
  return future ? `in ${text}` : `${text} ago`;
}

/** A time cell: relative text, absolute time in the tooltip. */
function timeCell(ms) {
  return h("td", { class: "muted", title: formatAbsolute(ms) }, formatRelative(ms));
}

function durationOf(row) {
  if (row.duration_ms !== null && row.duration_ms !== undefined) return row.duration_ms;
  const start = row.started_at ?? row.created_at;
  if (start == null) return null;
  if (row.completed_at != null) return row.completed_at - start;
  return null;
}

function pretty(value) {
  if (value === undefined) return "";
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

function preview(value, max = 120) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

// --- routing --------------------------------------------------------------------------------

/** The current view's teardown (timers, listeners), run before the next view renders. */
let teardown = () => {};

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/workflows";
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query) };
}

function route() {
  teardown();
  teardown = () => {};
  const { parts, params } = parseHash();
  const app = document.getElementById("app");
  app.replaceChildren();
  const page = parts[0] || "workflows";
  for (const link of document.querySelectorAll(".nav a")) {
    link.classList.toggle("active", link.dataset.nav === page);
  }
  if (page === "workflows" && parts.length > 1) {
    teardown = workflowPage(app, parts.slice(1).join("/"));
  } else if (page === "queues") {
    teardown = queuesPage(app);
  } else if (page === "schedules") {
    teardown = schedulesPage(app);
  } else {
    teardown = workflowsPage(app, params);
  }
}

/**
 * Calls `refresh` every 2 s while the page is visible, and at once when it becomes visible
 * again; returns the function that stops it. `refresh` may return false to stop early.
 */
function everyTwoSeconds(refresh, isLive = () => true) {
  let stopped = false;
  let timer = null;
  const schedule = () => {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  };
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden && isLive()) {
      try {
        await refresh();
      } catch {
        // The view shows its own error; keep polling so it recovers when the server does.
      }
    }
    schedule();
  };
  const onVisibility = () => {
    if (!document.hidden && isLive()) tick();
  };
  document.addEventListener("visibilitychange", onVisibility);
  schedule();
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisibility);
  };
}

// --- confirmation dialog --------------------------------------------------------------------

/**
 * Asks for confirmation in the page's <dialog>. With `field`, asks for a positive integer too.
 * Resolves with `true` (or the number) on confirm, `null` when dismissed.
 */
function confirmDialog({ title, message, confirmLabel = "Confirm", danger = false, field = null }) {
  const dialog = document.getElementById("confirm-dialog");
  const ok = document.getElementById("confirm-ok");
  const dismiss = document.getElementById("confirm-dismiss");
  const input = document.getElementById("confirm-input");
  const fieldLabel = document.getElementById("confirm-field");
  const error = document.getElementById("confirm-error");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-message").textContent = message;
  ok.textContent = confirmLabel;
  ok.className = `btn ${danger ? "btn-danger" : "btn-primary"}`;
  error.hidden = true;
  fieldLabel.hidden = !field;
  if (field) {
    document.getElementById("confirm-field-label").textContent = field.label;
    input.value = field.value ?? "";
    input.min = field.min ?? 1;
    if (field.max) input.max = field.max;
    else input.removeAttribute("max");
  }
  return new Promise((resolve) => {
    const finish = (result) => {
      ok.removeEventListener("click", onOk);
      dismiss.removeEventListener("click", onDismiss);
      dialog.removeEventListener("cancel", onDismiss);
      if (dialog.open) dialog.close();
      resolve(result);
    };
    const onOk = (event) => {
      event.preventDefault();
      if (field) {
        const n = Number(input.value);
        if (!Number.isInteger(n) || n < (field.min ?? 1) || (field.max && n > field.max)) {
          error.textContent = field.max
            ? `Enter a whole number from ${field.min ?? 1} to ${field.max}.`
            : `Enter a whole number of at least ${field.min ?? 1}.`;
          error.hidden = false;
          return;
        }
        finish(n);
      } else {
        finish(true);
      }
    };
    const onDismiss = (event) => {
      event.preventDefault();
      finish(null);
    };
    ok.addEventListener("click", onOk);
    dismiss.addEventListener("click", onDismiss);
    dialog.addEventListener("cancel", onDismiss);
    dialog.showModal();
    (field ? input : ok).focus();
  });
}

// --- workflows page -------------------------------------------------------------------------

function workflowsPage(app, params) {
  const filters = {
    status: new Set((params.get("status") || "").split(",").filter((s) => STATUSES.includes(s))),
    name: params.get("name") || "",
    queue: params.get("queue") || "",
    id_prefix: params.get("id_prefix") || "",
  };
  let offset = Math.max(0, Number(params.get("offset")) || 0);
  let live = true;
  let sequence = 0;

  const tbody = h("tbody", { "data-testid": "workflow-rows" });
  const summary = h("span", { "data-testid": "page-summary" });
  const prev = h("button", { class: "btn btn-small", "data-testid": "prev-page", onclick: () => go(offset - PAGE_SIZE) }, "‹ Prev");
  const next = h("button", { class: "btn btn-small", "data-testid": "next-page", onclick: () => go(offset + PAGE_SIZE) }, "Next ›");
  const errorBanner = h("div", { class: "banner", hidden: true });
  const liveToggle = h("span", {
    class: "live on",
    "data-testid": "live-toggle",
    title: "Refresh every 2 seconds",
    onclick: () => {
      live = !live;
      liveToggle.classList.toggle("on", live);
      liveToggle.lastChild.textContent = live ? "Live" : "Paused";
      if (live) refresh();
    },
  }, h("span", { class: "dot" }), h("span", {}, "Live"));

  const chips = STATUSES.map((status) => {
    const box = h("input", { type: "checkbox", value: status });
    box.checked = filters.status.has(status);
    const chip = h("label", {
      class: `chip${box.checked ? " on" : ""}`,
      "data-testid": "status-filter",
      dataset: { status },
    }, box, status === "MAX_RECOVERY_ATTEMPTS_EXCEEDED" ? "MAX RECOVERY" : status);
    box.addEventListener("change", () => {
      if (box.checked) filters.status.add(status);
      else filters.status.delete(status);
      chip.classList.toggle("on", box.checked);
      go(0);
    });
    return chip;
  });

  let debounce;
  const textFilter = (key, label, placeholder) => {
    const input = h("input", {
      type: "search",
      placeholder,
      "data-testid": `filter-${key.replace("_", "-")}`,
      "aria-label": label,
      value: filters[key],
    });
    input.addEventListener("input", () => {
      filters[key] = input.value.trim();
      clearTimeout(debounce);
      debounce = setTimeout(() => go(0), 250);
    });
    return h("label", { class: "field" }, label, input);
  };

  app.append(
    h("div", { class: "page-head" },
      h("h1", {}, "Workflows"),
      h("span", { class: "spacer" }),
      liveToggle),
    errorBanner,
    h("section", { class: "panel" },
      h("div", { class: "filters", "data-testid": "filters" },
        h("div", { class: "status-filter" }, chips),
        textFilter("name", "Name", "workflow name"),
        textFilter("queue", "Queue", "queue name"),
        textFilter("id_prefix", "ID", "id prefix"),
        h("button", {
          class: "btn btn-small",
          "data-testid": "clear-filters",
          onclick: () => {
            if (window.location.hash === "#/workflows") route();
            else window.location.hash = "#/workflows";
          },
        }, "Clear")),
      h("div", { class: "table-scroll" },
        h("table", { class: "data", "data-testid": "workflow-table" },
          h("thead", {}, h("tr", {},
            h("th", {}, "Status"),
            h("th", {}, "ID"),
            h("th", {}, "Name"),
            h("th", {}, "Created"),
            h("th", { class: "num" }, "Duration"),
            h("th", {}, "Queue"),
            h("th", {}, "Executor"),
            h("th", {}, "Version"))),
          tbody)),
      h("div", { class: "pager" }, summary, h("span", { class: "spacer" }), prev, next)),
  );

  /** Keeps filters in the address, so reload and back keep them (without re-rendering). */
  function syncHash() {
    const q = new URLSearchParams();
    if (filters.status.size) q.set("status", [...filters.status].join(","));
    for (const key of ["name", "queue", "id_prefix"]) if (filters[key]) q.set(key, filters[key]);
    if (offset) q.set("offset", String(offset));
    const hash = `#/workflows${q.toString() ? `?${q}` : ""}`;
    if (window.location.hash !== hash) {
      history.replaceState(null, "", window.location.pathname + window.location.search + hash);
    }
  }

  function go(newOffset) {
    offset = Math.max(0, newOffset);
    syncHash();
    refresh();
  }

  async function refresh() {
    const mine = ++sequence;
    const q = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(offset), order: "desc" });
    if (filters.status.size) q.set("status", [...filters.status].join(","));
    for (const key of ["name", "queue", "id_prefix"]) if (filters[key]) q.set(key, filters[key]);
    let page;
    try {
      page = await api(`workflows?${q}`);
    } catch (err) {
      if (mine !== sequence) return;
      errorBanner.textContent = `Could not load workflows: ${err.message}`;
      errorBanner.hidden = false;
      throw err;
    }
    if (mine !== sequence) return; // a newer request (new filters, new page) answered first
    errorBanner.hidden = true;
    const rows = page.workflows || [];
    tbody.replaceChildren(...(rows.length ? rows.map(workflowRow) : [
      h("tr", {}, h("td", { colspan: 8, class: "empty", "data-testid": "no-workflows" },
        offset ? "No more workflows." : "No workflows match these filters.")),
    ]));
    tbody.dataset.query = q.toString(); // which request the rows answer (tests wait on it)
    const first = rows.length ? offset + 1 : 0;
    summary.textContent = rows.length ? `${first}–${offset + rows.length}${page.has_more ? "" : ` of ${offset + rows.length}`}` : "";
    prev.disabled = offset === 0;
    next.disabled = !page.has_more;
  }

  function workflowRow(row) {
    const open = () => {
      window.location.hash = `#/workflows/${enc(row.workflow_id)}`;
    };
    return h("tr", {
      class: "clickable",
      "data-testid": "workflow-row",
      dataset: { workflowId: row.workflow_id, status: row.status },
      onclick: (event) => {
        if (event.target.closest("a")) return;
        open();
      },
    },
    h("td", {}, badge(row.status)),
    h("td", { class: "id", title: row.workflow_id }, workflowLink(row.workflow_id)),
    h("td", {}, row.name || "", row.class_name ? h("span", { class: "muted small" }, ` · ${row.class_name}`) : null),
    timeCell(row.created_at),
    h("td", { class: "num" }, TERMINAL.has(row.status) ? formatDuration(durationOf(row)) : h("span", { class: "muted", title: "running" }, row.status === "PENDING" && row.started_at ? `${formatDuration(Date.now() - row.started_at)}…` : "–")),
    h("td", { class: "muted" }, row.queue_name || ""),
    h("td", { class: "muted" }, row.executor_id || ""),
    h("td", { class: "muted mono", title: row.app_version || "" }, preview(row.app_version || "", 14)));
  }

  refresh().catch(() => {});
  const stop = everyTwoSeconds(refresh, () => live);
  return () => {
    stop();
    clearTimeout(debounce);
    sequence++;
  };
}

// --- one workflow ---------------------------------------------------------------------------

function workflowPage(app, workflowId) {
  const expanded = new Set();
  let current = null;
  let busy = false;
  let stopped = false;

  app.append(h("div", { class: "loading" }, "Loading…"));

  async function load() {
    const [wf, steps] = await Promise.all([
      api(`workflows/${enc(workflowId)}`),
      api(`workflows/${enc(workflowId)}/steps`).catch(() => []),
    ]);
    const tree = await loadChildren(wf.children || [], 1);
    return { wf, steps: steps || [], tree };
  }

  /** Children's children, a few levels down (each level one request per child). */
  async function loadChildren(children, depth) {
    return Promise.all(children.map(async (child) => {
      if (depth >= CHILD_DEPTH) return { row: child, children: null };
      try {
        const detail = await api(`workflows/${enc(child.workflow_id)}`);
        return { row: child, children: await loadChildren(detail.children || [], depth + 1) };
      } catch {
        return { row: child, children: [] };
      }
    }));
  }

  async function refresh() {
    if (busy || stopped) return;
    let data;
    try {
      data = await load();
    } catch (err) {
      if (stopped) return;
      app.replaceChildren(
        h("div", { class: "page-head" }, h("a", { href: "#/workflows", class: "crumb" }, "← Workflows")),
        h("div", { class: "banner", "data-testid": "workflow-error" },
          err.status === 404 ? `No workflow ${workflowId}.` : `Could not load ${workflowId}: ${err.message}`));
      throw err;
    }
    if (stopped || busy) return;
    current = data;
    const scroll = window.scrollY;
    app.replaceChildren(...render(data));
    window.scrollTo(0, scroll);
  }

  async function act(kind) {
    const wf = current && current.wf;
    if (!wf) return;
    let body;
    if (kind === "cancel") {
      const yes = await confirmDialog({
        title: "Cancel workflow?",
        message: `${wf.workflow_id} stops at its next step and is marked CANCELLED. Its children are not cancelled.`,
        confirmLabel: "Cancel workflow",
        danger: true,
      });
      if (!yes) return;
    } else if (kind === "resume") {
      const yes = await confirmDialog({
        title: "Resume workflow?",
        message: `${wf.workflow_id} is enqueued again and continues from its last completed step.`,
        confirmLabel: "Resume",
      });
      if (!yes) return;
    } else {
      const lastStep = Math.max(1, ...current.steps.map((s) => s.function_id + 1));
      const step = await confirmDialog({
        title: "Fork workflow?",
        message: `A new workflow re-runs ${wf.workflow_id} from the given step, reusing the recorded outputs of the steps before it.`,
        confirmLabel: "Fork",
        field: { label: "Start at step", value: Math.min(1, lastStep), min: 1, max: lastStep },
      });
      if (step === null) return;
      body = { step };
    }
    busy = true;
    try {
      const result = await api(`workflows/${enc(wf.workflow_id)}/${kind}`, { method: "POST", body: body ?? {} });
      busy = false;
      if (kind === "fork" && result && result.workflow_id) {
        toast(`Forked as ${result.workflow_id}`);
        window.location.hash = `#/workflows/${enc(result.workflow_id)}`;
        return;
      }
      toast(kind === "cancel" ? (result && result.ok === false ? "Already finished" : "Cancelled") : "Resumed");
      await refresh();
    } catch (err) {
      busy = false;
      toast(`${kind} failed: ${err.message}`, true);
    }
  }

  function render({ wf, steps, tree }) {
    const status = wf.status;
    const canCancel = !TERMINAL.has(status);
    const canResume = status !== "SUCCESS" && status !== "PENDING";
    const out = [];
    out.push(h("div", { class: "page-head wf-head" },
      h("div", { class: "wf-title" },
        h("a", { href: "#/workflows", class: "crumb" }, "← Workflows"),
        h("div", { class: "line" },
          h("h1", { "data-testid": "workflow-name" }, wf.name || "(unnamed)"),
          h("span", { "data-testid": "workflow-status", dataset: { status } }, badge(status, true))),
        h("span", { class: "wf-id", "data-testid": "workflow-id" }, wf.workflow_id)),
      h("div", { class: "actions" },
        h("button", { class: "btn btn-danger", "data-testid": "cancel-button", disabled: !canCancel, onclick: () => act("cancel") }, "Cancel"),
        h("button", { class: "btn", "data-testid": "resume-button", disabled: !canResume, onclick: () => act("resume") }, "Resume"),
        h("button", { class: "btn", "data-testid": "fork-button", onclick: () => act("fork") }, "Fork…"))));

    out.push(h("section", { class: "panel" }, h("dl", { class: "meta", "data-testid": "workflow-meta" }, metaItems(wf))));

    const io = [h("section", { class: "panel" },
      h("h2", {}, "Input"),
      wf.input == null ? h("div", { class: "empty" }, "No input recorded.") : h("pre", { class: "json", "data-testid": "workflow-input" }, pretty(wf.input)))];
    if (wf.error) {
      io.push(h("section", { class: "panel" },
        h("h2", {}, "Error"),
        h("div", { class: "error-box", "data-testid": "workflow-error-value" },
          h("div", { class: "error-name" }, wf.error.name || "Error"),
          h("div", { class: "error-message" }, wf.error.message ?? pretty(wf.error)))));
    } else {
      io.push(h("section", { class: "panel" },
        h("h2", {}, "Output"),
        wf.output === undefined || (wf.output === null && status !== "SUCCESS")
          ? h("div", { class: "empty" }, status === "CANCELLED" ? "Cancelled before it finished." : TERMINAL.has(status) ? "No output." : "Not finished yet.")
          : h("pre", { class: "json", "data-testid": "workflow-output" }, pretty(wf.output))));
    }
    out.push(h("div", { class: "grid-2" }, io));

    out.push(h("section", { class: "panel", "data-testid": "steps" },
      h("h2", {}, "Steps", h("span", { class: "count" }, String(steps.length))),
      steps.length ? timeline(wf, steps) : h("div", { class: "empty" }, "No steps recorded.")));

    if (tree.length) {
      out.push(h("section", { class: "panel", "data-testid": "children" },
        h("h2", {}, "Children", h("span", { class: "count" }, String(tree.length))),
        childTree(tree)));
    }

    const events = wf.events || [];
    const history = wf.event_history || [];
    if (events.length || history.length) {
      out.push(h("div", { class: "grid-2" },
        h("section", { class: "panel", "data-testid": "events" },
          h("h2", {}, "Events", h("span", { class: "count" }, String(events.length))),
          keyValueTable(events)),
        h("section", { class: "panel", "data-testid": "event-history" },
          h("h2", {}, "Event history", h("span", { class: "count" }, String(history.length))),
          historyTable(history))));
    }

    const streams = wf.streams || [];
    if (streams.length) {
      out.push(h("section", { class: "panel", "data-testid": "streams" },
        h("h2", {}, "Streams", h("span", { class: "count" }, String(streams.length))),
        streamsView(streams)));
    }

    const messages = wf.messages || [];
    if (messages.length) {
      const waiting = messages.filter((m) => !m.consumed).length;
      out.push(h("section", { class: "panel", "data-testid": "messages" },
        h("h2", {}, "Messages", h("span", { class: "count" }, String(messages.length)),
          waiting ? h("span", { class: "count" }, ` · ${waiting} waiting`) : null),
        messagesTable(messages)));
    }
    return out;
  }

  function timeline(wf, steps) {
    const now = Date.now();
    // A child's step spans the child's run, not just the instant its start was recorded.
    const childRows = new Map((wf.children || []).map((c) => [c.workflow_id, c]));
    const spans = steps.map((step) => {
      const child = step.child_workflow_id ? childRows.get(step.child_workflow_id) : null;
      let start = step.started_at ?? null;
      let end = step.completed_at ?? null;
      let running = start != null && end == null;
      if (child) {
        start = start ?? child.created_at ?? null;
        const childEnd = child.completed_at ?? (TERMINAL.has(child.status) ? child.updated_at : now);
        end = Math.max(end ?? 0, childEnd ?? 0) || null;
        running = !TERMINAL.has(child.status);
      } else if (running) {
        end = now;
      }
      return { start, end, running };
    });
    const starts = spans.map((s) => s.start).filter((t) => t != null);
    const ends = spans.map((s) => s.end).filter((t) => t != null);
    const begin = Math.min(wf.started_at ?? wf.created_at ?? Infinity, ...starts);
    const finish = Math.max(wf.completed_at ?? (TERMINAL.has(wf.status) ? 0 : now), ...ends, begin + 1);
    const span = finish - begin;
    const pct = (t) => `${(((t - begin) / span) * 100).toFixed(3)}%`;

    const ticks = h("div", { class: "ticks" },
      [0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { style: `left:${f * 100}%` }, f === 0 ? "0" : span < 20 ? `${(f * span).toFixed(1)} ms` : formatDuration(f * span))));
    const rows = [h("div", { class: "tl-axis" }, h("span", {}, "Step"), ticks, h("span", { style: "text-align:right" }, "Duration"))];

    steps.forEach((step, index) => {
      const { start, end, running } = spans[index];
      const failed = step.error !== null && step.error !== undefined;
      const internal = (step.function_name || "").startsWith("DBOS.");
      const dur = start != null && end != null ? end - start : step.duration_ms ?? null;
      let cls = failed ? "error" : step.child_workflow_id ? "child" : internal ? "internal" : "ok";
      if (running && !failed) cls = "running";
      let style;
      if (start != null && end != null && Number.isFinite(begin)) {
        const width = Math.max(((end - start) / span) * 100, 0.4);
        style = `left:min(${pct(start)}, calc(100% - 3px));width:${width.toFixed(3)}%`;
      } else {
        cls = "untimed";
        style = "left:0;width:100%";
      }
      const bar = h("div", {
        class: `step-bar ${cls}`,
        "data-testid": "step-bar",
        dataset: { functionId: String(step.function_id), stepName: step.function_name || "", failed: failed ? "true" : "false" },
        style,
        title: `${step.function_name} · ${formatDuration(dur)}${failed ? ` · ${errorText(step.error)}` : ""}`,
      });
      const label = h("div", { class: "tl-label" },
        h("span", { class: "fid" }, String(step.function_id)),
        h("span", { class: "fname", title: step.function_name }, step.function_name || "?"),
        step.child_workflow_id ? workflowLink(step.child_workflow_id, { "data-testid": "step-child-link", class: "small mono", onclick: (e) => e.stopPropagation() }) : null);
      const row = h("div", {
        class: "tl-row",
        "data-testid": "step-row",
        onclick: () => {
          if (expanded.has(step.function_id)) expanded.delete(step.function_id);
          else expanded.add(step.function_id);
          detail.hidden = !expanded.has(step.function_id);
        },
      }, label, h("div", { class: "tl-track" }, bar), h("div", { class: "tl-dur" }, formatDuration(dur)));
      const detail = h("div", { class: "tl-detail", hidden: !expanded.has(step.function_id) },
        failed
          ? h("div", { class: "error-box" }, h("div", { class: "error-name" }, step.error.name || "Error"), h("div", { class: "error-message" }, step.error.message ?? pretty(step.error)))
          : h("pre", { class: "json" }, pretty(step.output ?? null)),
        h("div", { class: "small muted", style: "margin-top:4px" },
          start != null ? `started ${formatAbsolute(start)}` : "no timing recorded",
          end != null && !running ? ` · completed ${formatAbsolute(end)}` : "",
          step.child_workflow_id ? " · child workflow's run" : ""));
      rows.push(row, detail);
    });
    const legend = h("div", { class: "tl-legend" },
      [["ok", "#4a8fdc", "step"], ["child", "#7b61c9", "child workflow"], ["internal", "#98a4b3", "DBOS operation"], ["error", "#d64545", "error"]]
        .map(([, color, text]) => h("span", {}, h("i", { style: `background:${color}` }), text)));
    return h("div", { class: "timeline", "data-testid": "step-timeline" }, rows, legend);
  }

  function childTree(nodes) {
    return h("ul", { class: "tree" }, nodes.map(function node(entry) {
      const row = entry.row;
      return h("li", {},
        h("div", { class: "node" },
          badge(row.status),
          workflowLink(row.workflow_id, { "data-testid": "child-link", dataset: { workflowId: row.workflow_id } }),
          h("span", { class: "muted" }, row.name || ""),
          h("span", { class: "muted small", title: formatAbsolute(row.created_at) }, formatDuration(durationOf(row)))),
        entry.children === null
          ? h("div", { class: "more" }, "…")
          : entry.children.length ? h("ul", {}, entry.children.map(node)) : null);
    }));
  }

  refresh().catch(() => {});
  const stop = everyTwoSeconds(refresh, () => current && !TERMINAL.has(current.wf.status));
  return () => {
    stopped = true;
    stop();
  };
}

function errorText(error) {
  if (!error) return "";
  if (typeof error === "string") return error;
  return `${error.name || "Error"}: ${error.message ?? JSON.stringify(error)}`;
}

function metaItems(wf) {
  const items = [
    ["Workflow ID", wf.workflow_id, "mono"],
    ["Status", wf.status],
    ["Name", wf.name],
    ["Class", wf.class_name],
    ["Config", wf.config_name],
    ["Queue", wf.queue_name],
    ["Executor", wf.executor_id, "mono"],
    ["App version", wf.app_version, "mono"],
    ["Created", wf.created_at, "time"],
    ["Started", wf.started_at, "time"],
    ["Updated", wf.updated_at, "time"],
    ["Completed", wf.completed_at, "time"],
    ["Duration", TERMINAL.has(wf.status) && durationOf(wf) != null ? formatDuration(durationOf(wf)) : null],
    ["Recovery attempts", wf.recovery_attempts],
    ["Parent", wf.parent_workflow_id, "link"],
    ["Forked from", wf.forked_from, "link"],
    ["Priority", wf.priority],
    ["Deduplication ID", wf.deduplication_id, "mono"],
    ["Partition key", wf.partition_key, "mono"],
    ["Timeout", wf.timeout_ms != null ? formatDuration(wf.timeout_ms) : null],
    ["Deadline", wf.deadline_at, "time"],
    ["User", wf.authenticated_user],
    ["Attributes", wf.attributes && Object.keys(wf.attributes).length ? JSON.stringify(wf.attributes) : null, "mono"],
  ];
  return items
    .filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([label, value, kind]) => {
      let dd;
      if (kind === "time") dd = h("dd", { title: formatAbsolute(value) }, `${formatAbsolute(value)} (${formatRelative(value)})`);
      else if (kind === "link") dd = h("dd", {}, workflowLink(value, { "data-testid": label === "Parent" ? "parent-link" : "forked-from-link" }));
      else dd = h("dd", { class: kind === "mono" ? "mono" : "", title: String(value) }, String(value));
      return h("div", {}, h("dt", {}, label), dd);
    });
}

function keyValueTable(entries) {
  if (!entries.length) return h("div", { class: "empty" }, "None.");
  return h("table", { class: "data" },
    h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", {}, "Value"))),
    h("tbody", {}, entries.map((e) => h("tr", { "data-testid": "event-row" },
      h("td", { class: "mono" }, e.key), h("td", { class: "mono wrap" }, preview(e.value, 300))))));
}

function historyTable(entries) {
  if (!entries.length) return h("div", { class: "empty" }, "None.");
  return h("table", { class: "data" },
    h("thead", {}, h("tr", {}, h("th", { class: "num" }, "Step"), h("th", {}, "Key"), h("th", {}, "Value"))),
    h("tbody", {}, entries.map((e) => h("tr", {},
      h("td", { class: "num muted" }, e.function_id ?? ""),
      h("td", { class: "mono" }, e.key),
      h("td", { class: "mono wrap" }, preview(e.value, 300))))));
}

/** The messages sent to a workflow, oldest first: topic, value, when sent, received or not. */
function messagesTable(messages) {
  return h("div", { class: "table-scroll" }, h("table", { class: "data messages" },
    h("thead", {}, h("tr", {}, h("th", {}, "Topic"), h("th", {}, "Value"), h("th", {}, "Sent"), h("th", {}, "State"))),
    h("tbody", {}, messages.map((m) => h("tr", {
      "data-testid": "message-row",
      dataset: { messageId: m.message_id, consumed: m.consumed ? "true" : "false" },
    },
      h("td", { class: "mono", "data-testid": "message-topic" },
        m.topic == null ? h("span", { class: "muted" }, "(no topic)") : m.topic),
      h("td", { class: "message-value" },
        m.decode_error
          ? h("div", { class: "decode-error", "data-testid": "message-decode-error" }, m.decode_error)
          : h("pre", { class: "json", "data-testid": "message-value" }, pretty(m.value))),
      timeCell(m.created_at),
      h("td", {},
        h("span", {
          class: `badge ${m.consumed ? "msg-consumed" : "msg-waiting"}`,
          "data-testid": "message-state",
        }, m.consumed ? "CONSUMED" : "WAITING")))))));
}

function streamsView(streams) {
  // Each stream: {key, values: [...], closed?} — render what is there, whatever its shape.
  return h("div", {}, streams.map((stream) => {
    if (stream && typeof stream === "object" && "key" in stream) {
      const values = stream.values ?? stream.entries ?? stream.value;
      return h("div", { class: "panel-body" },
        h("h3", { class: "mono" }, stream.key, stream.closed ? h("span", { class: "muted small" }, " (closed)") : null),
        h("pre", { class: "json" }, pretty(values)));
    }
    return h("pre", { class: "json" }, pretty(stream));
  }));
}

// --- queues ---------------------------------------------------------------------------------

function queuesPage(app) {
  const tbody = h("tbody", {});
  const errorBanner = h("div", { class: "banner", hidden: true });
  app.append(
    h("div", { class: "page-head" }, h("h1", {}, "Queues"), h("span", { class: "sub" }, "depth, running workflows and throughput over the last 10 minutes")),
    errorBanner,
    h("section", { class: "panel" }, h("div", { class: "table-scroll" },
      h("table", { class: "data", "data-testid": "queue-table" },
        h("thead", {}, h("tr", {},
          h("th", {}, "Queue"),
          h("th", { class: "num" }, "Enqueued"),
          h("th", { class: "num" }, "Delayed"),
          h("th", { class: "num" }, "Running"),
          h("th", { class: "num" }, "Concurrency"),
          h("th", { class: "num" }, "Per worker"),
          h("th", {}, "Rate limit"),
          h("th", {}, "Options"),
          h("th", {}, "Finished / min (10 min)"))),
        tbody))));

  async function refresh() {
    let queues;
    try {
      queues = await api("queues");
    } catch (err) {
      errorBanner.textContent = `Could not load queues: ${err.message}`;
      errorBanner.hidden = false;
      throw err;
    }
    errorBanner.hidden = true;
    tbody.replaceChildren(...(queues.length ? queues.map(queueRow) : [
      h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No queues yet.")),
    ]));
  }

  function queueRow(q) {
    const d = q.definition || {};
    const opts = [];
    if (d.priority_enabled) opts.push("priority");
    if (d.partition_queue) opts.push("partitioned");
    const perMinute = q.finished_per_minute || [];
    const total = perMinute.reduce((a, b) => a + b, 0);
    return h("tr", {
      "data-testid": "queue-row",
      dataset: { queue: q.name, enqueued: String(q.enqueued ?? 0), delayed: String(q.delayed ?? 0), running: String(q.running ?? 0) },
    },
    h("td", {}, h("a", { href: `#/workflows?queue=${enc(q.name)}`, class: "mono" }, q.name),
      q.definition ? null : h("span", { class: "muted small", title: "No stored definition" }, " · undeclared")),
    h("td", { class: "num", "data-testid": "queue-enqueued" }, q.enqueued ?? 0),
    h("td", { class: "num", "data-testid": "queue-delayed" }, q.delayed ?? 0),
    h("td", { class: "num", "data-testid": "queue-running" }, q.running ?? 0),
    h("td", { class: "num muted" }, limitText(d.concurrency ?? d.global_concurrency)),
    h("td", { class: "num muted" }, limitText(d.worker_concurrency)),
    h("td", { class: "muted" }, rateText(d.rate_limit ?? (d.rate_limit_max != null ? { limit: d.rate_limit_max, period: d.rate_limit_period_sec } : null))),
    h("td", { class: "muted" }, opts.join(", ") || "–"),
    h("td", {}, h("div", { style: "display:flex;align-items:center;gap:8px" },
      sparkline(perMinute), h("span", { class: "muted small", title: "finished in the last 10 minutes" }, String(total)))));
  }

  refresh().catch(() => {});
  return everyTwoSeconds(refresh);
}

function limitText(n) {
  return n === null || n === undefined ? "–" : String(n);
}

/** Formats `{limit, period}` whatever the period's encoding (seconds, ms, or {secs, nanos}). */
function rateText(rate) {
  if (!rate) return "–";
  let seconds = rate.period_sec ?? rate.period_secs ?? rate.period;
  if (seconds && typeof seconds === "object") seconds = (seconds.secs ?? 0) + (seconds.nanos ?? 0) / 1e9;
  if (rate.period_ms != null) seconds = rate.period_ms / 1000;
  return seconds != null ? `${rate.limit} / ${formatDuration(seconds * 1000)}` : String(rate.limit);
}

function sparkline(values, width = 120, height = 24) {
  const n = values.length;
  const el = svg("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}`, "data-testid": "sparkline", role: "img" });
  if (!n) return el;
  const max = Math.max(1, ...values);
  const x = (i) => (n === 1 ? width / 2 : (i / (n - 1)) * (width - 4) + 2);
  const y = (v) => height - 2 - (v / max) * (height - 4);
  const points = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  el.append(
    svg("title", {}, `finished per minute, oldest first: ${values.join(", ")}`),
    svg("path", { class: "area", d: `M${x(0).toFixed(1)},${height - 1} L${points.join(" L")} L${x(n - 1).toFixed(1)},${height - 1} Z` }),
    svg("path", { class: "line", d: `M${points.join(" L")}` }),
    svg("circle", { cx: x(n - 1).toFixed(1), cy: y(values[n - 1]).toFixed(1), r: 2 }));
  return el;
}

// --- schedules ------------------------------------------------------------------------------

function schedulesPage(app) {
  const tbody = h("tbody", {});
  const errorBanner = h("div", { class: "banner", hidden: true });
  app.append(
    h("div", { class: "page-head" }, h("h1", {}, "Schedules")),
    errorBanner,
    h("section", { class: "panel" }, h("div", { class: "table-scroll" },
      h("table", { class: "data", "data-testid": "schedule-table" },
        h("thead", {}, h("tr", {},
          h("th", {}, "Name"),
          h("th", {}, "Workflow"),
          h("th", {}, "Cron"),
          h("th", {}, "Time zone"),
          h("th", {}, "Status"),
          h("th", {}, "Last fired"),
          h("th", {}, "Next fire"),
          h("th", {}, ""))),
        tbody))));

  async function refresh() {
    let schedules;
    try {
      schedules = await api("schedules");
    } catch (err) {
      errorBanner.textContent = `Could not load schedules: ${err.message}`;
      errorBanner.hidden = false;
      throw err;
    }
    errorBanner.hidden = true;
    tbody.replaceChildren(...(schedules.length ? schedules.map(scheduleRow) : [
      h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No schedules.")),
    ]));
  }

  async function act(schedule, action) {
    if (action === "trigger") {
      const yes = await confirmDialog({
        title: "Trigger schedule?",
        message: `Starts ${schedule.workflow_name} now, as a tick of ${schedule.name}.`,
        confirmLabel: "Trigger",
      });
      if (!yes) return;
    }
    try {
      await api(`schedules/${enc(schedule.name)}/${action}`, { method: "POST", body: {} });
      toast(`${schedule.name}: ${action === "trigger" ? "triggered" : action === "pause" ? "paused" : "resumed"}`);
    } catch (err) {
      toast(`${action} failed: ${err.message}`, true);
    }
    await refresh().catch(() => {});
  }

  function scheduleRow(s) {
    const status = String(s.status || "").toUpperCase();
    const paused = status === "PAUSED";
    const next = s.next_fire_at ?? s.next_fire ?? s.next_run_at ?? null;
    const last = s.last_fired_at ?? null;
    return h("tr", { "data-testid": "schedule-row", dataset: { schedule: s.name, status } },
      h("td", { class: "mono" }, s.name),
      h("td", {}, h("a", { href: `#/workflows?name=${enc(s.workflow_name)}` }, s.workflow_name)),
      h("td", { class: "mono" }, s.cron),
      h("td", { class: "muted" }, s.timezone || "UTC"),
      h("td", {}, badge(status)),
      timeCell(typeof last === "string" ? Date.parse(last) : last),
      paused ? h("td", { class: "muted" }, "–") : timeCell(typeof next === "string" ? Date.parse(next) : next),
      h("td", {}, h("div", { class: "actions" },
        paused
          ? h("button", { class: "btn btn-small", "data-testid": "schedule-resume", onclick: () => act(s, "resume") }, "Resume")
          : h("button", { class: "btn btn-small", "data-testid": "schedule-pause", onclick: () => act(s, "pause") }, "Pause"),
        h("button", { class: "btn btn-small", "data-testid": "schedule-trigger", onclick: () => act(s, "trigger") }, "Trigger"))));
  }

  refresh().catch(() => {});
  return everyTwoSeconds(refresh);
}

// --- start ----------------------------------------------------------------------------------

async function health() {
  const el = document.getElementById("health");
  try {
    const answer = await api("health");
    el.textContent = answer.backend || "connected";
    el.className = "health up";
    el.dataset.backend = answer.backend || "";
  } catch (err) {
    el.textContent = err.status === 401 ? "unauthorized (add ?token=…)" : "unreachable";
    el.className = "health down";
  }
}

initToken();
window.addEventListener("hashchange", route);
route();
health();
setInterval(() => {
  if (!document.hidden) health();
}, 15000);
