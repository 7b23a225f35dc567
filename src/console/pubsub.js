// pubsub.js: a small, dependency-free client for the pubsub broker, as an
// ES module. The broker serves it at /pubsub.js; its console uses it.
//
//   import { connect } from "/pubsub.js";
//   const ps = connect({ key: "s3cret" });   // ws(s)://<this page's host>/ws
//   // or, for a cluster: connect({ urls: ["wss://a/ws", "wss://b/ws"] })
//   // or, with a token per user from the app's backend:
//   // connect({ token: () => fetch("/my/pubsub-token").then((r) => r.text()) })
//   ps.addEventListener("state", () => console.log("connection:", ps.state));
//   await ps.subscribe("orders", (event) => {
//     console.log(event.topic, event.seq, event.message.payload);
//   }, { lastN: 10 });                        // the last 10 first, then live
//   const seq = await ps.publish("orders", { order_id: 123 });
//   await ps.unsubscribe("orders");
//   ps.close();
//
// What it does for you:
// - request ids: every subscribe, unsubscribe, publish and ping carries a
//   `request_id`; its promise settles with the reply that echoes it (the
//   ack, or a PubSubError with the broker's error code), or rejects with
//   TIMEOUT or DISCONNECTED.
// - reconnect: when the connection drops it connects again by itself, after
//   a delay that doubles from `minDelayMs` to `maxDelayMs` (with jitter),
//   and subscribes again to every topic it was subscribed to. Given the
//   `urls` of several nodes of a cluster, each attempt goes to the next
//   one, so a client of a node that died goes on with another.
// - resume: see `subscribeFrame` below.
// - tokens: with `token` (a JWT, or a function, sync or async, returning
//   a fresh one), the first message on every connection is
//   `{"type":"auth","token":...}`, so the token stays out of URLs and
//   logs; nothing else is sent, subscribes included, until the broker
//   acks it, and only then is the state "open". A function is called for
//   each connection and again for each refresh: a new `auth` on the same
//   connection once 85% of the lifetime the last ack's `expires` left has
//   passed, or 5 s before it ends if that is sooner, but not before
//   half-way nor within 1 s. A refresh that fails is an "error" event and
//   is tried again on that schedule; if the token expires meanwhile, the
//   broker closes with `token_expired` and the client reconnects with a
//   fresh one. A string is sent as it is and never refreshed: once it has
//   expired, each attempt fails with UNAUTHORIZED until `setToken` gives
//   a new one. Connecting, an `auth` refused (UNAUTHORIZED) or unanswered
//   (TIMEOUT), or a function that throws or returns no token (NO_TOKEN),
//   is an "error" event, and the client backs off as from a failed
//   connection.
// - refusals: a request outside the token's rights rejects with FORBIDDEN,
//   a publish over the broker's limit with RATE_LIMITED; the connection
//   stays.
// - notices: `subscription_revoked` (a refreshed token no longer covers
//   the topic) drops that subscription; `disconnected` (the broker's
//   `POST /disconnect` of the token's user) closes the client for good, as
//   `close()` does, with no reconnect: the user was put out. Both are also
//   "info" events.
//
// Events on the client (an EventTarget), each with `detail`:
// - "state": the connection's state changed (`client.state` is one of
//   "connecting", "open", "reconnecting", "closed"); detail
//   `{ state, delayMs }` (the wait before the next attempt, when
//   reconnecting), or `{ state: "closed", reason: "disconnected" }` when
//   the broker put the user out.
// - "info": a notice from the broker (`topic_deleted`, `server_shutdown`,
//   `topic_reset`, `subscription_revoked`, `token_expired`,
//   `disconnected`, ...), the message as sent; heartbeats are not
//   reported.
// - "error": a PubSubError not tied to a pending request (a slow-consumer
//   cut, a subscription the broker refused when subscribing again, a
//   failed `auth` or token function: see tokens).
// - "gap": `{ topic, lastSeq }`: a resume could not recover what was
//   published while disconnected (the broker restarted, or the ring no
//   longer holds it); events go on after `lastSeq`.

/** An error reply from the broker, or a request the client gave up on. */
export class PubSubError extends Error {
  constructor(code, message, topic) {
    super(message);
    this.name = "PubSubError";
    this.code = code;
    this.topic = topic;
  }
}

/** A new client, connecting at once; see PubSub. */
export function connect(options = {}) {
  return new PubSub(options);
}

