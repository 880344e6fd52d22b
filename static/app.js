// Makes the pages easier to follow; they are complete without it.
// - Every <time datetime> is shown in the browser's own time zone, with UTC in its title.
// - An action's page follows its status (/get_deploy_status, or /actions/ID/status): the state box changes when the state does (its text is a
//   polite live region, so a screen reader hears changes, not a clock), a countdown ticks beside it,
//   the Run button is disabled with the reason while the server would refuse, and the recent runs are
//   updated in place, so keyboard focus stays where it is.
// - The page of several actions follows GET /actions: each card's state and newest run.
// - A run's page follows its output live (Server-Sent Events, colours included) and shows how it ended.
"use strict";

// The CSS class of each history status, as the server's templates write it (RunStatus::kind).
const KINDS = {
  "Deploying": "running", "Deploy succeeded": "succeeded", "Deploy failed": "failed",
  "Timed out": "timed-out", "Interrupted": "interrupted", "Cancelled": "cancelled"
};
const SIGNALS = { 1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM" };

const pad = function (n) { return String(n).padStart(2, "0"); };

// "2026-11-25 19:43:36 UTC"
function utcText(date) {
  return date.getUTCFullYear() + "-" + pad(date.getUTCMonth() + 1) + "-" + pad(date.getUTCDate()) + " " +
    pad(date.getUTCHours()) + ":" + pad(date.getUTCMinutes()) + ":" + pad(date.getUTCSeconds()) + " UTC";
}

// "2026-11-25 20:43" in the browser's time zone, or "20:43" for a time of day today.
function localText(date, format) {
  const day = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
  const clock = pad(date.getHours()) + ":" + pad(date.getMinutes());
  if (format === "time") {
    const today = new Date();
    const sameDay = today.getFullYear() === date.getFullYear() && today.getMonth() === date.getMonth() &&
      today.getDate() === date.getDate();
    if (sameDay) return clock;
  }
  return day + " " + clock;
}

// Shows one <time datetime> in local time, keeping UTC in its title.
function localize(el) {
  const date = new Date(el.getAttribute("datetime"));
  if (Number.isNaN(date.getTime())) return;
  el.title = utcText(date);
  el.textContent = localText(date, el.dataset.format);
  el.classList.add("local");
}

function localizeAll(root) {
  root.querySelectorAll("time[datetime]").forEach(localize);
}

// A <time> for an ISO time, shown locally.
function timeElement(iso, format) {
  const el = document.createElement("time");
  el.setAttribute("datetime", iso);
  el.dataset.format = format;
  localize(el);
  return el;
}

// "20 s", "3 min", "2 h 5 min": a wait, rounded up, as the server writes it. Never "just now".
function span(seconds) {
  const s = Math.max(1, Math.ceil(seconds));
  if (s < 60) return s + " s";
  if (s < 5400) return Math.ceil(s / 60) + " min";
  const m = Math.ceil(s / 60);
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

// "850 ms", "12 s", "1 min 12 s", "2 h 5 min", as the server writes durations.
function duration(ms) {
  if (ms === undefined || ms === null) return "";
  const s = Math.floor(ms / 1000);
  if (s === 0) return ms + " ms";
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

localizeAll(document);

// An action's page.
(function () {
  const stateBox = document.getElementById("state");
  const table = document.getElementById("runs");
  if (!stateBox || !table) return;
  const PAGE_RUNS = 20;
  const LABELS = { idle: "Ready", running: "Running", cooling_down: "Cooling down", banned: "Blocked", paused: "Paused" };
  const label = stateBox.querySelector(".state-label");
  const detail = stateBox.querySelector(".state-detail");
  const countdown = stateBox.querySelector(".state-countdown");
  const button = document.getElementById("run-button");
  const wait = document.getElementById("run-wait");
  const field = document.getElementById("code");
  let serverOffset = 0; // server time minus local time, in ms
  // What the box shows: the state and its time to the second (the status answer's times may carry
  // fractions of a second the page's do not).
  const keyOf = function (kind, iso) {
    const time = Date.parse(iso);
    return kind + "|" + (Number.isNaN(time) ? "" : Math.floor(time / 1000));
  };
  let shown = keyOf(stateBox.dataset.state, stateBox.dataset.time);
  // A ban or pause comes with the page (the status answer is the same for everyone): it holds until its end.
  let blockedUntil = (stateBox.dataset.state === "banned" || stateBox.dataset.state === "paused")
    ? Date.parse(stateBox.dataset.time) : NaN;

  const now = function () { return Date.now() + serverOffset; };

  // The state box: rewritten only when the state changes, so the live region speaks only then.
  function showState(kind, text, iso, link) {
    const key = keyOf(kind, iso);
    if (key === shown) return;
    shown = key;
    stateBox.dataset.state = kind;
    stateBox.dataset.time = iso || "";
    stateBox.className = "state state-" + kind;
    label.textContent = LABELS[kind] || kind;
    detail.textContent = text;
    if (iso) {
      detail.append(" ", timeElement(iso, "time"));
    }
    const line = stateBox.querySelector(".state-line");
    let a = stateBox.querySelector(".state-link");
    if (link) {
      if (!a) {
        a = document.createElement("a");
        a.className = "state-link";
        a.textContent = "Watch the output";
        line.append(" ", a);
      }
      a.href = link;
    } else if (a) {
      a.remove();
    }
    const title = document.title.split(" - ");
    title[0] = LABELS[kind] || kind;
    document.title = title.join(" - ");
  }

  function renderState(status) {
    if (!Number.isNaN(blockedUntil) && now() < blockedUntil) return;
    blockedUntil = NaN;
    if (status.state === "running") {
      showState("running", "Run #" + status.run_id + " has been going since", status.running_since, "/runs/" + status.run_id);
    } else if (status.state === "cooling_down") {
      showState("cooling_down", "The next run is allowed at", status.next_run_at, null);
    } else {
      showState("idle", "Enter a code to start a run.", "", null);
    }
  }

  // Every second: the countdown beside the state and the reason the button is off.
  function tick() {
    const kind = stateBox.dataset.state;
    const end = Date.parse(stateBox.dataset.time);
    const counting = kind !== "idle" && kind !== "running" && !Number.isNaN(end);
    const left = counting ? (end - now()) / 1000 : 0;
    countdown.textContent = counting ? " (in " + span(left) + ")" : "";
    const busy = kind !== "idle";
    if (button) {
      if (busy && document.activeElement === button && field) field.focus();
      button.disabled = busy;
    }
    if (wait) {
      wait.hidden = !busy;
      if (kind === "running") wait.textContent = "A run is going: the button comes back when it has ended and the cooldown is over.";
      else if (busy) wait.textContent = (LABELS[kind] || kind) + ": wait " + span(left) + ".";
    }
    if (counting && left <= 0) refresh();
  }

  // The recent runs, updated in place: a row changes only when its run did.
  function renderRuns(history) {
    const body = table.tBodies[0];
    const runs = history.slice(-PAGE_RUNS).reverse();
    runs.forEach(function (run, index) {
      const key = (run.id ? "#" + run.id : "-") + "|" + run.time;
      let row = body.rows[index];
      if (!row || row.dataset.key !== key) {
        const existing = Array.prototype.find.call(body.rows, function (r) { return r.dataset.key === key; });
        row = existing || newRow(run, key);
        if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] || null);
      }
      const badge = row.querySelector(".badge");
      if (badge.textContent !== run.status) {
        badge.textContent = run.status;
        badge.className = "badge badge-" + (KINDS[run.status] || "failed");
      }
      const took = duration(run.duration_ms);
      if (row.cells[3].textContent !== took) row.cells[3].textContent = took;
    });
    while (body.rows.length > runs.length) body.deleteRow(body.rows.length - 1);
    table.hidden = runs.length === 0;
    const empty = document.getElementById("no-runs");
    if (empty) empty.hidden = runs.length !== 0;
  }

  function newRow(run, key) {
    const tr = document.createElement("tr");
    tr.dataset.key = key;
    const cell = function (child, className) {
      const td = document.createElement("td");
      if (className) td.className = className;
      if (child) td.append(child);
      tr.append(td);
    };
    if (run.id) {
      const a = document.createElement("a");
      a.href = "/runs/" + run.id;
      a.textContent = "#" + run.id;
      cell(a);
    } else {
      cell("-");
    }
    const badge = document.createElement("span");
    badge.className = "badge";
    cell(badge);
    cell(timeElement(run.time, "datetime"));
    cell("", "duration");
    return tr;
  }

  // The rows the server rendered, keyed as renderRuns keys them.
  Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
    const time = row.querySelector("time");
    const id = row.cells[0].textContent.trim();
    if (time) row.dataset.key = id + "|" + time.getAttribute("datetime");
  });

  let pending = null;
  function refresh() {
    if (pending) return pending;
    const url = stateBox.dataset.statusUrl || "/get_deploy_status";
    pending = fetch(url, { headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (status) {
        if (!status) return;
        serverOffset = Date.parse(status.now) - Date.now();
        renderState(status);
        renderRuns(status.history);
        tick();
      })
      .catch(function () { /* Offline for a moment: keep what is shown and try again later. */ })
      .finally(function () { pending = null; });
    return pending;
  }

  function loop() {
    refresh().then(function () {
      setTimeout(loop, stateBox.dataset.state === "idle" ? 10000 : 1000);
    });
  }

  // Runs rendered by the server carry the UTC start time in their key; local rendering keeps it.
  tick();
  setInterval(tick, 1000);
  setTimeout(loop, stateBox.dataset.state === "idle" ? 10000 : 1000);
})();

