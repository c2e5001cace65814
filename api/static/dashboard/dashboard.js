// The usage dashboard: signs in with a workspace admin key (kept in sessionStorage only) and reads the API.
// Every value on the page comes from the API's answers; every text from the server goes in through textContent.

import { OUTCOMES, stackedBars } from "./chart.js";
import { count, duration, floorTo, keyLabel, percent, utcTime } from "./format.js";

const STORAGE_KEY = "keyledger.dashboard.secret";
const PERIODS = {
  hour: { ms: 3600_000, bucket: "minute", label: "last hour" },
  day: { ms: 86_400_000, bucket: "hour", label: "last day" },
  week: { ms: 7 * 86_400_000, bucket: "hour", label: "last 7 days" },
  month: { ms: 30 * 86_400_000, bucket: "day", label: "last 30 days" },
};
const GRACE_CHOICES = [
  { seconds: 86_400, label: "24 hours (default)" },
  { seconds: 3600, label: "1 hour" },
  { seconds: 0, label: "none: the current secret stops now" },
];

const $ = (id) => document.getElementById(id);
const INSIGHT_DAYS = 90;
const FINDING_TITLES = {
  unused_key: "Unused key",
  unused_scope: "Unused scope",
  denied_scope: "Denied scope",
  rotation_due: "Rotation due",
  expiring_soon: "Expiring soon",
};
const state = {
  me: null,
  workspace: null,
  keys: [],
  usage: [],
  findings: [],
  period: "day",
  loadedAt: null,
  exposureKey: null,
};

// --- talking to the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || `HTTP ${status}`;
    this.detail = problem.detail || "";
    this.code = problem.code || null;
  }
}

