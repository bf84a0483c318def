// A small SVG plotting layer: scales, axes, stacked bars, lines with bands, bars.
// No dependencies and no inline styles (the page runs under CSP default-src 'self'):
// elements get attributes and CSS classes only. Every data mark has class "mark" and
// a <title> child, the browser's own tooltip.

const SVG = "http://www.w3.org/2000/svg";

// Colours by name, the same in every chart. The built-in families and the run sources
// have fixed ones, none shared; any other name (a user-declared family, a new source)
// gets one of EXTRA, picked by a hash of the name (so it is the same on every load) and
// moved to the next free one if another name of the page has it already.
const FIXED_COLORS = {
  lightgbm: "#1f77b4", random_forest: "#2ca02c", linear: "#ff7f0e", keras_mlp: "#9467bd",
  bootstrap: "#7f7f7f", user: "#17becf", verification: "#bcbd22", import: "#8c564b",
};
const EXTRA = [
  "#d62728", "#e377c2", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
  "#e6550d", "#31a354", "#756bb1", "#636363", "#6b6ecf", "#b5cf6b", "#e7ba52", "#ce6dbd",
];
const assigned = new Map();

function hash(name) {
  let h = 2166136261; // FNV-1a: small, stable across browsers
  for (let i = 0; i < name.length; i += 1) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 16777619) >>> 0;
  }
  return h;
}

function hashedColor(name) {
  // Past the palette: a hue from the hash, spread by the golden angle.
  return `hsl(${Math.round((hash(name) * 137.508) % 360)}, 55%, 42%)`;
}

/** Give every name a colour no other name of the page has (call with all names first). */
export function assignColors(names) {
  const taken = new Set([...Object.values(FIXED_COLORS), ...assigned.values()]);
  for (const name of [...new Set(names)].sort()) {
    if (FIXED_COLORS[name] || assigned.has(name)) continue;
    const start = hash(name) % EXTRA.length;
    let color = null;
    for (let k = 0; k < EXTRA.length && color === null; k += 1) {
      const candidate = EXTRA[(start + k) % EXTRA.length];
      if (!taken.has(candidate)) color = candidate;
    }
    color = color || hashedColor(name);
    assigned.set(name, color);
    taken.add(color);
  }
}

export function colorFor(name) {
  return FIXED_COLORS[name] || assigned.get(name) || EXTRA[hash(name) % EXTRA.length];
}

export function el(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  if (parent) parent.appendChild(node);
  return node;
}

function titled(node, text) {
  const title = el("title", {}, node);
  title.textContent = text;
  return node;
}

function text(parent, x, y, content, attrs = {}) {
  const node = el("text", { x, y, ...attrs }, parent);
  node.textContent = content;
  return node;
}

/** A formatter for evenly spaced ticks: as many decimals as their step needs, so that
 * no two ticks read the same (121.8 and 122.0, not "122" twice). */
export function tickFormat(ticks) {
  if (ticks.length < 2) return (v) => fmt(v);
  const step = Math.abs(ticks[1] - ticks[0]);
  const big = Math.max(...ticks.map(Math.abs));
  if (big >= 1e5 || (big > 0 && big < 1e-3)) return (v) => fmt(v);
  let decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
  const label = (v) => v.toLocaleString("en", {
    minimumFractionDigits: decimals, maximumFractionDigits: decimals,
  });
  while (new Set(ticks.map(label)).size < ticks.length && decimals < 8) decimals += 1;
  return label;
}

export function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 1e4 || abs < 1e-3) return value.toExponential(1).replace("e+", "e");
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return Number(value.toPrecision(digits)).toString();
}

// ----------------------------------------------------------------------------- scales

export function linearScale(domain, range) {
  let [d0, d1] = domain;
  if (d0 === d1) { d0 -= 0.5; d1 += 0.5; }
  const [r0, r1] = range;
  const scale = (v) => r0 + ((v - d0) / (d1 - d0)) * (r1 - r0);
  scale.ticks = (count = 5) => niceTicks(d0, d1, count, scale.integer);
  scale.integer = false;
  scale.domain = [d0, d1];
  return scale;
}

