/* The console's pages: Alpine.js components on top of app.js, one per page. */
"use strict";

document.addEventListener("alpine:init", () => {
  const Alpine = window.Alpine;

  Alpine.data("consoleApp", () => ({
    me: null,
    ready: false,
    keyInput: "",
    signInError: "",
    signingIn: false,
    route: parseRoute(),
    pending: 0,
    stopPending: null,

    async init() {
      window.addEventListener("hashchange", () => {
        this.route = parseRoute();
      });
      session.onExpired = (message) => this.signOut(message);
      const stored = window.localStorage.getItem(KEY_STORAGE);
      if (stored) await this.enter(stored).catch(() => {});
      this.ready = true;
    },

    async enter(key) {
      session.key = key;
      try {
        this.me = await api("/v1/me");
      } catch (err) {
        session.key = "";
        throw err;
      }
      window.localStorage.setItem(KEY_STORAGE, key);
      this.signInError = "";
      this.stopPending = poll(async () => {
        this.pending = (await api("/v1/approvals")).data.length;
      }, 3000);
    },

    async signIn() {
      this.signingIn = true;
      try {
        await this.enter(this.keyInput.trim());
        this.keyInput = "";
        if (!window.location.hash) window.location.hash = "#/meter";
      } catch (err) {
        this.signInError = err.status === 401 ? "That key is not valid here." : err.message;
      } finally {
        this.signingIn = false;
      }
    },

    signOut(message = "") {
      if (this.stopPending) this.stopPending();
      this.stopPending = null;
      window.localStorage.removeItem(KEY_STORAGE);
      session.key = "";
      this.me = null;
      this.signInError = message;
    },
  }));

  Alpine.data("meter", () => {
    const charts = {};
    let seq = 0;
    return livePage(5000, {
      range: "day",
      split: "tenant",
      splits: ["tenant", "model", "deployment", "agent"],
      metric: "tokens",
      tenant: "",
      sinceIso: "",
      totals: null,
      top: [],
      budgets: [],

      start() {
        if (!this.me?.admin) this.splits = ["model", "deployment", "agent"];
        if (!this.me?.admin) this.split = "model";
        for (const field of ["range", "split", "metric", "tenant"]) this.$watch(field, () => this.refresh());
      },

      teardown() {
        for (const chart of Object.values(charts)) chart.destroy();
      },

      get command() {
        const tenant = this.tenant ? ` --tenant ${this.tenant}` : "";
        return `aigrid usage --group-by ${this.split} --since ${this.sinceIso}${tenant}`;
      },

      budgetText(b) {
        const amount = (v) => (b.kind === "cost" ? fmt.cny(v) : fmt.count(v));
        const share = b.limit ? Math.round((100 * b.spent) / b.limit) : 0;
        return `${amount(b.spent)} of ${amount(b.limit)} (${share}%)`;
      },

      async load() {
        const mine = ++seq;
        const range = RANGES[this.range];
        const { now, since } = rangeWindow(range);
        const base = { since: isoSeconds(since), tenant: this.tenant.trim() };
        // The totals and top consumers come from the grouped query as the API sums them (what
        // `aigrid usage` prints); the bucketed one is only drawn.
        let answers;
        try {
          answers = await Promise.all([
            api(`/v1/usage${query({ ...base, group_by: this.split, interval: range.interval })}`),
            api(`/v1/usage${query({ ...base, group_by: this.split })}`),
            api(`/v1/budgets${query({ tenant: base.tenant })}`),
          ]);
        } catch (err) {
          if (mine !== seq) return STALE; // a newer load (another range or split) has begun
          throw err;
        }
        if (mine !== seq) return STALE;
        const [series, bill, budgets] = answers;
        this.sinceIso = base.since;
        this.totals = bill.totals;
        this.top = this.ranked(bill.data, bill.totals);
        this.budgets = budgets.data;
        this.draw(series.data, since, now, range);
      },

      ranked(rows, totals) {
        const byCost = totals.cost_micro > 0;
        const whole = byCost ? totals.cost_micro : totals.total_tokens;
        return [...rows]
          .sort((a, b) => b.cost_micro - a.cost_micro || b.total_tokens - a.total_tokens)
          .slice(0, 10)
          .map((row) => ({
            ...row,
            label: row[this.split] ?? "(none)",
            share: whole ? (byCost ? row.cost_micro : row.total_tokens) / whole : 0,
          }));
      },

      draw(rows, since, now, range) {
        const series = bucketed(rows, since, now, range);
        const tokens = series.starts.map(() => 0);
        const cost = series.starts.map(() => 0);
        for (const row of rows) {
          const i = series.index.get(Math.floor(row.start_us / 1e6));
          if (i === undefined) continue;
          tokens[i] += row.total_tokens;
          cost[i] += row.cost_micro / 1e6;
        }
        drawChart(charts, "line", this.$refs.line, {
          type: "line",
          data: {
            labels: series.labels,
            datasets: [
              { label: "tokens", data: tokens, borderColor: PALETTE[0], yAxisID: "y", pointRadius: 0 },
              { label: "cost (CNY)", data: cost, borderColor: PALETTE[1], yAxisID: "cost", pointRadius: 0 },
            ],
          },
          options: chartOptions({
            scales: {
              y: { beginAtZero: true, title: { display: true, text: "tokens" } },
              cost: {
                beginAtZero: true,
                position: "right",
                grid: { drawOnChartArea: false },
                title: { display: true, text: "CNY" },
                ticks: { callback: shortNumber },
              },
            },
          }),
        });
        const value = this.metric === "cost" ? (row) => row.cost_micro / 1e6 : (row) => row.total_tokens;
        drawChart(charts, "area", this.$refs.area, stackedArea(series, this.split, value));
      },
    });
  });

  Alpine.data("grid", () => {
    const gridCharts = {};
    return livePage(2000, {
      deployments: [],
      async load() {
        const range = RANGES.hour;
        const { now, since } = rangeWindow(range);
        const params = { group_by: "deployment", interval: range.interval, since: isoSeconds(since) };
        const [deployments, usage] = await Promise.all([api("/admin/deployments"), api(`/v1/usage${query(params)}`)]);
        this.deployments = deployments.data;
        const series = bucketed(usage.data, since, now, range);
        drawChart(
          gridCharts,
          "tokens",
          this.$refs.tokens,
          stackedArea(series, "deployment", (row) => row.total_tokens),
        );
      },
      teardown() {
        for (const chart of Object.values(gridCharts)) chart.destroy();
      },
      health(d) {
        if (d.healthy) return "ok";
        const parts = [d.state];
        if (d.cooldown_left_s) parts.push(`cooling down, retry in ${Math.ceil(d.cooldown_left_s)}s`);
        if (d.consecutive_failures) parts.push(`${d.consecutive_failures} failures in a row`);
        return parts.join(", ");
      },
    });
  });

  Alpine.data("cluster", () =>
    livePage(2000, {
      nodes: [],
      summary: "",
      async load() {
        const found = await api("/admin/cluster");
        // Live nodes first, then those whose lease ran out, as `aigrid cluster` lists them.
        this.nodes = found.data.sort((a, b) => b.live - a.live || a.name.localeCompare(b.name));
        const live = found.data.filter((n) => n.live).length;
        this.summary = `${live} of ${found.data.length} node(s) live; leases of ${found.lease_s} s`;
      },
    }),
  );

  Alpine.data("processes", () => {
    let seen = new Map(); // pid -> [time, tokens] at the last poll of the rows shown, for tokens per second
    return livePage(2000, {
      states: ALL_STATES,
      state: "",
      agent: "",
      tenant: "",
      rows: [],
      rates: {},
      counts: {},
      start() {
        for (const field of ["state", "agent", "tenant"]) this.$watch(field, () => this.refresh());
      },
      stepText(p) {
        return `step ${p.steps}${p.reason ? ` · ${p.reason}` : ""}`;
      },
      async load() {
        const states = this.state === "live" ? LIVE_STATES.join(",") : this.state;
        const found = await api(
          `/v1/processes${query({ state: states, agent: this.agent.trim(), tenant: this.tenant.trim(), limit: 200 })}`,
        );
        const rank = (p) => (LIVE_STATES.includes(p.state) ? LIVE_STATES.indexOf(p.state) : LIVE_STATES.length);
        const rows = found.data.sort((a, b) => rank(a) - rank(b) || b.updated_at - a.updated_at);
        const now = performance.now() / 1000;
        const rates = {};
        const looked = new Map();
        for (const p of rows) {
          const tokens = p.usage.prompt_tokens + p.usage.completion_tokens;
          const before = seen.get(p.pid);
          if (before && now > before[0] && LIVE_STATES.includes(p.state))
            rates[p.pid] = (tokens - before[1]) / (now - before[0]);
          looked.set(p.pid, [now, tokens]);
        }
        seen = looked; // only the rows shown, so a tab left open does not gather every pid it ever saw
        const counts = {};
        for (const p of rows) counts[p.state] = (counts[p.state] || 0) + 1;
        this.rows = rows;
        this.rates = rates;
        this.counts = counts;
      },
    });
  });

  Alpine.data("processPage", () =>
    livePage(1500, {
      p: null,
      steps: [],
      calls: {}, // tool call id -> arguments, from the model's answers
      confirmKill: false,
      pid: null,
      start() {
        this.pid = this.route.arg;
        // Another process's link on this page keeps the page and changes the process.
        this.$watch("route", (route) => {
          if (route.page !== "process" || route.arg === this.pid) return;
          Object.assign(this, { pid: route.arg, p: null, steps: [], calls: {}, confirmKill: false, error: "" });
          this.refresh();
        });
      },
      get ended() {
        return !this.p || ENDED.includes(this.p.state);
      },
      get canPause() {
        return !this.ended && this.p.state !== "suspended";
      },
      async load() {
        const pid = this.pid;
        const after = this.steps.length ? this.steps[this.steps.length - 1].seq : 0;
        const [p, journal] = await Promise.all([
          api(`/v1/processes/${encodeURIComponent(pid)}`),
          api(`/v1/processes/${encodeURIComponent(pid)}/journal${query({ after })}`),
        ]);
        if (pid !== this.pid) return STALE;
        for (const step of journal.data) {
          for (const call of step.message?.tool_calls || []) this.calls[call.id] = call.function?.arguments;
        }
        this.p = p;
        this.steps = [...this.steps, ...journal.data];
      },
      async send(signal) {
        try {
          this.p = await api(`/v1/processes/${encodeURIComponent(this.pid)}/${signal}`, { method: "POST" });
          this.error = "";
        } catch (err) {
          this.error = err.message;
        }
        this.confirmKill = false;
        await this.refresh();
      },
      summary(s) {
        switch (s.kind) {
          case "model_request":
            return `model call with ${s.messages} messages and ${s.tools} tools`;
          case "model_response": {
            const u = s.usage;
            const used = u
              ? `${fmt.count(u.prompt_tokens)} prompt + ${fmt.count(u.completion_tokens)} completion tokens, ${fmt.cny(u.cost_micro)} CNY`
              : "";
            const asks = (s.message?.tool_calls || []).map((c) => c.function?.name);
            return [used, asks.length ? `asks for ${asks.join(", ")}` : "answers"].filter(Boolean).join(" · ");
          }
          case "tool_call":
            return `calls ${s.tool}`;
          case "tool_result":
            return `${s.tool} ${s.ok ? "answered" : "failed"}`;
          case "approval":
            return `${s.tool}: ${s.status === "pending" ? "waits for a person's approval" : s.status}`;
          default:
            return s.kind;
        }
      },
      detail(s) {
        switch (s.kind) {
          case "model_request":
            return "";
          case "model_response": {
            const calls = s.message?.tool_calls || [];
            if (!calls.length) return s.message?.content || "";
            return calls.map((c) => `${c.function?.name}(${fmt.json(c.function?.arguments ?? {})})`).join("\n");
          }
          case "tool_call":
            return fmt.json(this.calls[s.id] ?? {});
          case "tool_result":
            return fmt.json(s.content ?? "");
          case "approval":
            return s.arguments ? fmt.json(s.arguments) : "";
          default: {
            const { object, seq, kind, at_us, ...rest } = s;
            return fmt.json(rest);
          }
        }
      },
    }),
  );

  Alpine.data("agents", () => ({
    list: [],
    description: "",
    tenant: "",
    proposal: null,
    busy: false,
    error: "",
    listError: "",
    saved: "",
    init() {
      this.load();
    },
    async load() {
      try {
        this.list = (await api("/v1/agents")).data;
        this.listError = "";
      } catch (err) {
        this.listError = err.message;
      }
    },
    agentLink(a) {
      return `#/agents/${encodeURIComponent(a.name)}${this.me?.admin ? query({ tenant: a.tenant }) : ""}`;
    },
    async draft() {
      this.busy = true;
      this.saved = "";
      this.proposal = null;
      try {
        const timezone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
        this.proposal = await api("/v1/agents", {
          method: "POST",
          body: { description: this.description, dry_run: true, timezone, tenant: this.tenant.trim() || undefined },
        });
        this.error = "";
      } catch (err) {
        this.error = err.message;
      } finally {
        this.busy = false;
      }
    },
    async save() {
      this.busy = true;
      try {
        const agent = await api("/v1/agents", {
          method: "POST",
          body: { ...this.proposal.spec, tenant: this.tenant.trim() || undefined },
        });
        const secret = agent.webhook_secret ? ` Its webhook secret, shown only now: ${agent.webhook_secret}` : "";
        this.saved = `Saved ${agent.name}, version ${agent.version}.${secret}`;
        this.proposal = null;
        this.description = "";
        this.error = "";
        await this.load();
      } catch (err) {
        this.error = err.message;
      } finally {
        this.busy = false;
      }
    },
  }));

  Alpine.data("agentPage", () => ({
    current: null,
    versions: [],
    triggers: [],
    runs: [],
    shown: null,
    input: "",
    error: "",
    key: null,
    init() {
      this.open();
      this.$watch("route", () => this.open());
    },
    open() {
      const key = `${this.route.arg}|${this.route.params.tenant || ""}`;
      if (this.route.page !== "agent" || key === this.key) return;
      this.key = key;
      this.load();
    },
    get tenantParam() {
      return { tenant: this.route.params.tenant };
    },
    get shownVersion() {
      return this.versions.find((v) => v.version === this.shown);
    },
    async load() {
      const name = encodeURIComponent(this.route.arg);
      const tenant = this.tenantParam;
      try {
        const [current, versions, triggers, runs] = await Promise.all([
          api(`/v1/agents/${name}${query(tenant)}`),
          api(`/v1/agents/${name}/versions${query(tenant)}`),
          api(`/v1/agents/${name}/triggers${query(tenant)}`),
          api(`/v1/processes${query({ ...tenant, agent: this.route.arg, limit: 10 })}`),
        ]);
        Object.assign(this, { current, versions: versions.data, triggers: triggers.data, runs: runs.data });
        this.shown = current.version;
        this.error = "";
      } catch (err) {
        this.error = err.message;
      }
    },
    triggerText(t) {
      return Object.entries(t)
        .filter(([k, v]) => k !== "kind" && v !== "" && v !== null)
        .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(",") : v}`)
        .join(" ");
    },
    nextFiring(t) {
      const i = this.current.spec.triggers.indexOf(t);
      const row = this.triggers.find((r) => r.position === i);
      return row && row.next_at ? fmt.when(row.next_at) : "";
    },
    async run() {
      try {
        const p = await api("/v1/processes", {
          method: "POST",
          body: { agent: this.current.name, input: this.input, ...this.tenantParam },
        });
        window.location.hash = `#/processes/${encodeURIComponent(p.pid)}`;
      } catch (err) {
        this.error = err.message;
      }
    },
  }));

  Alpine.data("approvals", () =>
    livePage(2000, {
      items: [],
      notice: "",
      async load() {
        this.items = (await api("/v1/approvals")).data;
      },
      async decide(a, decision) {
        try {
          const p = await api(`/v1/approvals/${encodeURIComponent(a.id)}/${decision}`, { method: "POST" });
          const verb = decision === "approve" ? "Approved" : "Denied";
          this.notice = `${verb} ${a.tool}: process ${p.pid} is ${p.state}.`;
          this.items = this.items.filter((x) => x.id !== a.id);
          this.pending = this.items.length; // the count in the tabs, without waiting for its next poll
          this.error = "";
        } catch (err) {
          this.error = err.message;
        }
      },
    }),
  );

  Alpine.data("services", () =>
    livePage(10000, {
      items: [],
      tools: {},
      async load() {
        const [services, tools] = await Promise.all([api("/v1/services"), api("/v1/tools")]);
        this.items = services.data;
        this.tools = Object.fromEntries(tools.data.map((t) => [t.name, t]));
      },
      params(tool) {
        const schema = this.tools[tool]?.parameters;
        if (!schema?.properties) return NONE;
        const required = new Set(schema.required || []);
        return Object.keys(schema.properties)
          .map((name) => (required.has(name) ? name : `${name}?`))
          .join(", ");
      },
    }),
  );
});
