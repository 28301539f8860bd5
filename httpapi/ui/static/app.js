// retailpulse dashboard. Plain JavaScript, no dependencies.
//
// Every string that comes from the server (store ids, URLs, error
// messages: all of it client input) reaches the page through textContent
// or an attribute, never through HTML parsing.
"use strict";

(function () {
  const TOKEN_KEY = "retailpulse.token";
  const main = document.getElementById("main");
  const live = document.getElementById("live");

  // ---- DOM helpers -------------------------------------------------------

  // el("td", {class: "num"}, "12", child...) builds an element. Attributes
  // are set with setAttribute; strings become text nodes.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "value") e.value = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    append(e, children);
    return e;
  }
  function append(e, children) {
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }
  function clear(e) { while (e.firstChild) e.firstChild.remove(); return e; }

  function state(kind, text, retry) {
    const box = el("div", { class: "state " + kind, role: kind === "error" ? "alert" : "status", "aria-busy": kind === "loading" ? "true" : null }, text);
    if (retry) box.append(" ", el("button", { type: "button", onclick: retry }, "Retry"));
    return box;
  }
  function badge(status) { return el("span", { class: "badge " + status }, status); }
  function fmtTime(t) {
    const d = new Date(t);
    return isNaN(d) ? String(t) : d.toLocaleString();
  }
  function pct(done, total) { return total > 0 ? Math.floor((100 * done) / total) : 100; }
  function progressCell(done, total, label) {
    const p = pct(done, total);
    return el("div", { class: "progress" },
      el("progress", { max: total || 1, value: Math.min(done, total || 1), "aria-label": label }),
      el("span", { class: "pct" }, p + "%"));
  }
  function setProgress(box, done, total) {
    const bar = box.querySelector("progress");
    bar.max = total || 1;
    bar.value = Math.min(done, total || 1);
    box.querySelector(".pct").textContent = pct(done, total) + "%";
  }
  function table(caption, headers, rows) {
    return el("div", { class: "table-wrap" },
      el("table", {},
        el("caption", {}, caption),
        el("thead", {}, el("tr", {}, headers.map((h) => {
          const [text, cls] = Array.isArray(h) ? h : [h, ""];
          return el("th", { scope: "col", class: cls || null }, text);
        }))),
        el("tbody", {}, rows)));
  }

  // ---- the API -----------------------------------------------------------

  class AuthError extends Error {}
  class APIError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function authHeaders(extra) {
    const h = new Headers(extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.set("Authorization", "Bearer " + token);
    return h;
  }

  // api fetches a JSON route. A 401 asks for the token; any other error
  // status throws an APIError with the server's message.
  async function api(path, opts) {
    opts = opts || {};
    const res = await fetch(path, { method: opts.method || "GET", body: opts.body, headers: authHeaders(opts.headers), cache: "no-store", signal: opts.signal });
    if (res.status === 401) {
      needToken(sessionStorage.getItem(TOKEN_KEY) ? "That token was refused." : "");
      throw new AuthError("token needed");
    }
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      let msg = body && typeof body.error === "string" ? body.error : "HTTP " + res.status;
      if (res.status === 503) msg += " (the service is busy or catching up: try again in a moment)";
      throw new APIError(res.status, msg);
    }
    return body;
  }

  // stream reads a text/event-stream route with fetch(), so the token goes
  // in the Authorization header (the browser's event source cannot send
  // one, and a token in the URL would end up in logs). It calls
  // onEvent({id, type, data}) per event, reconnects with Last-Event-ID
  // after a failure, and stops when signal aborts or onEvent returns
  // "stop". onState(true/false) tells whether it is connected.
  function stream(path, onEvent, signal, onState) {
    let lastId = "";
    let stopped = false;
    const setState = onState || (() => {});
    (async function loop() {
      let delay = 500;
      while (!stopped && !signal.aborted) {
        try {
          const headers = authHeaders({ Accept: "text/event-stream" });
          if (lastId) headers.set("Last-Event-ID", lastId);
          const res = await fetch(path, { headers, signal, cache: "no-store" });
          if (res.status === 401) { needToken("That token was refused."); return; }
          if (!res.ok || !res.body) throw new Error("HTTP " + res.status);
          setState(true);
          delay = 500;
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = "";
          let ev = { id: "", type: "message", data: [] };
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            let nl;
            while ((nl = buf.indexOf("\n")) >= 0) {
              let line = buf.slice(0, nl);
              buf = buf.slice(nl + 1);
              if (line.endsWith("\r")) line = line.slice(0, -1);
              if (line === "") {
                if (ev.data.length) {
                  if (ev.id) lastId = ev.id;
                  let data = null;
                  try { data = JSON.parse(ev.data.join("\n")); } catch (e) { data = ev.data.join("\n"); }
                  if (onEvent({ id: ev.id, type: ev.type, data }) === "stop") { stopped = true; setState(false); reader.cancel().catch(() => {}); return; }
                }
                ev = { id: "", type: "message", data: [] };
                continue;
              }
              if (line.startsWith(":")) continue;
              const c = line.indexOf(":");
              const field = c < 0 ? line : line.slice(0, c);
              const val = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
              if (field === "id") ev.id = val;
              else if (field === "event") ev.type = val;
              else if (field === "data") ev.data.push(val);
            }
          }
        } catch (e) {
          if (signal.aborted) return;
        }
        setState(false);
        if (stopped || signal.aborted) return;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
      }
    })();
  }

  // throttle(fn, ms) runs fn at most once per ms, trailing.
  function throttle(fn, ms) {
    let timer = null;
    let last = 0;
    return function () {
      if (timer) return;
      const wait = Math.max(0, last + ms - Date.now());
      timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, wait);
    };
  }

  // perFrame(fn) runs fn once before the next frame however often it is
  // asked: a burst of events repaints once.
  function perFrame(fn) {
    let queued = false;
    return function () {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => { queued = false; fn(); });
    };
  }

  // ---- routing -----------------------------------------------------------

  // Each view gets a fresh AbortController; leaving the view aborts its
  // requests, streams and timers.
  let current = null;
  let tokenPrompt = "";

  function parseHash() {
    const h = location.hash.replace(/^#\/?/, "");
    const [path, query] = h.split("?");
    return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query || "") };
  }

  function route() {
    if (current) current.abort();
    current = new AbortController();
    const signal = current.signal;
    const { parts, params } = parseHash();
    const section = parts[0] || "jobs";
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    clear(main);
    setLive(null);
    if (tokenPrompt !== "") return showTokenForm();
    const views = { jobs: parts[1] ? () => jobView(parts[1], signal) : () => jobsView(params, signal), throughput: () => throughputView(signal), visits: () => visitsView(params, signal), submit: () => submitView(signal) };
    (views[section] || (() => main.append(el("h1", {}, "Not found"), state("error", "There is no such page. "), el("a", { href: "#/jobs" }, "Go to the jobs"))))();
  }

  function go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  function focusHeading() {
    const h = main.querySelector("h1");
    if (h) { h.setAttribute("tabindex", "-1"); h.focus({ preventScroll: true }); }
  }

  function setLive(on) {
    live.classList.remove("on", "off");
    if (on === null) { live.textContent = ""; return; }
    live.classList.add(on ? "on" : "off");
    live.textContent = on ? "Live" : "Reconnecting…";
  }

  // ---- the token -----------------------------------------------------------

  function needToken(message) {
    if (tokenPrompt !== "") return;
    tokenPrompt = message || "This service needs an API token.";
    if (current) current.abort();
    clear(main);
    showTokenForm();
  }

  function showTokenForm() {
    setLive(null);
    const input = el("input", { id: "token", type: "password", autocomplete: "off", required: true, "aria-describedby": "token-help" });
    const form = el("form", { class: "card token-form", onsubmit: (e) => {
      e.preventDefault();
      if (!input.value.trim()) return;
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      tokenPrompt = "";
      route();
    } },
      el("h1", {}, "API token"),
      el("p", { id: "token-help" }, tokenPrompt + " It is kept for this tab only and sent in the Authorization header."),
      el("div", { class: "field" }, el("label", { for: "token" }, "API token"), input),
      el("p", {}, el("button", { class: "primary", type: "submit" }, "Use this token")));
    main.append(form);
    input.focus();
  }

  // ---- jobs ------------------------------------------------------------------

  const JOB_PAGE = 20;

  function jobsView(params, signal) {
    const status = params.get("status") || "";
    const cursor = params.get("cursor") || "";
    const prev = params.getAll("prev");
    const select = el("select", { id: "job-status", onchange: () => go("#/jobs" + (select.value ? "?status=" + encodeURIComponent(select.value) : "")) },
      ["", "ongoing", "completed", "failed"].map((s) => el("option", { value: s, selected: s === status }, s || "all")));
    const announce = el("p", { class: "vh", role: "status", "aria-live": "polite", id: "jobs-announce" });
    const body = el("div", { id: "jobs-body" }, state("loading", "Loading jobs…"));
    main.append(el("h1", {}, "Jobs"),
      el("div", { class: "toolbar" }, el("div", { class: "field" }, el("label", { for: "job-status" }, "Status"), select)),
      announce, body);
    focusHeading();

    const rows = new Map(); // job id -> {job, tr, cells}
    let newest = 0; // the newest job id on the page
    let loaded = false;
    const pending = []; // events seen before the page loaded

    function row(j) {
      const statusCell = el("td", {}, badge(j.status));
      const prog = progressCell(j.processed + j.failed, j.images, "Progress of job " + j.job_id);
      const counts = el("td", { class: "num hide-narrow" });
      const tr = el("tr", { "data-job": j.job_id },
        el("td", {}, el("a", { href: "#/jobs/" + encodeURIComponent(j.job_id) }, "Job " + j.job_id)),
        statusCell,
        el("td", { class: "hide-narrow" }, el("time", { datetime: j.submitted_at }, fmtTime(j.submitted_at))),
        el("td", { class: "num" }, String(j.images)),
        counts,
        el("td", {}, prog));
      const r = { job: j, tr, statusCell, prog, counts };
      paint(r);
      return r;
    }
    function paint(r) {
      const j = r.job;
      setProgress(r.prog, j.processed + j.failed, j.images);
      r.counts.textContent = j.processed + " / " + j.failed;
      clear(r.statusCell).append(badge(j.status));
    }
    function apply(ev) {
      const d = ev.data || {};
      const r = rows.get(String(d.job_id));
      if (ev.type === "job_submitted") { if (!cursor && (!status || status === "ongoing")) refresh(); return; }
      if (!r) {
        // A job newer than the page's newest: the list was read before
        // its submission reached the read model; read it again.
        if (!cursor && Number(d.job_id) > newest && (ev.type === "job_completed" || !status || status === "ongoing")) refresh();
        return;
      }
      const j = r.job;
      if (ev.type === "image_processed" && j.status === "ongoing") j.processed = Math.min(j.processed + 1, j.images - j.failed);
      else if (ev.type === "image_failed" && j.status === "ongoing") j.failed = Math.min(j.failed + 1, j.images - j.processed);
      else if (ev.type === "job_completed") {
        j.status = d.status; j.processed = d.processed; j.failed = d.failed;
        announce.textContent = "Job " + j.job_id + " " + d.status + ".";
      } else return;
      dirty.add(r);
      paintDirty();
      correct();
    }
    const dirty = new Set();
    const paintDirty = perFrame(() => { for (const r of dirty) paint(r); dirty.clear(); });
    // The counters above move with each event; the list is read again now
    // and then so that they end exactly as the read model says.
    const correct = throttle(() => load(true), 2000);
    const refresh = throttle(() => load(true), 500);

    async function load(quiet) {
      try {
        const q = new URLSearchParams({ limit: JOB_PAGE });
        if (status) q.set("status", status);
        if (cursor) q.set("cursor", cursor);
        const page = await api("/api/jobs?" + q, { signal });
        if (signal.aborted) return;
        rows.clear();
        newest = page.jobs.reduce((n, j) => Math.max(n, Number(j.job_id)), 0);
        const tbody = page.jobs.map((j) => { const r = row(j); rows.set(String(j.job_id), r); return r.tr; });
        clear(body);
        if (!page.jobs.length) {
          body.append(state("empty", cursor ? "No older jobs." : status ? "No " + status + " jobs." : "No jobs yet."),
            !status && !cursor ? el("p", {}, el("a", { href: "#/submit" }, "Submit a job")) : null);
        } else {
          body.append(table("Jobs, newest first" + (status ? " (" + status + ")" : ""),
            ["Job", "Status", ["Submitted", "hide-narrow"], ["Images", "num"], ["Processed / failed", "num hide-narrow"], "Progress"], tbody));
        }
        // prev holds the cursors of the pages before this one ("" = the first).
        const pager = el("div", { class: "pager" });
        if (cursor) {
          const back = new URLSearchParams();
          if (status) back.set("status", status);
          if (prev.length && prev[prev.length - 1]) back.set("cursor", prev[prev.length - 1]);
          for (const c of prev.slice(0, -1)) back.append("prev", c);
          pager.append(el("a", { href: "#/jobs?" + back, id: "jobs-prev" }, "← Newer"));
        }
        if (page.next_cursor) {
          const fwd = new URLSearchParams();
          if (status) fwd.set("status", status);
          fwd.set("cursor", page.next_cursor);
          for (const c of prev) fwd.append("prev", c);
          fwd.append("prev", cursor);
          pager.append(el("a", { href: "#/jobs?" + fwd, id: "jobs-next" }, "Older →"));
        }
        if (pager.childNodes.length) body.append(pager);
        if (!loaded) { loaded = true; for (const ev of pending.splice(0)) apply(ev); }
      } catch (e) {
        if (signal.aborted || e instanceof AuthError) return;
        if (!quiet || !loaded) clear(body).append(state("error", "Could not load the jobs: " + e.message, () => load(false)));
      }
    }
    stream("/api/events?type=job_submitted,image_processed,image_failed,job_completed", (ev) => {
      if (!loaded) pending.push(ev); else apply(ev);
    }, signal, setLive);
    load(false);
  }

  // ---- one job -------------------------------------------------------------------

  const RESULT_PAGE = 50;
  const MAX_EVENT_LINES = 500;

  function jobView(idText, signal) {
    const id = idText;
    const title = el("h1", {}, "Job " + id);
    const statusSlot = el("dd", { id: "job-status" }, "…");
    const imagesSlot = el("dd", { id: "job-images" }, "…");
    const settledSlot = el("dd", { id: "job-settled" }, "…");
    const submittedSlot = el("dd", { id: "job-submitted" }, "…");
    const overall = progressCell(0, 1, "Progress of job " + id);
    overall.id = "job-progress";
    const progressText = el("p", { id: "job-progress-text", role: "status", "aria-live": "polite" }, "Loading…");
    const failures = el("div", { id: "job-failures" });
    const stores = el("div", { id: "job-stores" }, state("loading", "Loading stores…"));
    const results = el("div", { id: "job-results" }, state("loading", "Loading results…"));
    const eventsPre = el("pre", { class: "events", id: "job-events", tabindex: "0", "aria-label": "Raw events of job " + id });
    const eventsCount = el("span", { class: "muted" }, "");
    main.append(title,
      el("dl", { class: "facts" },
        el("div", {}, el("dt", {}, "Status"), statusSlot),
        el("div", {}, el("dt", {}, "Images"), imagesSlot),
        el("div", {}, el("dt", {}, "Processed / failed"), settledSlot),
        el("div", {}, el("dt", {}, "Submitted"), submittedSlot)),
      el("div", { class: "card" }, overall, progressText),
      el("h2", {}, "Failures"), failures,
      el("h2", {}, "Stores"), stores,
      el("h2", {}, "Images"), results,
      el("details", { id: "job-events-details" }, el("summary", {}, "Raw events ", eventsCount), eventsPre));
    focusHeading();

    let total = 0;
    let jobStatus = "ongoing";
    const settled = new Map(); // "visit/index" -> "processed" | "failed"
    let processed = 0, failed = 0;
    let eventLines = 0;
    let lastAnnounced = -1;

    function paint() {
      const done = processed + failed;
      setProgress(overall, done, total);
      imagesSlot.textContent = String(total);
      settledSlot.textContent = processed + " / " + failed;
      clear(statusSlot).append(badge(jobStatus));
      const p = pct(done, total);
      // Announce every 10% and the end, not every image.
      const step = jobStatus === "ongoing" ? Math.floor(p / 10) : 100;
      if (step !== lastAnnounced) {
        lastAnnounced = step;
        progressText.textContent = p + "% — " + done + " of " + total + " images settled" + (jobStatus !== "ongoing" ? "; job " + jobStatus : "");
      }
    }

    // Raw events: the last MAX_EVENT_LINES, written once per frame.
    let newLines = [];
    function addEventLine(ev) {
      eventLines++;
      newLines.push(ev.id + "  " + ev.type + "  " + (typeof ev.data === "string" ? ev.data : JSON.stringify(ev.data)) + "\n");
      if (newLines.length > MAX_EVENT_LINES) newLines = newLines.slice(-MAX_EVENT_LINES);
      flushLines();
    }
    const flushLines = perFrame(() => {
      for (const line of newLines) eventsPre.append(document.createTextNode(line));
      newLines = [];
      while (eventsPre.childNodes.length > MAX_EVENT_LINES) eventsPre.firstChild.remove();
      eventsCount.textContent = eventLines > MAX_EVENT_LINES ? "(" + eventLines + "; the last " + MAX_EVENT_LINES + " shown)" : "(" + eventLines + ")";
    });
    const paintSoon = perFrame(() => paint());

    async function loadFailures() {
      try {
        const st = await api("/api/status?jobid=" + encodeURIComponent(id), { signal });
        clear(failures);
        if (st.status === "failed" && st.error && st.error.length) {
          failures.append(el("ul", { class: "failures" }, st.error.map((f) =>
            el("li", {}, el("strong", { class: "mono" }, f.store_id), ": ", el("span", { class: "reason" }, f.error)))));
        } else if (st.status === "ongoing") {
          failures.append(el("p", { class: "muted" }, failed ? "Failed images so far are listed per store below; the job's list comes when it completes." : "None so far."));
        } else {
          failures.append(el("p", { class: "muted" }, "None: every image was processed."));
        }
      } catch (e) {
        if (signal.aborted || e instanceof AuthError) return;
        clear(failures).append(state("error", "Could not load the failures: " + e.message, loadFailures));
      }
    }

    // A store's row moves with each of its images' events; the table is
    // read again now and then (refreshDetail) for the failures' reasons.
    const storeRows = new Map();
    function bumpStore(storeId, type) {
      const r = storeRows.get(storeId);
      if (!r) return;
      const s = r.s;
      if (s.processed + s.failed >= s.images) return;
      if (type === "image_processed") s.processed++; else s.failed++;
      r.cells.processed.textContent = String(s.processed);
      r.cells.failed.textContent = String(s.failed);
      setProgress(r.cells.progress, s.processed + s.failed, s.images);
    }

    async function loadStores() {
      try {
        const js = await api("/api/jobs/" + encodeURIComponent(id) + "/stores", { signal });
        if (signal.aborted) return;
        storeRows.clear();
        clear(stores);
        if (!js.stores.length) { stores.append(state("empty", "This job has no visits.")); return; }
        stores.append(table("Stores of job " + id, ["Store", ["Name", "hide-narrow"], ["Area", "hide-narrow"], ["Visits", "num hide-narrow"], ["Images", "num hide-narrow"], ["Processed", "num hide-narrow"], ["Failed", "num"], "Progress", "First failure"],
          js.stores.map((s) => {
            const f = s.first_failure;
            const cells = { processed: el("td", { class: "num hide-narrow" }, String(s.processed)), failed: el("td", { class: "num" }, String(s.failed)),
              progress: progressCell(s.processed + s.failed, s.images, "Progress of store " + s.store_id) };
            storeRows.set(s.store_id, { s, cells });
            return el("tr", { "data-store": s.store_id },
              el("th", { scope: "row", class: "mono" }, s.store_id),
              el("td", { class: "hide-narrow" }, s.store_name || el("span", { class: "muted" }, "not in the store master")),
              el("td", { class: "hide-narrow" }, s.area_code || "—"),
              el("td", { class: "num hide-narrow" }, String(s.visits)),
              el("td", { class: "num hide-narrow" }, String(s.images)),
              cells.processed, cells.failed,
              el("td", {}, cells.progress),
              f ? el("td", { class: "reason url" }, f.reason, f.reason === "unknown store" ? "" : el("span", { class: "muted" }, " — " + f.url)) : el("td", {}, "—"));
          })));
      } catch (e) {
        if (signal.aborted || e instanceof AuthError) return;
        clear(stores).append(state("error", "Could not load the stores: " + e.message, loadStores));
      }
    }

    const resultCursors = [""];
    let resultIndex = 0;
    async function loadResults() {
      try {
        const q = new URLSearchParams({ jobid: id, limit: RESULT_PAGE });
        if (resultCursors[resultIndex]) q.set("cursor", resultCursors[resultIndex]);
        const page = await api("/api/results?" + q, { signal });
        if (signal.aborted) return;
        clear(results);
        if (!page.images.length) { results.append(state("empty", "No images.")); return; }
        results.append(table("Images " + (resultIndex * RESULT_PAGE + 1) + "–" + (resultIndex * RESULT_PAGE + page.images.length) + " of job " + id,
          [["Visit", "num"], ["#", "num"], "Store", "URL", "State", ["Width × height", "num"], ["Perimeter", "num"], "Error"],
          page.images.map((im) => el("tr", {},
            el("td", { class: "num" }, String(im.visit)),
            el("td", { class: "num" }, String(im.index)),
            el("td", { class: "mono" }, im.store_id),
            el("td", { class: "url" }, im.url),
            el("td", {}, badge(im.state)),
            el("td", { class: "num" }, im.state === "processed" ? im.width + " × " + im.height : "—"),
            el("td", { class: "num" }, im.state === "processed" ? String(im.perimeter) : "—"),
            el("td", { class: "reason" }, im.error || "")))));
        if (page.next_cursor) resultCursors[resultIndex + 1] = page.next_cursor;
        results.append(el("div", { class: "pager" },
          el("button", { type: "button", id: "results-prev", disabled: resultIndex === 0, onclick: () => { resultIndex--; loadResults(); } }, "← Previous"),
          el("span", { class: "muted" }, "Page " + (resultIndex + 1)),
          el("button", { type: "button", id: "results-next", disabled: !page.next_cursor, onclick: () => { resultIndex++; loadResults(); } }, "Next →")));
      } catch (e) {
        if (signal.aborted || e instanceof AuthError) return;
        clear(results).append(state("error", "Could not load the results: " + e.message, loadResults));
      }
    }
    const refreshDetail = throttle(() => { loadFailures(); loadStores(); if (resultIndex === 0) loadResults(); }, 1500);

    (async function start() {
      try {
        // Known job? The status answers 400 {} for a job that does not exist.
        await api("/api/status?jobid=" + encodeURIComponent(id), { signal });
      } catch (e) {
        if (signal.aborted || e instanceof AuthError) return;
        clear(main).append(el("h1", {}, "Job " + id), state("error", e.status === 400 ? "There is no job " + id + "." : "Could not load the job: " + e.message, e.status === 400 ? null : route));
        return;
      }
      stream("/api/jobs/" + encodeURIComponent(id) + "/events", (ev) => {
        addEventLine(ev);
        const d = ev.data || {};
        switch (ev.type) {
          case "job_submitted":
            total = (d.visits || []).reduce((n, v) => n + (v.image_url || []).length, 0);
            submittedSlot.textContent = fmtTime(d.submitted_at);
            break;
          case "image_processed":
          case "image_failed": {
            const key = d.visit + "/" + d.index;
            if (settled.has(key) || jobStatus !== "ongoing") break; // the first outcome wins
            settled.set(key, ev.type);
            if (ev.type === "image_processed") processed++; else failed++;
            bumpStore(d.store_id, ev.type);
            refreshDetail();
            break;
          }
          case "job_completed":
            jobStatus = d.status;
            processed = d.processed; failed = d.failed;
            paintSoon();
            loadFailures(); loadStores(); loadResults();
            return "stop";
        }
        paintSoon();
      }, signal, (on) => setLive(jobStatus !== "ongoing" ? null : on));
      loadFailures(); loadStores(); loadResults();
    })();
  }

  // ---- throughput ---------------------------------------------------------------

  const JOB_HISTORY = 150;

  // lineChart draws series ([{name, cls, values}]) over n points as an SVG
  // with a y axis from 0 to the largest value (counts: whole-number ticks).
  function lineChart(label, series, n, xLeft, xRight, unit, counts) {
    const W = 600, H = 200, L = 40, R = 8, T = 10, B = 22;
    const maxV = Math.max(1, ...series.flatMap((s) => s.values));
    const top = counts ? Math.max(4, Math.ceil(niceCeil(maxV) / 4) * 4) : niceCeil(maxV);
    const x = (i) => L + (n <= 1 ? 0 : (i * (W - L - R)) / (n - 1));
    const y = (v) => T + (H - T - B) * (1 - v / top);
    const g = svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label });
    for (let k = 0; k <= 4; k++) {
      const v = (top * k) / 4;
      g.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        svg("text", { class: "axis", x: L - 4, y: y(v) + 4, "text-anchor": "end" }, fmtNum(v)));
    }
    g.append(svg("text", { class: "axis", x: L, y: H - 5 }, xLeft), svg("text", { class: "axis", x: W - R, y: H - 5, "text-anchor": "end" }, xRight));
    for (const s of series) {
      if (!s.values.length) continue;
      const off = n - s.values.length;
      const pts = s.values.map((v, i) => x(i + off).toFixed(1) + "," + y(v).toFixed(1));
      if (s.area) g.append(svg("polygon", { class: "area-" + s.cls, points: x(off) + "," + y(0) + " " + pts.join(" ") + " " + x(n - 1) + "," + y(0) }));
      g.append(svg("polyline", { class: "line-" + s.cls, points: pts.join(" ") }));
    }
    if (unit) g.append(svg("text", { class: "axis", x: L + 4, y: T + 10 }, unit));
    return g;
  }
  function barChart(label, items) {
    const W = 600, rowH = 26, L = 150, R = 50;
    const H = Math.max(1, items.length) * rowH + 8;
    const maxV = Math.max(1, ...items.map((i) => i.count));
    const g = svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label });
    items.forEach((it, k) => {
      const yy = 4 + k * rowH;
      const w = Math.max(2, ((W - L - R) * it.count) / maxV);
      g.append(svg("text", { class: "label", x: L - 6, y: yy + 16, "text-anchor": "end" }, it.reason),
        svg("rect", { class: "bar", x: L, y: yy + 3, width: w.toFixed(1), height: rowH - 8, rx: 2 }),
        svg("text", { class: "label", x: L + w + 6, y: yy + 16 }, String(it.count)));
    });
    return g;
  }
  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  function fmtNum(v) { return v >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(1); }

  function throughputView(signal) {
    const facts = el("dl", { class: "facts", id: "stats-facts" });
    const rateFig = el("figure", { class: "card", id: "chart-rate" }, state("loading", "Loading…"));
    const jobsFig = el("figure", { class: "card", id: "chart-jobs" });
    const reasonsFig = el("figure", { class: "card", id: "chart-reasons" });
    main.append(el("h1", {}, "Throughput"), facts, el("div", { class: "charts" }, rateFig, jobsFig, reasonsFig));
    focusHeading();
    const history = []; // {active, queued} per poll since the page opened
    let timer = null;

    async function poll() {
      try {
        const s = await api("/api/stats", { signal });
        if (signal.aborted) return;
        setLive(true);
        const iv = s.interval_seconds || 1;
        const rate = s.samples.map((p) => (p.processed + p.failed) / iv);
        const failRate = s.samples.map((p) => p.failed / iv);
        // The last sample is still filling: the rate of the last full one.
        const now = rate.length > 1 ? rate[rate.length - 2] : 0;
        const windowImages = s.samples.reduce((n, p) => n + p.processed + p.failed, 0);
        const windowFailed = s.samples.reduce((n, p) => n + p.failed, 0);
        history.push(s.jobs);
        if (history.length > JOB_HISTORY) history.shift();
        const minutes = Math.round((s.samples.length * iv) / 60);
        clear(facts).append(
          el("div", {}, el("dt", {}, "Images/s now"), el("dd", { id: "stat-rate" }, fmtNum(now))),
          el("div", {}, el("dt", {}, "Images, last " + minutes + " min"), el("dd", {}, String(windowImages))),
          el("div", {}, el("dt", {}, "Failed, last " + minutes + " min"), el("dd", {}, String(windowFailed))),
          el("div", {}, el("dt", {}, "Jobs active"), el("dd", { id: "stat-active" }, String(s.jobs.active))),
          el("div", {}, el("dt", {}, "Jobs queued"), el("dd", { id: "stat-queued" }, String(s.jobs.queued))));
        clear(rateFig).append(
          el("ul", { class: "legend" }, el("li", {}, el("span", { class: "key processed" }), "settled"), el("li", {}, el("span", { class: "key failed" }), "failed")),
          lineChart("Images per second over the last " + minutes + " minutes; now " + fmtNum(now), [
            { name: "settled", cls: "processed", values: rate, area: true },
            { name: "failed", cls: "failed", values: failRate },
          ], rate.length, "−" + minutes + " min", "now", "images/s"),
          el("figcaption", {}, "Images settled per second, " + iv + "-second samples over the last " + minutes + " minutes (every instance's work, counted since this instance started)."));
        clear(jobsFig).append(
          el("ul", { class: "legend" }, el("li", {}, el("span", { class: "key active" }), "active"), el("li", {}, el("span", { class: "key queued" }), "queued")),
          lineChart("Jobs active " + s.jobs.active + ", queued " + s.jobs.queued, [
            { name: "active", cls: "active", values: history.map((h) => h.active) },
            { name: "queued", cls: "queued", values: history.map((h) => h.queued) },
          ], JOB_HISTORY, "since this page opened", "now", "jobs", true),
          el("figcaption", {}, "Unfinished jobs: being processed (active) and waiting for an owner (queued)."));
        clear(reasonsFig);
        if (s.failures_by_reason.length) {
          reasonsFig.append(barChart("Failed images by reason: " + s.failures_by_reason.map((r) => r.reason + " " + r.count).join(", "), s.failures_by_reason),
            el("figcaption", {}, "Failed images by reason, last " + minutes + " minutes."));
        } else {
          reasonsFig.append(state("empty", "No failed images in the last " + minutes + " minutes."));
        }
      } catch (e) {
        if (signal.aborted || e instanceof AuthError) return;
        setLive(false);
        if (!history.length) clear(rateFig).append(state("error", "Could not load the statistics: " + e.message));
      }
      if (!signal.aborted) timer = setTimeout(poll, 2000);
    }
    signal.addEventListener("abort", () => clearTimeout(timer));
    poll();
  }

  // ---- visits ---------------------------------------------------------------------

  const VISIT_PAGE = 10;

  function visitsView(params, signal) {
    const field = (id, label, attrs) => {
      const input = el("input", Object.assign({ id, name: id, value: params.get(id) || "" }, attrs));
      return [el("div", { class: "field" }, el("label", { for: id }, label), input), input];
    };
    const [areaF, area] = field("area", "Area code", { type: "text", inputmode: "numeric", autocomplete: "off" });
    const [storeF, store] = field("storeid", "Store id", { type: "text", autocomplete: "off" });
    const [fromF, from] = field("startdate", "From", { type: "date" });
    const [toF, to] = field("enddate", "To", { type: "date" });
    const status = el("select", { id: "vstatus", name: "status" }, ["", "processed", "failed", "pending"].map((s) => el("option", { value: s, selected: s === (params.get("status") || "") }, s || "any")));
    const results = el("div", { id: "visits-body" });
    const form = el("form", { class: "toolbar", role: "search", "aria-label": "Visits", onsubmit: (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const [k, v] of [["area", area.value], ["storeid", store.value], ["startdate", from.value], ["enddate", to.value], ["status", status.value]]) if (v.trim()) q.set(k, v.trim());
      q.set("search", "1");
      go("#/visits?" + q);
    } }, areaF, storeF, fromF, toF, el("div", { class: "field" }, el("label", { for: "vstatus" }, "Status"), status),
      el("button", { class: "primary", type: "submit", id: "visits-search" }, "Search"));
    main.append(el("h1", {}, "Visits"), form, results);
    focusHeading();
    if (!params.get("search")) {
      results.append(state("empty", "Choose an area, a store or dates, then Search. Leave them empty to list every visit, newest first."));
      return;
    }
    (async function load() {
      clear(results).append(state("loading", "Searching visits…"));
      const q = new URLSearchParams({ limit: VISIT_PAGE });
      for (const k of ["area", "storeid", "startdate", "enddate", "status", "cursor"]) if (params.get(k)) q.set(k, params.get(k));
      try {
        const page = await api("/api/visits?" + q, { signal });
        if (signal.aborted) return;
        clear(results);
        const pageNo = params.getAll("prev").length + 1;
        if (!page.visits.length) {
          results.append(state("empty", pageNo > 1 ? "No more visits." : "No visits match these filters."));
        } else {
          results.append(table("Visits, page " + pageNo + ", newest first", ["Visit time", "Store", ["Name", "hide-narrow"], ["Area", "hide-narrow"], "Job", ["Images", "num"], ["Processed", "num hide-narrow"], ["Failed", "num"], "Status"],
            page.visits.map((v) => el("tr", { "data-visit": v.job_id + "/" + v.visit },
              el("td", {}, v.visit_time),
              el("td", { class: "mono" }, v.store_id),
              el("td", { class: "hide-narrow" }, v.store_name || "—"),
              el("td", { class: "hide-narrow" }, v.area_code || "—"),
              el("td", {}, el("a", { href: "#/jobs/" + encodeURIComponent(v.job_id) }, v.job_id)),
              el("td", { class: "num" }, String(v.image_count)),
              el("td", { class: "num hide-narrow" }, String(v.processed)),
              el("td", { class: "num" }, String(v.failed)),
              el("td", {}, badge(v.status))))));
        }
        const pager = el("div", { class: "pager" });
        const prev = params.getAll("prev");
        if (params.get("cursor")) {
          const back = new URLSearchParams(params);
          back.delete("prev"); back.delete("cursor");
          const last = prev[prev.length - 1];
          if (last) back.set("cursor", last);
          for (const c of prev.slice(0, -1)) back.append("prev", c);
          pager.append(el("a", { href: "#/visits?" + back, id: "visits-prev" }, "← Previous"));
        }
        pager.append(el("span", { class: "muted", id: "visits-page" }, "Page " + pageNo));
        if (page.next_cursor) {
          const fwd = new URLSearchParams(params);
          fwd.set("cursor", page.next_cursor);
          fwd.append("prev", params.get("cursor") || "");
          pager.append(el("a", { href: "#/visits?" + fwd, id: "visits-next" }, "Next →"));
        }
        results.append(pager);
      } catch (e) {
        if (signal.aborted || e instanceof AuthError) return;
        clear(results).append(el("p", { class: "alert", role: "alert", id: "visits-error" }, e.message));
      }
    })();
  }

  // ---- submit -----------------------------------------------------------------------

  const EXAMPLE = JSON.stringify({
    count: 2,
    visits: [
      { store_id: "S00339218", image_url: ["https://www.gstatic.com/webp/gallery/2.jpg", "https://www.gstatic.com/webp/gallery/3.jpg"], visit_time: "2026-11-23T10:00:00Z" },
      { store_id: "S01408764", image_url: ["https://www.gstatic.com/webp/gallery/3.jpg"], visit_time: "2026-11-23T10:05:00Z" },
    ],
  }, null, 2);

  function submitView(signal) {
    const error = el("p", { class: "alert", id: "submit-error", role: "alert", "aria-live": "assertive" });
    const text = el("textarea", { id: "job-json", name: "job", spellcheck: "false", "aria-describedby": "job-help submit-error", required: true });
    const file = el("input", { id: "job-file", type: "file", accept: "application/json,.json" });
    const button = el("button", { class: "primary", type: "submit", id: "submit-button" }, "Submit job");
    file.addEventListener("change", async () => {
      const f = file.files && file.files[0];
      if (!f) return;
      text.value = await f.text();
      text.focus();
    });
    const form = el("form", { class: "card", onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      text.removeAttribute("aria-invalid");
      button.disabled = true;
      button.textContent = "Submitting…";
      try {
        const out = await api("/api/submit", { method: "POST", body: text.value, headers: { "Content-Type": "application/json" }, signal });
        go("#/jobs/" + out.job_id);
      } catch (err) {
        if (signal.aborted || err instanceof AuthError) return;
        error.textContent = (err.status ? err.status + ": " : "") + err.message;
        text.setAttribute("aria-invalid", "true");
        text.focus();
      } finally {
        button.disabled = false;
        button.textContent = "Submit job";
      }
    } },
      el("div", { class: "field" }, el("label", { for: "job-json" }, "Job JSON"), text),
      el("p", { id: "job-help", class: "muted" }, "The body of POST /api/submit: {\"count\": N, \"visits\": [{\"store_id\", \"image_url\": [...], \"visit_time\"}]}."),
      error,
      el("div", { class: "row" },
        button,
        el("button", { type: "button", onclick: () => { text.value = EXAMPLE; text.focus(); } }, "Fill in an example"),
        el("span", { class: "field" }, el("label", { for: "job-file" }, "…or upload a JSON file"), file)));
    main.append(el("h1", {}, "Submit a job"), form);
    focusHeading();
  }

  window.addEventListener("hashchange", route);
  route();
})();