export function logScale(domain, range) {
  const [d0, d1] = domain.map((v) => Math.max(v, 1e-12));
  const l0 = Math.log10(d0);
  let l1 = Math.log10(d1);
  if (l0 === l1) l1 = l0 + 1;
  const [r0, r1] = range;
  const scale = (v) => r0 + ((Math.log10(Math.max(v, 1e-12)) - l0) / (l1 - l0)) * (r1 - r0);
  scale.ticks = (count = 6) => {
    const out = [];
    const decades = Math.ceil(l1) - Math.floor(l0);
    const steps = decades <= 2 && count >= 6 ? [1, 2, 5] : [1];
    const stride = Math.max(1, Math.ceil(decades / Math.max(2, count)));
    for (let e = Math.floor(l0); e <= Math.ceil(l1); e += stride) {
      for (const m of steps) {
        const v = m * 10 ** e;
        if (v >= d0 * 0.999 && v <= d1 * 1.001) out.push(v);
      }
    }
    return out.length >= 2 ? out : [d0, d1];
  };
  scale.domain = [d0, d1];
  return scale;
}

export function niceTicks(lo, hi, count = 5, integer = false) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => span / s <= count) || raw;
  // Counts: no tick between two whole numbers.
  if (integer) step = Math.max(1, Math.ceil(step));
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

// ----------------------------------------------------------------------------- frame

function frame(container, { width = 720, height = 260, margin = {}, chart = "" } = {}) {
  container.replaceChildren();
  // Draw at the container's own width, so one unit is one CSS pixel and text keeps
  // its size on any screen; the given width is the fallback of a hidden container.
  const measured = Math.round(container.getBoundingClientRect().width);
  if (measured > 0) width = Math.max(240, measured);
  const m = { top: 12, right: 12, bottom: 34, left: 52, ...margin };
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "data-chart": chart,
    preserveAspectRatio: "xMidYMid meet",
  }, container);
  const plot = { x0: m.left, x1: width - m.right, y0: height - m.bottom, y1: m.top };
  return { svg, plot, width, height };
}

function yAxis(svg, plot, scale, label) {
  const g = el("g", { class: "axis y" }, svg);
  const ticks = scale.ticks(5);
  const format = tickFormat(ticks);
  for (const t of ticks) {
    const y = scale(t);
    el("line", { x1: plot.x0, x2: plot.x1, y1: y, y2: y, class: "gridline" }, g);
    text(g, plot.x0 - 6, y + 3.5, format(t), { "text-anchor": "end" });
  }
  el("line", { x1: plot.x0, x2: plot.x0, y1: plot.y0, y2: plot.y1 }, g);
  if (label) {
    text(g, 12, (plot.y0 + plot.y1) / 2, label, {
      transform: `rotate(-90 12 ${(plot.y0 + plot.y1) / 2})`, "text-anchor": "middle",
    });
  }
}

function xAxisLine(svg, plot) {
  const g = el("g", { class: "axis x" }, svg);
  el("line", { x1: plot.x0, x2: plot.x1, y1: plot.y0, y2: plot.y0 }, g);
  return g;
}

function legend(svg, names, x, y, maxWidth) {
  const g = el("g", { class: "legend" }, svg);
  let cx = x;
  let cy = y;
  names.forEach((name) => {
    const w = 18 + name.length * 6.5;
    if (cx + w > x + maxWidth) { cx = x; cy += 14; }
    el("rect", { x: cx, y: cy - 8, width: 10, height: 10, rx: 2, fill: colorFor(name) }, g);
    text(g, cx + 14, cy + 1, name);
    cx += w + 8;
  });
  return cy - y + 14;
}

export function empty(container, message) {
  container.replaceChildren();
  const p = document.createElement("p");
  p.className = "empty";
  p.textContent = message;
  container.appendChild(p);
}

// ----------------------------------------------------------------------------- charts

/**
 * Stacked bars of counts per category (e.g. period); series: [{name, values}] aligned
 * with labels (the axis text); titles (default: labels) name each bar in its tooltip.
 */
