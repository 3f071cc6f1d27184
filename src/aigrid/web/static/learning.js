/* The console's Learning page (suites, eval runs, the admin's learned models and datasets, the
   experience memory, feedback received) and the Good / Bad buttons shown on a process, an agent
   version and an entry. Every figure is the API's (/v1/learn/*, /v1/feedback, docs/learning.md);
   nothing here judges a run, and only the gate (POST /v1/learn/models/{name}/promote) promotes. */
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

/* Seconds as the CLI's `aigrid learn` says them: "45s", "4m 05s", "2h 03m". */
function duration(seconds) {
  if (seconds === null || seconds === undefined) return NONE;
  const whole = Math.max(Math.round(seconds), 0);
  if (whole < 60) return `${whole}s`;
  const pad = (n) => String(n).padStart(2, "0");
  if (whole < 3600) return `${Math.floor(whole / 60)}m ${pad(whole % 60)}s`;
  return `${Math.floor(whole / 3600)}h ${pad(Math.floor((whole % 3600) / 60))}m`;
}

/* Pass counts [passed, total] as "31/43 (72%)". */
const passedText = (counts) => `${counts[0]}/${counts[1]} (${percent(counts[1] ? counts[0] / counts[1] : null)})`;

/* A learned version's state in the colours of the page's other states. */
const MODEL_STATES = { training: "running", candidate: "waiting_approval", promoted: "done", failed: "failed" };

/* A file of the API saved by the browser: a plain link would not carry the key. */
async function saveFile(path, filename) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${session.key}` } });
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    throw new ApiError(response.status, data?.error?.message || `HTTP ${response.status}`);
  }
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000); // the download has begun long before
}

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
      learned: { data: [], in_use: {}, history: [] }, // the admin's: GET /v1/learn/models
      datasets: [],
      gating: "", // the version whose gate runs now
      decision: null, // the gate's last decision
      learnedNotice: "",
      learnedError: "",

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
          // Learned models and datasets change the whole grid: the admin's alone.
          this.me?.admin ? api("/v1/learn/models") : null,
          this.me?.admin ? api("/v1/learn/datasets") : null,
        ];
        const [runs, memory, given, entries, suites, run, learned, datasets] = await Promise.all(asks);
        if (learned) this.learned = learned;
        if (datasets) this.datasets = datasets.data;
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

      /* Each kind's model in use, and whether it is a learned version (which can be rolled back). */
      get inUse() {
        const learned = new Set(this.learned.data.map((m) => m.id));
        const uses = Object.entries(this.learned.in_use || {});
        return uses.map(([kind, model]) => ({ kind, model, learned: learned.has(model) }));
      },

      modelState(m) {
        return MODEL_STATES[m.state] || "";
      },

      /* A version's training as "40/120 steps · loss 1.234 · 3m 45s left" (or "in 5m 40s" once done). */
      trainingText(m) {
        const t = m.lineage?.training;
        if (!t) return NONE;
        const parts = [`${t.step ?? 0}/${t.steps || "?"} steps`];
        if (t.loss !== null && t.loss !== undefined) parts.push(`loss ${t.loss.toFixed(3)}`);
        if (t.seconds !== undefined && m.state !== "training") parts.push(`in ${duration(t.seconds)}`);
        else if (t.eta_s !== null && t.eta_s !== undefined) parts.push(`${duration(t.eta_s)} left`);
        return parts.join(" · ");
      },

      /* The last round's pass rate of each source that answered: "student 40% · teacher 90%". */
      roundRates(m) {
        const rounds = m.lineage?.rounds || [];
        const rates = rounds.length ? rounds[rounds.length - 1].pass_rate || {} : {};
        return Object.entries(rates).map(([source, r]) => `${source} ${percent(r.rate)}`).join(" · ") || NONE;
      },

      gateText(m) {
        const gate = m.lineage?.gate;
        if (!gate) return NONE;
        const all = gate.metrics?.all;
        const verdict = gate.promoted ? "promoted" : "kept";
        return all ? `${verdict}: ${all.candidate.join("/")} vs ${all.incumbent.join("/")} in use` : verdict;
      },

      /* Counts by name as "trace 12 · sample 30". */
      countsOf(counts) {
        return Object.entries(counts || {}).map(([name, n]) => `${name} ${fmt.count(n)}`).join(" · ") || NONE;
      },

      get decisionText() {
        const d = this.decision;
        if (!d) return "";
        return d.promoted
          ? `Promoted: ${d.candidate} is in use now, in place of ${d.incumbent}.`
          : `Kept: ${d.candidate} did not win; ${d.incumbent} stays in use.`;
      },

      /* The gate: both models' held-out evals, then the decision (the call answers when both ended). */
      async runGate(m) {
        this.gating = m.id;
        this.decision = null;
        this.learnedError = "";
        const incumbent = this.learned.in_use?.[m.kind] || "the model in use";
        this.learnedNotice = `Running the held-out evals of ${m.id} and of ${incumbent}: this takes minutes.`;
        try {
          const path = `/v1/learn/models/${encodeURIComponent(m.id)}/promote`;
          this.decision = await api(path, { method: "POST", body: {} });
          this.learnedNotice = "";
          await this.refresh();
        } catch (err) {
          this.learnedError = err.message;
          this.learnedNotice = "";
        } finally {
          this.gating = "";
        }
      },

      async rollBack(kind) {
        try {
          const change = await api("/v1/learn/rollback", { method: "POST", body: { kind } });
          this.learnedNotice = `${change.kind}: rolled back from ${change.from} to ${change.to}, in use now.`;
          this.learnedError = "";
          await this.refresh();
        } catch (err) {
          this.learnedError = err.message;
        }
      },

      async exportDataset(d) {
        try {
          await saveFile(`/v1/learn/datasets/${encodeURIComponent(d.id)}/export`, `${d.id}.jsonl`);
        } catch (err) {
          this.learnedError = err.message;
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
