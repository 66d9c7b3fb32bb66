// Wires the dashboard together: protocol client -> market store -> views.
// Incoming ticks only update the store and mark symbols dirty; all DOM and
// chart work happens in one requestAnimationFrame callback, so a burst of a
// thousand ticks costs one redraw, not a thousand.

import { accessNotice, forbiddenNotice, withdrawnNotice } from "./access.js";
import { AlertsClient, describeAlert } from "./alerts-client.js";
import { AlertsView } from "./alerts-view.js";
import { CandleHistory } from "./candle-history.js";
import { ChartView } from "./chart-view.js";
import { DepthChartView } from "./depth-chart.js";
import { decimalsForTickSize, formatChange, formatPct, formatPrice, formatVolume } from "./format.js";
import { LadderView, noBookText } from "./ladder-view.js";
import { MarketStore } from "./market-store.js";
import {
  CHART_MODES, MAX_WATCHLIST, loadPreferences, loadSort, savePreferences, saveSort, withServerWatchlist,
} from "./preferences.js";
import { PriceStreamClient, State } from "./protocol-client.js";
import { SearchBox } from "./search-box.js";
import { ServerWatchlist } from "./server-watchlist.js";
import { SourceStatusPoller, sourceMark } from "./source-status.js";
import { TapeView } from "./trade-tape.js";
import { moveSelection, nextSort, sortSymbols } from "./watchlist-sort.js";
import { WatchlistView } from "./watchlist-view.js";

// A subscribed symbol with no tick for this long gets a stale-data warning.
const STALE_MS = 5000;
const TOAST_MS = 5000;
const ALERT_TOAST_MS = 12000;
const MAX_TOASTS = 4;
// A sorted watchlist re-sorts this often, so rows do not jump with every tick.
const RESORT_MS = 1000;
// The selected symbol's order book: 20 levels a side (the ladder shows the best 10, the
// depth chart all 20), at most 10 updates a second. A screen shows a new frame 60 times a
// second, but a ladder changing faster than ~10 times a second cannot be read, and each
// depth chart redraw costs Plotly a few ms; the server conflates the rest (docs/protocol.md).
const BOOK_DEPTH = 20;
const BOOK_MAX_RATE = 10;

const $ = (id) => document.getElementById(id);

function readKnownSymbols() {
  try {
    const parsed = JSON.parse($("known-symbols")?.textContent ?? "[]");
    return Array.isArray(parsed) ? parsed : [];
  } catch {
    return [];
  }
}

function websocketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

function safeStorage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage blocked: preferences just do not persist
  }
}

export function toast(message, { kind = "error", ms = TOAST_MS } = {}) {
  const box = $("toasts");
  if (!box) return null;
  while (box.children.length >= MAX_TOASTS) box.firstElementChild.remove();
  const el = document.createElement("div");
  el.className = `toast toast-${kind}`;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.textContent = message;
  box.appendChild(el);
  setTimeout(() => {
    el.classList.add("leaving");
    setTimeout(() => el.remove(), 300);
  }, ms);
  return el;
}

const isTyping = (el) => el instanceof HTMLElement && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));