export function stackedBars(container, {
  labels, series, yLabel = "", chart = "bars", titles = null,
}) {
  if (!labels.length) { empty(container, "no runs yet"); return; }
  const names = series.map((s) => s.name);
  const { svg, plot } = frame(container, { margin: { top: 30 }, chart });
  legend(svg, names, plot.x0, 12, plot.x1 - plot.x0);
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const y = linearScale([0, Math.max(1, ...totals)], [plot.y0, plot.y1]);
  y.integer = true;
  yAxis(svg, plot, y, yLabel);
  const band = (plot.x1 - plot.x0) / labels.length;
  const barWidth = Math.max(1, band * 0.8);
  const marks = el("g", { class: "marks" }, svg);
  labels.forEach((label, i) => {
    let base = 0;
    series.forEach((s) => {
      const v = s.values[i] || 0;
      if (!v) return;
      const top = y(base + v);
      const rect = el("rect", {
        class: "mark",
        x: plot.x0 + i * band + (band - barWidth) / 2,
        y: top,
        width: barWidth,
        height: Math.max(0.5, y(base) - top),
        fill: colorFor(s.name),
        "data-value": v,
      }, marks);
      titled(rect, `${(titles || labels)[i]} · ${s.name}: ${v.toLocaleString("en")} runs`);
      base += v;
    });
  });
  const axis = xAxisLine(svg, plot);
  const every = Math.max(1, Math.ceil(labels.length / Math.max(2, Math.floor((plot.x1 - plot.x0) / 90))));
  labels.forEach((label, i) => {
    if (i % every !== 0 && i !== labels.length - 1) return;
    text(axis, plot.x0 + (i + 0.5) * band, plot.y0 + 16, label, { "text-anchor": "middle" });
  });
}

/**
 * Lines over a numeric, log or time x axis.
 * series: [{name, points: [{x, y, label?}], band?: [{x, lo, hi}]}]
 */
export function lineChart(container, {
  series, xType = "linear", yLabel = "", xLabel = "", chart = "lines", height = 260,
  width = 720, yDomain = null, markers = [], showLegend = true, xTicks = null, integer = false,
}) {
  const all = series.flatMap((s) => s.points);
  if (!all.length) { empty(container, "nothing to plot yet"); return; }
  const top = showLegend ? 30 : 10;
  const { svg, plot } = frame(container, {
    width, height, margin: { top, bottom: xLabel ? 38 : 30 }, chart,
  });
  if (showLegend) legend(svg, series.map((s) => s.name), plot.x0, 12, plot.x1 - plot.x0);
  const xs = all.map((p) => (xType === "time" ? p.x.getTime() : p.x));
  const ys = all.map((p) => p.y).concat(series.flatMap((s) => (s.band || []).flatMap((b) => [b.lo, b.hi])));
  let [xmin, xmax] = [Math.min(...xs), Math.max(...xs)];
  if (xType === "time" && xmin === xmax) { xmin -= 43200e3; xmax += 43200e3; }
  const x = xType === "log" ? logScale([xmin, xmax], [plot.x0, plot.x1])
    : linearScale([xmin, xmax], [plot.x0, plot.x1]);
  let [ymin, ymax] = yDomain || [Math.min(...ys), Math.max(...ys)];
  if (!yDomain) {
    const pad = (ymax - ymin) * 0.08 || 0.05;
    ymin -= pad; ymax += pad;
  }
  const y = linearScale([ymin, ymax], [plot.y0, plot.y1]);
  y.integer = integer;
  yAxis(svg, plot, y, yLabel);
  const axis = xAxisLine(svg, plot);
  const room = Math.max(2, Math.floor((plot.x1 - plot.x0) / (xType === "time" ? 95 : 70)));
  let ticks;
  let labels;
  if (xType === "time") {
    const time = timeTicks(xmin, xmax, room);
    ticks = time.ticks;
    labels = timeLabels(ticks, time.unit);
  } else {
    ticks = xTicks || x.ticks(room);
    const format = xType === "log" ? fmt : tickFormat(ticks);
    labels = ticks.map((t) => format(t));
  }
  ticks.forEach((t, i) => {
    text(axis, x(t), plot.y0 + 15, labels[i], { "text-anchor": "middle" });
  });
  if (xLabel) text(axis, (plot.x0 + plot.x1) / 2, plot.y0 + 31, xLabel, { "text-anchor": "middle" });
  const px = (p) => x(xType === "time" ? p.x.getTime() : p.x);
  for (const m of markers) {
    el("line", { x1: x(m.x), x2: x(m.x), y1: plot.y0, y2: plot.y1, class: m.className }, svg);
  }
  const marks = el("g", { class: "marks" }, svg);
  series.forEach((s) => {
    const color = s.color || colorFor(s.name);
    if (s.band && s.band.length > 1) {
      const upper = s.band.map((b) => `${x(b.x)},${y(b.hi)}`);
      const lower = s.band.slice().reverse().map((b) => `${x(b.x)},${y(b.lo)}`);
      el("polygon", { points: upper.concat(lower).join(" "), fill: color, class: "band" }, marks);
    }
    const sorted = s.points.slice().sort((a, b) => px(a) - px(b));
    if (sorted.length > 1) {
      el("polyline", {
        points: sorted.map((p) => `${px(p)},${y(p.y)}`).join(" "),
        fill: "none", stroke: color, "stroke-width": 2, class: "line",
      }, marks);
    }
    for (const p of sorted) {
      const dot = el("circle", {
        class: "mark", cx: px(p), cy: y(p.y), r: sorted.length > 40 ? 2 : 3.5, fill: color,
        "data-value": p.y,
      }, marks);
      titled(dot, p.label || `${s.name}: ${fmt(p.y)}`);
    }
  });
}

