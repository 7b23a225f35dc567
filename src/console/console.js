// console.js: the pubsub console, served at / by the broker with
// index.html and console.css. It reads the broker as any client does: REST
// (GET /health, /topics, /stats, polled every second; POST and DELETE
// /topics) and /ws through the client module /pubsub.js, with the API key
// or a user's token (a JWT), whichever was given; the token when both
// were. A token goes in `Authorization: Bearer` and the client's `auth`
// message, never in a URL; with it the page shows what its user may see
// (GET /topics lists only that), and /stats, which needs admin, is not
// asked again once it answered 403.
//
// Safe by construction: every topic name, payload and message from the
// broker goes into the page with textContent (never as HTML), and the
// page's Content-Security-Policy allows no inline script.
// Keeps up with busy topics: events wait in a bounded buffer and are drawn
// once per animation frame, and the log keeps the last MAX_ROWS rows.

import { connect } from "/pubsub.js";

const MAX_ROWS = 500;
const POLL_MS = 1000;
const MAX_PAYLOAD_CHARS = 4000;
const KEY_STORAGE = "pubsub.apiKey";
const TOKEN_STORAGE = "pubsub.token";

const $ = (id) => document.getElementById(id);

/** A new element with `text` as its text (never parsed as HTML). */
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

let key = sessionStorage.getItem(KEY_STORAGE) || "";
let token = sessionStorage.getItem(TOKEN_STORAGE) || "";
/** False once /stats answered 403 to these credentials. */
let statsAllowed = true;
let client = null;
let noticeTimer = null;

// ---- REST -------------------------------------------------------------------

/** `{ status, data }`; `data` is the JSON body, or null. Rejects if the broker is unreachable. */
async function api(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  else if (key) headers["X-API-Key"] = key;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { status: response.status, data };
}

function errorText(result) {
  return result.data?.error?.message ?? `HTTP ${result.status}`;
}

function notice(text) {
  $("notice").textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { $("notice").textContent = ""; }, 8000);
}

// ---- the API key or token ---------------------------------------------------

function needKey(rejected) {
  $("key-panel").hidden = false;
  $("main").hidden = true;
  $("key-status").textContent = rejected ? `The broker refused this ${token ? "token" : "key"}.` : "";
  if (client) {
    client.close();
    client = null;
  }
  renderConnection("idle", "not connected");
}

function keyAccepted() {
  $("key-panel").hidden = true;
  $("main").hidden = false;
  $("key-forget").hidden = !key && !token;
  if (!client) startClient();
}

/** Keeps `value` in the tab's sessionStorage (none: forgets it). */
function remember(name, value) {
  if (value) sessionStorage.setItem(name, value);
  else sessionStorage.removeItem(name);
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  key = $("key-input").value.trim();
  token = $("token-input").value.trim();
  $("key-input").value = "";
  $("token-input").value = "";
  remember(KEY_STORAGE, key);
  remember(TOKEN_STORAGE, token);
  statsAllowed = true;
  $("key-status").textContent = "";
  refresh();
});

$("key-forget").addEventListener("click", () => {
  key = "";
  token = "";
  remember(KEY_STORAGE, key);
  remember(TOKEN_STORAGE, token);
  statsAllowed = true;
  $("key-forget").hidden = true;
  if (client) {
    client.close();
    client = null;
  }
  refresh();
});

// ---- the connection ---------------------------------------------------------

function renderConnection(state, text) {
  $("conn").dataset.state = state;
  $("conn").textContent = text;
  renderPublishButton();
}

