// The dashboard: reads the JSON API of the same origin and draws it with charts.js.
// Reads need scope "read"; when the service wants a key for them (401), the page asks
// for one and keeps it in sessionStorage for this tab only.

import {
  assignColors, colorFor, dotPlot, empty, fmt, hBars, lineChart, stackedBars, timeLabels,
} from "./charts.js";

const KEY_STORAGE = "hyperprior.apiKey";
const state = { timeline: null, group: "by_family", surrogates: [], families: [] };

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    this.status = status;
    this.detail = detail;
  }
}

function $(id) {
  return document.getElementById(id);
}

function setStatus(message, kind = "") {
  const node = $("status");
  node.textContent = message;
  node.className = `status ${kind}`;
}

async function api(path, { method = "GET", body = null } = {}) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== null) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === null ? null : JSON.stringify(body), cache: "no-store",
  });
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const detail = payload && payload.detail !== undefined ? payload.detail : response.statusText;
    throw new ApiError(response.status, detail);
  }
  return payload;
}

function describeError(error) {
  if (error instanceof ApiError) {
    if (Array.isArray(error.detail)) return error.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    return String(error.detail);
  }
  return String(error && error.message ? error.message : error);
}

function askForKey() {
  $("key-form").hidden = false;
  setStatus("an API key with scope read is needed", "warn");
}

// ----------------------------------------------------------------------------- history

function renderSummary(stats, surrogates) {
  $("sum-runs").textContent = stats.runs.toLocaleString("en");
  $("sum-datasets").textContent = stats.datasets.toLocaleString("en");
  $("sum-families").textContent = Object.keys(stats.by_family).length.toLocaleString("en");
  const active = surrogates.filter((s) => s.status === "active").length;
  $("sum-surrogates").textContent = active.toLocaleString("en");
}

// A period of the timeline as a Date (UTC), and its bars' axis labels and tooltips.
function periodStart(period) {
  return new Date(period.length === 10 ? `${period}T00:00:00Z` : period);
}

function periodTitle(period, scale) {
  const start = periodStart(period).toISOString();
  if (scale === "hour") return `${start.slice(0, 10)} ${start.slice(11, 13)}:00–:59 UTC`;
  if (scale === "week") return `week of ${start.slice(0, 10)}`;
  if (scale === "month") return start.slice(0, 7);
  return start.slice(0, 10);
}

function renderTimeline() {
  const timeline = state.timeline;
  const { scale, periods } = timeline;
  const groups = timeline[state.group];
  const series = Object.keys(groups).map((name) => ({ name, values: groups[name] }));
  stackedBars($("timeline-chart"), {
    labels: timeLabels(periods.map((p) => periodStart(p).getTime()), scale),
    titles: periods.map((p) => periodTitle(p, scale)),
    series, yLabel: `runs per ${scale}`, chart: "timeline",
  });
  $("timeline-note").textContent = periods.length
    ? `One bar per ${scale} (UTC), from ${periodTitle(periods[0], scale)} `
      + `to ${periodTitle(periods[periods.length - 1], scale)}.`
    : "";
  let total = 0;
  const points = periods.map((period, i) => {
    total += timeline.datasets[i];
    return {
      x: periodStart(period), y: total,
      label: `${periodTitle(period, scale)}: ${total.toLocaleString("en")} datasets`,
    };
  });
  lineChart($("datasets-chart"), {
    series: [{ name: "datasets (cumulative)", points, color: "#1f4e79" }],
    xType: "time", yLabel: "datasets", chart: "datasets", height: 220, width: 460,
    showLegend: false, integer: true, yDomain: [0, Math.max(1, total) * 1.08],
  });
}

function renderMix(stats) {
  const items = [
    ...Object.entries(stats.by_family).map(([label, value]) => ({
      label, value, color: colorFor(label), text: `${value.toLocaleString("en")} runs`,
    })),
    ...Object.entries(stats.by_source).map(([label, value]) => ({
      label: `source: ${label}`, value, color: colorFor(label),
      text: `${value.toLocaleString("en")} runs`,
    })),
  ];
  hBars($("mix-chart"), { items, chart: "mix" });
}

// ----------------------------------------------------------------------------- refinements

function seconds(value) {
  if (typeof value !== "number") return "–";
  return value < 90 ? `${value.toFixed(value < 10 ? 1 : 0)} s` : `${(value / 60).toFixed(1)} min`;
}

function refinementProgress(job) {
  const p = job.progress || {};
  if (job.status === "queued") return "waiting for a worker";
  if (p.trials_planned === undefined) return p.phase || "–";
  const rung = p.rungs ? `rung ${Math.min(p.rung + 1, p.rungs)}/${p.rungs} · ` : "";
  return `${p.phase === "done" ? "" : `${p.phase} · `}${rung}${p.trials_done}/${p.trials_planned}`
    + ` trials · ${seconds(p.elapsed_seconds)} of ${seconds(p.budget_seconds)}`;
}

