// The /ops/ page: polls /ops/data.json (totals parsed from /metrics) and shows rates
// and quantiles over the last interval. No inline script or style (the CSP forbids it).
const POLL_MS = 2000;
const source = document.body.dataset.source;
let previous = null;

const $ = (id) => document.getElementById(id);
const fmt = (n, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "–");

function rate(now, before, key) {
  if (!before) return NaN;
  const dt = (now.at_ms - before.at_ms) / 1000;
  return dt > 0 ? Math.max(0, now[key] - before[key]) / dt : NaN;
}

// A quantile from cumulative histogram buckets ({le: count}), interpolated in its bucket.
export function quantile(q, buckets) {
  const bounds = Object.keys(buckets)
    .map((le) => [le === "+Inf" ? Infinity : Number(le), buckets[le]])
    .sort((a, b) => a[0] - b[0]);
  const total = bounds.length ? bounds[bounds.length - 1][1] : 0;
  if (!total) return NaN;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [bound, count] of bounds) {
    if (count >= rank) {
      if (bound === Infinity) return lower;
      const inBucket = count - below;
      return inBucket ? lower + ((bound - lower) * (rank - below)) / inBucket : bound;
    }
    lower = bound;
    below = count;
  }
  return lower;
}

function diffBuckets(now, before) {
  if (!before) return now;
  const out = {};
  for (const [le, n] of Object.entries(now)) out[le] = Math.max(0, n - (before[le] || 0));
  return out;
}

function ms(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  return seconds < 1 ? `${(seconds * 1000).toFixed(1)} ms` : `${seconds.toFixed(2)} s`;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function render(data) {
  $("connections").textContent = String(Math.round(data.connections));
  $("published-rate").textContent = fmt(rate(data, previous, "published"));
  $("delivered-rate").textContent = fmt(rate(data, previous, "delivered_ticks"));
  $("frames-rate").textContent = fmt(rate(data, previous, "delivered_frames"));
  const lag = diffBuckets(data.lag_buckets, previous && previous.lag_buckets);
  $("lag-p50").textContent = ms(quantile(0.5, lag));
  $("lag-p99").textContent = ms(quantile(0.99, lag));
  const loops = Object.values(data.receive_loops);
  $("loops").textContent = loops.length
    ? `${loops.filter((v) => v >= 1).length}/${loops.length} up`
    : "idle";

  const body = $("symbols");
  body.replaceChildren();
  for (const name of Object.keys(data.symbols).sort()) {
    const s = data.symbols[name];
    const row = body.insertRow();
    cell(row, name);
    cell(row, s.source || "–");
    cell(row, s.state || "–", `state-${s.state || "unknown"}`);
    cell(row, s.producer || "none");
    cell(row, fmt(s.ticks_per_s), "num");
    cell(row, s.age_s === undefined ? "never" : `${fmt(s.age_s)} s ago`, s.age_s > 15 ? "num stale" : "num");
    cell(row, String(Math.round(s.subscribers || 0)), "num");
  }

  const closes = $("closes");
  closes.replaceChildren();
  for (const key of Object.keys(data.closes).sort()) {
    const [code, by] = key.split(" ");
    const total = data.closes[key];
    const before = previous && previous.closes[key] !== undefined ? previous.closes[key] : total;
    const row = closes.insertRow();
    cell(row, code);
    cell(row, by);
    cell(row, String(Math.round(total - before)), "num");
    cell(row, String(Math.round(total)), "num");
  }
  $("updated").textContent = `updated ${new Date(data.at_ms).toLocaleTimeString()}`;
  previous = data;
}

async function poll() {
  try {
    const response = await fetch(source, { credentials: "same-origin" });
    if (response.ok) render(await response.json());
    else $("updated").textContent = `error ${response.status}`;
  } catch (err) {
    $("updated").textContent = `offline (${err.message})`;
  }
  setTimeout(poll, POLL_MS);
}

if (typeof document !== "undefined" && source) poll();
