// Keeps an action's page current without a reload: refreshes the state and the recent runs from its
// status answer (/get_deploy_status, or /actions/ID/status) while a run is going or cooling down, and shows times as "3 minutes ago".
// The page is complete without it.
"use strict";

// The CSS class of each history status, as the server's templates write it (RunStatus::kind).
const KINDS = {
  "Deploying": "running", "Deploy succeeded": "succeeded", "Deploy failed": "failed",
  "Timed out": "timed-out", "Interrupted": "interrupted", "Cancelled": "cancelled"
};

(function () {
  const stateBox = document.getElementById("state");
  const table = document.getElementById("runs");
  if (!stateBox || !table) return;
  const PAGE_RUNS = 20;
  let serverOffset = 0; // server time minus local time, in ms

  // "2026-11-25 19:43:36 UTC", as the server writes exact times.
  function exact(iso) {
    const time = new Date(iso);
    return Number.isNaN(time.getTime()) ? "" : time.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function relative(iso) {
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return "";
    const seconds = Math.round((Date.now() + serverOffset - then) / 1000);
    const ahead = seconds < 0;
    const s = Math.abs(seconds);
    let text;
    if (s < 45) text = s + " s";
    else if (s < 90 * 60) text = Math.round(s / 60) + " min";
    else if (s < 36 * 3600) text = Math.round(s / 3600) + " h";
    else text = Math.round(s / 86400) + " days";
    if (s < 5) return "just now";
    return ahead ? "in " + text : text + " ago";
  }

  function duration(ms) {
    if (ms === undefined || ms === null) return "";
    const s = Math.floor(ms / 1000);
    if (s === 0) return ms + " ms";
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  const LABELS = { idle: "Ready", running: "Running", cooling_down: "Cooling down" };

  function cell(row, child, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    if (typeof child === "string") td.textContent = child; else td.appendChild(child);
    row.appendChild(td);
  }

  function renderRuns(history) {
    const body = table.tBodies[0];
    const rows = history.slice(-PAGE_RUNS).reverse().map(function (run) {
      const tr = document.createElement("tr");
      if (run.id) {
        const a = document.createElement("a");
        a.href = "/runs/" + run.id;
        a.textContent = "#" + run.id;
        cell(tr, a);
      } else {
        cell(tr, "-");
      }
      const badge = document.createElement("span");
      badge.className = "badge badge-" + (KINDS[run.status] || "failed");
      badge.textContent = run.status;
      cell(tr, badge);
      const time = document.createElement("time");
      time.dateTime = run.time;
      time.title = exact(run.time);
      time.textContent = relative(run.time);
      cell(tr, time);
      cell(tr, duration(run.duration_ms), "duration");
      return tr;
    });
    body.replaceChildren.apply(body, rows);
    table.hidden = rows.length === 0;
    const empty = document.getElementById("no-runs");
    if (empty) empty.hidden = rows.length !== 0;
  }

  function renderState(status) {
    stateBox.dataset.state = status.state;
    stateBox.className = "state state-" + status.state;
    stateBox.querySelector(".state-label").textContent = LABELS[status.state] || status.state;
    const detail = stateBox.querySelector(".state-detail");
    let link = stateBox.querySelector(".state-link");
    if (status.state === "running") {
      if (!link) {
        link = document.createElement("a");
        link.className = "state-link";
        link.textContent = "Watch the output";
        stateBox.appendChild(link);
      }
      link.href = "/runs/" + status.run_id;
    } else if (link) {
      link.remove();
    }
    if (status.state === "running") {
      stateBox.dataset.time = status.running_since;
      detail.textContent = "Run #" + status.run_id + " started " + relative(status.running_since) + ".";
    } else if (status.state === "cooling_down") {
      stateBox.dataset.time = status.next_run_at;
      detail.textContent = "The next run is allowed " + relative(status.next_run_at) + ".";
    } else {
      stateBox.dataset.time = "";
      detail.textContent = "Enter a code to start a run.";
    }
    document.title = (LABELS[status.state] || status.state) + " - " + document.title.split(" - ").slice(1).join(" - ");
  }

  async function refresh() {
    try {
      const url = stateBox.dataset.statusUrl || "/get_deploy_status";
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const status = await response.json();
      serverOffset = Date.parse(status.now) - Date.now();
      renderState(status);
      renderRuns(status.history);
    } catch (_) {
      // Offline for a moment: keep what is shown and try again later.
    }
  }

  function tick() {
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      el.textContent = relative(el.getAttribute("datetime"));
    });
  }

  async function loop() {
    await refresh();
    tick();
    const busy = stateBox.dataset.state !== "idle";
    setTimeout(loop, busy ? 1000 : 10000);
  }

  tick();
  setTimeout(loop, stateBox.dataset.state !== "idle" ? 1000 : 10000);
})();

