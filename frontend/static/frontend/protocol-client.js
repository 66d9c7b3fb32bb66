// Client for the price stream at /ws/prices/ (docs/protocol.md).
//
// It owns the one WebSocket: connecting, reconnecting with exponential backoff
// and jitter, resubscribing (with `since`/`epochs` so a server that keeps
// history replays what was missed), subscription bookkeeping, and per-symbol
// seq tracking, and the order books it was asked to watch (one BookReplica per
// symbol, checked by prev_seq and checksum; resubscribed on a fault). It knows nothing
// about the DOM: rendering code listens to its events. Everything that touches the outside world (WebSocket class, timers,
// clock, randomness) is injectable so node's test runner can drive it.

import { BookReplica } from "./order-book.js";

export const State = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  RECONNECTING: "reconnecting",
  OFFLINE: "offline",
  // The server refused this client (close 4401 or 4403): no reconnecting by itself,
  // since the same credentials would be refused again. reconnectNow() tries once more.
  UNAUTHORIZED: "unauthorized",
  FORBIDDEN: "forbidden",
});

// Close codes after which retrying cannot help (docs/protocol.md).
export const CloseCode = Object.freeze({
  UNAUTHORIZED: 4401, // the server requires authentication and got none (or a bad token)
  FORBIDDEN: 4403, // the token was revoked or expired, the session ended, the user was disabled
});
const DENIED_STATES = new Map([
  [CloseCode.UNAUTHORIZED, State.UNAUTHORIZED],
  [CloseCode.FORBIDDEN, State.FORBIDDEN],
]);

// Errors after which asking again later can succeed (docs/protocol.md).
const TRANSIENT_ERRORS = new Set(["unavailable", "rate_limited"]);

// WebSocket.OPEN; the constant is read from here so fake sockets need not define it.
const OPEN = 1;

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential, capped, with
 * "equal jitter" (half fixed, half random) so a herd of clients dropped by one
 * server restart spreads out, while no client retries in a tight loop.
 */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 15000, factor = 2, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, baseMs * factor ** Math.max(0, attempt));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** True for a well-formed tick object (the shape of protocol v1 "tick" frames). */
export function isTick(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    typeof value.symbol === "string" &&
    Number.isInteger(value.seq) &&
    Number.isFinite(value.ts) &&
    Number.isFinite(value.price)
  );
}

const defaultTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle),
};

export class PriceStreamClient {
  /**
   * @param {object} options
   * @param {string} options.url            ws:// or wss:// URL of the price stream
   * @param {Function} [options.WebSocket]  WebSocket constructor (injected in tests)
   * @param {object} [options.timers]       {setTimeout, clearTimeout}
   * @param {Function} [options.now]        clock in epoch ms
   * @param {Function} [options.random]     uniform [0, 1)
   * @param {number} [options.baseDelayMs]  first reconnect delay ceiling
   * @param {number} [options.maxDelayMs]   reconnect delay cap
   * @param {number} [options.heartbeatMs]  ping after this much silence; reconnect after 2.5x
   * @param {number|null} [options.batchMs] ask the server to batch ticks (protocol addition 3)
   */
  constructor({
    url,
    WebSocket: WebSocketImpl = globalThis.WebSocket,
    timers = defaultTimers,
    now = () => Date.now(),
    random = Math.random,
    baseDelayMs = 500,
    maxDelayMs = 15000,
    heartbeatMs = 15000,
    batchMs = null,
  }) {
    if (!url) throw new Error("PriceStreamClient needs a url");
    this.url = url;
    this._WebSocket = WebSocketImpl;
    this._timers = timers;
    this._now = now;
    this._random = random;
    this._baseDelayMs = baseDelayMs;
    this._maxDelayMs = maxDelayMs;
    this._heartbeatMs = heartbeatMs;
    this._batchMs = batchMs;

    this._listeners = new Map();
    this._ws = null;
    this._state = null;
    this._stopped = true;
    this._networkOnline = true;
    this._everConnected = false;
    this._denied = null; // {code, reason} after a 4401/4403 close, until reconnectNow()
    this._attempt = 0;
    this._retryTimer = null;
    this._retryAt = null;
    this._heartbeatTimer = null;
    this._lastMessageAt = 0;
    this._nextId = 1;

    this._wanted = new Set(); // symbols the caller wants, in insertion order
    this._confirmed = new Set(); // symbols the server confirmed on this connection
    this._pending = new Map(); // command id -> {action, symbols, resumed}
    this._lastSeq = new Map(); // symbol -> last seq delivered to listeners
    this._epochs = new Map(); // symbol -> epoch string from the last snapshot
    this._seenOnConnection = new Set(); // symbols with a tick/snapshot on this connection
    // symbol -> {depth, maxRate, replica, failures, timer}: the order books watched
    this._books = new Map();

    this.stats = {
      ticks: 0, frames: 0, duplicates: 0, gaps: 0, reconnects: 0, lastPongRttMs: null,
      // Order books: frames applied, and resubscriptions after a fault (by fault).
      bookSnapshots: 0, bookUpdates: 0, bookResyncs: 0, bookFaults: {},
    };
  }