async function api(method, path, body) {
  const secret = sessionStorage.getItem(STORAGE_KEY);
  const headers = { Accept: "application/json, application/problem+json" };
  if (secret) headers.Authorization = `Bearer ${secret}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, {
      title: "Cannot reach keyledger",
      detail: "the API did not answer; check that the server is running and try again",
    });
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    throw new ApiError(response.status, data || { title: `HTTP ${response.status}`, detail: response.statusText });
  }
  return data;
}

const wsPath = (suffix = "") => `/v1/workspaces/${encodeURIComponent(state.me.key.workspace_id)}${suffix}`;

// --- messages -------------------------------------------------------------------------------------------

const HINTS = {
  NOT_FOUND: "Check that you pasted the whole key, and that it belongs to this keyledger server.",
  REVOKED: "This key was revoked and can never sign in again. Use another admin key of the workspace.",
  EXPIRED: "This key (or this secret, after a rotation) has expired. Use a current admin key.",
  INSUFFICIENT_SCOPE: "The dashboard needs a workspace admin key: a key holding the scope 'admin'.",
  RATE_LIMITED: "Wait a moment and try again.",
};

/** Why a sign-in failed, in words: the problem's title and detail from the API, and what to do. */
function signInMessage(error) {
  if (!(error instanceof ApiError)) return { title: "Sign-in failed", detail: String(error) };
  const hint = HINTS[error.code] || "";
  if (error.status === 401) {
    return { title: "This key cannot sign in", detail: `${capitalise(error.detail)}. ${hint}`.trim() };
  }
  if (error.status === 403) {
    return { title: "This key is not a workspace admin key", detail: `${capitalise(error.detail)}. ${hint}`.trim() };
  }
  return { title: error.title, detail: capitalise(error.detail) };
}

function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : "";
}

function showBanner(text) {
  $("banner-text").textContent = text;
  $("banner").hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
  $("banner-text").textContent = "";
}

function showSignInError({ title, detail }) {
  $("sign-in-error-title").textContent = title;
  $("sign-in-error-detail").textContent = detail;
  $("sign-in-error").hidden = false;
}

// --- signing in and out ---------------------------------------------------------------------------------

async function signIn(secret) {
  sessionStorage.setItem(STORAGE_KEY, secret);
  $("sign-in-button").disabled = true;
  try {
    state.me = await api("GET", "/v1/me");
    await load(); // the workspace itself answers 403 to a key without the admin scope
    $("sign-in-error").hidden = true;
    $("admin-key").value = "";
    showDashboard();
  } catch (error) {
    forget();
    showSignInError(signInMessage(error));
  } finally {
    $("sign-in-button").disabled = false;
  }
}

function forget() {
  sessionStorage.removeItem(STORAGE_KEY);
  Object.assign(state, { me: null, workspace: null, keys: [], usage: [], findings: [], exposureKey: null });
}

function signOut(message) {
  forget();
  $("dashboard").hidden = true;
  $("session").hidden = true;
  $("sign-in").hidden = false;
  for (const id of ["usage-table", "keys-table", "findings-table"]) $(id).tBodies[0].replaceChildren();
  closeExposure();
  $("charts").replaceChildren();
  if (message) showSignInError(message);
  else $("sign-in-error").hidden = true;
  $("admin-key").focus();
}

function showDashboard() {
  hideBanner();
  $("sign-in").hidden = true;
  $("dashboard").hidden = false;
  $("session").hidden = false;
  $("session-key").textContent = keyLabel(state.me.key);
  render();
}

/** An API call failed while signed in: a refused key ends the session, anything else is a banner. */
function failed(error) {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    signOut({ title: "Your session ended", detail: signInMessage(error).detail });
  } else {
    showBanner(error instanceof ApiError ? `${error.title}: ${error.detail}` : `Something went wrong: ${error}`);
  }
}

// --- loading --------------------------------------------------------------------------------------------

function periodRange() {
  const period = PERIODS[state.period];
  const now = Date.now();
  return { now, since: now - period.ms, bucket: period.bucket, label: period.label };
}

async function load() {
  const { since, bucket } = periodRange();
  const query = new URLSearchParams({ since: new Date(since).toISOString(), bucket });
  const [workspace, keys, usage, insights] = await Promise.all([
    api("GET", wsPath()),
    api("GET", wsPath("/keys")),
    api("GET", wsPath(`/usage?${query}`)),
    api("GET", wsPath(`/insights?days=${INSIGHT_DAYS}`)),
  ]);
  Object.assign(state, {
    workspace,
    keys: keys.items,
    usage: usage.items,
    findings: insights.findings,
    loadedAt: Date.now(),
    since,
    bucket,
  });
}

async function reload() {
  try {
    await load();
    hideBanner();
    render();
  } catch (error) {
    failed(error);
  }
}

// --- rendering ------------------------------------------------------------------------------------------

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function keyCell(key) {
  const td = document.createElement("td");
  const name = document.createElement("span");
  name.className = "key-name";
  name.textContent = key.name;
  const id = document.createElement("span");
  id.className = "muted mono key-id";
  id.textContent = String(key.id).slice(0, 8);
  id.title = key.id;
  td.append(name, " ", id);
  if (state.me && key.id === state.me.key.id) {
    const you = document.createElement("span");
    you.className = "tag";
    you.textContent = "you";
    td.append(" ", you);
  }
  return td;
}

function badge(text, kind) {
  const span = document.createElement("span");
  span.className = `badge ${kind}`;
  span.textContent = text;
  return span;
}

function render() {
  document.body.dataset.loadedAt = String(state.loadedAt); // when the data on screen was fetched
  renderWorkspace();
  renderFindings();
  renderPeriod();
  renderUsage();
  renderCharts();
  renderKeys();
}

function renderWorkspace() {
  const ws = state.workspace;
  const max = ws.max_live_keys ?? 50;
  $("ws-name").textContent = ws.name;
  $("ws-id").textContent = `workspace ${ws.id}`;
  $("ws-plan").textContent = ws.plan;
  $("ws-rpm").textContent = count(ws.requests_per_minute);
  $("ws-rpd").textContent = count(ws.requests_per_day);
  $("ws-live").textContent = `${ws.live_keys} / ${max}`;
  const meter = $("ws-live-meter");
  meter.max = max;
  meter.high = Math.floor(max * 0.96);
  meter.low = Math.floor(max * 0.8);
  meter.value = ws.live_keys;
}

function renderPeriod() {
  for (const button of document.querySelectorAll("[data-period]")) {
    const active = button.dataset.period === state.period;
    button.classList.toggle("active", active);
    button.setAttribute("aria-pressed", String(active));
  }
  $("range").textContent = `${utcTime(new Date(state.since))} to now · loaded ${utcTime(new Date(state.loadedAt))}`;
  $("bucket-name").textContent = state.bucket;
}

function keysById() {
  return new Map(state.keys.map((k) => [k.id, k]));
}

function renderUsage() {
  const byId = keysById();
  const body = $("usage-table").tBodies[0];
  const usageById = new Map(state.usage.map((u) => [u.key_id, u]));
  // Every live key, and any other key that answered in the period; most requests first.
  const rows = state.keys
    .filter((k) => k.status === "active" || usageById.has(k.id))
    .map((k) => ({ key: k, usage: usageById.get(k.id) }))
    .sort((a, b) => (b.usage?.total ?? 0) - (a.usage?.total ?? 0) || a.key.name.localeCompare(b.key.name));
  for (const u of state.usage) if (!byId.has(u.key_id)) rows.push({ key: { id: u.key_id, name: "(unknown key)" }, usage: u });
  body.replaceChildren(
    ...rows.map(({ key, usage }) => {
      const tr = document.createElement("tr");
      tr.dataset.keyId = key.id;
      const total = usage?.total ?? 0;
      const top = document.createElement("td");
      const list = document.createElement("ol");
      list.className = "endpoints";
      for (const e of usage?.top_endpoints ?? []) {
        const li = document.createElement("li");
        const name = document.createElement("span");
        name.className = "mono";
        name.textContent = e.endpoint;
        li.append(name, ` ${count(e.count)}`);
        list.append(li);
      }
      top.append(list.childElementCount ? list : "—");
      const cells = [
        keyCell(key),
        cell(count(total), "num"),
        cell(percent(usage?.success_rate ?? null), "num"),
        cell(count(usage?.rate_limited ?? 0), usage?.rate_limited ? "num warn" : "num"),
        top,
        cell(utcTime(usage?.last_used ?? null)),
      ];
      ["key", "total", "success-rate", "rate-limited", "top-endpoints", "last-used"].forEach((f, i) => {
        cells[i].dataset.field = f;
      });
      tr.append(...cells);
      return tr;
    }),
  );
  const total = state.usage.reduce((n, u) => n + u.total, 0);
  const ok = state.usage.reduce((n, u) => n + u.successes, 0);
  $("usage-summary").textContent = `· ${count(total)} requests, ${percent(total ? ok / total : null)} 2xx`;
  $("usage-empty").hidden = total > 0;
}

function renderCharts() {
  const byId = keysById();
  const first = floorTo(state.since, state.bucket);
  const last = floorTo(state.loadedAt, state.bucket);
  const used = state.usage.filter((u) => u.total > 0);
  $("charts").replaceChildren(
    ...used.map((u) => {
      const key = byId.get(u.key_id) ?? { id: u.key_id, name: "(unknown key)" };
      const figure = document.createElement("figure");
      figure.className = "key-chart";
      figure.dataset.keyId = u.key_id;
      const caption = document.createElement("figcaption");
      const name = document.createElement("span");
      name.className = "key-name";
      name.textContent = keyLabel(key);
      const sums = OUTCOMES.map((o) => {
        const n = (u.series ?? []).reduce((s, p) => s + (o.field === "other" ? Math.max(0, p.requests - p.successes - p.client_errors - p.rate_limited) : p[o.field]), 0);
        return `${count(n)} ${o.label}`;
      });
      const totals = document.createElement("span");
      totals.className = "muted";
      totals.textContent = ` ${count(u.total)} requests: ${sums.join(" · ")}`;
      caption.append(name, totals);
      const title = `Requests over time for ${keyLabel(key)}`;
      figure.append(caption, stackedBars(u.series ?? [], { first, last, bucket: state.bucket, title }));
      return figure;
    }),
  );
  $("charts-empty").hidden = used.length > 0;
}

function renderKeys() {
  const order = { active: 0, suspended: 1, expired: 2, revoked: 3 };
  const keys = [...state.keys].sort(
    (a, b) => order[a.status] - order[b.status] || Date.parse(a.created_at) - Date.parse(b.created_at),
  );
  $("keys-table").tBodies[0].replaceChildren(
    ...keys.map((key) => {
      const tr = document.createElement("tr");
      tr.dataset.keyId = key.id;
      tr.className = `status-${key.status}`;
      const status = document.createElement("td");
      status.append(badge(key.status, key.status));
      const scopes = document.createElement("td");
      for (const scope of key.scopes) scopes.append(badge(scope, "scope"), " ");
      if (!key.scopes.length) scopes.textContent = "—";
      const due = document.createElement("td");
      due.append(key.rotation_due ? badge("due", "due") : badge("no", "not-due"));
      const age = cell(duration(Date.now() - Date.parse(key.created_at)));
      age.title = `created ${utcTime(key.created_at)}`;
      const actions = document.createElement("td");
      actions.className = "actions";
      const live = key.status === "active";
      const suspended = key.status === "suspended";
      actions.append(
        actionButton("Edit", "edit", live || suspended, () => editDetails(key)),
        actionButton("Limits", "limits", live || suspended, () => editLimits(key)),
        actionButton("Credits", "credits", live || suspended, () => editCredits(key)),
        actionButton("Rotate", "rotate", live, () => rotate(key)),
        suspended
          ? actionButton("Resume", "resume", true, () => suspendOrResume(key, "resume"))
          : actionButton("Suspend", "suspend", live, () => suspendOrResume(key, "suspend")),
        actionButton("Revoke", "revoke danger", live || suspended, () => revoke(key)),
        actionButton("Exposure", "exposure", true, () => openExposure(key)),
      );
      const cells = [keyCell(key), status, scopes, detailsCell(key), age, due, actions];
      ["key", "status", "scopes", "details", "age", "rotation-due", "actions"].forEach((f, i) => {
        cells[i].dataset.field = f;
      });
      tr.append(...cells);
      return tr;
    }),
  );
}

/** What the key's owner said about it and what bounds it: owner, meta, own limits, credits, origin. */
function detailsCell(key) {
  const td = document.createElement("td");
  const lines = [];
  const line = (name, value) => {
    const div = document.createElement("div");
    div.dataset.detail = name;
    const label = document.createElement("span");
    label.className = "muted";
    label.textContent = `${name}: `;
    const text = document.createElement("span");
    text.className = "mono";
    text.textContent = value;
    div.append(label, text);
    lines.push(div);
  };
  if (key.imported) line("origin", "imported (found by its secret's digest)");
  if (key.owner_id) line("owner", key.owner_id);
  if (key.meta) line("meta", JSON.stringify(key.meta));
  if (key.limits?.source === "key") {
    line("limits", `${count(key.limits.requests_per_minute)}/min, ${count(key.limits.requests_per_day)}/day`);
  }
  if (key.credits) {
    const refill = key.credits.refill;
    line("credits", `${count(key.credits.remaining)} left` + (refill ? `, refilled to ${count(refill.amount)} each ${refill.interval}` : ""));
  }
  td.append(...lines);
  if (!lines.length) td.textContent = "—";
  return td;
}

function actionButton(label, className, enabled, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = className;
  button.textContent = label;
  button.disabled = !enabled;
  button.addEventListener("click", onClick);
  return button;
}

// --- findings (least privilege) and a key's exposure report --------------------------------------------

function findingDetail(finding) {
  const d = finding.detail;
  switch (finding.kind) {
    case "unused_scope":
      return `granted ${d.granted.join(", ") || "nothing"}; needed ${d.needed.join(", ") || "nothing"}`;
    case "unused_key":
      return d.last_answer ? `no answer since ${d.last_answer}` : "never answered";
    case "denied_scope":
      return d.scopes.map((s) => `${s.scope}: ${count(s.count)} refused, last ${utcTime(s.last_seen)}`).join("; ");
    case "rotation_due":
      return `current secret is ${count(d.secret_age_days)} days old`;
    case "expiring_soon":
      return `expires ${utcTime(d.expires_at)}`;
    default:
      return JSON.stringify(d);
  }
}

function renderFindings() {
  const byId = keysById();
  $("findings-days").textContent = String(INSIGHT_DAYS);
  const found = state.findings;
  $("findings-summary").textContent = found.length ? `· ${found.length}` : "";
  $("findings-table").tBodies[0].replaceChildren(
    ...found.map((finding) => {
      const tr = document.createElement("tr");
      tr.dataset.kind = finding.kind;
      tr.dataset.keyId = finding.key_id;
      const kind = document.createElement("td");
      const label = document.createElement("span");
      label.className = `finding ${finding.kind}`;
      label.textContent = FINDING_TITLES[finding.kind] || finding.kind;
      kind.append(label);
      const key = byId.get(finding.key_id) || { id: finding.key_id, name: finding.key_name };
      const observed = cell(`${count(finding.observed_days)} d`, "num");
      const detail = cell(findingDetail(finding));
      const action = document.createElement("td");
      action.className = "actions";
      if (finding.kind === "unused_scope") {
        const keep = finding.suggestion.scopes;
        const button = actionButton(`Narrow to ${keep.join(", ") || "no scopes"}`, "apply", true, () =>
          applySuggestion(key, finding),
        );
        action.append(button);
      } else if (finding.kind === "unused_key" && key.status) {
        action.append(actionButton("Revoke…", "revoke danger", true, () => revoke(key)));
      } else if (finding.kind === "rotation_due" && key.status === "active") {
        action.append(actionButton("Rotate…", "rotate", true, () => rotate(key)));
      } else {
        action.append(actionButton("Exposure", "exposure", true, () => openExposure(key)));
      }
      const cells = [kind, keyCell(key), observed, detail, action];
      ["kind", "key", "observed", "detail", "action"].forEach((f, i) => {
        cells[i].dataset.field = f;
      });
      tr.append(...cells);
      return tr;
    }),
  );
  $("findings-empty").hidden = found.length > 0;
}

/** Apply an unused_scope suggestion: the key's scopes become exactly the suggested set, after a confirmation. */
async function applySuggestion(key, finding) {
  const keep = finding.suggestion.scopes;
  const change = document.createElement("div");
  change.className = "scope-change";
  const from = document.createElement("div");
  from.append("Now: ");
  for (const scope of finding.detail.granted) {
    const b = badge(scope, "scope");
    if (!keep.includes(scope)) b.classList.add("removed");
    from.append(b, " ");
  }
  const to = document.createElement("div");
  to.append("After: ");
  for (const scope of keep) to.append(badge(scope, "scope"), " ");
  if (!keep.length) to.append("no scopes");
  change.append(from, to);
  const confirmed = await confirmAction({
    title: `Narrow the scopes of key “${keyLabel(key)}”?`,
    text:
      `In the time observed (${count(finding.observed_days)} d) this key needed only ` +
      `${finding.detail.needed.join(", ") || "no scope"}. ` +
      "Its granted scopes become exactly the set below, at once; requests needing anything else are refused.",
    confirmLabel: "Apply",
    extra: change,
  });
  if (!confirmed) return;
  try {
    await api("PUT", wsPath(`/keys/${encodeURIComponent(key.id)}/scopes`), { scopes: keep });
  } catch (error) {
    failed(error);
    return;
  }
  await reload();
}

/** "YYYY-MM-DDTHH:MM" in UTC, as a datetime-local input shows it. */
function utcInputValue(ms) {
  return new Date(ms).toISOString().slice(0, 16);
}

function openExposure(key) {
  state.exposureKey = key;
  $("exposure-key").textContent = keyLabel(key);
  $("exposure-since").value = utcInputValue(Date.now() - 7 * 86_400_000);
  $("exposure-report").hidden = true;
  $("exposure").hidden = false;
  $("exposure").scrollIntoView({ block: "start" });
  loadExposure();
}

function closeExposure() {
  state.exposureKey = null;
  $("exposure").hidden = true;
  $("exposure-report").hidden = true;
  delete document.body.dataset.exposureLoaded;
}

async function loadExposure() {
  const key = state.exposureKey;
  if (!key) return;
  const since = new Date(`${$("exposure-since").value}:00Z`);
  if (Number.isNaN(since.getTime())) {
    showBanner("Invalid time: give the moment the key is believed leaked, in UTC.");
    return;
  }
  let report;
  try {
    const query = new URLSearchParams({ since: since.toISOString() });
    report = await api("GET", wsPath(`/keys/${encodeURIComponent(key.id)}/exposure?${query}`));
  } catch (error) {
    failed(error);
    return;
  }
  renderExposure(report);
}

function rows(tableId, items, toCells) {
  $(tableId).tBodies[0].replaceChildren(
    ...items.map((item) => {
      const tr = document.createElement("tr");
      tr.append(...toCells(item));
      return tr;
    }),
  );
  if (!items.length) {
    const tr = document.createElement("tr");
    const td = cell("none", "muted");
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    tr.append(td);
    $(tableId).tBodies[0].append(tr);
  }
}

function renderExposure(report) {
  const r = report.requests;
  $("exposure-total").textContent = count(r.total);
  $("exposure-allowed").textContent = count(r.allowed);
  $("exposure-refused").textContent = count(r.refused);
  $("exposure-first").textContent = utcTime(r.first);
  $("exposure-last").textContent = utcTime(r.last);
  rows("exposure-secrets", report.secrets, (s) => [
    cell(s.fingerprint, "mono"),
    cell(utcTime(s.valid_from)),
    cell(s.valid_until ? utcTime(s.valid_until) : "still valid"),
  ]);
  rows("exposure-scopes", report.scopes, (p) => {
    const scopes = document.createElement("td");
    for (const scope of p.scopes) scopes.append(badge(scope, "scope"), " ");
    if (!p.scopes.length) scopes.textContent = "none (revoked or emptied)";
    return [cell(utcTime(p.from)), scopes];
  });
  rows("exposure-endpoints", report.endpoints, (e) => [
    cell(e.endpoint, "mono"),
    cell(count(e.count), "num"),
    cell(count(e.allowed), "num"),
  ]);
  rows("exposure-sources", report.sources, (s) => [
    cell(s.address, "mono"),
    cell(count(s.count), "num"),
    cell(utcTime(s.first)),
    cell(utcTime(s.last)),
  ]);
  $("exposure-report").hidden = false;
  document.body.dataset.exposureLoaded = String(Date.now());
}

// --- confirmation and the new secret --------------------------------------------------------------------

/** Show the confirm dialog; resolves to true when confirmed. `extra` is a node placed under the text. */
function confirmAction({ title, text, confirmLabel, danger = false, extra = null }) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-extra").replaceChildren(...(extra ? [extra] : []));
  const ok = $("confirm-ok");
  ok.textContent = confirmLabel;
  ok.classList.toggle("danger", danger);
  return new Promise((resolve) => {
    const done = (value) => {
      ok.removeEventListener("click", yes);
      $("confirm-cancel").removeEventListener("click", no);
      dialog.removeEventListener("close", no);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const yes = () => done(true);
    const no = () => done(false);
    ok.addEventListener("click", yes);
    $("confirm-cancel").addEventListener("click", no);
    dialog.addEventListener("close", no); // Escape
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

function labelled(labelText, control) {
  const label = document.createElement("label");
  label.textContent = labelText;
  label.append(control);
  return label;
}

async function rotate(key) {
  const select = document.createElement("select");
  select.id = "grace";
  for (const choice of GRACE_CHOICES) select.append(new Option(choice.label, String(choice.seconds)));
  const own = key.id === state.me.key.id;
  const text =
    "A new secret is issued and shown once. The current secret keeps working for the grace period below, then stops." +
    (own ? " This is the key you signed in with: the dashboard switches to the new secret." : "");
  const confirmed = await confirmAction({
    title: `Rotate key “${keyLabel(key)}”?`,
    text,
    confirmLabel: "Rotate",
    extra: labelled("Grace period for the current secret ", select),
  });
  if (!confirmed) return;
  try {
    const rotated = await api("POST", wsPath(`/keys/${encodeURIComponent(key.id)}/rotate`), {
      grace_seconds: Number(select.value),
    });
    if (own) sessionStorage.setItem(STORAGE_KEY, rotated.secret);
    await showSecretOnce(rotated);
  } catch (error) {
    failed(error);
    return;
  }
  await reload();
}

function showSecretOnce(rotated) {
  const dialog = $("secret-dialog");
  $("secret-title").textContent = `New secret for “${keyLabel(rotated.key)}”`;
  $("new-secret").textContent = rotated.secret;
  const until = rotated.key.previous_secret_valid_until;
  $("secret-grace").textContent = until
    ? `The previous secret keeps working until ${utcTime(until)}.`
    : "The previous secret no longer works.";
  $("copy-secret").textContent = "Copy";
  return new Promise((resolve) => {
    const finish = () => {
      $("new-secret").textContent = ""; // shown once: gone from the page when the dialog closes
      $("close-secret").removeEventListener("click", close);
      dialog.removeEventListener("close", finish);
      resolve();
    };
    const close = () => dialog.close();
    $("close-secret").addEventListener("click", close);
    dialog.addEventListener("close", finish);
    dialog.showModal();
  });
}

async function copySecret() {
  const text = $("new-secret").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("copy-secret").textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("new-secret"));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    $("copy-secret").textContent = "Selected: press Ctrl+C";
  }
}

async function revoke(key) {
  const reason = document.createElement("input");
  reason.id = "revoke-reason";
  reason.maxLength = 200;
  reason.autocomplete = "off";
  const own = key.id === state.me.key.id;
  const confirmed = await confirmAction({
    title: `Revoke key “${keyLabel(key)}”?`,
    text:
      "The key stops working at once, everywhere, and cannot be restored." +
      (own ? " This is the key you signed in with: you will be signed out." : ""),
    confirmLabel: "Revoke",
    danger: true,
    extra: labelled("Reason (optional, kept in the audit log) ", reason),
  });
  if (!confirmed) return;
  try {
    await api("POST", wsPath(`/keys/${encodeURIComponent(key.id)}/revoke`), { reason: reason.value.trim() || null });
  } catch (error) {
    failed(error);
    return;
  }
  if (own) {
    signOut({ title: "Signed out", detail: "You revoked the key you signed in with." });
    return;
  }
  await reload();
}

async function suspendOrResume(key, action) {
  const suspending = action === "suspend";
  const confirmed = await confirmAction({
    title: `${suspending ? "Suspend" : "Resume"} key “${keyLabel(key)}”?`,
    text: suspending
      ? "The key is refused (SUSPENDED) everywhere at once until it is resumed; its secrets are kept."
      : "The key works again at once (unless it expired meanwhile).",
    confirmLabel: suspending ? "Suspend" : "Resume",
    danger: suspending,
  });
  if (!confirmed) return;
  try {
    await api("POST", wsPath(`/keys/${encodeURIComponent(key.id)}/${action}`), suspending ? {} : undefined);
  } catch (error) {
    failed(error);
    return;
  }
  await reload();
}

function textInput(id, value, maxLength) {
  const input = document.createElement("input");
  input.id = id;
  input.value = value ?? "";
  input.maxLength = maxLength;
  input.autocomplete = "off";
  return input;
}

async function editDetails(key) {
  const name = textInput("edit-name", key.name, 100);
  const owner = textInput("edit-owner", key.owner_id, 200);
  const meta = document.createElement("textarea");
  meta.id = "edit-meta";
  meta.rows = 4;
  meta.value = key.meta ? JSON.stringify(key.meta, null, 2) : "";
  const form = document.createElement("div");
  form.append(
    labelled("Name ", name),
    labelled("Owner id (your user or customer id; empty: none) ", owner),
    labelled("Meta (a JSON object, at most 4 KiB; empty: none) ", meta),
  );
  const confirmed = await confirmAction({
    title: `Edit key “${keyLabel(key)}”`,
    text: "Verify answers show the name, owner id and meta of the key.",
    confirmLabel: "Save",
    extra: form,
  });
  if (!confirmed) return;
  let parsed = null;
  if (meta.value.trim()) {
    try {
      parsed = JSON.parse(meta.value);
    } catch {
      parsed = undefined;
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      failed(new ApiError(422, { title: "Invalid meta", detail: 'meta must be a JSON object, e.g. {"team": "data"}' }));
      return;
    }
  }
  try {
    await api("PATCH", wsPath(`/keys/${encodeURIComponent(key.id)}`), {
      name: name.value,
      owner_id: owner.value.trim() || null,
      meta: parsed,
    });
  } catch (error) {
    failed(error);
    return;
  }
  await reload();
}

function numberInput(id, value, max) {
  const input = document.createElement("input");
  input.id = id;
  input.type = "number";
  input.min = "1";
  input.max = String(max);
  input.value = value ?? "";
  return input;
}

/** Limit a key below its plan (empty fields keep the plan's), or return it to the plan when both are empty. */
async function editLimits(key) {
  const plan = state.workspace;
  const own = key.limits?.source === "key";
  const rpm = numberInput("limit-rpm", own ? key.limits.requests_per_minute : "", plan.requests_per_minute);
  const rpd = numberInput("limit-rpd", own ? key.limits.requests_per_day : "", plan.requests_per_day);
  const form = document.createElement("div");
  form.append(
    labelled(`Requests per minute (plan: ${count(plan.requests_per_minute)}) `, rpm),
    labelled(`Requests per day (plan: ${count(plan.requests_per_day)}) `, rpd),
  );
  const confirmed = await confirmAction({
    title: `Limits of key “${keyLabel(key)}”`,
    text: "A key can be limited below its plan; the lower limit applies. Leave both empty to return to the plan.",
    confirmLabel: "Save",
    extra: form,
  });
  if (!confirmed) return;
  const body = {}; // a window left empty keeps the plan's
  if (rpm.value.trim() !== "") body.requests_per_minute = Number(rpm.value);
  if (rpd.value.trim() !== "") body.requests_per_day = Number(rpd.value);
  const path = wsPath(`/keys/${encodeURIComponent(key.id)}/limits`);
  try {
    if (!Object.keys(body).length) await api("DELETE", path);
    else await api("PUT", path, body);
  } catch (error) {
    failed(error);
    return;
  }
  await reload();
}

/** Make a key usage-limited: what it may spend from now on, and an optional daily or monthly refill. */
async function editCredits(key) {
  const remaining = numberInput("credits-remaining", key.credits?.remaining ?? "", 1e12);
  remaining.min = "0";
  const amount = numberInput("credits-refill-amount", key.credits?.refill?.amount ?? "", 1e12);
  const interval = document.createElement("select");
  interval.id = "credits-refill-interval";
  for (const [label, value] of [["no refill", ""], ["each UTC day", "day"], ["each UTC month", "month"]]) {
    interval.append(new Option(label, value));
  }
  interval.value = key.credits?.refill?.interval ?? "";
  const form = document.createElement("div");
  form.append(
    labelled("Credits it may spend from now on ", remaining),
    labelled("Refill to ", amount),
    labelled("Refill ", interval),
  );
  const confirmed = await confirmAction({
    title: `Credits of key “${keyLabel(key)}”`,
    text: "Each allowed request spends one credit; at zero the key is refused (USAGE_EXCEEDED) until a refill.",
    confirmLabel: "Save",
    extra: form,
  });
  if (!confirmed) return;
  const body = { remaining: Number(remaining.value) };
  if (interval.value) body.refill = { amount: Number(amount.value), interval: interval.value };
  try {
    await api("PUT", wsPath(`/keys/${encodeURIComponent(key.id)}/credits`), body);
  } catch (error) {
    failed(error);
    return;
  }
  await reload();
}

// --- wiring ---------------------------------------------------------------------------------------------

function start() {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const secret = $("admin-key").value.trim();
    if (secret) signIn(secret);
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("banner-close").addEventListener("click", hideBanner);
  $("refresh").addEventListener("click", reload);
  $("copy-secret").addEventListener("click", copySecret);
  $("exposure-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadExposure();
  });
  $("exposure-close").addEventListener("click", closeExposure);
  for (const button of document.querySelectorAll("[data-period]")) {
    button.addEventListener("click", () => {
      state.period = button.dataset.period;
      reload();
    });
  }
  const kept = sessionStorage.getItem(STORAGE_KEY);
  if (kept) signIn(kept);
  else $("admin-key").focus();
  document.body.dataset.ready = "true";
}

window.addEventListener("error", (event) => showBanner(`The page hit an error: ${event.message}`));
window.addEventListener("unhandledrejection", (event) => showBanner(`The page hit an error: ${event.reason}`));
start();