function startClient() {
  let wasDown = false;
  client = connect({ key, token, clientId: "console" });
  client.addEventListener("state", (e) => {
    const { state, delayMs } = e.detail;
    const text = {
      connecting: "connecting…",
      open: "connected",
      reconnecting: `reconnecting in ${(delayMs / 1000).toFixed(1)} s`,
      closed: "closed",
    }[state];
    renderConnection(state, `ws: ${text}`);
    if (state === "open" && wasDown) notice("reconnected");
    if (state === "open") refresh();
    wasDown = state === "reconnecting" || (wasDown && state === "connecting");
  });
  client.addEventListener("info", (e) => {
    const msg = e.detail;
    if (msg.msg === "topic_deleted") {
      watched.delete(msg.topic);
      renderWatching();
      notice(`topic '${msg.topic}' was deleted`);
    } else if (msg.msg === "subscription_revoked") {
      watched.delete(msg.topic);
      renderWatching();
      notice(`the token no longer allows watching '${msg.topic}'`);
    } else if (msg.msg === "token_expired") {
      notice("the token expired");
    } else if (msg.msg === "disconnected") {
      watched.clear();
      renderWatching();
      notice("the broker disconnected this user");
    } else if (msg.msg === "server_shutdown") {
      notice("the broker is shutting down");
    } else {
      notice(`broker: ${msg.msg}${msg.topic === undefined ? "" : ` (${msg.topic})`}`);
    }
  });
  client.addEventListener("error", (e) => {
    const error = e.detail;
    if (error.topic !== undefined && watched.delete(error.topic)) renderWatching();
    notice(`${error.code}: ${error.message}`);
  });
  client.addEventListener("gap", (e) => {
    notice(`'${e.detail.topic}' could not be resumed where it was (a restarted broker, or too far behind): live from seq ${e.detail.lastSeq}`);
  });
}

// ---- health, topics and rates, polled ---------------------------------------

/** "1 topic", "2 topics". */
function count(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  return `${m}m ${seconds % 60}s`;
}

async function refreshHealth() {
  try {
    const { status, data } = await api("GET", "/health");
    if (status !== 200 || !data) throw new Error(`HTTP ${status}`);
    $("health").dataset.state = data.status === "ok" ? "open" : "reconnecting";
    $("health").textContent = `broker ${data.status ?? "ok"} · up ${duration(data.uptime_sec)} · ` +
      `${count(data.topics, "topic")} · ${count(data.subscribers, "subscription")}` +
      (data.connections === undefined ? "" : ` · ${count(data.connections, "connection")}`);
  } catch {
    $("health").dataset.state = "down";
    $("health").textContent = "broker unreachable";
  }
}

/** name -> { tr, subscribers, messages, rate, watch, remove } */
const topicRows = new Map();
let lastCounts = null;

function topicRow(name) {
  const tr = el("tr");
  tr.dataset.topic = name;
  const entry = {
    tr,
    subscribers: el("td", "", "num"),
    messages: el("td", "", "num"),
    rate: el("td", "–", "num"),
    watch: el("button", "Watch"),
    remove: el("button", "Delete", "quiet"),
  };
  entry.watch.type = "button";
  entry.watch.dataset.action = "watch";
  entry.watch.addEventListener("click", () => (watched.has(name) ? unwatch(name) : watch(name)));
  entry.remove.type = "button";
  entry.remove.dataset.action = "delete";
  entry.remove.addEventListener("click", () => deleteTopic(name, entry.remove));
  const actions = el("td", undefined, "actions");
  actions.append(entry.watch, entry.remove);
  tr.append(el("td", name, "name"), entry.subscribers, entry.messages, entry.rate, actions);
  return entry;
}

function renderTopics(topics, stats) {
  const now = performance.now();
  const names = new Set(topics.map((t) => t.name));
  for (const [name, entry] of topicRows) {
    if (!names.has(name)) {
      entry.tr.remove();
      topicRows.delete(name);
    }
  }
  const tbody = $("topic-rows");
  topics.forEach((topic, i) => {
    let entry = topicRows.get(topic.name);
    if (!entry) {
      entry = topicRow(topic.name);
      topicRows.set(topic.name, entry);
    }
    if (tbody.children[i] !== entry.tr) tbody.insertBefore(entry.tr, tbody.children[i] ?? null);
    entry.subscribers.textContent = topic.subscribers;
    const messages = stats?.topics?.[topic.name]?.messages;
    entry.messages.textContent = messages ?? "–";
    const before = lastCounts?.counts.get(topic.name);
    if (messages !== undefined && before !== undefined && now - lastCounts.at > 200) {
      const rate = Math.max(0, (messages - before) / ((now - lastCounts.at) / 1000));
      entry.rate.textContent = rate < 10 ? `${rate.toFixed(1)}/s` : `${Math.round(rate)}/s`;
    }
    const isWatched = watched.has(topic.name);
    entry.watch.textContent = isWatched ? "Unwatch" : "Watch";
    entry.tr.classList.toggle("watched", isWatched);
  });
  if (stats?.topics) {
    lastCounts = { at: now, counts: new Map(Object.entries(stats.topics).map(([n, s]) => [n, s.messages])) };
  }
  $("topic-count").textContent = `(${topics.length})`;
  $("topics-empty").hidden = topics.length > 0;
  const totals = stats?.totals;
  $("totals").textContent = totals
    ? `${totals.messages_published} published · ${totals.messages_delivered} delivered · ` +
      `${count(totals.slow_consumer_disconnects, "slow consumer")} cut · ` +
      `${count(totals.websocket_connections, "WebSocket connection")}`
    : "";
  renderPublishTopics(topics.map((t) => t.name));
}

