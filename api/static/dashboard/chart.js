// Stacked bar charts in SVG, drawn here (no chart library): requests per time bucket, split by outcome.

import { count, STEP_MS, utcClock, utcDate } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1100;
const HEIGHT = 130;
const MARGIN = { top: 10, right: 10, bottom: 24, left: 48 };

/** Outcomes, bottom to top: the CSS class of their bars and the legend's words. */
export const OUTCOMES = [
  { field: "successes", cls: "seg-2xx", label: "2xx" },
  { field: "client_errors", cls: "seg-4xx", label: "4xx (not 429)" },
  { field: "rate_limited", cls: "seg-429", label: "429" },
  { field: "other", cls: "seg-other", label: "other" },
];

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [attr, value] of Object.entries(attrs)) node.setAttribute(attr, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The smallest of 1, 2, 5 x 10^k at or above n (at least 1). */
function niceCeil(n) {
  if (n <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 5, 10]) if (m * power >= n) return m * power;
  return 10 * power;
}

function tickLabel(ms, bucket, spansDays) {
  const moment = new Date(ms);
  if (bucket === "day") return utcDate(moment);
  if (spansDays) return `${utcDate(moment)} ${utcClock(moment)}`;
  return utcClock(moment);
}

/** One point of an API series -> its four outcome counts ("other" is what no other outcome counts). */
export function outcomes(point) {
  const other = point.requests - point.successes - point.client_errors - point.rate_limited;
  return { ...point, other: Math.max(0, other) };
}

/**
 * An <svg> of stacked bars, one per bucket from `first` to `last` (epoch ms, both bucket starts).
 * `series` is the API's usage series at that bucket; buckets without answers stay empty.
 */
export function stackedBars(series, { first, last, bucket, title }) {
  const step = STEP_MS[bucket];
  const n = Math.max(1, Math.round((last - first) / step) + 1);
  const byStart = new Map(series.map((p) => [Date.parse(p.start), outcomes(p)]));
  const max = niceCeil(Math.max(0, ...series.map((p) => p.requests)));
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const slot = plotW / n;
  const barW = Math.max(1, slot * (n > 90 ? 0.9 : 0.75));

  const svg = el("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart",
    role: "img",
    "aria-label": title,
  });
  svg.append(el("title", {}, title));

  for (const fraction of [0, 0.5, 1]) {
    const y = MARGIN.top + plotH * (1 - fraction);
    svg.append(el("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y, y2: y, class: "grid" }));
    const value = max * fraction;
    if (fraction === 0 || Number.isInteger(value)) {
      svg.append(el("text", { x: MARGIN.left - 6, y: y + 4, class: "axis y" }, count(value)));
    }
  }

  const spansDays = last - first >= 24 * 3600_000;
  // Up to six evenly spaced labels, counted back from the newest bucket.
  const every = Math.max(1, Math.ceil((n - 1) / 5));
  for (let index = n - 1; index >= 0; index -= every) {
    const x = MARGIN.left + slot * (index + 0.5);
    const anchor = index === n - 1 && n > 1 ? "end" : index === 0 && n > 1 ? "start" : "middle";
    const label = tickLabel(first + index * step, bucket, spansDays && bucket !== "day");
    svg.append(el("text", { x, y: HEIGHT - 6, class: "axis x", "text-anchor": anchor }, label));
  }

  const bars = el("g", { class: "bars" });
  for (let i = 0; i < n; i++) {
    const start = first + i * step;
    const point = byStart.get(start);
    if (!point || point.requests === 0) continue;
    const x = MARGIN.left + slot * i + (slot - barW) / 2;
    let y = MARGIN.top + plotH;
    const group = el("g", { class: "bar", "data-start": new Date(start).toISOString() });
    const parts = OUTCOMES.map((o) => `${count(point[o.field])} ${o.label}`).join(", ");
    group.append(el("title", {}, `${tickLabel(start, bucket, true)} UTC: ${count(point.requests)} requests (${parts})`));
    for (const outcome of OUTCOMES) {
      const value = point[outcome.field];
      if (!value) continue;
      const h = (value / max) * plotH;
      y -= h;
      group.append(
        el("rect", { x, y, width: barW, height: Math.max(h, 0.5), class: outcome.cls, "data-outcome": outcome.label, "data-count": value }),
      );
    }
    bars.append(group);
  }
  svg.append(bars);
  svg.append(el("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH, class: "baseline" }));
  return svg;
}
