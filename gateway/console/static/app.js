// The console: sign-in, then one page per hash route. Every figure comes from the admin API.
import { ApiError, call, query, setCsrf } from "./api.js";
import { legend, stackedBars } from "./chart.js";
import { field, h, int, pct, table, usd, usd4, when } from "./dom.js";

const state = { me: null, teams: [] };
const page = () => document.getElementById("page");
const BREAKDOWNS = ["team", "model", "provider", "user", "key"];
const DAY_S = 86400;

function isoDay(date) { return date.toISOString().slice(0, 10); }
function daysBetween(from, to) {
  const days = [];
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= Date.parse(`${to}T00:00:00Z`); t += DAY_S * 1000) {
    days.push(isoDay(new Date(t)));
  }
  return days;
}
function message(error) { return error instanceof ApiError ? `${error.message} (${error.status})` : String(error); }
function notice(text, kind = "error") { return h("p", { class: kind, role: kind === "error" ? "alert" : "status" }, text); }
function isAdmin() { return state.me && state.me.kind === "admin"; }
function canManage() { return isAdmin() || (state.me && state.me.team_admin); }
function teamParam() { return isAdmin() ? undefined : state.me.team; }

// -- sign-in ------------------------------------------------------------------------------------
async function signedIn(me) {
  state.me = me;
  setCsrf(me.csrf);
  document.getElementById("sign-in").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
  document.getElementById("sample-banner").hidden = !me.sample_data;
  document.getElementById("who").textContent = me.kind === "admin" ? "Signed in as admin"
    : `Signed in with ${me.key_id} (team ${me.team}${me.team_admin ? ", key management" : ", read-only"})`;
  for (const link of document.querySelectorAll("#nav [data-admin]")) link.hidden = me.kind !== "admin";
  if (isAdmin()) {
    state.teams = (await call("GET", "/admin/teams")).data.map((t) => t.name);
  } else {
    state.teams = [me.team];
  }
  route();
}

function showSignIn() {
  state.me = null;
  document.getElementById("sign-in").hidden = false;
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("who").textContent = "";
  page().replaceChildren();
  document.getElementById("sign-in-key").focus();
}

async function start() {
  document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("sign-in-key");
    const error = document.getElementById("sign-in-error");
    error.textContent = "";
    try {
      const me = await call("POST", "/console/api/session", { key: input.value });
      input.value = "";
      await signedIn(me);
    } catch (e) {
      error.textContent = message(e);
    }
  });
  document.getElementById("sign-out").addEventListener("click", async () => {
    try { await call("DELETE", "/console/api/session"); } catch { /* the session is gone either way */ }
    showSignIn();
  });
  window.addEventListener("hashchange", route);
  try {
    await signedIn(await call("GET", "/console/api/session"));
  } catch {
    showSignIn();
  }
}

