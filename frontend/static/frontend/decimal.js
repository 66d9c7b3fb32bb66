// Exact arithmetic on the decimal strings of order books ("97000.50", "0.00100000").
//
// Book prices and sizes arrive as strings so that no precision is lost (docs/protocol.md,
// "book"); parseFloat would merge "0.1000000000000000001" with "0.1" and sum sizes with
// float noise. Ordering compares the digits; sums, spread and mid use BigInt at the
// larger scale. Only plain non-negative decimals are books' strings (markets/book.py
// refuses anything else), so that is all this accepts.

const PLAIN = /^\d+(?:\.\d+)?$/;

/** True for a plain non-negative decimal string ("3", "0.25"), the book's only shape. */
export function isDecimal(text) {
  return typeof text === "string" && PLAIN.test(text);
}

function split(text) {
  const dot = text.indexOf(".");
  const whole = (dot === -1 ? text : text.slice(0, dot)).replace(/^0+/, "");
  const frac = dot === -1 ? "" : text.slice(dot + 1).replace(/0+$/, "");
  return [whole, frac];
}

/** -1, 0 or 1 as decimal `a` is below, equal to or above `b` ("1.50" equals "1.5"). */
export function compareDecimal(a, b) {
  if (a === b) return 0;
  const [aw, af] = split(a);
  const [bw, bf] = split(b);
  if (aw.length !== bw.length) return aw.length < bw.length ? -1 : 1;
  if (aw !== bw) return aw < bw ? -1 : 1;
  const n = Math.max(af.length, bf.length);
  const ap = af.padEnd(n, "0");
  const bp = bf.padEnd(n, "0");
  if (ap === bp) return 0;
  return ap < bp ? -1 : 1;
}

/** True when the decimal string is zero ("0", "0.000"): a size that deletes its level. */
export function isZeroDecimal(text) {
  return !/[1-9]/.test(text);
}

// A decimal as (units, scale): value = units / 10**scale.
function scaled(text) {
  const dot = text.indexOf(".");
  if (dot === -1) return { units: BigInt(text), scale: 0 };
  return { units: BigInt(text.slice(0, dot) + text.slice(dot + 1)), scale: text.length - dot - 1 };
}

function atScale(value, scale) {
  return value.units * 10n ** BigInt(scale - value.scale);
}

function format(units, scale) {
  const negative = units < 0n;
  let digits = (negative ? -units : units).toString();
  if (scale > 0) {
    digits = digits.padStart(scale + 1, "0");
    digits = `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  }
  return negative ? `-${digits}` : digits;
}

/** a + b, exactly, at the larger of their scales ("1.5" + "0.25" = "1.75"). */
export function addDecimal(a, b) {
  const x = scaled(a);
  const y = scaled(b);
  const scale = Math.max(x.scale, y.scale);
  return format(atScale(x, scale) + atScale(y, scale), scale);
}

/** a - b, exactly (negative results keep their "-"). */
export function subtractDecimal(a, b) {
  const x = scaled(a);
  const y = scaled(b);
  const scale = Math.max(x.scale, y.scale);
  return format(atScale(x, scale) - atScale(y, scale), scale);
}

/** (a + b) / 2, exactly: one more decimal place only when the sum is odd. */
export function midDecimal(a, b) {
  const x = scaled(a);
  const y = scaled(b);
  const scale = Math.max(x.scale, y.scale);
  const sum = atScale(x, scale) + atScale(y, scale);
  if (sum % 2n === 0n) return format(sum / 2n, scale);
  return format(sum * 5n, scale + 1);
}

/** Running sums of `sizes` (decimal strings), exact: ["1", "0.5"] -> ["1", "1.5"]. */
export function cumulativeDecimals(sizes) {
  const out = [];
  let units = 0n;
  let scale = 0;
  for (const size of sizes) {
    const value = scaled(size);
    if (value.scale > scale) {
      units *= 10n ** BigInt(value.scale - scale);
      scale = value.scale;
    }
    units += atScale(value, scale);
    out.push(format(units, scale));
  }
  return out;
}
