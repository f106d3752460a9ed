// orderstream page, the operator view: the live pipeline panel (GET /api/pipeline every 2 s), the newest
// stored orders (GET /api/orders/recent, each a link to its lookup) and the dead letters (GET /api/dead-letters)
// with Replay (POST /api/dead-letters/replay). Uses callApi, tokenNeeded, el and orderHash of app.js.
// Polling pauses while the tab is hidden and while the service waits for a token; every value from the
// service goes in as text (textContent), never as HTML: a dead letter's preview is whatever was sent.
"use strict";

const POLL_MS = 2000;
const DEAD_LETTERS_EVERY = 3; // polls: reading the DLQ topic costs more than the status
const RECENT_LIMIT = 10;

const numberFormat = new Intl.NumberFormat("en-US");
const rateFormat = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });

function byId(id) {
  return document.getElementById(id);
}

function count(n) {
  return typeof n === "number" ? numberFormat.format(n) : "—";
}

function rate(n) {
  return typeof n === "number" ? `${rateFormat.format(n)}/s` : "—";
}

function utcTime(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return "—";
  return date.toISOString().replace("T", " ").replace(/(\.\d+)?Z$/, " UTC");
}

function clockTime(date) {
  return date.toISOString().slice(11, 19);
}

// A panel's one-line state: info (live), warn (waiting for a token, not there yet), error (unreachable).
function panelState(id, text, kind = "info") {
  const line = byId(id);
  line.textContent = text;
  line.dataset.kind = kind;
}

// Why a request gave no data, in words for the panel's state line.
function failure(what, response, body) {
  const detail = body?.error ? `: ${body.error}` : "";
  if (response.status === 404 && body?.error === "not found") return `${what}: this worker has no such endpoint (HTTP 404).`;
  if (response.status === 503) return `${what}: the service cannot answer now (HTTP 503${detail}); retrying.`;
  return `${what}: HTTP ${response.status}${detail}.`;
}

// Re-draw `container` only when the data changed, keeping keyboard focus on the same control (by data-key).
function redraw(container, data, build) {
  const fingerprint = JSON.stringify(data);
  if (container.dataset.fingerprint === fingerprint) return;
  const focusedKey = container.contains(document.activeElement) ? document.activeElement.dataset.key : undefined;
  container.replaceChildren(build());
  container.dataset.fingerprint = fingerprint;
  if (focusedKey) container.querySelector(`[data-key="${CSS.escape(focusedKey)}"]`)?.focus();
}

function table(columns, rows, caption) {
  const head = el("tr", {}, ...columns.map(([label, numeric]) => el("th", numeric ? { class: "num", scope: "col" } : { scope: "col" }, label)));
  return el("table", {}, el("caption", { class: "visually-hidden" }, caption), el("thead", {}, head), el("tbody", {}, ...rows));
}

function cell(text, attrs = {}) {
  return el("td", attrs, text);
}

function yesNo(ok, yes = "yes", no = "no") {
  return el("span", { class: `flag ${ok ? "ok" : "bad"}` }, ok ? yes : no);
}

// --- the pipeline panel -------------------------------------------------------------------------------

