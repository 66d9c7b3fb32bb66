// Number formatting for prices and changes. Formatters are cached per digit count
// because Intl.NumberFormat construction is far dearer than formatting.

const formatters = new Map();

function formatter(digits) {
  let f = formatters.get(digits);
  if (!f) {
    f = new Intl.NumberFormat("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
    formatters.set(digits, f);
  }
  return f;
}

/** Decimal places implied by a tick size such as "0.00001" (or a number). */
export function decimalsForTickSize(tickSize) {
  const text = String(tickSize ?? "");
  const match = /\.(\d*?)0*$/.exec(text);
  return match ? match[1].length : 0;
}

/** Guess decimals from the price itself when the tick size is unknown. */
export function guessDecimals(price) {
  const abs = Math.abs(price);
  if (abs >= 1000) return 2;
  if (abs >= 10) return 2;
  if (abs >= 1) return 4;
  return 5;
}

export function formatPrice(price, digits) {
  if (price === null || price === undefined || !Number.isFinite(price)) return "—";
  return formatter(digits ?? guessDecimals(price)).format(price);
}

export function formatChange(change, digits) {
  if (change === null || !Number.isFinite(change)) return "—";
  return signed(change, digits ?? guessDecimals(change));
}

export function formatPct(pct) {
  if (pct === null || !Number.isFinite(pct)) return "—";
  return signed(pct, 2) + "%";
}

// The sign follows the rounded value, so float noise never shows as "+0.00".
function signed(value, digits) {
  const text = formatter(digits).format(Math.abs(value));
  if (!/[1-9]/.test(text)) return text;
  return (value > 0 ? "+" : "−") + text;
}

const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumSignificantDigits: 3 });

/** A volume in at most three significant digits: 0.42, 23.1, 694, 118K, 1.05M. */
export function formatVolume(volume) {
  if (volume === null || volume === undefined || !Number.isFinite(volume)) return "—";
  return compact.format(volume);
}