function refinementOutcome(job) {
  const r = job.result;
  if (job.status === "succeeded" && r) {
    if (r.score === null || r.score === undefined) return { text: "no config measured at full fidelity", kind: "warn" };
    const gain = typeof r.improvement === "number" ? r.improvement : null;
    const vs = typeof r.default_score === "number" ? ` vs default ${fmt(r.default_score, 4)}` : "";
    const delta = gain === null ? "" : ` (${gain >= 0 ? "+" : ""}${fmt(gain, 3)})`;
    return { text: `${r.metric} ${fmt(r.score, 4)}${vs}${delta}`, kind: gain !== null && gain > 0 ? "good" : "" };
  }
  if (job.status === "failed") return { text: job.error || "failed", kind: "bad" };
  if (job.status === "cancelled") return { text: "cancelled", kind: "" };
  const best = job.progress && job.progress.best_score;
  return { text: typeof best === "number" ? `best so far ${fmt(best, 4)}` : "–", kind: "" };
}

function renderRefinements(jobs) {
  const counts = {};
  for (const job of jobs) counts[job.status] = (counts[job.status] || 0) + 1;
  $("refinements-summary").textContent = jobs.length
    ? `${jobs.length} most recent: ` + Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ")
    : "no refinement submitted yet (POST /v1/refinements, or the SDK's refine with local=False)";
  const body = $("refinements-table").querySelector("tbody");
  body.replaceChildren();
  for (const job of jobs) {
    const row = document.createElement("tr");
    const request = job.request || {};
    const outcome = refinementOutcome(job);
    const cells = [
      job.created_at.slice(0, 16).replace("T", " "),
      (job.result && job.result.dataset) || request.dataset_name || "–",
      request.family || "–",
      null,
      refinementProgress(job),
      outcome.text,
    ];
    cells.forEach((content, i) => {
      const td = document.createElement("td");
      if (i === 3) {
        const badge = document.createElement("span");
        badge.className = `badge ${job.status}`;
        badge.textContent = job.status;
        td.appendChild(badge);
      } else {
        td.textContent = content.length > 90 ? `${content.slice(0, 89)}…` : content;
        if (content.length > 90) td.title = content;
      }
      if (i === 5 && outcome.kind) td.className = `outcome ${outcome.kind}`;
      row.appendChild(td);
    });
    row.dataset.status = job.status;
    body.appendChild(row);
  }
}

// ----------------------------------------------------------------------------- surrogates

function renderSurrogates() {
  const metric = $("cv-metric").value;
  const byFamily = new Map();
  for (const s of state.surrogates) {
    const value = s.metrics ? s.metrics[metric] : undefined;
    if (typeof value !== "number") continue;
    if (!byFamily.has(s.family)) byFamily.set(s.family, []);
    byFamily.get(s.family).push({
      x: new Date(s.created_at), y: value,
      label: `${s.family} #${s.id} (${s.status}), ${s.created_at.slice(0, 10)}: ${metric} ${fmt(value)}`,
    });
  }
  const series = [...byFamily.entries()].map(([name, points]) => ({ name, points }));
  if (!series.length) {
    empty($("surrogates-chart"), "no surrogate has grouped-CV metrics yet");
  } else {
    lineChart($("surrogates-chart"), {
      series, xType: "time", yLabel: metric.replaceAll("_", " "), chart: "surrogates",
    });
  }
  const body = $("surrogates-table").querySelector("tbody");
  body.replaceChildren();
  for (const s of state.surrogates) {
    const row = document.createElement("tr");
    const cells = [
      String(s.id), s.family, null, s.created_at.slice(0, 16).replace("T", " "),
      s.n_runs.toLocaleString("en"),
      fmt(s.metrics.regret_at_1), fmt(s.metrics.spearman), fmt(s.metrics.ndcg_at_5),
    ];
    cells.forEach((content, i) => {
      const td = document.createElement("td");
      if (i === 2) {
        const badge = document.createElement("span");
        badge.className = `badge ${s.status}`;
        badge.textContent = s.serving ? `${s.status} · serving` : s.status;
        td.appendChild(badge);
      } else {
        td.textContent = content;
      }
      if (i >= 4) td.className = "num";
      row.appendChild(td);
    });
    body.appendChild(row);
  }
}

// ----------------------------------------------------------------------------- insights

function activeFamilies() {
  return new Set(state.surrogates.filter((s) => s.status === "active").map((s) => s.family));
}

function fillFamilies() {
  const select = $("pd-family");
  const active = activeFamilies();
  const names = [...new Set([...state.families, ...active])];
  names.sort((a, b) => Number(active.has(b)) - Number(active.has(a)) || a.localeCompare(b));
  select.replaceChildren();
  for (const name of names) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = active.has(name) ? name : `${name} (no surrogate yet)`;
    option.disabled = !active.has(name);
    select.appendChild(option);
  }
}

function syncClasses() {
  const task = $("pd-task").value;
  $("pd-classes-label").hidden = task === "regression";
  if (task === "binary") $("pd-classes").value = "2";
  if (task === "multiclass" && Number($("pd-classes").value) < 3) $("pd-classes").value = "3";
}

