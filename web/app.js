// orderstream page, the lookup: GET /order/<order_uid> and lay the order out. Data goes in via textContent only.
// When the service answers 401 (API_TOKENS set), the page asks for a token and keeps it for this tab only
// (sessionStorage: gone when the tab closes, never in localStorage or a cookie); a refused token is forgotten.
// operator.js (the live panels) shares callApi and the token flow of this file, and listens for TOKEN_EVENT.
// The lookup view is addressed by the hash: #order=<order_uid> (links open it, in a new tab too); a bare
// #<order_uid> (older links) still works unless it names a section of the page (#pipeline).
"use strict";

const HEADER_FIELDS = ["order_uid", "track_number", "entry", "locale", "customer_id", "delivery_service",
  "shardkey", "sm_id", "date_created", "oof_shard", "internal_signature"];
const DELIVERY_FIELDS = ["name", "phone", "zip", "city", "address", "region", "email"];
const PAYMENT_FIELDS = ["transaction", "request_id", "currency", "provider", "amount", "payment_dt", "bank",
  "delivery_cost", "goods_total", "custom_fee"];
const ITEM_COLUMNS = [["chrt_id"], ["nm_id"], ["name"], ["brand"], ["size"], ["price"], ["sale", "sale %"],
  ["total_price"], ["status"], ["rid"], ["track_number"]];
const FORMAT = {
  payment_dt: (v) => `${v} · ${unixDate(v)}`,
  sale: (v) => `${v}%`,
};

const form = document.getElementById("lookup");
const input = document.getElementById("order-id");
const nocache = document.getElementById("nocache");
const statusLine = document.getElementById("status");
const result = document.getElementById("result");
const tokenForm = document.getElementById("token-form");
const tokenInput = document.getElementById("token-input");
const tokenReason = document.getElementById("token-reason");
const forgetButton = document.getElementById("forget-token");
const TOKEN_KEY = "orderstream.token";
const TOKEN_EVENT = "orderstream:token"; // dispatched on document when a token is entered
let latest = 0; // only the newest lookup may draw
let waitingForToken = ""; // the order id to look up once a token is given

// sessionStorage throws when storage is disabled: the page then works without keeping a token.
function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

function keepToken(token) {
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    /* not kept: asked again on the next 401 */
  }
  forgetButton.hidden = false;
}

function forgetToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* nothing was kept */
  }
  forgetButton.hidden = true;
}

// Shows the token form; `id` is the order to look up once the token is given ("" keeps the one waiting).
function askForToken(id, message) {
  if (id) waitingForToken = id;
  tokenReason.textContent = message;
  tokenInput.value = "";
  tokenForm.hidden = false;
  tokenInput.focus();
}

// A 401 for `tokenUsed` ("" when none was sent): forget a refused token and ask for one (the lookup's
// `id`, or "" from the panels). Returns true when a newer token is already there, so a retry may pass.
function tokenNeeded(tokenUsed, id, what) {
  const current = storedToken();
  if (current && current !== tokenUsed) return true;
  if (tokenUsed) { // refused (perhaps already forgotten by another request that sent it)
    if (current) forgetToken();
    showStatus("The service refused the token, so this tab has forgotten it. Enter a valid token.", "error");
    askForToken(id, "The token was refused.");
  } else if (id || tokenForm.hidden) {
    showStatus(`This service needs an access token to show ${what}.`, "warn");
    askForToken(id, id ? `Enter a token to look up ${id}.` : `Enter a token to see ${what}.`);
  }
  return false;
}

