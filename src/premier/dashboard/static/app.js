// Premier dashboard: plain JavaScript, no dependencies, no build step.
//
// The page lives at the dashboard path P; its API at P/api/... (session, login, stats, stream, config,
// config/validate). Live figures come from the Server-Sent Events stream, or from polling P/api/stats
// when the stream fails. Everything from the server is put into the page with textContent, never as HTML.
"use strict";

(() => {
  const base = location.pathname.replace(/\/+$/, "");
  const apiUrl = (name) => `${base}/api/${name}`;
  const $ = (id) => document.getElementById(id);

  const POLL_MS = 1000;          // polling interval when the stream is down (the stream's own pace)
  const STALE_MS = 5000;         // no event for this long: the stream is considered broken
  const STREAM_RETRY_MS = 30000; // while polling, try the stream again this often
  const LINE_PX = 20;            // the editor's line height (style.css: .editor line-height)

  class AuthError extends Error {}

  let csrf = null;               // from the login answer (the premier_csrf cookie holds the same)
  let stream = null;
  let timers = {};
  let generation = 0;            // bumped whenever updates stop, so a poll in flight does not re-arm
  let last = null;               // the last snapshot, to redraw the charts on resize

  // -- HTTP ------------------------------------------------------------------------------------------

  function cookie(name) {
    for (const part of document.cookie.split(";")) {
      const [key, ...rest] = part.trim().split("=");
      if (key === name) return decodeURIComponent(rest.join("="));
    }
    return null;
  }

  async function call(name, { method = "GET", json } = {}) {
    const headers = { Accept: "application/json" };
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    if (method !== "GET") {
      const token = cookie("premier_csrf") || csrf;
      if (token) headers["X-CSRF-Token"] = token;
    }
    const response = await fetch(apiUrl(name), { method, headers, body, credentials: "same-origin", cache: "no-store" });
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON */ }
    if (response.status === 401 && name !== "login") {
      showLogin("Please sign in (the session has ended or was never started).");
      throw new AuthError("authentication required");
    }
    return { status: response.status, data };
  }

  const problem = (status, data) => (data && data.error) ? `${data.error} (HTTP ${status})` : `HTTP ${status}`;

  // -- session ---------------------------------------------------------------------------------------

  async function start() {
    try {
      const { status, data } = await call("session");
      if (status === 200 && data && data.authenticated) enter();
      else showLogin();
    } catch (error) {
      if (error instanceof AuthError) return;
      setConnection("offline");
      timers.start = setTimeout(start, 3000);
    }
  }

  function showLogin(message) {
    stopUpdates();
    setConnection("offline", "signed out");
    $("dashboard").hidden = true;
    $("login").hidden = false;
    const error = $("login-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("login-token").focus();
  }

  async function login(event) {
    event.preventDefault();
    const input = $("login-token"), button = $("login-submit"), error = $("login-error");
    button.disabled = true;
    try {
      const { status, data } = await call("login", { method: "POST", json: { token: input.value } });
      if (status === 200 && data && data.ok) {
        csrf = data.csrf;
        input.value = "";
        error.hidden = true;
        enter();
      } else {
        error.textContent = status === 401 ? "Wrong token." : problem(status, data);
        error.hidden = false;
        input.select();
      }
    } catch (_) {
      error.textContent = "The gateway cannot be reached.";
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  function enter() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    loadConfig();
    connect();
  }

  // -- live updates: the stream, else polling --------------------------------------------------------

  function setConnection(state, text) {
    const badge = $("conn");
    badge.className = `conn conn-${state}`;
    badge.textContent = text || { live: "live", connecting: "connecting…", polling: "polling", offline: "offline" }[state];
  }

  function stopUpdates() {
    if (stream) stream.close();
    stream = null;
    for (const id of Object.values(timers)) clearTimeout(id);
    timers = {};
    generation += 1;
  }

  function connect() {
    stopUpdates();
    setConnection("connecting");
    const source = new EventSource(apiUrl("stream")); // same origin: the session cookie goes along
    stream = source;
    const broken = () => {
      if (stream !== source) return;
      source.close();
      stream = null;
      startPolling();
    };
    const watch = () => { clearTimeout(timers.stale); timers.stale = setTimeout(broken, STALE_MS); };
    watch();
    source.onmessage = (event) => {
      watch();
      setConnection("live");
      try { render(JSON.parse(event.data)); } catch (error) { console.error("bad snapshot", error); }
    };
    source.onerror = broken;
  }

  function startPolling() {
    stopUpdates();
    setConnection("polling");
    timers.stream = setTimeout(connect, STREAM_RETRY_MS);
    poll();
  }

  async function poll() {
    const mine = generation;
    try {
      const { status, data } = await call("stats");
      if (mine !== generation) return;
      if (status === 200) {
        setConnection("polling");
        render(data);
      } else {
        setConnection("offline", problem(status, data));
      }
    } catch (error) {
      if (error instanceof AuthError) return;
      setConnection("offline");
    }
    if (mine === generation) timers.poll = setTimeout(poll, POLL_MS);
  }

  // -- formatting ------------------------------------------------------------------------------------

  const integer = (n) => Math.round(n || 0).toLocaleString("en-US");

  function ms(value) {
    if (value == null) return "–";
    if (value >= 10000) return `${(value / 1000).toFixed(1)} s`;
    if (value >= 100) return `${value.toFixed(0)} ms`;
    if (value >= 10) return `${value.toFixed(1)} ms`;
    return `${value.toFixed(2)} ms`;
  }

  function duration(seconds) {
    const s = Math.floor(seconds || 0);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
    if (m) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
    return `${s}s`;
  }

  // Whole numbers only at the ends: 99.7% must not read as 100%.
  const percent = (ratio) => `${ratio >= 1 || ratio <= 0 ? Math.round(100 * ratio) : Math.min(99.9, Math.max(0.1, 100 * ratio)).toFixed(1)}%`;

  function setText(id, text) {
    const element = $(id);
    if (element.textContent !== text) element.textContent = text;
  }

  // -- rendering -------------------------------------------------------------------------------------

  function render(snapshot) {
    last = snapshot;
    const totals = snapshot.totals || {};
    const status = totals.status || {};
    const latency = totals.latency_ms || {};
    setText("uptime", duration(snapshot.uptime_s));
    setText("tile-rate", (totals.rate_per_s || 0).toFixed(1));
    setText("tile-total", integer(totals.requests));
    setText("tile-p50", ms(latency.p50));
    setText("tile-p95", ms(latency.p95));
    setText("tile-p99", ms(latency.p99));
    const classes = ["2xx", "3xx", "4xx", "5xx"];
    const answered = classes.reduce((sum, c) => sum + (status[c] || 0), 0);
    const bars = $("mixbar").children;
    classes.forEach((c, i) => {
      setText(`tile-${c}`, integer(status[c]));
      bars[i].style.width = answered ? `${(100 * (status[c] || 0)) / answered}%` : "0";
    });
    setText("tile-limited", integer(totals.rate_limited));
    setText("tile-timedout", integer(totals.timed_out));
    const routes = snapshot.routes || [];
    let hits = 0, lookups = 0;
    for (const route of routes) {
      if (route.cache) { hits += route.cache.hits; lookups += route.cache.hits + route.cache.misses; }
    }
    setText("tile-cache", lookups ? percent(hits / lookups) : "–");
    setText("tile-cache-sub", lookups ? `${integer(hits)} of ${integer(lookups)} lookups` : "no cached route");
    const ws = snapshot.websockets || {};
    setText("tile-ws", integer(ws.open));
    setText("tile-ws-total", integer(ws.total));
    drawCharts(snapshot.series || []);
    renderRoutes(routes);
    renderBreakers(snapshot.breakers || []);
    renderBackends(snapshot.backends || []);
    renderSlow(snapshot.slow || []);
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function badge(text, state) {
    const span = document.createElement("span");
    span.className = `badge state-${String(state).replace(/[^a-z_-]/gi, "")}`;
    span.textContent = text;
    return span;
  }

  function fillTable(tableId, emptyId, items, makeRow) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren(...items.map((item) => {
      const tr = document.createElement("tr");
      tr.append(...makeRow(item));
      return tr;
    }));
    $(tableId).parentElement.hidden = items.length === 0; // the scrolling box around the table
    $(emptyId).hidden = items.length > 0;
  }

  function renderRoutes(routes) {
    fillTable("routes", "routes-empty", routes, (r) => {
      const status = r.status || {}, latency = r.latency_ms || {}, cache = r.cache;
      const row = [cell(r.route, "mono"), cell(integer(r.requests), "num")];
      for (const c of ["2xx", "3xx", "4xx", "5xx"]) row.push(cell(integer(status[c]), "num"));
      row.push(cell(integer(r.rate_limited), "num"), cell(integer(r.timed_out), "num"),
        cell(ms(latency.p50), "num"), cell(ms(latency.p95), "num"), cell(ms(latency.p99), "num"),
        cell(cache ? `${percent(cache.hit_ratio)} (${integer(cache.hits)}/${integer(cache.hits + cache.misses)})` : "–", "num"));
      return row;
    });
  }

  function renderBreakers(breakers) {
    const list = $("breakers");
    list.replaceChildren(...breakers.map((b) => {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "mono";
      name.textContent = b.route;
      li.append(name, badge(String(b.state).replace("_", " "), b.state));
      return li;
    }));
    list.hidden = breakers.length === 0;
    $("breakers-empty").hidden = breakers.length > 0;
  }

  function renderBackends(backends) {
    fillTable("backends", "backends-empty", backends, (b) => {
      const health = document.createElement("td");
      health.append(badge(b.healthy ? "healthy" : "unhealthy", b.healthy ? "healthy" : "unhealthy"));
      const breaker = document.createElement("td");
      if (b.breaker) breaker.append(badge(String(b.breaker).replace("_", " "), b.breaker));
      return [cell(b.url, "mono"), health, cell(integer(b.in_flight), "num"), breaker];
    });
  }

  function renderSlow(slow) {
    fillTable("slow", "slow-empty", slow, (s) => [
      cell(new Date(s.time * 1000).toLocaleTimeString()), cell(s.method), cell(s.path, "mono"),
      cell(s.route || "", "mono"), cell(String(s.status), "num"), cell(ms(s.duration_ms), "num"),
    ]);
  }

  // -- charts (canvas) -------------------------------------------------------------------------------

  function niceCeiling(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function prepare(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    return { context, width, height };
  }

  // lines: [{values: [number|null], color, fill}]; null values leave gaps.
  function drawChart(canvas, count, lines, format) {
    const { context: g, width, height } = prepare(canvas);
    const css = getComputedStyle(document.documentElement);
    const muted = css.getPropertyValue("--muted").trim(), grid = css.getPropertyValue("--line").trim();
    const left = 56, right = 8, top = 8, bottom = 20;
    const plotW = width - left - right, plotH = height - top - bottom;
    const peak = Math.max(0, ...lines.flatMap((l) => l.values.filter((v) => v != null)));
    const max = niceCeiling(peak);
    g.font = "11px system-ui, sans-serif";
    g.lineWidth = 1;
    g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      g.strokeStyle = grid;
      g.beginPath(); g.moveTo(left, Math.round(y) + 0.5); g.lineTo(width - right, Math.round(y) + 0.5); g.stroke();
      g.fillStyle = muted;
      g.textAlign = "right";
      g.fillText(format((max * i) / 4), left - 6, y);
    }
    g.textAlign = "center";
    g.textBaseline = "alphabetic";
    const x = (i) => left + (count > 1 ? (plotW * i) / (count - 1) : plotW);
    const y = (v) => top + plotH - (plotH * v) / max;
    [[0, "-60 s"], [Math.floor((count - 1) / 2), "-30 s"], [count - 1, "now"]].forEach(([i, label]) => {
      g.fillText(label, Math.min(Math.max(x(i), left + 14), width - right - 14), height - 5);
    });
    for (const line of lines) {
      g.strokeStyle = line.color;
      g.lineWidth = 2;
      g.lineJoin = "round";
      let drawing = false;
      g.beginPath();
      line.values.forEach((v, i) => {
        if (v == null) { drawing = false; return; }
        if (drawing) g.lineTo(x(i), y(v)); else g.moveTo(x(i), y(v));
        drawing = true;
      });
      g.stroke();
      if (line.fill) {
        g.lineTo(x(count - 1), y(0));
        g.lineTo(x(0), y(0));
        g.closePath();
        g.globalAlpha = 0.15;
        g.fillStyle = line.color;
        g.fill();
        g.globalAlpha = 1;
      }
    }
  }

  function drawCharts(series) {
    // The newest bucket is the second in progress: leave it out so the line does not dip at "now".
    const points = series.length > 1 ? series.slice(0, -1) : series;
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    const count = points.length;
    if (!count) return;
    const rateFormat = (v) => (v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1));
    drawChart($("chart-rate"), count, [
      { values: points.map((p) => p.requests), color: color("--accent"), fill: true },
    ], rateFormat);
    // A second without requests has no latency: a gap, not a zero.
    const latency = (key) => points.map((p) => (p.requests ? p[key] : null));
    drawChart($("chart-latency"), count, [
      { values: latency("p99_ms"), color: color("--p99") },
      { values: latency("p95_ms"), color: color("--p95") },
      { values: latency("p50_ms"), color: color("--p50") },
    ], (v) => (v === 0 ? "0" : ms(v).replace(" ms", "")));
  }

  // -- the configuration editor ----------------------------------------------------------------------

  const editor = () => $("config-editor");
  let errorLines = new Set();

  function updateGutter() {
    const gutter = $("config-gutter");
    const lines = editor().value.split("\n").length;
    const key = `${lines}|${[...errorLines].join(",")}`;
    if (gutter.dataset.key === key) return;
    gutter.dataset.key = key;
    const rows = [];
    for (let n = 1; n <= lines; n++) {
      const row = document.createElement("div");
      row.textContent = String(n);
      if (errorLines.has(n)) { row.className = "err"; row.dataset.testid = "gutter-error"; }
      rows.push(row);
    }
    gutter.replaceChildren(...rows);
    gutter.scrollTop = editor().scrollTop;
  }

  function setMessage(text, kind) {
    const message = $("config-message");
    message.textContent = text;
    message.className = kind || "";
  }

  function clearErrors() {
    errorLines = new Set();
    $("config-errors").replaceChildren();
    $("config-errors").hidden = true;
    $("config").querySelector(".editor").classList.remove("invalid");
    updateGutter();
  }

  function showErrors(errors) {
    clearErrors();
    const list = $("config-errors");
    for (const error of errors) {
      const li = document.createElement("li");
      if (error.path) {
        const code = document.createElement("code");
        code.textContent = error.path;
        li.append(code, ": ");
      }
      li.append(error.message || "invalid");
      if (error.line) {
        errorLines.add(error.line);
        li.append(` (line ${error.line})`);
        li.title = "Go to the line";
        li.addEventListener("click", () => goToLine(error.line));
      }
      list.append(li);
    }
    list.hidden = errors.length === 0;
    $("config").querySelector(".editor").classList.toggle("invalid", errors.length > 0);
    updateGutter();
  }

  function goToLine(line) {
    const area = editor();
    const lines = area.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((sum, text) => sum + text.length + 1, 0);
    area.focus();
    area.setSelectionRange(start, start + (lines[line - 1] || "").length);
    area.scrollTop = Math.max(0, (line - 1) * LINE_PX - area.clientHeight / 2);
  }

  async function loadConfig() {
    try {
      const { status, data } = await call("config");
      if (status !== 200 || !data) { setMessage(`Cannot load the configuration: ${problem(status, data)}`, "error"); return; }
      editor().value = data.yaml || "";
      setText("config-source", data.source ? `— ${data.source}` : "— (not from a file)");
      $("config-save").hidden = !data.can_save;
      clearErrors();
      setMessage("", "");
    } catch (error) {
      if (!(error instanceof AuthError)) setMessage("Cannot load the configuration: the gateway cannot be reached.", "error");
    }
  }

  async function submit(kind) {
    const buttons = ["config-validate", "config-apply", "config-save", "config-revert"].map($);
    buttons.forEach((b) => { b.disabled = true; });
    setMessage(kind === "validate" ? "Validating…" : "Applying…", "");
    try {
      const yaml = editor().value;
      const { status, data } = kind === "validate"
        ? await call("config/validate", { method: "POST", json: { yaml } })
        : await call("config", { method: "POST", json: { yaml, save: kind === "save" } });
      if (data && data.ok) {
        clearErrors();
        setMessage(kind === "validate" ? "Valid."
          : data.saved ? "Applied and saved to the file (the previous version kept as a backup)."
            : "Applied: the gateway now runs this configuration.", "ok");
      } else if (data && Array.isArray(data.errors)) {
        showErrors(data.errors);
        const n = data.errors.length;
        setMessage(`${n} error${n === 1 ? "" : "s"}${kind === "validate" ? "" : ": nothing was changed"}.`, "error");
      } else {
        setMessage(`Failed: ${problem(status, data)}`, "error");
      }
    } catch (error) {
      if (!(error instanceof AuthError)) setMessage("Failed: the gateway cannot be reached.", "error");
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  // -- wiring ----------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    const area = editor();
    area.addEventListener("input", () => { updateGutter(); if ($("config-message").className === "ok") setMessage("", ""); });
    area.addEventListener("scroll", () => { $("config-gutter").scrollTop = area.scrollTop; });
    $("config-validate").addEventListener("click", () => submit("validate"));
    $("config-apply").addEventListener("click", () => submit("apply"));
    $("config-save").addEventListener("click", () => submit("save"));
    $("config-revert").addEventListener("click", loadConfig);
    window.addEventListener("resize", () => { if (last) drawCharts(last.series || []); });
    start();
  });
})();