function drawPipeline(p) {
  byId("pipeline-body").hidden = false;
  for (const name of ["consumed", "stored", "dead_lettered"]) {
    const id = name.replace("_", "-");
    byId(`rate-${id}`).textContent = rate(p.rates?.[name]);
    byId(`total-${id}`).textContent = `${count(p.totals?.[name])} in all`;
  }
  const partitions = Array.isArray(p.partitions) ? p.partitions : [];
  const lag = partitions.reduce((sum, part) => sum + (typeof part.lag === "number" ? part.lag : 0), 0);
  byId("total-lag").textContent = count(lag);
  byId("lag-note").textContent = `${partitions.length} partition${partitions.length === 1 ? "" : "s"}`;
  const cache = p.cache || {};
  byId("cache-size").textContent = cache.enabled === false ? "off" : count(cache.size);
  byId("cache-hits").textContent = typeof cache.hit_ratio === "number"
    ? `hit ratio ${(cache.hit_ratio * 100).toFixed(1)}% (${count(cache.hits)} hits, ${count(cache.misses)} misses)`
    : "hit ratio — (no lookup yet)";
  const ready = byId("group-ready");
  ready.replaceChildren(yesNo(p.ready === true));
  const workers = Array.isArray(p.workers) ? p.workers : [];
  const reachable = workers.filter((w) => w.reachable !== false).length;
  byId("group-note").textContent = `${reachable} of ${workers.length} worker${workers.length === 1 ? "" : "s"} answer; ` +
    `${count(p.dead_letters?.total)} in the DLQ`;
  byId("pipeline-topic").textContent = p.topic || "the topic";
  byId("pipeline-group").textContent = p.group || "the group";

  redraw(byId("partitions"), partitions, () => partitions.length
    ? table([["partition", true], ["owner"], ["end offset", true], ["committed", true], ["lag", true]],
      partitions.map((part) => el("tr", { "data-partition": part.partition },
        cell(count(part.partition), { class: "num" }), cell(part.owner || "—", part.owner ? {} : { class: "empty" }),
        cell(count(part.end_offset), { class: "num" }), cell(count(part.committed), { class: "num" }),
        cell(count(part.lag), { class: part.lag > 0 ? "num lagging" : "num" }))),
      "Consumer lag per partition")
    : el("p", { class: "empty" }, "No partitions assigned yet."));

  redraw(byId("workers"), workers, () => el("ul", { class: "workers" }, ...workers.map((w) => {
    const checks = Object.entries(w.checks || {}).map(([name, check]) =>
      el("li", {}, yesNo(check?.ok === true, "ok", "failing"), ` ${name}`, check?.detail ? ` — ${check.detail}` : ""));
    const parts = Array.isArray(w.partitions) && w.partitions.length ? w.partitions.join(", ") : "none";
    return el("li", { class: "worker", "data-url": w.url || "" },
      el("div", { class: "worker-head" }, el("code", {}, w.url || "unknown"), w.self ? el("span", { class: "pill" }, "answered") : "",
        w.reachable === false ? yesNo(false, "", "unreachable") : yesNo(w.ready === true, "ready", "not ready")),
      el("p", { class: "worker-parts" }, `partitions: ${parts}`,
        w.rates ? ` · consumed ${rate(w.rates.consumed)}, stored ${rate(w.rates.stored)}` : ""),
      checks.length ? el("ul", { class: "checks" }, ...checks) : "");
  })));
}

// --- recent orders --------------------------------------------------------------------------------------

function drawRecent(orders) {
  redraw(byId("recent-list"), orders, () => orders.length
    ? table([["order_uid"], ["track_number"], ["date_created"], ["stored"]], orders.map((o) => el("tr", {},
      el("td", {}, el("a", { href: orderHash(o.order_uid), class: "order-link", "data-key": o.order_uid }, el("code", {}, o.order_uid))),
      cell(o.track_number ?? "—"), cell(utcTime(o.date_created)), cell(utcTime(o.stored_at)))),
    "The newest stored orders; each links to its lookup")
    : el("p", { class: "empty" }, "No order stored yet."));
}

// --- dead letters ---------------------------------------------------------------------------------------

const selected = new Set(); // "partition:offset" of the dead letters ticked for Replay

function letterKey(letter) {
  return `${letter.partition}:${letter.offset}`;
}

function selectionChanged() {
  const button = byId("replay-selected");
  button.disabled = selected.size === 0;
  button.textContent = selected.size ? `Replay ${selected.size} selected` : "Replay selected";
}

function preview(letter) {
  const notes = [];
  if (letter.binary) notes.push("binary");
  if (letter.truncated) notes.push(`first part of ${count(letter.size)} bytes`);
  else if (typeof letter.size === "number") notes.push(`${count(letter.size)} bytes`);
  return el("div", { class: "preview" }, el("code", {}, letter.preview ?? ""), el("span", { class: "preview-note" }, notes.join(", ")));
}