// ----------------------------------------------------------------------------- time

const HOUR = 3600e3;
const DAY = 86400e3;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
// Tick steps from an hour to years: [unit, how many]; weeks start on Mondays.
const TIME_STEPS = [
  ["hour", 1], ["hour", 2], ["hour", 3], ["hour", 6], ["hour", 12], ["day", 1], ["day", 2],
  ["week", 1], ["week", 2], ["month", 1], ["month", 3], ["month", 6], ["year", 1],
  ["year", 2], ["year", 5], ["year", 10],
];
const APPROX = { hour: HOUR, day: DAY, week: 7 * DAY, month: 30.4 * DAY, year: 365.25 * DAY };

function addMonths(t, months) {
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + months, 1);
}

function floorTo(t, unit, n) {
  const d = new Date(t);
  if (unit === "hour") return Math.floor(t / (n * HOUR)) * n * HOUR;
  if (unit === "day") return Math.floor(t / (n * DAY)) * n * DAY;
  // 1970-01-01 was a Thursday: Mondays are 4 days past multiples of a week.
  if (unit === "week") return Math.floor((t - 4 * DAY) / (n * 7 * DAY)) * n * 7 * DAY + 4 * DAY;
  if (unit === "month") {
    const months = d.getUTCFullYear() * 12 + d.getUTCMonth();
    const m = Math.floor(months / n) * n;
    return Date.UTC(Math.floor(m / 12), m % 12, 1);
  }
  const year = Math.floor(d.getUTCFullYear() / n) * n;
  return Date.UTC(year, 0, 1);
}

function nextTick(t, unit, n) {
  if (unit === "month") return addMonths(t, n);
  if (unit === "year") return addMonths(t, 12 * n);
  return t + n * APPROX[unit];
}

/** UTC ticks between lo and hi (ms), at most about ``count``, on round hours, days,
 * Mondays, months or years; and the unit they are labelled by. */
export function timeTicks(lo, hi, count = 6) {
  const span = Math.max(HOUR, hi - lo);
  const [unit, n] = TIME_STEPS.find(([u, k]) => span / (k * APPROX[u]) <= count)
    || TIME_STEPS[TIME_STEPS.length - 1];
  const out = [];
  for (let t = floorTo(lo, unit, n); t <= hi && out.length < 200; t = nextTick(t, unit, n)) {
    if (t >= lo) out.push(t);
  }
  return { ticks: out.length ? out : [lo], unit };
}

/** Labels of UTC times at a unit's resolution; the date or year only where it changes,
 * so no two ticks read the same and none repeats what its neighbour says. */
