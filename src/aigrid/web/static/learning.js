/* The console's Learning page (suites, eval runs, the experience memory, feedback received) and the
   Good / Bad buttons shown on a process, an agent version and an entry. Every figure is the API's
   (/v1/learn/*, /v1/feedback, docs/learning.md); nothing here judges a run. */
"use strict";

const percent = (rate) => (rate === null || rate === undefined ? NONE : `${Math.round(rate * 100)}%`);

/* A metric as the CLI's `aigrid learn show` reads it: the rate, its 95% interval, the count. */
function metricText(m) {
  if (!m) return NONE;
  return `${percent(m.rate)} (${percent(m.low)}–${percent(m.high)}) · ${m.passed}/${m.total}`;
}

/* The metric a run is read by at a glance: "all" when the suite has it, else its first. */
function mainMetric(names) {
  return names.includes("all") ? "all" : names[0];
}

const RATINGS = { 1: "good", "-1": "bad", 0: "neutral" };

/* A suite's pass rate over its finished runs (oldest first): runs with the experience memory and
   runs without, as two lines over the same time axis; a point's tooltip gives its interval. */
function passRateChart(runs, name) {
  const series = (withExperience) =>
    runs.map((r) => (r.experience === withExperience ? Math.round(r.metrics[name].rate * 1000) / 10 : null));
  const line = (label, data, colour) => ({
    label,
    data,
    borderColor: colour,
    backgroundColor: colour,
    spanGaps: true,
    pointRadius: 3,
  });
  return {
    type: "line",
    data: {
      labels: runs.map((r) => fmt.when(r.started_at).slice(5, 16)),
      datasets: [line("with experience", series(true), PALETTE[2]), line("without", series(false), PALETTE[7])],
    },
    options: chartOptions({
      scales: {
        x: { offset: true }, // a lone run sits in the middle, not on the axis
        y: { min: 0, max: 100, title: { display: true, text: `${name} passed` }, ticks: { callback: (v) => `${v}%` } },
      },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 12 } },
        tooltip: {
          filter: (item) => item.raw !== null,
          callbacks: { label: (item) => `${item.dataset.label}: ${metricText(runs[item.dataIndex].metrics[name])}` },
        },
      },
    }),
  };
}