function route() {
  if (!state.me) return;
  const name = (location.hash.replace(/^#\//, "") || "spend").split("?")[0];
  const pages = { spend: spendPage, teams: teamsPage, requests: requestsPage, health: healthPage, audit: auditPage };
  const render = pages[name] || spendPage;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  render().catch((e) => page().replaceChildren(notice(message(e))));
}

// -- Spend --------------------------------------------------------------------------------------
function csv(columns, rows) {
  const quote = (v) => {
    const text = v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  return [columns.map((c) => quote(c.label)), ...rows.map((r) => columns.map((c) => quote(c.csv ? c.csv(r) : r[c.key])))]
    .map((line) => line.join(",")).join("\n") + "\n";
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const link = h("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function cacheHit(row) {
  const read = row.cache_read_input_tokens || 0;
  const total = (row.input_tokens || 0) + (row.cache_creation_input_tokens || 0) + read;
  return total ? read / total : null;
}

function budgetBar(label, bar) {
  if (bar.limit_usd === null || bar.limit_usd === undefined) {
    return h("div", { class: "budget" }, h("span", { class: "budget-label" }, `${label}: no budget`),
      h("span", {}, `spent ${usd(bar.spent_usd)}, reserved ${usd(bar.reserved_usd)}`));
  }
  const limit = bar.limit_usd || 1e-9;
  const spent = Math.min(100, (bar.spent_usd / limit) * 100);
  const reserved = Math.min(100 - spent, (bar.reserved_usd / limit) * 100);
  const meter = h("div", { class: "meter", role: "img",
    "aria-label": `${label}: ${usd(bar.spent_usd)} spent, ${usd(bar.reserved_usd)} reserved, ${usd(bar.remaining_usd)} remaining of ${usd(bar.limit_usd)}` },
  h("span", { class: "spent" }), h("span", { class: "reserved" }));
  meter.children[0].style.width = `${spent}%`;
  meter.children[1].style.width = `${reserved}%`;
  return h("div", { class: "budget" }, h("span", { class: "budget-label" }, label), meter,
    h("span", {}, `${usd(bar.spent_usd)} spent · ${usd(bar.reserved_usd)} reserved · ${usd(bar.remaining_usd)} left of ${usd(bar.limit_usd)}`));
}

async function spendPage() {
  const today = new Date();
  const from = h("input", { type: "date", value: isoDay(new Date(today - 13 * DAY_S * 1000)) });
  const to = h("input", { type: "date", value: isoDay(today) });
  const by = h("select", {}, BREAKDOWNS.map((b) => h("option", { value: b }, b)));
  by.value = isAdmin() ? "team" : "model";
  const team = h("select", {}, isAdmin() ? h("option", { value: "" }, "all teams") : null,
    state.teams.map((t) => h("option", { value: t }, t)));
  const output = h("div", { id: "spend-output" });
  const form = h("form", { class: "controls", onsubmit: (e) => { e.preventDefault(); load(); } },
    field("From", from), field("To", to), field("Break down by", by), field("Team", team),
    h("button", { type: "submit" }, "Show"));
  page().replaceChildren(h("h1", {}, "Spend"), form, output, h("h2", {}, "Budgets"), h("div", { id: "budgets" }));

  // The form as it was when Show was pressed, and only the newest load's answer drawn: an answer
  // arriving after the form changed would otherwise be drawn under the new breakdown.
  let latest = 0;
  async function load() {
    const mine = ++latest;
    const group = by.value, start = from.value, end = to.value;
    const params = { from: start, to: end, team: team.value || teamParam() };
    output.replaceChildren(notice("Loading…", "status"));
    let rows;
    let totals;
    try {
      rows = (await call("GET", `/admin/usage${query({ ...params, group_by: `day,${group}` })}`)).data;
      totals = (await call("GET", `/admin/usage${query({ ...params, group_by: "team" })}`)).data;
    } catch (e) {
      if (mine === latest) output.replaceChildren(notice(message(e)));
      return;
    }
    if (mine !== latest) return;
    const days = daysBetween(start, end);
    const names = [...new Set(rows.map((r) => String(r[group] ?? "(none)")))];
    const series = names.map((name) => ({ name, values: {} }));
    for (const r of rows) {
      const s = series[names.indexOf(String(r[group] ?? "(none)"))];
      s.values[r.day] = (s.values[r.day] || 0) + r.cost_usd;
    }
    const sum = (k) => totals.reduce((a, r) => a + (r[k] || 0), 0);
    const all = { input_tokens: sum("input_tokens"), output_tokens: sum("output_tokens"),
      cache_creation_input_tokens: sum("cache_creation_input_tokens"), cache_read_input_tokens: sum("cache_read_input_tokens") };
    const columns = [
      { key: "day", label: "Day" }, { key: group, label: group, render: (r) => r[group] ?? "(none)" },
      { key: "requests", label: "Requests", num: true, render: (r) => int(r.requests) },
      { key: "input_tokens", label: "Input tokens", num: true, render: (r) => int(r.input_tokens) },
      { key: "output_tokens", label: "Output tokens", num: true, render: (r) => int(r.output_tokens) },
      { key: "cache_creation_input_tokens", label: "Cache writes", num: true, render: (r) => int(r.cache_creation_input_tokens) },
      { key: "cache_read_input_tokens", label: "Cache reads", num: true, render: (r) => int(r.cache_read_input_tokens) },
      { key: "cache_hit", label: "Cache hit ratio", num: true, render: (r) => pct(cacheHit(r)), csv: (r) => cacheHit(r)?.toFixed(4) ?? "" },
      { key: "cost_usd", label: "Cost (USD)", num: true, render: (r) => usd4(r.cost_usd), csv: (r) => r.cost_usd },
    ];
    const sorted = [...rows].sort((a, b) => (a.day < b.day ? -1 : a.day > b.day ? 1 : b.cost_usd - a.cost_usd));
    output.replaceChildren(
      h("figure", {}, stackedBars(days, series, { title: `Cost per day by ${group}, USD` }), legend(series),
        h("figcaption", {}, `Cost per day by ${group}: ${usd(sum("cost_usd"))} over ${int(sum("requests"))} requests.`)),
      h("h2", {}, "Tokens by kind"),
      h("dl", { class: "kinds", id: "token-kinds" },
        h("dt", {}, "Input"), h("dd", {}, int(all.input_tokens)),
        h("dt", {}, "Output"), h("dd", {}, int(all.output_tokens)),
        h("dt", {}, "Cache writes"), h("dd", {}, int(all.cache_creation_input_tokens)),
        h("dt", {}, "Cache reads"), h("dd", {}, int(all.cache_read_input_tokens)),
        h("dt", {}, "Cache hit ratio"), h("dd", { id: "cache-hit" }, pct(cacheHit(all)))),
      h("div", { class: "row" }, h("h2", {}, `Cost by day and ${group}`),
        h("button", { type: "button", id: "export-csv", onclick: () => download(`spend-${start}-${end}-by-${group}.csv`, csv(columns, sorted)) }, "Export CSV")),
      table(`Cost by day and ${group}, ${start} to ${end}`, columns, sorted, { id: "spend-table" }));
  }

  async function budgets() {
    const box = document.getElementById("budgets");
    const cards = [];
    for (const name of state.teams) {
      try {
        const b = await call("GET", `/admin/teams/${encodeURIComponent(name)}/budget`);
        cards.push(h("section", { class: "card", "aria-label": `Budget of team ${name}` }, h("h3", {}, name),
          budgetBar(`Daily (${b.day.slice(0, 4)}-${b.day.slice(4, 6)}-${b.day.slice(6)})`, b.daily),
          budgetBar(`Monthly (${b.month.slice(0, 4)}-${b.month.slice(4)})`, b.monthly)));
      } catch (e) {
        cards.push(notice(`${name}: ${message(e)}`));
      }
    }
    box.replaceChildren(...(cards.length ? cards : [notice("No teams yet.", "status")]));
  }
  await Promise.all([load(), budgets()]);
}

// -- Teams and keys ------------------------------------------------------------------------------
const LIMITS = [["rpm", "RPM"], ["tpm", "TPM"], ["max_concurrent", "Max concurrent"],
  ["budget_daily_usd", "Daily budget (USD)"], ["budget_monthly_usd", "Monthly budget (USD)"]];

function limitInputs(limits = {}) {
  const inputs = {};
  for (const [name] of LIMITS) {
    inputs[name] = h("input", { type: "number", min: "0", step: name.startsWith("budget") ? "0.01" : "1",
      value: limits[name] ?? "" });
  }
  inputs.allowed_models = h("input", { type: "text", value: (limits.allowed_models || []).join(", "),
    placeholder: "all models" });
  return inputs;
}

function limitValues(inputs) {
  const out = {};
  for (const [name] of LIMITS) {
    const text = inputs[name].value.trim();
    out[name] = text === "" ? null : Number(text);
  }
  const models = inputs.allowed_models.value.split(",").map((m) => m.trim()).filter(Boolean);
  out.allowed_models = models.length ? models : null;
  return out;
}

function limitFields(inputs) {
  return [...LIMITS.map(([name, label]) => field(label, inputs[name])), field("Allowed models (comma-separated)", inputs.allowed_models)];
}

function limitsText(limits) {
  const parts = LIMITS.filter(([n]) => limits[n] !== null && limits[n] !== undefined).map(([n, l]) => `${l} ${limits[n]}`);
  if (limits.allowed_models) parts.push(`models: ${limits.allowed_models.join(", ")}`);
  return parts.join(" · ") || "no limits";
}

async function teamsPage() {
  const body = h("div", {});
  page().replaceChildren(h("h1", {}, "Teams and keys"), body);
  const status = h("div", { id: "teams-status", "aria-live": "polite" });
  const sections = [status];
  if (isAdmin()) {
    const teams = (await call("GET", "/admin/teams")).data;
    state.teams = teams.map((t) => t.name);
    sections.push(table("Teams", [
      { key: "name", label: "Team", render: (t) => h("a", { href: `#/teams?team=${encodeURIComponent(t.name)}` }, t.name) },
      { key: "limits", label: "Limits", render: (t) => limitsText(t.limits) },
      { key: "admin", label: "Key management", render: (t) => (t.admin ? "yes" : "no") },
      { key: "metadata", label: "Notes", render: (t) => (t.metadata && t.metadata.sample ? "sample data" : "") },
    ], teams, { id: "teams-table" }));
    const name = h("input", { type: "text", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,63}" });
    const admin = h("input", { type: "checkbox" });
    const inputs = limitInputs();
    sections.push(h("form", { class: "controls", id: "create-team", onsubmit: async (e) => {
      e.preventDefault();
      try {
        await call("POST", "/admin/teams", { name: name.value, admin: admin.checked, ...limitValues(inputs) });
        location.hash = `#/teams?team=${encodeURIComponent(name.value)}`;
      } catch (err) { status.replaceChildren(notice(message(err))); }
    } }, h("h2", {}, "New team"), field("Name", name), ...limitFields(inputs),
    field("Its keys may manage keys", admin), h("button", { type: "submit" }, "Create team")));
  }
  const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("team");
  const chosen = isAdmin() ? (wanted && state.teams.includes(wanted) ? wanted : state.teams[0]) : state.me.team;
  if (chosen) sections.push(await teamDetail(chosen, status));
  body.replaceChildren(...sections);
}

async function teamDetail(name, status) {
  const team = await call("GET", `/admin/teams/${encodeURIComponent(name)}`);
  const keys = (await call("GET", `/admin/keys${query({ team: name })}`)).data;
  const box = h("section", { id: "team-detail", "aria-label": `Team ${name}` }, h("h2", {}, `Team ${name}`));
  const refresh = () => teamsPage();
  if (isAdmin()) {
    const inputs = limitInputs(team.limits);
    const admin = h("input", { type: "checkbox", checked: team.admin });
    box.append(h("form", { class: "controls", id: "edit-team", onsubmit: async (e) => {
      e.preventDefault();
      try {
        await call("PATCH", `/admin/teams/${encodeURIComponent(name)}`, { ...limitValues(inputs), admin: admin.checked });
        status.replaceChildren(notice(`Team ${name} saved.`, "ok"));
      } catch (err) { status.replaceChildren(notice(message(err))); }
    } }, h("h3", {}, "Limits"), ...limitFields(inputs), field("Its keys may manage keys", admin),
    h("button", { type: "submit" }, "Save limits")));
    const alerts = team.alerts || {};
    const url = h("input", { type: "url", value: alerts.webhook_url || "", placeholder: "the gateway's default" });
    const secret = h("input", { type: "password", autocomplete: "off",
      placeholder: alerts.secret_set ? "set (leave empty to keep)" : "none" });
    const thresholds = h("input", { type: "text", value: (alerts.thresholds || []).join(", "), placeholder: "0.5, 0.8, 1.0" });
    const format = h("select", {}, ["", "json", "slack"].map((f) => h("option", { value: f }, f || "default")));
    format.value = alerts.format || "";
    box.append(h("form", { class: "controls", id: "edit-alerts", onsubmit: async (e) => {
      e.preventDefault();
      const value = {};
      if (url.value) value.webhook_url = url.value;
      if (secret.value) value.secret = secret.value;
      const levels = thresholds.value.split(",").map((t) => t.trim()).filter(Boolean).map(Number);
      if (levels.length) value.thresholds = levels;
      if (format.value) value.format = format.value;
      try {
        await call("PATCH", `/admin/teams/${encodeURIComponent(name)}`, { alerts: Object.keys(value).length ? value : null });
        status.replaceChildren(notice(`Alerts of team ${name} saved.`, "ok"));
      } catch (err) { status.replaceChildren(notice(message(err))); }
    } }, h("h3", {}, "Budget alerts"), field("Webhook URL", url), field("Signing secret", secret),
    field("Thresholds (fractions of a budget)", thresholds), field("Format", format),
    h("button", { type: "submit" }, "Save alerts")));
  }
  const actions = (k) => {
    if (!canManage() || k.status !== "active") return "";
    const act = async (what, method, path, body) => {
      try {
        const answer = await call(method, path, body);
        if (answer && answer.key) showSecret(status, answer);
        else status.replaceChildren(notice(`Key ${k.id}: ${what}.`, "ok"));
        await refreshKeys();
      } catch (err) { status.replaceChildren(notice(message(err))); }
    };
    return h("span", { class: "actions" },
      h("button", { type: "button", "aria-label": `Rotate ${k.id}`, onclick: () => act("rotated", "POST", `/admin/keys/${k.id}/rotate`) }, "Rotate"),
      h("button", { type: "button", "aria-label": `Expire now ${k.id}`, onclick: () => act("expired", "PATCH", `/admin/keys/${k.id}`, { expires_at: Math.floor(Date.now() / 1000) }) }, "Expire now"),
      h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.id}`, onclick: () => {
        if (window.confirm(`Revoke key ${k.id}? Requests with it fail at once.`)) act("revoked", "DELETE", `/admin/keys/${k.id}`);
      } }, "Revoke"));
  };
  const keyColumns = [
    { key: "id", label: "Key" }, { key: "name", label: "Name" }, { key: "prefix", label: "Prefix" },
    { key: "status", label: "Status" }, { key: "expires_at", label: "Expires", render: (k) => when(k.expires_at) },
    { key: "limits", label: "Own limits", render: (k) => limitsText(k.limits) }, { key: "actions", label: "Actions", render: actions },
  ];
  const keysBox = h("div", { id: "keys" }, table(`Keys of ${name}`, keyColumns, keys, { id: "keys-table" }));
  async function refreshKeys() {
    const fresh = (await call("GET", `/admin/keys${query({ team: name })}`)).data;
    keysBox.replaceChildren(table(`Keys of ${name}`, keyColumns, fresh, { id: "keys-table" }));
  }
  box.append(h("h3", {}, "Keys"), keysBox);
  if (canManage()) {
    const keyName = h("input", { type: "text" });
    const days = h("input", { type: "number", min: "1", step: "1" });
    const inputs = limitInputs();
    box.append(h("form", { class: "controls", id: "create-key", onsubmit: async (e) => {
      e.preventDefault();
      const body = { name: keyName.value || null };
      if (days.value) body.expires_in_days = Number(days.value);
      const limits = limitValues(inputs);
      for (const [k, v] of Object.entries(limits)) if (v !== null) body[k] = v;
      try {
        showSecret(status, await call("POST", `/admin/teams/${encodeURIComponent(name)}/keys`, body));
        await refreshKeys();
      } catch (err) { status.replaceChildren(notice(message(err))); }
    } }, h("h3", {}, "New key"), field("Name", keyName), field("Expires in days", days), ...limitFields(inputs),
    h("button", { type: "submit" }, "Create key")));
  }
  void refresh;
  return box;
}

function showSecret(status, answer) {
  status.replaceChildren(h("div", { class: "secret", role: "status" },
    h("p", {}, `Key ${answer.id} created. Copy its secret now: it is shown only once.`),
    h("code", { id: "new-secret" }, answer.key)));
}

// -- Requests ------------------------------------------------------------------------------------
async function requestsPage() {
  const team = h("select", {}, isAdmin() ? h("option", { value: "" }, "all teams") : null,
    state.teams.map((t) => h("option", { value: t }, t)));
  const model = h("input", { type: "text", placeholder: "any" });
  const status = h("input", { type: "text", inputmode: "numeric", placeholder: "any" });
  const from = h("input", { type: "date" });
  const to = h("input", { type: "date" });
  const output = h("div", { id: "requests-output" });
  const sessionId = h("input", { type: "text", maxlength: "128" });
  const sessionOut = h("div", { id: "session-output" });
  const cursors = [];
  const columns = [
    { key: "ts", label: "Time", render: (r) => when(r.ts) }, { key: "team", label: "Team" }, { key: "key_id", label: "Key" },
    { key: "user", label: "User" },
    { key: "session_id", label: "Session", render: (r) => (r.session_id ? h("button", { type: "button", class: "link", onclick: () => { sessionId.value = r.session_id; showSession(); } }, r.session_id) : "") },
    { key: "model_requested", label: "Model asked" }, { key: "model", label: "Model served" }, { key: "provider", label: "Provider" },
    { key: "status", label: "Status", num: true }, { key: "tokens", label: "Tokens (in/out)", num: true, render: (r) => `${int(r.input_tokens)} / ${int(r.output_tokens)}` },
    { key: "cost_usd", label: "Cost", num: true, render: (r) => usd4(r.cost_usd) }, { key: "latency_ms", label: "Latency ms", num: true, render: (r) => int(Math.round(r.latency_ms || 0)) },
    { key: "attempts", label: "Attempts", render: (r) => (r.attempts || []).map((a) => `${a.provider}=${a.outcome}`).join(", ") },
  ];
  let latest = 0;  // only the newest search's answer is drawn, whatever order the answers come in
  async function load(cursor) {
    const mine = ++latest;
    const params = { team: team.value || teamParam(), model: model.value, status: status.value, from: from.value, to: to.value, cursor };
    try {
      const answer = await call("GET", `/admin/requests${query(params)}`);
      if (mine !== latest) return;
      const next = answer.next_cursor || answer.cursor || null;
      output.replaceChildren(table("Requests, newest first", columns, answer.data || [], { id: "requests-table" }),
        h("div", { class: "row" },
          cursors.length ? h("button", { type: "button", onclick: () => { cursors.pop(); load(cursors[cursors.length - 1]); } }, "Newer") : null,
          next ? h("button", { type: "button", id: "next-page", onclick: () => { cursors.push(next); load(next); } }, "Older") : null));
    } catch (e) {
      if (mine !== latest) return;
      output.replaceChildren(notice(e instanceof ApiError && (e.status === 404 || e.status === 405)
        ? "Request log unavailable: this gateway has no request log endpoint (GET /admin/requests)." : message(e),
      e.status === 404 ? "status" : "error"));
      output.firstChild.id = "requests-unavailable";
    }
  }
  async function showSession() {
    if (!sessionId.value) return;
    try {
      const answer = await call("GET", `/admin/sessions/${encodeURIComponent(sessionId.value)}${query({ team: team.value || teamParam() })}`);
      const records = [...answer.data].sort((a, b) => a.ts - b.ts);
      sessionOut.replaceChildren(table(`Session ${answer.session_id}: ${records.length} requests, oldest first`, [
        { key: "ts", label: "Time", render: (r) => when(r.ts) }, { key: "model", label: "Model" },
        { key: "provider", label: "Provider" }, { key: "status", label: "Status", num: true },
        { key: "cost_usd", label: "Cost", num: true, render: (r) => usd4(r.cost_usd) },
        { key: "trace", label: "Trace", render: (r) => h("code", {}, JSON.stringify(r.trace || {})) },
      ], records, { id: "session-table" }));
    } catch (e) { sessionOut.replaceChildren(notice(message(e))); }
  }
  page().replaceChildren(h("h1", {}, "Requests"),
    h("form", { class: "controls", onsubmit: (e) => { e.preventDefault(); cursors.length = 0; load(); } },
      field("Team", team), field("Model", model), field("Status", status), field("From", from), field("To", to),
      h("button", { type: "submit" }, "Search")), output,
    h("h2", {}, "Session"),
    h("form", { class: "controls", onsubmit: (e) => { e.preventDefault(); showSession(); } },
      field("Session id", sessionId), h("button", { type: "submit" }, "Show session")), sessionOut);
  await load();
}

// -- Health and audit ---------------------------------------------------------------------------
async function healthPage() {
  const answer = await call("GET", "/admin/routing");
  const active = answer.endpoints.filter((e) => e.samples || e.recent_attempts || e.state !== "healthy");
  const rest = answer.endpoints.length - active.length;
  page().replaceChildren(h("h1", {}, "Health"),
    h("p", {}, `Endpoints that served or failed recently (errors over the last ${Math.round(answer.window_s / 60)} minutes); ${rest} other endpoints have no measurements yet.`),
    table("Endpoints", [
      { key: "provider", label: "Provider" }, { key: "model", label: "Model" },
      { key: "state", label: "State", render: (e) => (e.state === "cooldown" ? `cooldown until ${when(e.cooldown_until)} (${e.cooldown_reason})` : e.state) },
      { key: "ttft_ms", label: "Time to first token, ms", num: true, render: (e) => int(e.ttft_ms) },
      { key: "output_tps", label: "Output tokens/s", num: true, render: (e) => (e.output_tps === null ? "–" : e.output_tps.toFixed(1)) },
      { key: "consecutive_failures", label: "Failures in a row", num: true },
      { key: "recent_error_rate", label: "Recent error rate", num: true, render: (e) => `${pct(e.recent_error_rate)} of ${int(e.recent_attempts)}` },
    ], active, { id: "health-table" }),
    table("Provider rate limits last seen", [
      { key: "name", label: "Provider" }, { key: "requests_remaining", label: "Requests left", num: true, render: (p) => int(p.requests_remaining) },
      { key: "tokens_remaining", label: "Tokens left", num: true, render: (p) => int(p.tokens_remaining) },
    ], Object.entries(answer.providers).map(([name, p]) => ({ name, ...p }))));
}

async function auditPage() {
  const [audit, deliveries] = await Promise.all([call("GET", "/admin/audit?limit=200"), call("GET", "/admin/alerts")]);
  page().replaceChildren(h("h1", {}, "Audit"),
    table("Admin actions, newest first", [
      { key: "ts", label: "Time", render: (e) => when(e.ts) }, { key: "actor", label: "Who", render: (e) => (e.actor_team ? `${e.actor} (${e.actor_team})` : e.actor) },
      { key: "action", label: "Action" }, { key: "target", label: "Target" }, { key: "address", label: "From" },
      { key: "via", label: "Via" }, { key: "outcome", label: "Outcome" },
    ], audit.data, { id: "audit-table" }),
    h("h2", {}, "Budget alert deliveries"),
    table("Webhook deliveries, newest first", [
      { key: "ts", label: "Time", render: (d) => when(d.ts) }, { key: "team", label: "Team" }, { key: "key_id", label: "Key" },
      { key: "budget", label: "Budget" }, { key: "period", label: "Period" }, { key: "threshold", label: "Threshold", render: (d) => pct(d.threshold) },
      { key: "webhook", label: "Webhook" }, { key: "delivered", label: "Delivered", render: (d) => (d.delivered ? "yes" : `no: ${d.error}`) },
      { key: "attempts", label: "Attempts", num: true },
    ], deliveries.data, { id: "alerts-table" }));
}

start();
