// Test doubles for the browser APIs the protocol client uses: a WebSocket the
// test drives by hand, and a manual clock with timers.

export class FakeClock {
  constructor(start = 1_000_000) {
    this.time = start;
    this.timers = new Map();
    this.nextId = 1;
    this.now = () => this.time;
    this.timerApi = {
      setTimeout: (fn, ms) => {
        const id = this.nextId++;
        this.timers.set(id, { at: this.time + ms, fn });
        return id;
      },
      clearTimeout: (id) => {
        this.timers.delete(id);
      },
    };
  }

  /** Move time forward, firing due timers in order (including ones they schedule). */
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
      }
      if (!next) break;
      this.timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = end;
  }

  get pending() {
    return this.timers.size;
  }
}

export function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      this.sent.push(JSON.parse(data));
    }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }

    // --- driven by the test ---
    serverOpen() {
      this.readyState = 1;
      this.onopen?.({});
    }

    serverSend(message) {
      this.onmessage?.({ data: typeof message === "string" ? message : JSON.stringify(message) });
    }

    serverClose(code = 1006) {
      this.readyState = 3;
      this.onclose?.({ code, reason: "", wasClean: false });
    }

    sentOf(action) {
      return this.sent.filter((m) => m.action === action);
    }
  }
  FakeWebSocket.sockets = sockets;
  FakeWebSocket.last = () => sockets[sockets.length - 1];
  return FakeWebSocket;
}

export function tick(symbol, seq, extra = {}) {
  return { type: "tick", symbol, seq, ts: 1764072000000 + seq * 100, price: 100 + seq, bid: 99.5 + seq, ask: 100.5 + seq, size: 1, ...extra };
}