// The run page: follows the output live with Server-Sent Events and shows the final status when the
// run ends. Without it the page says to reload.
(function () {
  const output = document.getElementById("output");
  const summary = document.getElementById("run");
  if (!output || !summary || output.dataset.running !== "true" || !window.EventSource) return;
  const id = location.pathname.split("/").filter(Boolean)[1];
  const source = new EventSource("/runs/" + id + "/events?after=" + (output.dataset.lastLine || "0"));

  function atBottom() {
    return output.scrollHeight - output.scrollTop - output.clientHeight < 40;
  }

  source.addEventListener("line", function (event) {
    const line = JSON.parse(event.data);
    const follow = atBottom();
    const span = document.createElement("span");
    span.className = line.stream === "stderr" ? "stderr" : "stdout";
    span.textContent = line.text + "\n";
    output.appendChild(span);
    if (follow) output.scrollTop = output.scrollHeight;
  });

  source.addEventListener("end", function (event) {
    source.close();
    const run = JSON.parse(event.data);
    const badge = document.getElementById("run-status");
    badge.textContent = run.status;
    badge.className = "badge badge-" + (KINDS[run.status] || "failed");
    const set = function (id, text) {
      const el = document.getElementById(id);
      if (el) el.textContent = text;
    };
    // "2026-11-25 19:43:36 UTC", as the server writes the start time above it.
    const finished = run.finished ? new Date(run.finished) : null;
    set("run-finished", finished && !Number.isNaN(finished.getTime())
      ? finished.toISOString().slice(0, 19).replace("T", " ") + " UTC" : "");
    set("run-exit", run.exit_code === undefined ? "" : String(run.exit_code));
    const ms = run.duration_ms;
    if (ms !== undefined) {
      const s = Math.floor(ms / 1000);
      set("run-duration", s === 0 ? ms + " ms" : s < 60 ? s + " s" : Math.floor(s / 60) + " min " + (s % 60) + " s");
    }
    const cancel = document.querySelector(".cancel-form");
    if (cancel) cancel.hidden = true;
    summary.dataset.running = "false";
    document.title = "Run #" + id + ": " + run.status + " - authrun";
  });
})();

// The page of several actions: keeps each card's state and newest run current from GET /actions, every
// 10 s, or every second while one runs or cools down. The page is complete without it.
(function () {
  const cards = document.querySelectorAll(".card[data-action]");
  if (cards.length === 0) return;
  const LABELS = { idle: "Ready", running: "Running", cooling_down: "Cooling down" };

  // "19:43:36 UTC" and "2026-11-25 19:43:36 UTC", as the server writes times.
  function clock(iso) {
    const time = new Date(iso);
    return Number.isNaN(time.getTime()) ? "" : time.toISOString().slice(11, 19) + " UTC";
  }
  function exact(iso) {
    const time = new Date(iso);
    return Number.isNaN(time.getTime()) ? "" : time.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function renderState(box, action) {
    box.dataset.state = action.state;
    box.className = "state state-" + action.state;
    box.querySelector(".state-label").textContent = LABELS[action.state] || action.state;
    const detail = box.querySelector(".state-detail");
    let link = box.querySelector(".state-link");
    if (action.state === "running") {
      detail.textContent = "Run #" + action.run_id + " has been going since " + clock(action.running_since) + ".";
      if (!link) {
        link = document.createElement("a");
        link.className = "state-link";
        link.textContent = "Watch the output";
        box.appendChild(link);
      }
      link.href = "/runs/" + action.run_id;
    } else {
      detail.textContent = action.state === "cooling_down"
        ? "The next run is allowed at " + clock(action.next_run_at) + "."
        : "Enter a code to start a run.";
      if (link) link.remove();
    }
  }

  function renderLastRun(text, run) {
    if (!run) {
      text.textContent = "No runs yet.";
      return;
    }
    const parts = [document.createTextNode("Last run: ")];
    if (run.id) {
      const a = document.createElement("a");
      a.href = "/runs/" + run.id;
      a.textContent = "#" + run.id;
      parts.push(a);
    } else {
      parts.push(document.createTextNode("-"));
    }
    const badge = document.createElement("span");
    badge.className = "badge badge-" + (KINDS[run.status] || "failed");
    badge.textContent = run.status;
    const time = document.createElement("time");
    time.dateTime = run.time;
    time.title = exact(run.time);
    time.textContent = exact(run.time);
    parts.push(document.createTextNode(" "), badge, document.createTextNode(" "), time);
    text.replaceChildren.apply(text, parts);
  }

  async function refresh() {
    try {
      const response = await fetch("/actions", { headers: { Accept: "application/json" } });
      if (!response.ok) return false;
      const actions = await response.json();
      let busy = false;
      actions.forEach(function (action) {
        const card = document.getElementById("action-" + action.id);
        if (!card) return;
        renderState(card.querySelector(".state"), action);
        renderLastRun(card.querySelector(".last-run-text"), action.last_run);
        busy = busy || action.state !== "idle";
      });
      return busy;
    } catch (_) {
      return false; // Offline for a moment: keep what is shown and try again later.
    }
  }

  function anyBusy() {
    return Array.prototype.some.call(cards, function (card) {
      return card.querySelector(".state").dataset.state !== "idle";
    });
  }

  async function loop() {
    const busy = await refresh();
    setTimeout(loop, busy ? 1000 : 10000);
  }
  setTimeout(loop, anyBusy() ? 1000 : 10000);
})();