  // --- events -------------------------------------------------------------

  /** Listen to an event; returns a function that removes the listener. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this._listeners.get(type)?.delete(fn);
  }

  _emit(type, payload) {
    const fns = this._listeners.get(type);
    if (!fns) return;
    for (const fn of fns) {
      try {
        fn(payload);
      } catch (err) {
        // One broken listener must not stop the stream for the others.
        if (type !== "listenerError") this._emit("listenerError", { type, error: err });
      }
    }
  }

  // --- read-only views ----------------------------------------------------

  get state() {
    return this._state;
  }

  get retryAt() {
    return this._retryAt;
  }

  get attempt() {
    return this._attempt;
  }

  get symbols() {
    return [...this._wanted];
  }

  /** {code, reason} of the 4401/4403 close that stopped reconnecting, else null. */
  get denied() {
    return this._denied;
  }

  get confirmedSymbols() {
    return [...this._confirmed];
  }

  lastSeq(symbol) {
    return this._lastSeq.get(symbol);
  }

  epoch(symbol) {
    return this._epochs.get(symbol);
  }

  // --- lifecycle ----------------------------------------------------------

  /** Open the connection (idempotent). */
  start() {
    if (!this._stopped) return;
    this._stopped = false;
    this._connect();
  }

  /** Close for good; no reconnect until start() is called again. */
  stop() {
    this._stopped = true;
    this._cancelRetry();
    this._stopHeartbeat();
    const ws = this._ws;
    this._ws = null;
    this._confirmed.clear();
    this._pending.clear();
    for (const entry of this._books.values()) this._unsyncBook(entry);
    if (ws) {
      try {
        ws.close(1000, "client stopped");
      } catch {
        // Already closing: nothing to do.
      }
    }
    this._setState(State.OFFLINE);
  }

  /** Tell the client whether the browser believes it has a network at all. */
  setNetworkOnline(online) {
    this._networkOnline = Boolean(online);
    if (this._stopped) return;
    if (!this._networkOnline) {
      // Retrying without a network only burns the backoff budget; wait for "online".
      this._cancelRetry();
      const ws = this._ws;
      if (ws) {
        // Browsers keep such a socket "open" while nothing can pass; drop it
        // now so the badge tells the truth, and resume with `since` later.
        this._onClose({ code: 4001, reason: "browser offline", wasClean: false });
        try {
          ws.close(4001, "browser offline");
        } catch {
          // Already closing.
        }
      } else {
        this._setState(State.OFFLINE);
      }
      return;
    }
    if (this._denied) {
      this._setState(DENIED_STATES.get(this._denied.code), { ...this._denied });
      return;
    }
    if (!this._ws) {
      this._attempt = 0;
      this._connect();
    }
  }

  /** Skip the remaining backoff and try to connect now (a "retry now" button).
   *  After a 4401/4403 close this is the one way to try again (say, after signing in). */
  reconnectNow() {
    if (this._stopped || this._ws) return;
    this._denied = null;
    this._connect();
  }