async function refresh() {
  refreshHealth();
  try {
    const topics = await api("GET", "/topics");
    if (topics.status === 401) return needKey(Boolean(key || token));
    if (topics.status !== 200 || !Array.isArray(topics.data?.topics)) return;
    keyAccepted();
    const stats = statsAllowed ? await api("GET", "/stats") : null;
    if (stats?.status === 403) statsAllowed = false;
    renderTopics(topics.data.topics, stats?.status === 200 ? stats.data : null);
  } catch {
    // Unreachable: /health says so; the next poll tries again.
  }
}

async function poll() {
  await refresh();
  setTimeout(poll, POLL_MS);
}

$("create-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("create-name").value;
  if (!name) return;
  const status = $("create-status");
  try {
    const result = await api("POST", "/topics", { name });
    if (result.status === 401) return needKey(true);
    status.className = result.status === 201 ? "status ok" : "status bad";
    status.textContent = result.status === 201 ? `created '${name}'` : errorText(result);
    if (result.status === 201) $("create-name").value = "";
  } catch {
    status.className = "status bad";
    status.textContent = "the broker is unreachable";
  }
  refresh();
});

/** Deletes on the second click within three seconds. */
async function deleteTopic(name, button) {
  if (button.dataset.armed !== "yes") {
    button.dataset.armed = "yes";
    button.textContent = "Confirm";
    setTimeout(() => {
      button.dataset.armed = "";
      button.textContent = "Delete";
    }, 3000);
    return;
  }
  try {
    const result = await api("DELETE", `/topics/${encodeURIComponent(name)}`);
    if (result.status !== 200) notice(errorText(result));
  } catch {
    notice("the broker is unreachable");
  }
  refresh();
}

// ---- publish ----------------------------------------------------------------

function renderPublishTopics(names) {
  const select = $("publish-topic");
  const current = [...select.options].map((o) => o.value);
  if (current.length === names.length && current.every((n, i) => n === names[i])) return;
  const chosen = select.value;
  select.replaceChildren(...names.map((name) => {
    const option = el("option", name);
    option.value = name;
    return option;
  }));
  if (names.includes(chosen)) select.value = chosen;
  renderPublishButton();
}

/** The payload as JSON, or undefined (and the reason shown) if it is not valid. */
function validatePayload() {
  const out = $("publish-validation");
  try {
    const payload = JSON.parse($("publish-payload").value);
    out.className = "status ok";
    out.textContent = "valid JSON";
    return { payload };
  } catch (error) {
    out.className = "status bad";
    out.textContent = `not valid JSON: ${error.message}`;
    return undefined;
  }
}

function renderPublishButton() {
  $("publish-button").disabled = !(client?.state === "open" && $("publish-topic").value && validatePayload());
}

$("publish-payload").addEventListener("input", renderPublishButton);
$("publish-topic").addEventListener("change", renderPublishButton);
$("publish-payload").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("publish-form").requestSubmit();
});

$("publish-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const valid = validatePayload();
  const topic = $("publish-topic").value;
  if (!valid || !topic || !client) return;
  const status = $("publish-status");
  try {
    const seq = await client.publish(topic, valid.payload);
    status.className = "status ok";
    status.textContent = `published to '${topic}'${seq === undefined ? "" : ` as seq ${seq}`}`;
    refresh();
  } catch (error) {
    status.className = "status bad";
    status.textContent = `${error.code}: ${error.message}`;
  }
});