// The page of several actions: each card's state and newest run, from GET /actions, every 10 s, or every
// second while one runs or cools down.
(function () {
  const cards = document.querySelectorAll(".card[data-action]");
  if (cards.length === 0) return;
  const LABELS = { idle: "Ready", running: "Running", cooling_down: "Cooling down", banned: "Blocked", paused: "Paused" };

  // A card's state line, rewritten only when the state or its time changes.
  function renderState(box, action) {
    const iso = action.state === "running" ? action.running_since : action.state === "cooling_down" ? action.next_run_at : "";
    const key = action.state + "|" + (iso ? Math.floor(Date.parse(iso) / 1000) : "");
    const shown = box.dataset.state + "|" + (box.dataset.time ? Math.floor(Date.parse(box.dataset.time) / 1000) : "");
    // A ban or pause comes with the page, for this browser: it holds until the page is reloaded.
    if (key === shown || box.dataset.state === "banned" || box.dataset.state === "paused") return;
    box.dataset.state = action.state;
    box.dataset.time = iso || "";
    box.className = "state state-" + action.state;
    const parts = [];
    const label = document.createElement("strong");
    label.className = "state-label";
    label.textContent = LABELS[action.state] || action.state;
    const detail = document.createElement("span");
    detail.className = "state-detail";
    if (action.state === "running") {
      detail.append("Run #" + action.run_id + " has been going since ", timeElement(iso, "time"));
    } else if (action.state === "cooling_down") {
      detail.append("The next run is allowed at ", timeElement(iso, "time"));
    } else {
      detail.append("Enter a code to start a run.");
    }
    parts.push(label, " ", detail);
    if (iso) parts.push(".");
    if (action.state === "running") {
      const a = document.createElement("a");
      a.className = "state-link";
      a.href = "/runs/" + action.run_id;
      a.textContent = "Watch the output";
      parts.push(" ", a);
    }
    box.replaceChildren.apply(box, parts);
  }

  function renderLastRun(text, run) {
    const key = run ? (run.id || "-") + "|" + run.status : "";
    if (text.dataset.key === key) return;
    text.dataset.key = key;
    if (!run) {
      text.textContent = "No runs yet.";
      return;
    }
    const parts = ["Last run: "];
    if (run.id) {
      const a = document.createElement("a");
      a.href = "/runs/" + run.id;
      a.textContent = "#" + run.id;
      parts.push(a);
    } else {
      parts.push("-");
    }
    const badge = document.createElement("span");
    badge.className = "badge badge-" + (KINDS[run.status] || "failed");
    badge.textContent = run.status;
    parts.push(" ", badge, " ", timeElement(run.time, "datetime"));
    text.replaceChildren.apply(text, parts);
  }

  function busy() {
    return Array.prototype.some.call(cards, function (card) {
      return card.querySelector(".state").dataset.state !== "idle";
    });
  }

  function refresh() {
    return fetch("/actions", { headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : []; })
      .then(function (actions) {
        actions.forEach(function (action) {
          const card = document.getElementById("action-" + action.id);
          if (!card) return;
          renderState(card.querySelector(".state"), action);
          renderLastRun(card.querySelector(".last-run-text"), action.last_run);
        });
      })
      .catch(function () { /* Offline for a moment: keep what is shown and try again later. */ });
  }

  function loop() {
    refresh().then(function () { setTimeout(loop, busy() ? 1000 : 10000); });
  }
  setTimeout(loop, busy() ? 1000 : 10000);
})();