  _connect() {
    this._cancelRetry();
    this._setState(this._everConnected || this._attempt > 0 ? State.RECONNECTING : State.CONNECTING);
    let ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (err) {
      this._emit("close", { code: null, reason: String(err), wasClean: false });
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    // Handlers ignore events from a socket that is no longer current.
    ws.onopen = () => ws === this._ws && this._onOpen();
    ws.onmessage = (event) => ws === this._ws && this._onMessage(event.data);
    ws.onclose = (event) => ws === this._ws && this._onClose(event ?? {});
    ws.onerror = () => {
      // A close event always follows; reconnecting is handled there.
    };
  }

  _onOpen() {
    if (this._everConnected) this.stats.reconnects += 1;
    this._everConnected = true;
    this._attempt = 0;
    this._confirmed.clear();
    this._pending.clear();
    this._seenOnConnection.clear();
    this._lastMessageAt = this._now();
    this._setState(State.LIVE);
    if (this._wanted.size) this._sendSubscribe([...this._wanted]);
    // Books are state, not history: a new connection gets fresh snapshots (no `since`),
    // each once its symbol's ticks are confirmed (see _maybeSubscribeBook).
    for (const symbol of this._books.keys()) this._maybeSubscribeBook(symbol);
    this._startHeartbeat();
  }

  _onClose({ code = null, reason = "", wasClean = false }) {
    this._ws = null;
    this._stopHeartbeat();
    for (const entry of this._books.values()) this._unsyncBook(entry);
    this._confirmed.clear();
    this._pending.clear();
    this._emit("close", { code, reason, wasClean });
    if (this._stopped) return;
    if (DENIED_STATES.has(code)) {
      // Refused, not dropped: the same credentials would be refused again.
      this._cancelRetry();
      this._denied = { code, reason: reason || "" };
      this._emit("denied", { ...this._denied });
      this._setState(DENIED_STATES.get(code), { ...this._denied });
      return;
    }
    if (!this._networkOnline) {
      this._setState(State.OFFLINE);
      return;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    const delayMs = backoffDelay(this._attempt, {
      baseMs: this._baseDelayMs,
      maxMs: this._maxDelayMs,
      random: this._random,
    });
    this._attempt += 1;
    this._retryAt = this._now() + delayMs;
    this._retryTimer = this._timers.setTimeout(() => {
      this._retryTimer = null;
      this._retryAt = null;
      if (!this._stopped) this._connect();
    }, delayMs);
    this._setState(State.RECONNECTING, { delayMs });
  }

  _cancelRetry() {
    if (this._retryTimer !== null) this._timers.clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._retryAt = null;
  }

  _setState(state, extra = {}) {
    this._state = state;
    this._emit("state", { state, attempt: this._attempt, retryAt: this._retryAt, ...extra });
  }

  // Silence for heartbeatMs: ping. Silence for 2.5x heartbeatMs: the connection is
  // half-open (a NAT or proxy dropped it without a FIN), so drop it and reconnect.
  _startHeartbeat() {
    this._stopHeartbeat();
    if (!this._heartbeatMs) return;
    const check = () => {
      this._heartbeatTimer = null;
      if (!this._ws) return;
      const silentFor = this._now() - this._lastMessageAt;
      if (silentFor >= this._heartbeatMs * 2.5) {
        const ws = this._ws;
        this._onClose({ code: 4000, reason: "heartbeat timeout", wasClean: false });
        try {
          ws.close(4000, "heartbeat timeout");
        } catch {
          // The socket is already gone.
        }
        return;
      }
      if (silentFor >= this._heartbeatMs) this.ping();
      this._heartbeatTimer = this._timers.setTimeout(check, this._heartbeatMs / 2);
    };
    this._heartbeatTimer = this._timers.setTimeout(check, this._heartbeatMs / 2);
  }

  _stopHeartbeat() {
    if (this._heartbeatTimer !== null) this._timers.clearTimeout(this._heartbeatTimer);
    this._heartbeatTimer = null;
  }

  // --- commands -----------------------------------------------------------

  /** Add symbols to the wanted set; sends subscribe for the new ones if connected. */
  subscribe(symbols) {
    const fresh = [];
    for (const symbol of symbols) {
      if (!this._wanted.has(symbol)) {
        this._wanted.add(symbol);
        fresh.push(symbol);
      }
    }
    if (fresh.length && this._isOpen()) this._sendSubscribe(fresh);
    return fresh;
  }

  /** Drop symbols from the wanted set and forget their seqs; sends unsubscribe if connected. */
  unsubscribe(symbols) {
    const gone = [];
    let books = false;
    for (const symbol of symbols) {
      if (this._wanted.delete(symbol)) {
        gone.push(symbol);
        this._lastSeq.delete(symbol);
        this._epochs.delete(symbol);
        this._seenOnConnection.delete(symbol);
        // Only a book asked for on this connection needs telling the server.
        books = Boolean(this._dropBook(symbol)?.asked) || books;
      }
    }
    if (gone.length && this._isOpen()) {
      // Unsubscribe takes the ticks stream by default; a watched book goes with them.
      const command = { action: "unsubscribe", symbols: gone };
      if (books) command.streams = ["ticks", "book"];
      this._send(command, { symbols: gone });
    }
    return gone;
  }

  // --- order books ----------------------------------------------------------

  /**
   * Watch `symbol`'s order book: its best `depth` levels per side (1 to 50), updates at
   * most `maxRate` per second (the server conflates the rest). The client keeps the book
   * (book(symbol)), checks every frame's prev_seq and checksum, and resubscribes the book
   * stream on a fault. Watching again with other options resubscribes.
   */
  watchBook(symbol, { depth = 10, maxRate = null } = {}) {
    const known = this._books.get(symbol);
    if (known && known.depth === depth && known.maxRate === maxRate) return false;
    if (known) this.unwatchBook(symbol);
    this._books.set(symbol, { depth, maxRate, replica: new BookReplica(symbol), failures: 0, timer: null, asked: false });
    this._maybeSubscribeBook(symbol);
    return true;
  }

  /** Stop watching `symbol`'s book (its ticks, if wanted, go on). */
  unwatchBook(symbol) {
    const entry = this._dropBook(symbol);
    if (!entry) return false;
    if (entry.asked && this._isOpen()) this._send({ action: "unsubscribe", symbols: [symbol], streams: ["book"] }, { symbols: [symbol], book: true });
    return true;
  }

  /** The BookReplica of a watched symbol (its `synced` says whether it holds a checked book), or null. */
  book(symbol) {
    return this._books.get(symbol)?.replica ?? null;
  }

  get bookSymbols() {
    return [...this._books.keys()];
  }

  /** Forget `symbol`'s book; returns its entry (null if none was watched). */
  _dropBook(symbol) {
    const entry = this._books.get(symbol);
    if (!entry) return null;
    if (entry.timer !== null) this._timers.clearTimeout(entry.timer);
    this._books.delete(symbol);
    return entry;
  }

  _unsyncBook(entry) {
    entry.replica.unsync();
    entry.asked = false;
    if (entry.timer !== null) this._timers.clearTimeout(entry.timer);
    entry.timer = null;
  }

  /** Subscribe the book of `symbol` on this connection unless done already; for a symbol
   *  whose ticks are wanted, only once the server confirmed them: a symbol it refuses
   *  (forbidden, unknown) is then refused once, not once for each stream. */
  _maybeSubscribeBook(symbol) {
    const entry = this._books.get(symbol);
    if (!entry || entry.asked || !this._isOpen()) return;
    if (this._wanted.has(symbol) && !this._confirmed.has(symbol)) return;
    entry.asked = true;
    this._sendBookSubscribe(symbol);
  }

  _sendBookSubscribe(symbol) {
    const entry = this._books.get(symbol);
    // The ticks stream too when they are wanted: held already, it is answered without a
    // second snapshot (docs/protocol.md), so the symbol's tick series is not disturbed.
    const streams = this._wanted.has(symbol) ? ["ticks", "book"] : ["book"];
    const command = { action: "subscribe", symbols: [symbol], streams, depth: entry.depth };
    if (entry.maxRate !== null && entry.maxRate !== undefined) command.max_rate = entry.maxRate;
    return this._send(command, { symbols: [symbol], book: true, unsettled: new Set([symbol]) });
  }

  _onBookFrame(msg) {
    const entry = typeof msg.symbol === "string" ? this._books.get(msg.symbol) : undefined;
    if (!entry) return; // in flight when the book was unwatched
    const snapshot = msg.type === "book";
    const result = snapshot ? entry.replica.applySnapshot(msg) : entry.replica.applyUpdate(msg);
    if (result.ok) {
      if (snapshot) this.stats.bookSnapshots += 1;
      else {
        this.stats.bookUpdates += 1;
        entry.failures = 0; // a checked update: the book is sound again
      }
      this._emit("book", { symbol: msg.symbol, replica: entry.replica, snapshot });
    } else if (result.fault) {
      this._resyncBook(msg.symbol, entry, result.fault);
    }
  }

  /** A missed update or a book that is not the server's: ask for a fresh snapshot.
   *  Right away the first time; again and again only with backoff (a server whose
   *  frames never check out must not be asked in a tight loop). */
  _resyncBook(symbol, entry, fault) {
    this.stats.bookResyncs += 1;
    this.stats.bookFaults[fault] = (this.stats.bookFaults[fault] ?? 0) + 1;
    const delayMs = entry.failures === 0
      ? 0
      : backoffDelay(entry.failures - 1, { baseMs: this._baseDelayMs, maxMs: this._maxDelayMs, random: this._random });
    entry.failures += 1;
    this._emit("bookResync", { symbol, fault, delayMs });
    if (entry.timer !== null || !this._isOpen()) return;
    const resubscribe = () => {
      entry.timer = null;
      if (this._books.get(symbol) !== entry || !this._isOpen()) return;
      this._send({ action: "unsubscribe", symbols: [symbol], streams: ["book"] }, { symbols: [symbol], book: true });
      this._sendBookSubscribe(symbol);
    };
    if (delayMs === 0) resubscribe();
    else entry.timer = this._timers.setTimeout(resubscribe, delayMs);
  }

  /** Ask the server for a pong; the round trip lands in stats.lastPongRttMs. */
  ping() {
    return this._isOpen() ? this._send({ action: "ping" }, { sentAt: this._now() }) : null;
  }

  _isOpen() {
    return this._ws !== null && this._ws.readyState === OPEN && this._state === State.LIVE;
  }

  _sendSubscribe(symbols, { resume = true } = {}) {
    const command = { action: "subscribe", symbols };
    const since = {};
    const epochs = {};
    if (resume) {
      for (const symbol of symbols) {
        if (this._lastSeq.has(symbol)) {
          since[symbol] = this._lastSeq.get(symbol);
          if (this._epochs.has(symbol)) epochs[symbol] = this._epochs.get(symbol);
        }
      }
    }
    if (Object.keys(since).length) command.since = since;
    if (Object.keys(epochs).length) command.epochs = epochs;
    if (this._batchMs !== null && this._batchMs !== undefined) command.batch_ms = this._batchMs;
    return this._send(command, { symbols, resumed: "since" in command, unsettled: new Set(symbols) });
  }

  _send(command, meta = {}) {
    const id = this._nextId++;
    const message = { ...command, id };
    this._pending.set(id, { action: command.action, ...meta });
    this._ws.send(JSON.stringify(message));
    this._emit("sent", message);
    return id;
  }

  // --- incoming frames ----------------------------------------------------

  _onMessage(data) {
    this._lastMessageAt = this._now();
    this.stats.frames += 1;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this._emit("error", { code: "client_bad_frame", message: "the server sent a frame that is not JSON", id: null });
      return;
    }
    if (msg === null || typeof msg !== "object") return;
    switch (msg.type) {
      case "tick":
        this._acceptTick(msg);
        break;
      case "ticks":
        if (Array.isArray(msg.ticks)) for (const tick of msg.ticks) this._acceptTick(tick);
        break;
      case "snapshot":
        this._onSnapshot(msg);
        break;
      case "reset":
        this._onReset(msg);
        break;
      case "subscribed":
        this._onSubscribed(msg);
        break;
      case "unsubscribed":
        this._onUnsubscribed(msg);
        break;
      case "pong": {
        const request = this._pending.get(msg.id);
        this._pending.delete(msg.id);
        if (request?.sentAt !== undefined) this.stats.lastPongRttMs = this._now() - request.sentAt;
        this._emit("pong", { id: msg.id, ts: msg.ts, rttMs: this.stats.lastPongRttMs });
        break;
      }
      case "subscriptions":
        this._pending.delete(msg.id);
        this._emit("subscriptions", { symbols: msg.symbols ?? [], id: msg.id });
        break;
      case "error":
        this._onError(msg);
        break;
      case "alert":
        // One of the signed-in user's price alerts fired (docs/protocol.md, "alert").
        this._emit("alert", msg);
        break;
      case "book":
      case "book_update":
        this._onBookFrame(msg);
        break;
      default:
        // Unknown types come from a newer server; ignoring them keeps this client working.
        break;
    }
  }

  _onSubscribed(msg) {
    const request = this._pending.get(msg.id);
    // The server answers "subscribed" and then, for forbidden and unknown symbols,
    // errors with the same id; keep the request until each symbol is accounted for.
    if (request) request.answered = true;
    for (const symbol of msg.symbols ?? []) {
      if (this._wanted.has(symbol)) this._confirmed.add(symbol);
    }
    this._settle(msg.id, msg.symbols ?? []);
    for (const symbol of msg.symbols ?? []) this._maybeSubscribeBook(symbol);
    this._emit("subscribed", { symbols: msg.symbols ?? [], id: msg.id });
  }

  /** Mark symbols of subscribe `id` answered; forget the request once all are. */
  _settle(id, symbols) {
    const request = this._pending.get(id);
    if (!request?.unsettled) return;
    for (const symbol of symbols) request.unsettled.delete(symbol);
    if (!request.unsettled.size) this._pending.delete(id);
  }

  _onUnsubscribed(msg) {
    const symbols = Array.isArray(msg.symbols) ? msg.symbols.filter((s) => typeof s === "string") : [];
    const request = msg.id !== null && msg.id !== undefined ? this._pending.get(msg.id) : undefined;
    if (request) this._pending.delete(msg.id);
    // The answer to dropping only a book: the ticks stay subscribed.
    if (request?.book) return;
    for (const symbol of symbols) this._confirmed.delete(symbol);
    const reason = typeof msg.reason === "string" ? msg.reason : null;
    if (reason) {
      // The server dropped them on its own (say, a right was revoked): stop wanting
      // them, or every reconnect would ask again and be refused again.
      for (const symbol of symbols) this._forget(symbol);
    }
    this._emit("unsubscribed", { symbols, id: msg.id ?? null, reason });
  }

  _forget(symbol) {
    this._dropBook(symbol);
    this._wanted.delete(symbol);
    this._confirmed.delete(symbol);
    this._lastSeq.delete(symbol);
    this._epochs.delete(symbol);
    this._seenOnConnection.delete(symbol);
  }

  _acceptTick(tick) {
    if (!isTick(tick)) return;
    const { symbol, seq } = tick;
    // A tick already in flight when the user removed the symbol.
    if (!this._wanted.has(symbol)) return;
    const last = this._lastSeq.get(symbol);
    const firstOnConnection = !this._seenOnConnection.has(symbol);
    this._seenOnConnection.add(symbol);
    if (last !== undefined) {
      if (seq <= last) {
        if (firstOnConnection) {
          // A server without resume support whose seq counter restarted (it lost
          // its Redis data): the old series cannot be continued.
          this._lastSeq.delete(symbol);
          this._epochs.delete(symbol);
          this._emit("reset", { symbol, reason: "seq_restarted" });
        } else {
          this.stats.duplicates += 1;
          return;
        }
      } else if (seq > last + 1) {
        this.stats.gaps += 1;
        this._emit("gap", { symbol, expected: last + 1, got: seq });
      }
    }
    this._lastSeq.set(symbol, seq);
    this.stats.ticks += 1;
    this._emit("tick", tick);
  }

  _onSnapshot(msg) {
    const { symbol } = msg;
    if (typeof symbol !== "string" || !this._wanted.has(symbol)) return;
    const ticks = (Array.isArray(msg.ticks) ? msg.ticks : []).filter(
      (tick) => isTick(tick) && tick.symbol === symbol,
    );
    ticks.sort((a, b) => a.seq - b.seq);
    if (typeof msg.epoch === "string") this._epochs.set(symbol, msg.epoch);
    else this._epochs.delete(symbol);
    if (ticks.length) this._lastSeq.set(symbol, ticks[ticks.length - 1].seq);
    else this._lastSeq.delete(symbol);
    this._seenOnConnection.add(symbol);
    this._emit("snapshot", { symbol, epoch: msg.epoch ?? null, ticks });
  }

  _onReset(msg) {
    const { symbol } = msg;
    if (typeof symbol !== "string" || !this._wanted.has(symbol)) return;
    this._lastSeq.delete(symbol);
    this._epochs.delete(symbol);
    // The snapshot that follows starts the series again.
    this._seenOnConnection.delete(symbol);
    this._emit("reset", { symbol, reason: msg.reason ?? "unknown" });
  }

  _onError(msg) {
    const request = msg.id !== null && msg.id !== undefined ? this._pending.get(msg.id) : undefined;
    const error = {
      code: msg.code ?? "unknown",
      message: msg.message ?? "",
      id: msg.id ?? null,
      symbols: Array.isArray(msg.symbols) ? msg.symbols : [],
      action: request?.action ?? null,
    };
    if (request?.book && request.action === "subscribe") {
      // The book could not be subscribed (say, a server without books answers
      // bad_request): the symbol's ticks are another matter, so nothing is forgotten,
      // and the symbol's own refusal (forbidden, unknown) comes, and is told, with them.
      this._pending.delete(msg.id);
      const symbol = request.symbols[0];
      const entry = this._books.get(symbol);
      if (!entry) return;
      if (TRANSIENT_ERRORS.has(error.code) && entry.timer === null) {
        // The server could not serve it right now: ask again later, with backoff.
        const delayMs = backoffDelay(entry.failures, { baseMs: this._baseDelayMs, maxMs: this._maxDelayMs, random: this._random });
        entry.failures += 1;
        entry.timer = this._timers.setTimeout(() => {
          entry.timer = null;
          if (this._books.get(symbol) === entry && this._isOpen()) this._sendBookSubscribe(symbol);
        }, delayMs);
      }
      this._emit("bookRefused", { symbol, code: error.code, message: error.message });
      return;
    } else if (request?.action === "subscribe" && (error.code === "forbidden" || error.code === "unknown_symbol")) {
      // Per-symbol refusals: the rest of the command was served (or is refused in
      // another error with the same id), so only these symbols go.
      const rejected = error.symbols.filter((s) => this._wanted.has(s));
      for (const symbol of rejected) this._forget(symbol);
      this._settle(msg.id, error.symbols);
      if (rejected.length) this._emit("rejected", { symbols: rejected, code: error.code, message: error.message });
    } else if (request?.action === "subscribe") {
      this._pending.delete(msg.id);
      if (error.code === "bad_request" && request.resumed && !request.answered) {
        // A server that does not understand `since`/`epochs`: fall back to a plain
        // subscribe and restart the seq bookkeeping for those symbols.
        const symbols = request.symbols.filter((s) => this._wanted.has(s));
        for (const symbol of symbols) {
          this._lastSeq.delete(symbol);
          this._epochs.delete(symbol);
        }
        if (symbols.length && this._isOpen()) this._sendSubscribe(symbols, { resume: false });
      } else {
        // Nothing of the command was subscribed (say, too_many_symbols).
        const rejected = request.answered ? [] : request.symbols.filter((s) => this._wanted.has(s));
        for (const symbol of rejected) this._forget(symbol);
        if (rejected.length) this._emit("rejected", { symbols: rejected, code: error.code, message: error.message });
      }
    } else if (request) {
      this._pending.delete(msg.id);
    }
    this._emit("error", error);
  }
}