// ---- watching topics --------------------------------------------------------

const watched = new Set();

function watch(topic) {
  if (!client || watched.has(topic)) return;
  const lastN = Math.max(0, Math.floor(Number($("replay-n").value) || 0));
  watched.add(topic);
  renderWatching();
  client.subscribe(topic, onEvent, { lastN }).then(refresh, (error) => {
    if (error.code === "REPLACED" || error.code === "UNSUBSCRIBED" || error.code === "CLOSED") return;
    watched.delete(topic);
    renderWatching();
    notice(`could not watch '${topic}': ${error.code}`);
  });
}

function unwatch(topic) {
  watched.delete(topic);
  renderWatching();
  client?.unsubscribe(topic).then(refresh, () => {});
}

function renderWatching() {
  const chips = [...watched].sort().map((topic) => {
    const chip = el("span", topic, "chip");
    const close = el("button", "×", "chip-close");
    close.type = "button";
    close.title = "unwatch";
    close.addEventListener("click", () => unwatch(topic));
    chip.append(close);
    return chip;
  });
  if (chips.length === 0) chips.push(el("span", "Watching nothing: press Watch on a topic.", "muted"));
  $("watching").replaceChildren(...chips);
  for (const [name, entry] of topicRows) {
    entry.watch.textContent = watched.has(name) ? "Unwatch" : "Watch";
    entry.tr.classList.toggle("watched", watched.has(name));
  }
}

// ---- the event log ----------------------------------------------------------

let waiting = [];
let received = 0;
let paused = false;
let receivedAtPause = 0;
let frameAsked = false;

function onEvent(event) {
  received += 1;
  waiting.push(event);
  // Trimmed in batches, so that a burst costs no shift per event.
  if (waiting.length >= 2 * MAX_ROWS) waiting = waiting.slice(-MAX_ROWS);
  askFrame();
}

function askFrame() {
  if (frameAsked) return;
  frameAsked = true;
  requestAnimationFrame(drawEvents);
}

function clock(ts) {
  const date = new Date(ts);
  if (Number.isNaN(date.getTime())) return String(ts ?? "");
  return `${date.toTimeString().slice(0, 8)}.${String(date.getMilliseconds()).padStart(3, "0")}`;
}

function payloadText(message) {
  let text;
  try {
    text = JSON.stringify(message?.payload, null, 2) ?? "undefined";
  } catch {
    text = String(message?.payload);
  }
  return text.length > MAX_PAYLOAD_CHARS
    ? `${text.slice(0, MAX_PAYLOAD_CHARS)}\n… (${text.length} characters in all)`
    : text;
}

function eventRow(event) {
  const tr = el("tr");
  const payload = el("td", undefined, "payload");
  payload.append(el("pre", payloadText(event.message)));
  tr.append(el("td", clock(event.ts), "time"), el("td", event.topic, "name"), el("td", event.seq ?? "", "num"), payload);
  return tr;
}

function drawEvents() {
  frameAsked = false;
  if (!paused && waiting.length > 0) {
    const batch = waiting.length > MAX_ROWS ? waiting.slice(-MAX_ROWS) : waiting;
    waiting = [];
    const rows = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i -= 1) rows.append(eventRow(batch[i]));
    const tbody = $("log-rows");
    tbody.prepend(rows);
    while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild.remove();
  }
  const pending = paused ? ` · paused, ${received - receivedAtPause} since` : "";
  $("event-count").textContent = `${received} received · last ${$("log-rows").rows.length} shown${pending}`;
}

$("pause").addEventListener("click", () => {
  paused = !paused;
  receivedAtPause = received;
  $("pause").textContent = paused ? "Resume" : "Pause";
  $("pause").classList.toggle("active", paused);
  askFrame();
});

$("clear").addEventListener("click", () => {
  waiting = [];
  received = 0;
  receivedAtPause = 0;
  $("log-rows").replaceChildren();
  askFrame();
});

validatePayload();
poll();