// A run's page: the elapsed time ticks, the output follows live, and the outcome shows when it ends.
(function () {
  const summary = document.getElementById("run");
  if (!summary || summary.dataset.running !== "true") return;
  const output = document.getElementById("output");
  const elapsed = document.getElementById("run-elapsed");
  const id = location.pathname.split("/").filter(Boolean)[1];
  // The server's "Running for" at load, counted on from there: no trust in the browser's clock needed.
  const loaded = Date.now();
  const shownAtLoad = elapsed ? Number(elapsed.dataset.ms) : NaN;

  const timer = setInterval(function () {
    if (elapsed && !Number.isNaN(shownAtLoad)) elapsed.textContent = duration(shownAtLoad + Date.now() - loaded);
  }, 1000);

  function show(rowId, on) {
    const row = document.getElementById(rowId);
    if (row) row.hidden = !on;
  }

  function set(elId, content) {
    const el = document.getElementById(elId);
    if (!el) return;
    if (typeof content === "string") el.textContent = content; else el.replaceChildren(content);
  }

  function end(run) {
    clearInterval(timer);
    const badge = document.getElementById("run-status");
    badge.textContent = run.status;
    badge.className = "badge badge-" + (KINDS[run.status] || "failed");
    show("row-elapsed", false);
    if (run.finished) set("run-finished", timeElement(run.finished, "datetime"));
    show("row-finished", Boolean(run.finished));
    set("run-duration", duration(run.duration_ms));
    show("row-duration", run.duration_ms !== undefined);
    let exit = "";
    if (run.exit_code !== undefined) exit = String(run.exit_code);
    else if (run.signal !== undefined) exit = "none (ended by signal " + run.signal + (SIGNALS[run.signal] ? ", " + SIGNALS[run.signal] : "") + ")";
    set("run-exit", exit);
    show("row-exit", exit !== "");
    const notes = [];
    if (run.cancelled_by) notes.push("Cancelled by " + run.cancelled_by + ".");
    if (run.error && !(run.signal !== undefined && run.error.indexOf("ended by signal") === 0)) notes.push(run.error);
    set("run-note", notes.join(" "));
    show("row-note", notes.length > 0);
    const cancel = document.querySelector("details.cancel");
    if (cancel) cancel.hidden = true;
    const flash = document.getElementById("flash");
    if (flash && flash.textContent === "Cancelling run #" + id + ".") {
      flash.textContent = "Run #" + id + " has ended: " + run.status + ".";
    }
    summary.dataset.running = "false";
    if (output) output.dataset.running = "false";
    document.title = "Run #" + id + ": " + run.status + " - authrun";
  }

  if (!output || !window.EventSource) {
    // No output to follow (it needs a code): ask for the run's record until it has ended.
    const poll = function () {
      fetch("/runs/" + id, { headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (run) {
          if (run && run.status !== "Deploying") end(run); else setTimeout(poll, 2000);
        })
        .catch(function () { setTimeout(poll, 5000); });
    };
    setTimeout(poll, 2000);
    return;
  }
  const source = new EventSource("/runs/" + id + "/events?after=" + (output.dataset.lastLine || "0"));

  function atBottom() {
    return document.documentElement.scrollHeight - window.scrollY - window.innerHeight < 40;
  }

  source.addEventListener("line", function (event) {
    const line = JSON.parse(event.data);
    const follow = atBottom();
    const row = document.createElement("span");
    row.className = "line " + (line.stream === "stderr" ? "stderr" : "stdout");
    (line.segments || [{ class: "", text: line.text }]).forEach(function (segment) {
      if (segment.class) {
        const styled = document.createElement("span");
        styled.className = segment.class;
        styled.textContent = segment.text;
        row.append(styled);
      } else {
        row.append(segment.text);
      }
    });
    row.append("\n");
    output.append(row);
    if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
  });

  source.addEventListener("end", function (event) {
    source.close();
    end(JSON.parse(event.data));
  });
})();