function drawDeadLetters(data) {
  const letters = Array.isArray(data.dead_letters) ? data.dead_letters : [];
  const shown = new Set(letters.map(letterKey));
  for (const key of [...selected]) if (!shown.has(key)) selected.delete(key);
  selectionChanged();
  // One card per letter (not a table row): error and payload get the width, on a phone too.
  redraw(byId("dead-letters-list"), letters, () => letters.length
    ? el("ul", { class: "letters", "aria-label": "The newest dead letters" }, ...letters.map((letter) => {
      const key = letterKey(letter);
      const box = el("input", { type: "checkbox", class: "pick", id: `pick-${key}`, "data-key": `pick-${key}` });
      box.checked = selected.has(key);
      box.addEventListener("change", () => {
        if (box.checked) selected.add(key);
        else selected.delete(key);
        selectionChanged();
      });
      const replay = el("button", { type: "button", class: "small", "data-key": `replay-${key}`,
        "aria-label": `Replay dead letter ${key}` }, "Replay");
      replay.addEventListener("click", () => replayDeadLetters([key]));
      const source = letter.source ? `${letter.source.topic} ${letter.source.partition}:${letter.source.offset}` : "unknown";
      const uid = letter.order_uid
        ? el("a", { href: orderHash(letter.order_uid), "data-key": `uid-${key}` }, el("code", {}, letter.order_uid))
        : el("span", { class: "empty" }, "none");
      return el("li", { class: "letter", "data-offset": key },
        el("div", { class: "letter-head" },
          el("label", { class: "check", for: `pick-${key}` }, box,
            el("span", { class: "visually-hidden" }, "Select dead letter "), el("span", { class: "num" }, key)),
          replay, el("span", { class: "pill reason" }, letter.reason ?? "unknown"),
          el("span", {}, utcTime(letter.timestamp)),
          el("span", {}, `from ${source}`, letter.replayed_from ? ` (replayed from ${letter.replayed_from})` : ""),
          el("span", {}, "order_uid ", uid)),
        el("dl", { class: "letter-body" },
          el("dt", {}, "error"), el("dd", { class: "error-text" }, letter.error ?? "—"),
          el("dt", {}, "payload"), el("dd", {}, preview(letter))));
    }))
    : el("p", { class: "empty" }, "No dead letter: every message was stored."));
}

function replayReport(body) {
  const moved = Array.isArray(body.replayed) ? body.replayed : [];
  const lines = moved.map((r) => `${r.partition}:${r.offset} → ${r.to?.topic ?? "?"} partition ${r.to?.partition ?? "?"}` +
    (r.to?.offset === null || r.to?.offset === undefined ? "" : ` offset ${r.to.offset}`));
  const head = body.dry_run ? `Dry run: would replay ${body.count}` : `Replayed ${body.count}`;
  return `${head} dead letter${body.count === 1 ? "" : "s"}${lines.length ? `: ${lines.join("; ")}` : ""}.`;
}

function replayStatus(text, kind) {
  const line = byId("replay-result");
  line.textContent = text;
  line.dataset.kind = kind;
  line.hidden = false;
}

async function replayDeadLetters(offsets) {
  const dryRun = byId("replay-dry-run").checked;
  replayStatus(`${dryRun ? "Dry run of" : "Replaying"} ${offsets.join(", ")}…`, "info");
  let reply;
  try {
    reply = await callApi("/api/dead-letters/replay", { method: "POST", json: { offsets, dry_run: dryRun } });
  } catch (err) {
    replayStatus(`Replay failed: could not reach the service (${err.message}).`, "error");
    return;
  }
  const { response, body, token } = reply;
  if (response.ok && body) {
    replayStatus(replayReport(body), "ok");
    if (!body.dry_run) {
      for (const key of offsets) selected.delete(key);
      selectionChanged();
      poll({ deadLetters: true });
    }
  } else if (response.status === 401) {
    replayStatus("Replay needs an access token: enter it above, then press Replay again.", "warn");
    tokenNeeded(token, "", "the pipeline, recent orders and dead letters");
  } else {
    const listed = Object.entries(body || {}).filter(([name, v]) => name !== "error" && Array.isArray(v))
      .map(([name, v]) => ` ${name}: ${v.join(", ")}`).join(";");
    replayStatus(`Replay refused (HTTP ${response.status})${body?.error ? `: ${body.error}` : ""}${listed ? `;${listed}` : ""}.`, "error");
  }
}