class Dashboard {
  constructor() {
    this.known = readKnownSymbols();
    this.meta = new Map(
      this.known.map((k) => [
        k.ticker,
        { name: k.name, decimals: k.decimals ?? decimalsForTickSize(k.tick_size), source: k.source ?? "" },
      ]),
    );
    this.storage = safeStorage();
    this.prefs = loadPreferences(this.storage);
    // Signed in: the watchlist lives on the server (GET/PUT /api/me/watchlist) and
    // localStorage keeps this browser's anonymous list untouched, for when nobody is.
    const page = document.body.dataset;
    this.user = page.user || null;
    this.server = this.user && page.watchlistUrl
      ? new ServerWatchlist({ url: page.watchlistUrl, csrfToken: page.csrfToken })
      : null;
    this.localSymbols = [...this.prefs.symbols];
    this._serverSymbols = null; // JSON of the list the server holds, as far as we know
    this.store = new MarketStore();
    this.subscribedAt = {};
    this.frameQueued = false;
    this.frames = 0;
    this.tickRate = 0;
    this._ticksAtLastRate = 0;

    this.watchlist = new WatchlistView($("watchlist-rows"), {
      meta: this.meta,
      onSelect: (symbol) => this.select(symbol),
      onRemove: (symbol) => this.removeSymbol(symbol),
    });
    this.chart = new ChartView($("chart"), { Plotly: window.Plotly, onHover: (point) => this._renderReadout(point) });
    // The selected symbol's market depth: order book ladder, depth chart, trade tape.
    this.ladder = new LadderView({
      root: $("ladder"), asks: $("ladder-asks"), bids: $("ladder-bids"),
      spread: $("ladder-spread"), mid: $("ladder-mid"), note: $("ladder-note"),
    });
    this.depthChart = new DepthChartView($("depth-chart"), { Plotly: window.Plotly });
    this.tape = new TapeView($("tape-rows"), $("tape-empty"));
    this.bookSymbol = null; // the symbol whose book the client watches
    this.bookRefused = new Map(); // symbol -> why the server would not serve its book
    this.bookDirty = true;
    this.tapeDirty = true;
    // Candle history from the REST API for 1m and longer, and each symbol's session.
    this.history = new CandleHistory();
    this._loading = new Set();
    this.sort = loadSort(this.storage);
    this.alertLatencies = [];
    this.alerts = null;
    if (this.user && page.alertsUrl) {
      this.alertsApi = new AlertsClient({ url: page.alertsUrl, csrfToken: page.csrfToken });
      this.alerts = new AlertsView(
        {
          form: $("alert-form"), symbol: $("alert-symbol"), direction: $("alert-direction"),
          price: $("alert-price"), repeat: $("alert-repeat"), list: $("alert-list"),
          history: $("alert-history"), count: $("alerts-count"), empty: $("alerts-empty"),
        },
        {
          onCreate: (alert) => this._createAlert(alert),
          onUpdate: (id, changes) => this._alertAction(this.alertsApi.update(id, changes)),
          onDelete: (id) => this._alertAction(this.alertsApi.remove(id)),
          formatPrice: (symbol, price) => formatPrice(price, this.meta.get(symbol)?.decimals),
        },
      );
    }
    this.search = new SearchBox($("symbol-search"), $("symbol-options"), {
      known: this.known,
      exclude: () => new Set(this.prefs.symbols),
      onPick: (symbol) => this.addSymbol(symbol),
    });

    const wsPath = document.body.dataset.wsPath || "/ws/prices/";
    this.client = new PriceStreamClient({ url: websocketUrl(wsPath) });
    // Each symbol's feed source and its state, from /api/symbols/, while the stream is
    // live and the page is shown: a source that is down is marked in its row.
    this.sources = new Map();
    this.sourcePoller = new SourceStatusPoller({
      url: page.symbolsUrl || "/api/symbols/",
      onUpdate: (sources) => {
        this.sources = sources;
        this.watchlist.setSources(sources);
        this._checkStale();
      },
    });
    this._wireClient();
    this._wireControls();
  }

  async start() {
    if (this.server) await this._loadServerWatchlist();
    for (const symbol of this.prefs.symbols) this.store.ensure(symbol);
    this.watchlist.setSymbols(this._ordered());
    this._renderSort();
    for (const symbol of this.prefs.symbols) this._loadSession(symbol);
    this._renderEmptyState();
    this._applyMode(this.prefs.mode);
    this.select(this.prefs.selected);
    const now = performance.now();
    for (const symbol of this.prefs.symbols) this.subscribedAt[symbol] = now;
    this.client.subscribe(this.prefs.symbols);
    this.client.setNetworkOnline(navigator.onLine !== false);
    this.client.start();
    setInterval(() => this._checkStale(), 1000);
    setInterval(() => this._updateRate(), 1000);
    setInterval(() => this._resort(), RESORT_MS);
    if (this.alerts) this._refreshAlerts();
  }

  // --- protocol events -----------------------------------------------------

