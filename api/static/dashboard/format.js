// Formatting for the dashboard: counts, shares, ages and UTC times. No DOM here.

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export const STEP_MS = { minute: MINUTE, hour: HOUR, day: DAY };

/** 12345 -> "12,345". */
export function count(n) {
  return Number(n).toLocaleString("en-US");
}

/** A share of 2xx answers, 0..1 or null -> "66.7 %" or "—". */
export function percent(rate) {
  return rate === null || rate === undefined ? "—" : `${(rate * 100).toFixed(1)} %`;
}

/** A duration in milliseconds -> "3 d 4 h", "5 h 12 min", "12 min", "40 s". */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return h > 0 ? `${d} d ${h} h` : `${d} d`;
  if (h > 0) return m > 0 ? `${h} h ${m} min` : `${h} h`;
  if (m > 0) return `${m} min`;
  return `${s} s`;
}

function pad(n) {
  return String(n).padStart(2, "0");
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** A Date -> "Mar 3" (UTC). */
export function utcDate(moment) {
  return `${MONTHS[moment.getUTCMonth()]} ${moment.getUTCDate()}`;
}

/** A Date -> "14:05" (UTC). */
export function utcClock(moment) {
  return `${pad(moment.getUTCHours())}:${pad(moment.getUTCMinutes())}`;
}

/** An RFC 3339 string or Date -> "Mar 3 14:05 UTC"; null -> "—". */
export function utcTime(value) {
  if (value === null || value === undefined) return "—";
  const moment = value instanceof Date ? value : new Date(value);
  return `${utcDate(moment)} ${utcClock(moment)} UTC`;
}

/** The start of the UTC minute, hour or day holding `ms` (epoch milliseconds). */
export function floorTo(ms, bucket) {
  const step = STEP_MS[bucket];
  return Math.floor(ms / step) * step;
}

/** A short, stable label for a key: its name and the first block of its id. */
export function keyLabel(key) {
  return `${key.name} · ${String(key.id).slice(0, 8)}`;
}