/** The WebSocket endpoint of the broker that served this page. */
function defaultUrl() {
  const scheme = globalThis.location?.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${globalThis.location?.host}/ws`;
}

/** A token refresh comes at least this long before the token expires (if its lifetime allows). */
const REFRESH_MARGIN_MS = 5000;
/** ... and at least this long after the last `auth`. */
const MIN_REFRESH_MS = 1000;
/** The longest delay setTimeout takes. */
const MAX_TIMER_MS = 2 ** 31 - 1;

let idCounter = 0;

/** A message id unique enough for one client: time, counter, randomness. */
function messageId() {
  idCounter += 1;
  const random = Math.floor(Math.random() * 0x100000000).toString(36);
  return `${Date.now().toString(36)}-${idCounter.toString(36)}-${random}`;
}

export class PubSub extends EventTarget {
  #urls;
  #urlIndex = 0;
  #key;
  /** A JWT, a function returning one, or "". */
  #token;
  #clientId;
  #minDelayMs;
  #maxDelayMs;
  #timeoutMs;
  #ws = null;
  #attempt = 0;
  #retryTimer = null;
  #refreshTimer = null;
  /** When the last acked token expires, by this machine's clock (ms). */
  #expiresAt = NaN;
  #nextRequest = 0;
  /** request_id -> { resolve, reject, timer } */
  #pending = new Map();
  /** topic -> { onEvent, lastN, lastSeq, epoch, waiter } */
  #subs = new Map();

  /**
   * options: `url` (default: /ws on the page's host) or `urls` (several
   * nodes of a cluster, tried in turn), `key` (the API key, if the broker
   * has one), `token` (a JWT, or a function, sync or async, returning a
   * fresh one: see tokens above; used instead of `key` when both are
   * given), `clientId` (a label in the broker's logs),
   * `minDelayMs` and `maxDelayMs` (the reconnect backoff, default 500 and
   * 5000), `timeoutMs` (how long a request waits for its reply, default
   * 10000).
   */
  constructor({ url, urls, key, token, clientId, minDelayMs = 500, maxDelayMs = 5000, timeoutMs = 10000 } = {}) {
    super();
    this.#urls = urls?.length ? [...urls] : [url ?? defaultUrl()];
    this.#key = key || "";
    this.#token = token || "";
    this.#clientId = clientId ?? `js-${messageId()}`;
    this.#minDelayMs = minDelayMs;
    this.#maxDelayMs = maxDelayMs;
    this.#timeoutMs = timeoutMs;
    this.state = "connecting";
    this.#open();
  }

  /**
   * Subscribes to `topic`; `onEvent(event)` gets each event, the broker's
   * `{ type, topic, message: { id, payload }, seq, ts }`. With `lastN`, the
   * last `lastN` messages come first. One handler per topic: subscribing
   * again replaces it, and the new one's events start with that
   * subscription (its replay, then live), each once. Resolves with the
   * ack once the broker has the subscription (waiting for the connection
   * if it is down); rejects with a PubSubError such as TOPIC_NOT_FOUND,
   * and then the subscription is dropped.
   */
  subscribe(topic, onEvent, { lastN = 0 } = {}) {
    return new Promise((resolve, reject) => {
      const sub = { onEvent, lastN, lastSeq: undefined, epoch: undefined, waiter: { resolve, reject } };
      this.#forget(topic, "REPLACED");
      this.#subs.set(topic, sub);
      if (this.state === "open") this.#sendSubscribe(topic, sub);
    });
  }

  /** Stops the events of `topic`; resolves with the ack (at once if offline). */
  unsubscribe(topic) {
    this.#forget(topic, "UNSUBSCRIBED");
    if (this.state !== "open") return Promise.resolve(undefined);
    return this.#request({ type: "unsubscribe", topic, client_id: this.#clientId });
  }

  /**
   * Publishes `payload` (any JSON value) to `topic`. Resolves with the
   * message's `seq` once the broker has it (undefined from a broker whose
   * acks carry no `seq`); rejects with a PubSubError (TOPIC_NOT_FOUND,
   * FORBIDDEN, RATE_LIMITED, NOT_CONNECTED while offline, DISCONNECTED if
   * the connection dropped before the ack: then it may or may not have
   * been published).
   */
  async publish(topic, payload, { id = messageId() } = {}) {
    const ack = await this.#request({ type: "publish", topic, message: { id, payload } });
    return typeof ack.seq === "number" ? ack.seq : undefined;
  }

  /** A round trip to the broker; resolves with the pong (NOT_CONNECTED while offline). */
  ping() {
    return this.#request({ type: "ping" });
  }

  /** Uses `key` from now on, and connects again with it at once. */
  setKey(key) {
    this.#key = key || "";
    this.#reconnectNow();
  }

  /** Uses `token` (a string or a function, as the option) from now on, and connects again with it at once. */
  setToken(token) {
    this.#token = token || "";
    this.#reconnectNow();
  }

  /** Closes the connection for good: no reconnect; pending requests reject. */
  close() {
    this.#shutDown({});
  }

  #shutDown(detail) {
    this.#drop();
    for (const topic of [...this.#subs.keys()]) this.#forget(topic, "CLOSED");
    this.#setState("closed", detail);
  }

  #reconnectNow() {
    if (this.state === "closed") return;
    this.#drop();
    this.#attempt = 0;
    this.#open();
  }

  /** Drops the subscription to `topic`; a subscribe still waiting rejects with `code`. */
  #forget(topic, code) {
    this.#subs.get(topic)?.waiter?.reject(new PubSubError(code, `subscription to '${topic}' ended`, topic));
    this.#subs.delete(topic);
  }

  #setState(state, detail = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  /** The endpoint the client is connected to, or will try next. */
  get url() {
    return this.#urls[this.#urlIndex];
  }

  #open() {
    this.#setState("connecting");
    const url = this.#key && !this.#token
      ? `${this.url}${this.url.includes("?") ? "&" : "?"}api_key=${encodeURIComponent(this.#key)}`
      : this.url;
    const ws = new WebSocket(url);
    this.#ws = ws;
    ws.onopen = () => (this.#token ? this.#authenticate(ws) : this.#ready());
    ws.onmessage = (message) => {
      if (this.#ws === ws) this.#receive(message.data);
    };
    ws.onclose = () => {
      if (this.#ws === ws) this.#retry();
    };
  }

  /** Connected (and authenticated): open, and subscribes again to every topic. */
  #ready() {
    this.#attempt = 0;
    this.#setState("open");
    for (const [topic, sub] of this.#subs) this.#sendSubscribe(topic, sub);
  }

  /** Drops the connection and connects again after the backoff, to the next URL. */
  #retry() {
    this.#drop();
    const delayMs = Math.min(this.#maxDelayMs, this.#minDelayMs * 2 ** this.#attempt) * (0.5 + Math.random() / 2);
    this.#attempt += 1;
    this.#urlIndex = (this.#urlIndex + 1) % this.#urls.length;
    this.#retryTimer = setTimeout(() => this.#open(), delayMs);
    this.#setState("reconnecting", { delayMs: Math.round(delayMs) });
  }

  /**
   * Sends `auth` on `ws` with the token (a fresh one from the function).
   * Connecting, the connection is open once it is acked, and backs off if
   * it is not; refreshing, the old token stays until it expires. Either
   * way, a function's next refresh is scheduled from the ack.
   */
  async #authenticate(ws) {
    const refreshing = this.state === "open";
    try {
      const token = await this.#freshToken();
      if (this.#ws !== ws) return;
      const ack = await this.#send({ type: "auth", token });
      this.#expiresAt = Date.now() + Date.parse(ack.expires) - (Date.parse(ack.ts) || Date.now());
      if (!refreshing) this.#ready();
      this.#scheduleRefresh(ws);
    } catch (error) {
      if (this.#ws !== ws) return;
      this.dispatchEvent(new CustomEvent("error", { detail: error }));
      if (refreshing) this.#scheduleRefresh(ws);
      else this.#retry();
    }
  }

  async #freshToken() {
    let token;
    try {
      token = typeof this.#token === "function" ? await this.#token() : this.#token;
    } catch (error) {
      throw new PubSubError("NO_TOKEN", `the token function failed: ${error?.message ?? error}`);
    }
    if (typeof token !== "string" || !token) throw new PubSubError("NO_TOKEN", "the token function returned no token");
    return token;
  }

  /** With a token function: the next refresh, as "tokens" above says. */
  #scheduleRefresh(ws) {
    clearTimeout(this.#refreshTimer);
    if (typeof this.#token !== "function" || Number.isNaN(this.#expiresAt)) return;
    const leftMs = this.#expiresAt - Date.now();
    const delayMs = Math.max(Math.min(leftMs * 0.85, leftMs - REFRESH_MARGIN_MS), leftMs / 2, MIN_REFRESH_MS);
    this.#refreshTimer = setTimeout(() => this.#authenticate(ws), Math.min(delayMs, MAX_TIMER_MS));
  }

  /** Forgets the socket, any retry and refresh; fails every pending request. */
  #drop() {
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#refreshTimer);
    const ws = this.#ws;
    this.#ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
    for (const [, pending] of this.#pending) {
      clearTimeout(pending.timer);
      pending.reject(new PubSubError("DISCONNECTED", "the connection to the broker dropped"));
    }
    this.#pending.clear();
  }

  /** Sends `frame` with a new request_id; settles with the reply that echoes it. */
  #request(frame) {
    if (this.state !== "open") {
      return Promise.reject(new PubSubError("NOT_CONNECTED", "not connected to the broker", frame.topic));
    }
    return this.#send(frame);
  }

  /** `#request` on the socket, open or not yet (the `auth` goes first). */
  #send(frame) {
    return new Promise((resolve, reject) => {
      this.#nextRequest += 1;
      const id = `r${this.#nextRequest}`;
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new PubSubError("TIMEOUT", `no reply to ${frame.type} within ${this.#timeoutMs} ms`, frame.topic));
      }, this.#timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.#ws.send(JSON.stringify({ ...frame, request_id: id }));
    });
  }

  // Resume. For each topic the client remembers `lastSeq`, the seq of the
  // last message it has seen (from the events, or from the subscribe ack's
  // `last_seq` when no replay follows the ack), and `epoch`, from the
  // subscribe ack. Subscribing again after a reconnect, it asks for
  // `since_seq: lastSeq` with that `epoch` when it has both, and the broker
  // sends exactly what was missed; otherwise (a broker without resume, or
  // nothing seen yet) it asks for `last_n` as the caller did, so the same
  // events may come twice. If the broker cannot recover (`recovered:
  // false`), the client reports a "gap" and goes on from the ack's
  // `last_seq`.
  #subscribeFrame(topic, sub) {
    const frame = { type: "subscribe", topic, client_id: this.#clientId };
    if (sub.epoch !== undefined && sub.lastSeq !== undefined) {
      frame.since_seq = sub.lastSeq;
      frame.epoch = sub.epoch;
    } else {
      frame.last_n = sub.lastN;
    }
    return frame;
  }

  #sendSubscribe(topic, sub) {
    const frame = this.#subscribeFrame(topic, sub);
    this.#request(frame).then(
      (ack) => {
        if (this.#subs.get(topic) !== sub) return;
        if (typeof ack.epoch === "string") sub.epoch = ack.epoch;
        const replayFollows = ack.recovered === true || (frame.last_n > 0 && ack.last_seq > 0);
        if (typeof ack.last_seq === "number" && !replayFollows) sub.lastSeq = ack.last_seq;
        if (ack.recovered === false) {
          this.dispatchEvent(new CustomEvent("gap", { detail: { topic, lastSeq: ack.last_seq } }));
        }
        sub.waiter?.resolve(ack);
        sub.waiter = null;
      },
      (error) => {
        // Dropped or timed out: sent again on the next connection.
        if (error.code === "DISCONNECTED" || error.code === "TIMEOUT") return;
        if (this.#subs.get(topic) !== sub) return;
        this.#subs.delete(topic);
        if (sub.waiter) sub.waiter.reject(error);
        else this.dispatchEvent(new CustomEvent("error", { detail: error }));
      },
    );
  }

  #receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    switch (msg.type) {
      case "event": {
        const sub = this.#subs.get(msg.topic);
        // Subscribing again on this connection replaces the handler at
        // once, but its events start at the ack (the broker writes what it
        // still had queued before it): what comes before is the previous
        // subscription's.
        if (!sub || sub.waiter) return;
        if (Number.isInteger(msg.seq)) sub.lastSeq = msg.seq;
        sub.onEvent(msg);
        return;
      }
      case "ack":
      case "pong":
      case "error": {
        const pending = this.#pending.get(msg.request_id);
        const error = msg.type === "error"
          ? new PubSubError(msg.error?.code, msg.error?.message, msg.topic)
          : null;
        if (!pending) {
          if (error) this.dispatchEvent(new CustomEvent("error", { detail: error }));
          return;
        }
        this.#pending.delete(msg.request_id);
        clearTimeout(pending.timer);
        if (error) pending.reject(error);
        else pending.resolve(msg);
        return;
      }
      case "info": {
        if (msg.msg === "ping") return;
        const sub = this.#subs.get(msg.topic);
        if (sub && msg.msg === "topic_deleted") this.#subs.delete(msg.topic);
        if (sub && msg.msg === "subscription_revoked") this.#forget(msg.topic, "REVOKED");
        if (msg.msg === "disconnected") this.#shutDown({ reason: "disconnected" });
        if (sub && msg.msg === "topic_reset") {
          sub.epoch = msg.epoch;
          sub.lastSeq = msg.last_seq;
        }
        this.dispatchEvent(new CustomEvent("info", { detail: msg }));
        return;
      }
      default:
    }
  }
}