// --- polling --------------------------------------------------------------------------------------------

const SOURCES = {
  pipeline: { url: () => "/api/pipeline", state: "pipeline-state", what: "Pipeline status",
    draw: (body, at) => {
      drawPipeline(body);
      panelState("pipeline-state", `Live · updated ${clockTime(at)} UTC · answered by ${body.answered_by ?? "?"}`);
    } },
  recent: { url: () => `/api/orders/recent?limit=${RECENT_LIMIT}`, state: "recent-state", what: "Recent orders",
    draw: (body, at) => {
      const orders = Array.isArray(body.orders) ? body.orders : [];
      drawRecent(orders);
      panelState("recent-state", `The ${orders.length} newest stored · updated ${clockTime(at)} UTC`);
    } },
  deadLetters: { url: () => `/api/dead-letters?limit=${encodeURIComponent(byId("dead-letters-limit").value)}`,
    state: "dead-letters-state", what: "Dead letters",
    draw: (body, at) => {
      drawDeadLetters(body);
      const shown = Array.isArray(body.dead_letters) ? body.dead_letters.length : 0;
      panelState("dead-letters-state", `${count(body.total)} in ${body.topic ?? "the DLQ"}, newest ${shown} shown · ` +
        `updated ${clockTime(at)} UTC`);
    } },
};

const updated = {}; // source name -> the time of its last good answer
let timer = 0;
let polls = 0;
let waitingForAuth = false;
let inFlight = false;
let again = null; // a poll asked for while one was running: runs right after it

async function refresh(name) {
  const source = SOURCES[name];
  let reply;
  try {
    reply = await callApi(source.url());
  } catch (err) {
    const last = updated[name] ? ` showing the figures of ${clockTime(updated[name])} UTC;` : "";
    panelState(source.state, `${source.what}: cannot reach the service (${err.message});${last} retrying.`, "error");
    byId(source.state).closest(".panel").classList.add("stale");
    return;
  }
  const { response, body, token } = reply;
  const panel = byId(source.state).closest(".panel");
  if (response.ok && body && typeof body === "object") {
    panel.classList.remove("stale");
    updated[name] = new Date();
    source.draw(body, updated[name]);
  } else if (response.status === 401) {
    panelState(source.state, `${source.what}: needs an access token (the form above).`, "warn");
    if (!tokenNeeded(token, "", "the pipeline, recent orders and dead letters")) waitingForAuth = true;
  } else {
    panel.classList.add("stale");
    panelState(source.state, failure(source.what, response, body), response.status === 503 ? "warn" : "error");
  }
}

// One round of requests, then the next in POLL_MS; none while the tab is hidden or a token is awaited.
async function poll({ deadLetters = false } = {}) {
  clearTimeout(timer);
  if (inFlight) {
    again = { deadLetters: deadLetters || Boolean(again?.deadLetters) };
    return;
  }
  inFlight = true;
  try {
    const names = ["pipeline", "recent"];
    if (deadLetters || polls % DEAD_LETTERS_EVERY === 0) names.push("deadLetters");
    polls += 1;
    await Promise.all(names.map(refresh));
  } finally {
    inFlight = false;
  }
  if (document.hidden || waitingForAuth) return;
  if (again) {
    const next = again;
    again = null;
    poll(next);
  } else {
    timer = setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) clearTimeout(timer);
  else if (!waitingForAuth) poll({ deadLetters: true });
});
document.addEventListener(TOKEN_EVENT, () => {
  waitingForAuth = false;
  poll({ deadLetters: true });
});
byId("replay-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (selected.size) replayDeadLetters([...selected]);
});
byId("dead-letters-refresh").addEventListener("click", () => poll({ deadLetters: true }));
byId("dead-letters-limit").addEventListener("change", () => poll({ deadLetters: true }));
selectionChanged();
poll({ deadLetters: true });