function pdRequest() {
  const task = $("pd-task").value;
  const meta = {
    n_rows: Number.parseInt($("pd-rows").value, 10),
    n_features: Number.parseInt($("pd-features").value, 10),
  };
  if (task !== "regression") meta.n_classes = Number.parseInt($("pd-classes").value, 10);
  return { family: $("pd-family").value, task, dataset: { meta_features: meta } };
}

function renderEffect(container, effect) {
  const cell = document.createElement("div");
  cell.className = "pd-cell";
  const title = document.createElement("h4");
  title.textContent = effect.name;
  const share = document.createElement("span");
  share.textContent = `${(effect.importance * 100).toFixed(0)}% · best ${fmt(effect.best)}`;
  title.appendChild(share);
  cell.appendChild(title);
  const chart = document.createElement("div");
  chart.className = "chart";
  cell.appendChild(chart);
  container.appendChild(cell);
  if (effect.kind === "categorical") {
    dotPlot(chart, {
      items: effect.values.map((v, i) => ({
        label: String(v), value: effect.mean[i], lo: effect.lower[i], hi: effect.upper[i],
      })),
      chart: `pd-${effect.name}`, yLabel: "quality", highlight: String(effect.best),
      reference: String(effect.default),
    });
    return;
  }
  const points = effect.values.map((v, i) => ({
    x: v, y: effect.mean[i], label: `${effect.name} = ${fmt(v)}: ${fmt(effect.mean[i])}`,
  }));
  const band = effect.values.map((v, i) => ({ x: v, lo: effect.lower[i], hi: effect.upper[i] }));
  const markers = [{ x: effect.best, className: "marker-best" }];
  if (typeof effect.default === "number" && effect.default >= effect.values[0]
      && effect.default <= effect.values[effect.values.length - 1]) {
    markers.push({ x: effect.default, className: "marker-default" });
  }
  lineChart(chart, {
    series: [{ name: effect.name, points, band, color: "#1f4e79" }],
    xType: effect.log ? "log" : "linear", yLabel: "quality", chart: `pd-${effect.name}`,
    height: 200, width: 360, showLegend: false, markers,
  });
}

async function explain() {
  const request = pdRequest();
  if (!request.family) {
    empty($("importance-chart"), "no family has an active surrogate yet");
    return;
  }
  setStatus(`explaining ${request.family}…`);
  try {
    const answer = await api("/v1/insights/partial-dependence", { method: "POST", body: request });
    hBars($("importance-chart"), {
      items: answer.params.map((p) => ({
        label: p.name, value: p.importance, color: "#1f4e79",
        text: `${(p.importance * 100).toFixed(0)}%`,
      })),
      chart: "importance", max: Math.max(...answer.params.map((p) => p.importance), 1e-9),
    });
    const grid = $("pd-charts");
    grid.replaceChildren();
    for (const effect of answer.params) renderEffect(grid, effect);
    $("pd-note").textContent = `${answer.quality} Surrogate #${answer.surrogate.id} `
      + `(${answer.surrogate.n_runs.toLocaleString("en")} runs); `
      + `dashed line: library default, green: best value.`;
    setStatus(`updated ${new Date().toLocaleTimeString("en-GB")}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) { askForKey(); return; }
    empty($("pd-charts"), describeError(error));
    setStatus(describeError(error), "error");
  }
}

// ----------------------------------------------------------------------------- start

async function load() {
  setStatus("loading…");
  try {
    const [stats, timeline, surrogates, families, refinements] = await Promise.all([
      api("/v1/stats"),
      api("/v1/stats/timeline"),
      api("/v1/surrogates"),
      api("/v1/families"),
      api("/v1/refinements?limit=20"),
    ]);
    $("key-form").hidden = true;
    state.timeline = timeline;
    state.surrogates = surrogates.data;
    state.families = families.data.map((f) => f.family);
    // One colour per name on every chart, also for families only the history knows.
    assignColors([
      ...state.families, ...Object.keys(stats.by_family), ...Object.keys(stats.by_source),
      ...state.surrogates.map((s) => s.family),
    ]);
    renderSummary(stats, state.surrogates);
    renderTimeline();
    renderMix(stats);
    renderRefinements(refinements.data);
    renderSurrogates();
    fillFamilies();
    syncClasses();
    await explain();
    setStatus(`updated ${new Date().toLocaleTimeString("en-GB")}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) { askForKey(); return; }
    setStatus(`could not load: ${describeError(error)}`, "error");
  } finally {
    document.body.dataset.ready = "1";
  }
}

function wire() {
  for (const button of document.querySelectorAll(".toggle button")) {
    button.addEventListener("click", () => {
      state.group = button.dataset.group;
      for (const other of document.querySelectorAll(".toggle button")) {
        other.classList.toggle("active", other === button);
      }
      if (state.timeline) renderTimeline();
    });
  }
  $("cv-metric").addEventListener("change", renderSurrogates);
  $("pd-task").addEventListener("change", syncClasses);
  $("pd-form").addEventListener("submit", (event) => {
    event.preventDefault();
    explain();
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("key-input").value.trim());
    $("key-input").value = "";
    load();
  });
}

wire();
load();