document.addEventListener("alpine:init", () => {
  const Alpine = window.Alpine;

  /* Good / Bad on one answer; `target()` says which, e.g. {process: pid}, read when a button is pressed. */
  Alpine.data("feedbackButtons", (target) => ({
    comment: "",
    busy: false,
    notice: "",
    error: "",
    async rate(rating) {
      this.busy = true;
      try {
        const body = { ...target(), rating };
        if (this.comment.trim()) body.comment = this.comment.trim();
        const given = await api("/v1/feedback", { method: "POST", body });
        this.notice = `Recorded ${RATINGS[given.rating]} on ${given.kind} ${given.target}.`;
        this.comment = "";
        this.error = "";
      } catch (err) {
        this.error = err.message;
        this.notice = "";
      } finally {
        this.busy = false;
      }
    },
  }));

  Alpine.data("learning", () => {
    const charts = {};
    return livePage(3000, {
      tenant: "",
      suites: [],
      runs: [],
      open: null, // the run whose results are shown, with its results
      memory: { counts: {}, data: [] },
      kind: "",
      outcome: "",
      given: [],
      entries: [],
      form: { suite: "", split: "heldout", model: "", experience: true, limit: 5 },
      starting: false,
      startError: "",
      startNotice: "",
      memoryNotice: "",

      start() {
        for (const field of ["tenant", "kind", "outcome"]) this.$watch(field, () => this.refresh());
        this.$watch("route", (route) => {
          if (route.page !== "learning") return;
          if ((this.open?.id || null) !== (route.arg || null)) this.open = null;
          this.refresh();
        });
      },

      teardown() {
        for (const chart of Object.values(charts)) chart.destroy();
      },

      get scope() {
        return { tenant: this.tenant.trim() };
      },

      async load() {
        const wanted = this.route.arg;
        const asks = [
          api(`/v1/learn/evals${query({ ...this.scope, limit: 50 })}`),
          api(`/v1/learn/memory${query({ ...this.scope, kind: this.kind, outcome: this.outcome, limit: 20 })}`),
          api(`/v1/feedback${query({ ...this.scope, limit: 20 })}`),
          // The admin sees every tenant's entries without saying whose: rating them is for their tenant.
          this.me?.admin ? { data: [] } : api(`/v1/entry${query({ limit: 8 })}`),
          this.suites.length ? null : api("/v1/learn/suites"),
          // An open run is fetched again only while it runs: its results do not change after.
          wanted && (this.open?.id !== wanted || this.open.state === "running")
            ? api(`/v1/learn/evals/${encodeURIComponent(wanted)}`)
            : null,
        ];
        const [runs, memory, given, entries, suites, run] = await Promise.all(asks);
        if (suites) {
          this.suites = suites.data;
          if (!this.form.suite && this.suites.length) this.form.suite = this.suites[0].name;
        }
        this.runs = runs.data;
        this.memory = memory;
        this.given = given.data;
        this.entries = entries.data;
        if (run && run.id === this.route.arg) this.open = run;
        this.$nextTick(() => this.draw());
      },

      suite(name) {
        return this.suites.find((s) => s.name === name);
      },

      /* A run's metrics in its suite's order, then any the suite does not list. */
      metricNames(run) {
        const named = this.suite(run.suite)?.metrics || [];
        return [...new Set([...named, ...Object.keys(run.metrics || {})])];
      },

      mainText(run) {
        const name = mainMetric(this.metricNames(run));
        const m = run.metrics?.[name];
        return m ? `${name}: ${metricText(m)}` : NONE;
      },

      get countsText() {
        const parts = [];
        for (const [kind, outcomes] of Object.entries(this.memory.counts || {})) {
          const each = Object.entries(outcomes).map(([o, n]) => `${fmt.count(n)} ${o}`);
          parts.push(`${kind}: ${each.join(", ")}`);
        }
        return parts.join(" · ") || "Nothing kept yet.";
      },

      /* The suites with finished held-out runs: each gets a chart of its pass rate over time. */
      get charted() {
        return this.suites.filter((s) => this.finished(s.name).length);
      },

      finished(suite) {
        return this.runs
          .filter((r) => r.suite === suite && r.split === "heldout" && r.state === "done")
          .filter((r) => r.metrics?.[mainMetric(this.metricNames(r))])
          .sort((a, b) => a.started_at - b.started_at);
      },

      draw() {
        for (const name of Object.keys(charts)) {
          if (this.charted.some((s) => s.name === name)) continue;
          charts[name].destroy(); // its suite has no finished runs in this view any more
          delete charts[name];
        }
        for (const s of this.charted) {
          const canvas = this.$refs.charts?.querySelector(`canvas[data-suite="${CSS.escape(s.name)}"]`);
          const runs = this.finished(s.name);
          const name = mainMetric(this.metricNames(runs[0]));
          drawChart(charts, s.name, canvas, passRateChart(runs, name));
        }
      },

      async startRun() {
        this.starting = true;
        this.startNotice = "";
        try {
          const { suite, split, model, experience, limit } = this.form;
          const body = { suite, split, experience };
          if (model.trim()) body.model = model.trim();
          if (limit) body.limit = Number(limit);
          const run = await api(`/v1/learn/evals${query(this.scope)}`, { method: "POST", body });
          this.startError = "";
          this.startNotice = `Started ${run.id}: ${run.suite} ${run.split} on ${run.total} tasks with ${run.model}.`;
          this.open = run;
          window.location.hash = `#/learning/${encodeURIComponent(run.id)}`;
          await this.refresh();
        } catch (err) {
          this.startError = err.message;
        } finally {
          this.starting = false;
        }
      },

      async forget(example) {
        try {
          await api(`/v1/learn/memory/${encodeURIComponent(example.id)}`, { method: "DELETE" });
          this.memoryNotice = `Forgot example #${example.id} (${example.kind}, ${example.outcome}).`;
          this.memory.data = this.memory.data.filter((e) => e.id !== example.id);
          this.error = "";
          await this.refresh();
        } catch (err) {
          this.error = err.message;
        }
      },

      targetLink(f) {
        if (f.kind === "process") return `#/processes/${encodeURIComponent(f.target)}`;
        if (f.kind === "agent") return `#/agents/${encodeURIComponent(f.target.split("@")[0])}`;
        return "";
      },

      failedChecks(result) {
        const failed = Object.entries(result.checks || {}).filter(([, ok]) => !ok);
        return failed.map(([name]) => name).join(", ") || NONE;
      },
    });
  });
});