  _wireClient() {
    const c = this.client;
    c.on("tick", (tick) => {
      this.store.applyTick(tick, performance.now());
      if (tick.symbol === this.prefs.selected) this.chart.push(tick);
      this._requestFrame();
    });
    c.on("snapshot", ({ symbol, ticks }) => {
      this.store.applySnapshot(symbol, ticks, performance.now());
      if (symbol === this.prefs.selected) {
        this.chart.rebuild();
        this.tapeDirty = true;
      }
      this._requestFrame();
    });
    c.on("book", ({ symbol }) => {
      if (symbol !== this.prefs.selected) return;
      this.bookRefused.delete(symbol);
      this.bookDirty = true;
      this._requestFrame();
    });
    c.on("bookResync", ({ symbol, fault }) => {
      // Counted in client.stats.bookResyncs; the fresh snapshot redraws the book.
      console.info(`dashboard: order book of ${symbol} resubscribed (${fault})`);
    });
    c.on("bookRefused", ({ symbol, message, code }) => {
      this.bookRefused.set(symbol, message || code);
      if (symbol === this.prefs.selected) {
        this.bookDirty = true;
        this._requestFrame();
      }
    });
    c.on("reset", ({ symbol }) => {
      // The server's history for it restarted: drop ours, the snapshot rebuilds it,
      // and the candle history and session are read again.
      this.store.reset(symbol);
      if (symbol === this.prefs.selected) {
        this.chart.rebuild();
        this.tapeDirty = true;
      }
      this._loadSession(symbol);
      if (symbol === this.prefs.selected) this._loadHistory(symbol, this.prefs.mode);
      this._requestFrame();
    });
    c.on("alert", (event) => this._onAlert(event));
    c.on("subscribed", ({ symbols }) => {
      const now = performance.now();
      for (const symbol of symbols) this.subscribedAt[symbol] = now;
    });
    c.on("rejected", ({ symbols }) => {
      for (const symbol of symbols) this._dropFromWatchlist(symbol);
    });
    c.on("unsubscribed", ({ symbols, reason }) => {
      if (!reason) return; // the answer to our own unsubscribe
      // Dropped by the server (a right withdrawn): gone from the live view, and why.
      for (const symbol of symbols) this._dropFromWatchlist(symbol);
      if (symbols.length) toast(withdrawnNotice(symbols, reason));
    });
    c.on("error", ({ code, message, symbols }) => {
      if (code === "forbidden" && symbols.length) toast(forbiddenNotice(symbols, { signedIn: Boolean(this.user) }));
      else toast(`Server: ${message || code}`);
    });
    c.on("listenerError", ({ type, error }) => console.warn(`dashboard: ${type} handler failed`, error));
    c.on("state", (info) => {
      this._renderBadge(info);
      this._renderAccess(info);
      this._pollSources();
    });
    document.addEventListener("visibilitychange", () => this._pollSources());
    window.addEventListener("online", () => c.setNetworkOnline(true));
    window.addEventListener("offline", () => c.setNetworkOnline(false));
  }

  // --- user actions --------------------------------------------------------