export function timeLabels(times, unit) {
  let previous = null;
  return times.map((t) => {
    const d = new Date(t);
    const day = `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]}`;
    const year = d.getUTCFullYear();
    const prev = previous === null ? null : new Date(previous);
    previous = t;
    if (unit === "hour") {
      const hour = `${String(d.getUTCHours()).padStart(2, "0")}:00`;
      const sameDay = prev && prev.toISOString().slice(0, 10) === d.toISOString().slice(0, 10);
      return sameDay ? hour : `${day} ${hour}`;
    }
    const newYear = !prev || prev.getUTCFullYear() !== year;
    if (unit === "day" || unit === "week") return newYear ? `${day} ${year}` : day;
    if (unit === "month") return newYear ? `${MONTHS[d.getUTCMonth()]} ${year}` : MONTHS[d.getUTCMonth()];
    return String(year);
  });
}

/** Horizontal bars: items [{label, value, text?, color?}], largest first as given. */
export function hBars(container, { items, chart = "hbars", max = null, valueFormat = fmt }) {
  if (!items.length) { empty(container, "nothing to show"); return; }
  const rowH = 22;
  const height = items.length * rowH + 16;
  const labelW = Math.min(170, 12 + Math.max(...items.map((i) => i.label.length)) * 6.6);
  const { svg, plot } = frame(container, {
    width: 460, height, margin: { left: labelW, right: 56, top: 8, bottom: 8 }, chart,
  });
  const x = linearScale([0, max ?? Math.max(...items.map((i) => i.value), 1e-9)], [plot.x0, plot.x1]);
  const marks = el("g", { class: "marks" }, svg);
  items.forEach((item, i) => {
    const yTop = plot.y1 + i * rowH + 3;
    text(svg, plot.x0 - 8, yTop + 12, item.label, { "text-anchor": "end" });
    const rect = el("rect", {
      class: "mark", x: plot.x0, y: yTop, width: Math.max(1, x(item.value) - plot.x0),
      height: rowH - 7, rx: 3, fill: item.color || colorFor(item.label),
      "data-value": item.value,
    }, marks);
    titled(rect, `${item.label}: ${item.text || valueFormat(item.value)}`);
    text(svg, x(item.value) + 5, yTop + 12, item.text || valueFormat(item.value));
  });
}

/** Dots with error bars per category: items [{label, value, lo, hi}]. */
export function dotPlot(container, { items, chart = "dots", yLabel = "", height = 200, width = 360, highlight = null, reference = null }) {
  if (!items.length) { empty(container, "nothing to show"); return; }
  const { svg, plot } = frame(container, { width, height, margin: { top: 10, bottom: 30, left: 46 }, chart });
  const ys = items.flatMap((i) => [i.lo, i.hi, i.value]);
  const pad = (Math.max(...ys) - Math.min(...ys)) * 0.1 || 0.05;
  const y = linearScale([Math.min(...ys) - pad, Math.max(...ys) + pad], [plot.y0, plot.y1]);
  yAxis(svg, plot, y, yLabel);
  const axis = xAxisLine(svg, plot);
  const band = (plot.x1 - plot.x0) / items.length;
  const marks = el("g", { class: "marks" }, svg);
  items.forEach((item, i) => {
    const cx = plot.x0 + (i + 0.5) * band;
    el("line", { x1: cx, x2: cx, y1: y(item.lo), y2: y(item.hi), stroke: "#9aa7b4", "stroke-width": 2 }, marks);
    const isBest = highlight !== null && item.label === highlight;
    const dot = el("circle", {
      class: "mark", cx, cy: y(item.value), r: 5, fill: isBest ? "#2e7d32" : "#1f4e79",
      "data-value": item.value,
    }, marks);
    titled(dot, `${item.label}: ${fmt(item.value)} [${fmt(item.lo)}, ${fmt(item.hi)}]`);
    const label = item.label === reference ? `${item.label}*` : item.label;
    text(axis, cx, plot.y0 + 15, label.length > 10 ? `${label.slice(0, 9)}…` : label, { "text-anchor": "middle" });
  });
}
