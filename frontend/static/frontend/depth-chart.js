// The depth chart of the selected symbol (Plotly): cumulative bid and ask sizes as two
// step areas on either side of the mid, which is marked by a dotted line. app.js calls
// set() when the book changed and flush() from its animation frame; a redraw happens at
// most once per frame and, like the main chart, no sooner than a few times its own cost
// after the last one (Plotly redraws the whole SVG).

import { depthSeriesOf } from "./order-book.js";

const MIN_DRAW_GAP_MS = 100;
const COLORS = {
  bid: "#22c55e",
  bidFill: "rgba(34, 197, 94, 0.22)",
  ask: "#ef4444",
  askFill: "rgba(239, 68, 68, 0.22)",
  mid: "rgba(226, 232, 240, 0.6)",
  grid: "#1f2a3d",
  text: "#a8b3c7",
};

/** Plotly data and layout for a book's depth series (depthSeriesOf), pure. */
export function depthFigure(series, { decimals } = {}) {
  const tickformat = decimals === undefined ? undefined : `,.${decimals}f`;
  // Each step holds a level's cumulative size out to the next level away from the mid:
  // bids (drawn left to right, towards the mid) take the value of the point to their
  // right ("vh"), asks the one to their left ("hv").
  const trace = (side, shape, line, fill) => ({
    type: "scatter",
    mode: "lines",
    name: side === "bids" ? "Bids" : "Asks",
    x: series[side].x,
    y: series[side].y,
    line: { shape, color: line, width: 1.5 },
    fill: "tozeroy",
    fillcolor: fill,
    hovertemplate: `%{x}<br>%{y} cumulative<extra>${side === "bids" ? "Bids" : "Asks"}</extra>`,
  });
  const shapes = series.mid === null ? [] : [{
    type: "line", xref: "x", yref: "paper", x0: series.mid, x1: series.mid, y0: 0, y1: 1,
    line: { color: COLORS.mid, width: 1, dash: "dot" },
  }];
  return {
    data: [trace("bids", "vh", COLORS.bid, COLORS.bidFill), trace("asks", "hv", COLORS.ask, COLORS.askFill)],
    layout: {
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: COLORS.text, family: "Inter, system-ui, sans-serif", size: 10 },
      autosize: true,
      margin: { l: 8, r: 44, t: 6, b: 24 },
      showlegend: false,
      hovermode: "closest",
      xaxis: { gridcolor: COLORS.grid, linecolor: COLORS.grid, zeroline: false, tickformat, nticks: 5 },
      yaxis: { side: "right", gridcolor: COLORS.grid, zeroline: false, rangemode: "tozero", nticks: 5 },
      shapes,
    },
  };
}

export class DepthChartView {
  /**
   * @param {HTMLElement} el  the Plotly graph div
   * @param {object} options
   * @param {object} options.Plotly  the Plotly global
   * @param {() => number} [options.now]  monotonic clock in ms
   */
  constructor(el, { Plotly, now = () => performance.now() }) {
    this.el = el;
    this.Plotly = Plotly;
    this.now = now;
    this.replica = null;
    this.decimals = undefined;
    this.drawnVersion = null;
    this.lastDrawAt = -Infinity;
    this.minGapMs = MIN_DRAW_GAP_MS;
    this.draws = 0;
  }

  /** Show `replica` (a BookReplica, or null for none), prices with `decimals` places. */
  show(replica, { decimals } = {}) {
    this.replica = replica;
    this.decimals = decimals;
    // Nothing drawn for it yet: the next flush draws, if only an empty chart, so the
    // last symbol's depth never stays up under the new symbol's name.
    this.drawnVersion = undefined;
  }

  /** Redraw if the book moved and the last draw is far enough back; true if a draw is still owed. */
  flush() {
    const replica = this.replica;
    const version = replica && replica.synced && replica.available ? replica.version : null;
    if (version === this.drawnVersion) return false;
    const start = this.now();
    if (start - this.lastDrawAt < this.minGapMs) return true;
    const series = version === null
      ? { bids: { x: [], y: [] }, asks: { x: [], y: [] }, mid: null }
      : depthSeriesOf(replica.book);
    const { data, layout } = depthFigure(series, { decimals: this.decimals });
    this.Plotly.react(this.el, data, layout, { displaylogo: false, displayModeBar: false, responsive: true });
    this.drawnVersion = version;
    this.draws += 1;
    const end = this.now();
    this.lastDrawAt = end;
    // A slow machine draws less often rather than spending every frame on the SVG.
    this.minGapMs = Math.min(1000, Math.max(MIN_DRAW_GAP_MS, (end - start) * 3));
    return false;
  }
}