  _wireControls() {
    for (const button of document.querySelectorAll("#mode-toggle [data-mode]")) {
      button.addEventListener("click", () => this.setMode(button.dataset.mode));
    }
    $("conn-badge").addEventListener("click", () => this.client.reconnectNow());
    for (const th of document.querySelectorAll(".wl-table th[data-sort]")) {
      th.querySelector("button").addEventListener("click", () => this.setSort(nextSort(this.sort, th.dataset.sort)));
    }
    // Keyboard: "/" focuses the symbol search (Enter there adds), up/down move the selection.
    document.addEventListener("keydown", (event) => {
      if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
      if (isTyping(event.target)) return;
      if (event.key === "/") {
        event.preventDefault();
        $("symbol-search").focus();
      } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        const next = moveSelection(this.watchlist.order, this.prefs.selected, event.key === "ArrowDown" ? 1 : -1);
        if (!next) return;
        event.preventDefault();
        this.select(next);
        this.watchlist.focus(next);
      }
    });
  }

  // --- sorting -------------------------------------------------------------

  _ordered() {
    return sortSymbols(this.prefs.symbols, this.store, this.sort);
  }

  setSort(sort) {
    this.sort = sort;
    saveSort(this.storage, sort);
    this._renderSort();
    this.watchlist.setOrder(this._ordered());
  }

  _resort() {
    if (this.sort && this.sort.key !== "symbol") this.watchlist.setOrder(this._ordered());
  }

  _renderSort() {
    for (const th of document.querySelectorAll(".wl-table th[data-sort]")) {
      const on = this.sort?.key === th.dataset.sort;
      if (on) th.setAttribute("aria-sort", this.sort.dir === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  }

  // --- candle history and sessions (REST) ----------------------------------

  /** Read timeframe `mode`'s history for `symbol` once, unless it is a tick-only one. */
  async _loadHistory(symbol, mode) {
    const series = this.store.get(symbol);
    const key = `${symbol}:${mode}`;
    // Only symbols the page knows: an unknown one would be a 404 (the server refuses it anyway).
    if (!series || !this.meta.has(symbol) || !CandleHistory.has(mode) || series.history.has(mode) || this._loading.has(key)) return;
    this._loading.add(key);
    try {
      const candles = await this.history.load(symbol, mode);
      if (candles && this.store.seedCandles(symbol, mode, candles)) {
        if (symbol === this.prefs.selected) this.chart.rebuild();
        this._requestFrame();
      }
    } catch (err) {
      console.warn(`dashboard: ${mode} history of ${symbol} failed`, err);
    } finally {
      this._loading.delete(key);
    }
  }

  /** Read `symbol`'s session (its UTC day, rolled up from the 1h candles). */
  async _loadSession(symbol) {
    const key = `${symbol}:session`;
    if (!this.meta.has(symbol) || this._loading.has(key)) return;
    this._loading.add(key);
    try {
      const day = await this.history.session(symbol, Date.now());
      if (day && this.store.seedCandles(symbol, "1D", [day], { partial: true })) {
        if (symbol === this.prefs.selected) this.chart.rebuild();
        this._requestFrame();
      }
    } catch (err) {
      console.warn(`dashboard: session of ${symbol} failed`, err);
    } finally {
      this._loading.delete(key);
    }
  }

  // --- price alerts --------------------------------------------------------

  async _refreshAlerts() {
    try {
      const [alerts, events] = await Promise.all([this.alertsApi.list(), this.alertsApi.history({ limit: 20 })]);
      this.alerts.renderAlerts(alerts);
      this.alerts.renderHistory(events);
    } catch (err) {
      toast(`Your alerts could not be loaded: ${err.message}`);
    }
  }

  async _createAlert(alert) {
    // A user gesture: the moment to ask for notifications, once.
    if (globalThis.Notification?.permission === "default") Notification.requestPermission().catch(() => {});
    try {
      await this.alertsApi.create(alert);
      this.alerts.clearForm();
      toast(`Alert set: ${describeAlert(alert, (p) => formatPrice(p, this.meta.get(alert.symbol)?.decimals))}`, { kind: "info" });
    } catch (err) {
      toast(`The alert was not set: ${err.message}`);
    }
    await this._refreshAlerts();
  }

  async _alertAction(promise) {
    try {
      await promise;
    } catch (err) {
      toast(`Alerts: ${err.message}`);
    }
    await this._refreshAlerts();
  }

  _onAlert(event) {
    const digits = this.meta.get(event.symbol)?.decimals;
    const what = describeAlert(event, (p) => formatPrice(p, digits));
    const text = `Alert: ${what} (${formatPrice(event.price, digits)})`;
    const el = toast(text, { kind: "alert", ms: ALERT_TOAST_MS });
    const shownAt = Date.now();
    if (el) {
      el.dataset.eventId = String(event.event_id);
      el.dataset.tickTs = String(event.ts);
      el.dataset.shownAt = String(shownAt);
    }
    this.alertLatencies.push(shownAt - event.ts);
    if (globalThis.Notification?.permission === "granted") {
      try {
        new Notification("ticker price alert", { body: text, tag: `alert-${event.event_id}` });
      } catch {
        // some browsers only notify from a service worker; the toast is there
      }
    }
    if (this.alerts) this._refreshAlerts();
  }

  addSymbol(symbol) {
    if (this.prefs.symbols.includes(symbol)) {
      this.select(symbol);
      return;
    }
    if (this.prefs.symbols.length >= MAX_WATCHLIST) {
      toast(`The watchlist holds at most ${MAX_WATCHLIST} symbols; remove one first.`);
      return;
    }
    this.prefs.symbols.push(symbol);
    this.store.ensure(symbol);
    this.subscribedAt[symbol] = performance.now();
    this.watchlist.setSymbols(this._ordered());
    this._renderEmptyState();
    // Ticks first: selecting watches the book, which then joins the ticks held.
    this.client.subscribe([symbol]);
    this.select(symbol);
    this._loadSession(symbol);
  }

  removeSymbol(symbol) {
    this.client.unsubscribe([symbol]);
    this._dropFromWatchlist(symbol);
  }

  _dropFromWatchlist(symbol) {
    const index = this.prefs.symbols.indexOf(symbol);
    if (index === -1) return;
    this.prefs.symbols.splice(index, 1);
    this.store.remove(symbol);
    delete this.subscribedAt[symbol];
    this.watchlist.remove(symbol);
    this.watchlist.setOrder(this._ordered());
    this._renderEmptyState();
    if (this.prefs.selected === symbol) {
      this.select(this.prefs.symbols[Math.min(index, this.prefs.symbols.length - 1)] ?? null);
    } else {
      this._save();
    }
  }

  select(symbol) {
    this.prefs.selected = symbol ?? null;
    this.watchlist.setSelected(this.prefs.selected);
    this.chart.show(symbol ? this.store.get(symbol) ?? null : null, {
      mode: this.prefs.mode,
      decimals: this.meta.get(symbol)?.decimals,
    });
    this._renderHeader();
    this._renderReadout(null);
    this._watchBook(this.prefs.selected);
    this.alerts?.prefill(this.prefs.selected, this.store.get(symbol)?.last?.price ?? null);
    if (symbol) this._loadHistory(symbol, this.prefs.mode);
    this._save();
    this._requestFrame();
  }

  /** Watch the order book of `symbol` (and no other): the ladder, depth chart and tape show it. */
  _watchBook(symbol) {
    if (this.bookSymbol && this.bookSymbol !== symbol) this.client.unwatchBook(this.bookSymbol);
    this.bookSymbol = symbol;
    if (symbol) this.client.watchBook(symbol, { depth: BOOK_DEPTH, maxRate: BOOK_MAX_RATE });
    this.depthChart.show(symbol ? this.client.book(symbol) : null, { decimals: this.meta.get(symbol)?.decimals });
    this.tape.clear();
    this.bookDirty = true;
    this.tapeDirty = true;
  }

  setMode(mode) {
    if (!CHART_MODES.includes(mode)) return;
    this._applyMode(mode);
    this.select(this.prefs.selected);
  }

  _applyMode(mode) {
    this.prefs.mode = mode;
    for (const button of document.querySelectorAll("#mode-toggle [data-mode]")) {
      button.setAttribute("aria-pressed", String(button.dataset.mode === mode));
    }
    $("chart-panel").dataset.mode = mode;
    $("legend-interval").textContent = `${mode} candles`;
  }

  _save() {
    // Signed in, the browser's stored list stays the anonymous one.
    const symbols = this.server ? this.localSymbols : this.prefs.symbols;
    savePreferences(this.storage, { ...this.prefs, symbols });
    if (this.server) this._saveToServer();
  }

  // --- the signed-in user's watchlist on the server -----------------------

  async _loadServerWatchlist() {
    try {
      const { prefs, upload } = withServerWatchlist(this.prefs, await this.server.load());
      this.prefs = prefs;
      // A first sign-in adopts this browser's list: select() in start() uploads it.
      this._serverSymbols = upload ? null : JSON.stringify(prefs.symbols);
    } catch (err) {
      // Without the server's copy, writing ours would overwrite it: keep edits local.
      this.server = null;
      toast(`Your saved watchlist could not be loaded (${err.message}); changes stay in this browser.`);
    }
  }

  _saveToServer() {
    const json = JSON.stringify(this.prefs.symbols);
    if (json === this._serverSymbols) return;
    this._serverSymbols = json;
    this.server.save(this.prefs.symbols).catch((err) => {
      this._serverSymbols = null; // try again with the next change
      toast(`Your watchlist was not saved: ${err.message}`);
    });
  }

  // --- drawing -------------------------------------------------------------

  _requestFrame() {
    if (this.frameQueued) return;
    this.frameQueued = true;
    requestAnimationFrame(() => this._frame());
  }

  _frame() {
    this.frameQueued = false;
    this.frames += 1;
    const dirty = this.store.takeDirty();
    for (const symbol of this.watchlist.takeOwed()) dirty.add(symbol);
    const drawn = this.watchlist.render(this.store, dirty);
    if (drawn.has(this.prefs.selected)) {
      this._renderHeader();
      if (!this._hovering) this._renderReadout(null);
    }
    const chartOwesWork = this.chart.flush();
    // Market depth: each of the three redraws at most once here, and only when it changed.
    if (this.bookDirty) {
      this.bookDirty = false;
      this._renderBook();
    }
    const depthOwesWork = this.depthChart.flush();
    if (this.tapeDirty || dirty.has(this.prefs.selected)) {
      this.tapeDirty = false;
      const symbol = this.prefs.selected;
      this.tape.render(this.store.get(symbol)?.ticks ?? [], { decimals: this.meta.get(symbol)?.decimals });
    }
    if (chartOwesWork || depthOwesWork || this.watchlist.owesWork) this._requestFrame();
  }

  /** The ladder (or why there is none) and whether the depth chart has anything to show. */
  _renderBook() {
    const symbol = this.prefs.selected;
    const replica = symbol ? this.client.book(symbol) : null;
    const refused = symbol ? this.bookRefused.get(symbol) : undefined;
    let none = null;
    if (!symbol) {
      this.ladder.message("Select a symbol to see its order book.");
    } else if (refused) {
      none = noBookText(symbol, refused);
      this.ladder.message(none, { state: "none" });
    } else if (!replica || replica.version === 0) {
      this.ladder.message(`Loading the order book of ${symbol}…`, { state: "loading" });
    } else {
      this.ladder.render(replica);
      if (!replica.available) none = noBookText(symbol, replica.reason);
    }
    $("depth-chart").hidden = none !== null;
    $("depth-note").hidden = none === null;
    $("depth-note").textContent = none ?? "";
  }

  _renderHeader() {
    const symbol = this.prefs.selected;
    const series = symbol ? this.store.get(symbol) : null;
    const digits = this.meta.get(symbol)?.decimals;
    $("sel-ticker").textContent = symbol ?? "No symbol";
    $("sel-name").textContent = symbol ? (this.meta.get(symbol)?.name ?? "") : "Add one with the search box";
    const last = series?.last ?? null;
    $("sel-last").textContent = last ? formatPrice(last.price, digits) : "—";
    const change = $("sel-change");
    change.textContent = last ? `${formatChange(series.change, digits)} (${formatPct(series.changePct)})` : "";
    change.dataset.trend = !last || series.change === 0 ? "flat" : series.change > 0 ? "up" : "down";
    $("sel-bidask").textContent = last ? `Bid ${formatPrice(last.bid, digits)} · Ask ${formatPrice(last.ask, digits)}` : "";
    const session = series?.session ?? null;
    const el = $("sel-session");
    if (!session) {
      el.textContent = "";
      return;
    }
    const part = (label, value) => {
      const b = document.createElement("b");
      b.textContent = label;
      return [b, ` ${value}  `];
    };
    el.replaceChildren(
      "Session (UTC day) ",
      ...part("O", formatPrice(session.open, digits)),
      ...part("H", formatPrice(session.high, digits)),
      ...part("L", formatPrice(session.low, digits)),
      ...part("Vol", formatVolume(session.volume)),
    );
  }

  /** The crosshair's OHLCV readout; without a point, the newest candle (or tick). */
  _renderReadout(point) {
    this._hovering = point !== null;
    const symbol = this.prefs.selected;
    const series = symbol ? this.store.get(symbol) : null;
    const digits = this.meta.get(symbol)?.decimals;
    const mode = this.prefs.mode;
    let p = point;
    if (!p && series) {
      p = mode === "line" ? (series.last ? { kind: "tick", ...series.last } : null) : (series.candles[mode]?.latest ? { kind: "candle", ...series.candles[mode].latest } : null);
    }
    const el = $("readout");
    if (!p) {
      el.textContent = "";
      return;
    }
    const f = (v) => formatPrice(v, digits);
    const parts = p.kind === "candle"
      ? [["", new Date(p.t).toLocaleString()], ["O", f(p.open)], ["H", f(p.high)], ["L", f(p.low)], ["C", f(p.close)], ["V", formatVolume(p.volume)]]
      : [["Last", f(p.price)], ["Bid", f(p.bid)], ["Ask", f(p.ask)]];
    const nodes = [];
    for (const [label, value] of parts) {
      const b = document.createElement("b");
      b.textContent = label ? `${label} ${value}` : value;
      nodes.push(b);
    }
    el.replaceChildren(...nodes);
    el.dataset.kind = p.kind;
  }

  _renderEmptyState() {
    $("watchlist-empty").hidden = this.prefs.symbols.length > 0;
    $("watchlist-count").textContent = String(this.prefs.symbols.length);
  }

  _renderBadge({ state, retryAt }) {
    const badge = $("conn-badge");
    badge.dataset.state = state;
    clearInterval(this._countdown);
    const label = $("conn-label");
    if (state === State.RECONNECTING && retryAt) {
      const tick = () => {
        const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
        label.textContent = `Reconnecting in ${seconds}s`;
      };
      tick();
      this._countdown = setInterval(tick, 250);
      badge.title = "Connection lost. Click to retry now.";
    } else {
      label.textContent = {
        [State.CONNECTING]: "Connecting…",
        [State.LIVE]: "Live",
        [State.RECONNECTING]: "Reconnecting…",
        [State.OFFLINE]: "Offline",
        [State.UNAUTHORIZED]: "Sign in required",
        [State.FORBIDDEN]: "Access revoked",
      }[state];
      badge.title = {
        [State.LIVE]: "Streaming live prices",
        [State.UNAUTHORIZED]: "The server refused the stream. Click to try again.",
        [State.FORBIDDEN]: "The server refused the stream. Click to try again.",
      }[state] ?? "";
    }
  }

  _renderAccess({ state, reason }) {
    const notice = accessNotice(state, { reason, signedIn: Boolean(this.user) });
    $("access-banner").hidden = !notice;
    if (!notice) return;
    $("access-text").textContent = notice.text;
    const link = $("access-link");
    link.textContent = notice.link;
    link.hidden = false;
  }

  /** Poll the sources while the stream is live and the page is shown (no request otherwise). */
  _pollSources() {
    this.sourcePoller.setActive(this.client.state === State.LIVE && document.visibilityState !== "hidden");
  }

  _checkStale() {
    const now = performance.now();
    const watched = this.client.symbols;
    const stale = this.store.staleSymbols(watched, now, STALE_MS, this.subscribedAt);
    this.watchlist.setStale(new Set(stale));
    const banner = $("stale-banner");
    if (!stale.length) {
      banner.hidden = true;
      return;
    }
    const parts = stale.map((symbol) => {
      const from = this.store.get(symbol)?.lastReceivedAt ?? this.subscribedAt[symbol];
      const info = this.sources.get(symbol);
      const why = sourceMark(info) ? `, feed source ${info.source} ${info.state}` : "";
      return `${symbol} (${Math.round((now - from) / 1000)} s${why})`;
    });
    $("stale-text").textContent = `No ticks for over ${STALE_MS / 1000} s: ${parts.join(", ")}`;
    banner.hidden = false;
  }

  _updateRate() {
    const total = this.client.stats.ticks;
    this.tickRate = total - this._ticksAtLastRate;
    this._ticksAtLastRate = total;
    $("tick-rate").textContent = `${this.tickRate} ticks/s`;
  }
}

const dashboard = new Dashboard();
// A handle for debugging from the console and for the benchmark script.
window.tickerDashboard = dashboard;
dashboard.start().catch((err) => console.error("dashboard: start failed", err));