// One JSON request to this service with the tab's token. Network failures throw; every status returns.
async function callApi(url, { method = "GET", json } = {}) {
  const token = storedToken();
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(url, init);
  const body = await response.json().catch(() => null);
  return { response, body, token };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children.map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

function unixDate(seconds) {
  const date = new Date(Number(seconds) * 1000);
  if (Number.isNaN(date.getTime())) return "invalid date";
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function value(tag, key, raw) {
  if (raw === undefined || raw === null || raw === "") return el(tag, { class: "empty", title: "empty" }, "—");
  const text = FORMAT[key] ? FORMAT[key](raw) : typeof raw === "object" ? JSON.stringify(raw) : String(raw);
  return el(tag, typeof raw === "number" ? { class: "num" } : {}, text);
}

function fields(obj, names, wide = false) {
  const dl = el("dl", { class: wide ? "fields wide" : "fields" });
  for (const name of names) dl.append(el("div", { class: "field" }, el("dt", {}, name), value("dd", name, obj?.[name])));
  return dl;
}

function card(title, ...body) {
  return el("section", { class: "card" }, el("h2", {}, title), ...body);
}

function itemsTable(items) {
  if (!items.length) return el("p", { class: "empty" }, "No items.");
  const th = ([key, label]) => el("th", typeof items[0][key] === "number" ? { class: "num" } : {}, label ?? key);
  const head = el("tr", {}, ...ITEM_COLUMNS.map(th));
  const rows = items.map((item) => el("tr", {}, ...ITEM_COLUMNS.map(([key]) => value("td", key, item[key]))));
  return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
}

function badge(headers, roundTripMs) {
  const source = headers.get("X-Source") || "unknown";
  const pills = [el("span", { class: "pill source", "data-source": source }, source)];
  const serverMs = headers.get("X-Duration-ms");
  if (serverMs) pills.push(el("span", { class: "pill", title: "time spent in the service" }, `server ${serverMs} ms`));
  pills.push(el("span", { class: "pill", title: "measured by this page" }, `round trip ${roundTripMs.toFixed(1)} ms`));
  const servedBy = headers.get("X-Served-By");
  if (servedBy) pills.push(el("span", { class: "pill" }, `served by ${servedBy}`));
  return el("div", { class: "badge" }, ...pills);
}

function render(order, headers, roundTripMs) {
  const items = Array.isArray(order.items) ? order.items : [];
  const raw = el("details", { class: "raw" }, el("summary", {}, "raw JSON"),
    el("pre", {}, JSON.stringify(order, null, 2)));
  result.replaceChildren(
    el("div", { class: "summary" }, el("h2", {}, "Order ", el("code", {}, order.order_uid ?? "")),
      badge(headers, roundTripMs)),
    card("Order", fields(order, HEADER_FIELDS, true)),
    el("div", { class: "grid" }, card("Delivery", fields(order.delivery, DELIVERY_FIELDS)),
      card("Payment", fields(order.payment, PAYMENT_FIELDS))),
    card(`Items (${items.length})`, itemsTable(items)),
    raw,
  );
  result.hidden = false;
}

function showStatus(text, kind = "info") {
  statusLine.textContent = text;
  statusLine.dataset.kind = kind;
  statusLine.hidden = !text;
}

async function lookup(id) {
  const mine = ++latest;
  result.hidden = true;
  result.replaceChildren();
  showStatus(`Looking up ${id}…`);
  const url = `/order/${encodeURIComponent(id)}${nocache.checked ? "?nocache=1" : ""}`;
  const token = storedToken();
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const started = performance.now();
  let response;
  let body = null;
  try {
    response = await fetch(url, { headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
    body = await response.json().catch(() => null);
  } catch (err) {
    if (mine === latest) showStatus(`Network error: could not reach the service (${err.message}).`, "error");
    return;
  }
  if (mine !== latest) return;
  const roundTripMs = performance.now() - started;
  if (response.ok && body && typeof body === "object") {
    showStatus("");
    render(body, response.headers, roundTripMs);
  } else if (response.status === 401) {
    if (tokenNeeded(token, id, "orders")) lookup(id); // a newer token came meanwhile
  } else if (response.status === 404) {
    showStatus(`Order ${id} not found: it is neither in the cache nor in PostgreSQL.`, "warn");
  } else if (response.status === 400) {
    showStatus(body?.error || "Bad request", "error");
  } else if (response.status === 503) {
    showStatus(`The service cannot answer now (HTTP 503${body?.error ? `: ${body.error}` : ""}). Try again shortly.`,
      "error");
  } else {
    showStatus(`Unexpected response: HTTP ${response.status}${body?.error ? ` — ${body.error}` : ""}`, "error");
  }
}

function orderHash(id) {
  return `#order=${encodeURIComponent(id)}`;
}

function idFromHash() {
  let hash;
  try {
    hash = decodeURIComponent(location.hash.slice(1)).trim();
  } catch {
    return "";
  }
  if (hash.startsWith("order=")) return hash.slice("order=".length).trim();
  if (!hash || document.getElementById(hash)) return ""; // a section of the page, not an order
  return hash;
}

function lookupFromHash(event) {
  const id = idFromHash();
  if (!id) return;
  input.value = id;
  if (event) form.scrollIntoView({ block: "start" }); // a link further down the page opened it
  lookup(id);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const id = input.value.trim();
  if (!id) {
    showStatus("Enter an order id.", "warn");
    input.focus();
    return;
  }
  const hash = orderHash(id);
  if (location.hash !== hash) location.hash = hash; // the hashchange listener runs the lookup
  else lookup(id);
});
tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = tokenInput.value.trim();
  if (!token) {
    tokenReason.textContent = "Enter a token (one of the service's API_TOKENS).";
    tokenInput.focus();
    return;
  }
  keepToken(token);
  tokenInput.value = "";
  tokenForm.hidden = true;
  const id = waitingForToken;
  waitingForToken = "";
  document.dispatchEvent(new CustomEvent(TOKEN_EVENT));
  showStatus("");
  if (id) lookup(id);
  else input.focus();
});
forgetButton.addEventListener("click", () => {
  forgetToken();
  showStatus("Token forgotten.");
  input.focus();
});
forgetButton.hidden = !storedToken();
window.addEventListener("hashchange", lookupFromHash);
lookupFromHash();
