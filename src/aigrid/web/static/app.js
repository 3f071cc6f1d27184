/* The aigrid console's plumbing: the API client, polling, formats shared with the CLI, routing and
   charts. Every figure and every action goes through the server's JSON API, the same one the CLI
   uses; nothing here computes a bill. The pages themselves are in pages.js. */
"use strict";

const KEY_STORAGE = "aigrid.console.key";
const LIVE_STATES = ["running", "waiting_tool", "ready", "waiting_approval", "sleeping", "suspended"];
const ALL_STATES = [...LIVE_STATES, "done", "failed", "killed"];
const ENDED = ["done", "failed", "killed"];
// Each range is bucketed so a chart has tens of points, not thousands.
const RANGES = {
  hour: { span: 3600, interval: "minute", step: 60 },
  day: { span: 86400, interval: "hour", step: 3600 },
  month: { span: 30 * 86400, interval: "day", step: 86400 },
};
const PALETTE = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
];
const NONE = "—";

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const session = { key: "", onExpired: () => {} };

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${session.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, `The server did not answer (${err.message}).`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    const message = data?.error?.message || `HTTP ${response.status}`;
    if (response.status === 401) session.onExpired(message);
    throw new ApiError(response.status, message);
  }
  return data;
}

function query(params) {
  const kept = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return kept.length ? `?${new URLSearchParams(kept)}` : "";
}

/* Runs `load` now and every `ms` while the page is visible; the returned function stops it. */
function poll(load, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    clearTimeout(timer);
    if (stopped) return;
    if (!document.hidden) await load().catch(() => {});
    if (!stopped) timer = setTimeout(tick, ms);
  };
  const onVisible = () => !document.hidden && tick();
  document.addEventListener("visibilitychange", onVisible);
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}

const STALE = Symbol("stale"); // what a load returns when a newer one has begun

/* A page that keeps itself current: its `load` runs every `ms` while it is shown, and its `error`
   and `updated` lines say how the last try went. `start`, if any, runs once before the first
   load, and `teardown` when the page goes. */
function livePage(ms, component) {
  const page = {
    error: "",
    updated: "",
    stop: null,
    init() {
      if (this.start) this.start();
      this.stop = poll(() => this.refresh(), ms);
    },
    destroy() {
      this.stop();
      if (this.teardown) this.teardown();
    },
    async refresh() {
      try {
        if ((await this.load()) === STALE) return;
        this.error = "";
        this.updated = fmt.clock();
      } catch (err) {
        this.error = err.message;
      }
    },
  };
  // Copied as descriptors, so that the component's getters stay getters.
  return Object.defineProperties(page, Object.getOwnPropertyDescriptors(component));
}

function isoSeconds(seconds) {
  return new Date(seconds * 1000).toISOString().replace(".000Z", "Z");
}

/* Formats shared with the CLI's tables (cli/render.py), so the same figure reads the same. */
const fmt = {
  count(n) {
    return n === undefined || n === null ? NONE : Number(n).toLocaleString("en-US");
  },
  cny(micro) {
    if (micro === undefined || micro === null) return NONE;
    const sign = micro < 0 ? "-" : "";
    const abs = Math.abs(micro);
    const whole = Math.floor(abs / 1e6).toLocaleString("en-US");
    const fraction = String(abs % 1e6)
      .padStart(6, "0")
      .replace(/0+$/, "")
      .padEnd(2, "0");
    return `${sign}${whole}.${fraction}`;
  },
  when(seconds) {
    if (!seconds) return NONE;
    return new Date(seconds * 1000).toISOString().slice(0, 19).replace("T", " ");
  },
  clock() {
    return `updated ${new Date().toLocaleTimeString()}`;
  },
  diffClass(line) {
    if (line.startsWith("+++") || line.startsWith("---")) return "meta";
    if (line.startsWith("+")) return "add";
    if (line.startsWith("-")) return "del";
    if (line.startsWith("@@")) return "meta";
    return "";
  },
  json(value) {
    if (typeof value === "string") {
      try {
        return JSON.stringify(JSON.parse(value), null, 2);
      } catch (err) {
        return value;
      }
    }
    return JSON.stringify(value, null, 2);
  },
};
window.fmt = fmt;

function parseRoute() {
  const [path, search] = window.location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(search || ""));
  const [top, arg] = parts;
  const pages = {
    "": "meter",
    meter: "meter",
    grid: "grid",
    cluster: "cluster",
    approvals: "approvals",
    services: "services",
  };
  if (top === "processes") return { page: arg ? "process" : "processes", arg, params };
  if (top === "agents") return { page: arg ? "agent" : "agents", arg, params };
  if (top === "learning") return { page: "learning", arg, params }; // arg: an eval run shown open
  return { page: pages[top || ""] || "unknown", arg, params };
}

/* The time a range covers, from the start of the minute `range.span` seconds ago until now. */
function rangeWindow(range) {
  const now = Math.floor(Date.now() / 1000);
  return { now, since: Math.floor(now / 60) * 60 - range.span };
}

function bucketStarts(since, now, step) {
  const starts = [];
  for (let t = Math.floor(since / step) * step; t <= now; t += step) starts.push(t);
  return starts;
}

function bucketLabel(seconds, interval) {
  const iso = new Date(seconds * 1000).toISOString();
  if (interval === "minute") return iso.slice(11, 16);
  if (interval === "hour") return `${iso.slice(5, 10)} ${iso.slice(11, 13)}h`;
  return iso.slice(5, 10);
}

/* Draws or redraws a chart on a canvas; the chart object stays out of Alpine's reactive data. */
function drawChart(charts, name, canvas, config) {
  if (!canvas?.isConnected) return; // the page went while its figures were on their way
  const chart = charts[name];
  if (chart && chart.canvas === canvas) {
    chart.data = config.data;
    chart.options = config.options;
    chart.update("none");
    return;
  }
  if (chart) chart.destroy();
  charts[name] = new window.Chart(canvas, config);
}

const shortNumber = (v) => Number(v).toLocaleString("en-US", { maximumSignificantDigits: 3 });

/* Usage rows of /v1/usage with an interval, placed on every bucket of the range (empty ones too). */
function bucketed(rows, since, now, range) {
  const starts = bucketStarts(since, now, range.step);
  return {
    rows,
    starts,
    index: new Map(starts.map((t, i) => [t, i])),
    labels: starts.map((t) => bucketLabel(t, range.interval)),
  };
}

/* A stacked area chart of `value(row)` per bucket, one area per value of the row's `split` field. */
function stackedArea(series, split, value) {
  const groups = new Map();
  for (const row of series.rows) {
    const i = series.index.get(Math.floor(row.start_us / 1e6));
    if (i === undefined) continue;
    const label = row[split] ?? "(none)";
    if (!groups.has(label))
      groups.set(
        label,
        series.starts.map(() => 0),
      );
    groups.get(label)[i] += value(row);
  }
  const datasets = [...groups.entries()].map(([label, data], i) => ({
    label,
    data,
    fill: i === 0 ? "origin" : "-1",
    borderColor: PALETTE[i % PALETTE.length],
    backgroundColor: `${PALETTE[i % PALETTE.length]}66`,
    pointRadius: 0,
  }));
  return {
    type: "line",
    data: { labels: series.labels, datasets },
    options: chartOptions({ scales: { y: { stacked: true, beginAtZero: true, ticks: { callback: shortNumber } } } }),
  };
}

const chartOptions = (extra = {}) => ({
  animation: false,
  maintainAspectRatio: false,
  interaction: { mode: "index", intersect: false },
  plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
  ...extra,
});
