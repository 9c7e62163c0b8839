// The gateway's web view (asya_gateway/ui.py renders the pages; this keeps them live).
// Everything from a task is put on the page with textContent, never as markup.
"use strict";

const POLL_MS = 1500;
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function percent(progress) {
  return Math.round((Number(progress) || 0) * 100) + "%";
}

function routeActors(route) {
  return [...(route.prev || []), ...(route.curr ? [route.curr] : []), ...(route.next || [])];
}

// A key that expired or was revoked: back to the login form, then to this page.
function loginAgain() {
  const here = location.pathname + location.search;
  location.assign("/ui/login?next=" + encodeURIComponent(here));
}

async function getJson(url) {
  const response = await fetch(url, {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  if (response.status === 401) {
    loginAgain();
    throw new Error("the API key is not valid any more");
  }
  if (!response.ok) throw new Error(url + " answered " + response.status);
  return response.json();
}

// ------------------------------------------------------------------------- the list

// Polling redraws only the rows that changed: a row replaced under the pointer loses the
// click aimed at it, and a reader's selection with it.
function setRows(body, rows) {
  rows.forEach((row, index) => {
    const old = body.children[index];
    if (!old) body.append(row);
    else if (!old.isEqualNode(row)) old.replaceWith(row);
  });
  while (body.children.length > rows.length) body.lastElementChild.remove();
}

function taskRow(task) {
  const row = el("tr", { "data-id": task.id, "data-status": task.status });
  const link = el("a", { href: "/ui/tasks/" + encodeURIComponent(task.id) }, task.id);
  row.append(el("td", { class: "id" }));
  row.lastChild.append(link);
  row.append(el("td", { class: "route" }, routeActors(task.route).join(" → ")));
  const badge = el("span", { class: "badge " + task.status }, task.status);
  row.append(el("td", { class: "status" }));
  row.lastChild.append(badge);
  row.append(el("td", { class: "progress" }, percent(task.progress)));
  row.append(el("td", { class: "updated" }, task.updated_at));
  return row;
}

// A refresh that runs now and every POLL_MS: `load` fetches and returns what applies the
// answer. Typing starts refreshes that may answer out of order: only the newest applies, and
// `refreshed` says when it did or why it could not.
function poller(load, refreshed) {
  let timer = null;
  let latest = 0;
  return async function refresh() {
    clearTimeout(timer);
    const mine = ++latest;
    try {
      const apply = await load();
      if (mine !== latest) return;
      apply();
      refreshed.textContent = "updated " + new Date().toLocaleTimeString();
      refreshed.classList.remove("problem");
    } catch (error) {
      if (mine !== latest) return;
      refreshed.textContent = "not refreshed: " + error.message;
      refreshed.classList.add("problem");
    }
    timer = setTimeout(refresh, POLL_MS);
  };
}

function startTaskList() {
  const form = document.getElementById("filters");
  const statusFilter = document.getElementById("status-filter");
  const idFilter = document.getElementById("id-filter");
  const body = document.querySelector("#tasks tbody");
  const empty = document.getElementById("empty");
  const refreshed = document.getElementById("refreshed");
  const limit = document.getElementById("tasks").dataset.limit;

  const refresh = poller(async () => {
    const query = new URLSearchParams({ limit });
    if (statusFilter.value) query.set("status", statusFilter.value);
    const page = await getJson("/v1/tasks?" + query);
    return () => {
      const needle = idFilter.value.trim().toLowerCase();
      const shown = page.tasks.filter((task) => task.id.toLowerCase().includes(needle));
      setRows(body, shown.map(taskRow));
      empty.hidden = shown.length > 0;
    };
  }, refreshed);

  function filtersChanged() {
    const query = new URLSearchParams();
    if (statusFilter.value) query.set("status", statusFilter.value);
    if (idFilter.value.trim()) query.set("q", idFilter.value.trim());
    const search = query.toString();
    history.replaceState(null, "", "/ui" + (search ? "?" + search : ""));
    refresh();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filtersChanged();
  });
  statusFilter.addEventListener("change", filtersChanged);
  idFilter.addEventListener("input", filtersChanged);
  refresh();
}

// ------------------------------------------------------------------------- the sump

const SUMP_FILTERS = ["actor", "reason", "since"];
const ERROR_WIDTH = 60; // as the server cuts the error's first line

function cut(text) {
  return text.length <= ERROR_WIDTH ? text : text.slice(0, ERROR_WIDTH - 1) + "…";
}

// What a redrive answered: the outcome ({id, to, result, detail}) or the API's error shape.
function outcomeText(outcome) {
  if (outcome.result === "redriven" && !outcome.detail) return "redriven to " + outcome.to;
  return outcome.detail ? outcome.result + ": " + outcome.detail : outcome.result;
}

function startSumpPage() {
  const form = document.getElementById("filters");
  const inputs = SUMP_FILTERS.map((name) => document.getElementById(name + "-filter"));
  const body = document.querySelector("#sump tbody");
  const empty = document.getElementById("empty");
  const refreshed = document.getElementById("refreshed");
  // Rows redriven (or being redriven) from this page: a redriven record leaves the sump, but
  // its row stays, saying where it went, until the page is left.
  const settled = new Map(); // id -> {record, state, text}

  function row(record) {
    const tr = el("tr", { "data-id": record.id });
    const cells = [
      ["id", record.id], ["actor", record.actor], ["reason", record.reason],
      ["attempt", record.attempt === null ? "" : String(record.attempt)],
      ["failed", record.failed_at], ["error", cut(record.error)],
    ];
    for (const [name, text] of cells) tr.append(el("td", { class: name }, text));
    const action = el("td", { class: "action" });
    const button = el("button", { type: "button", class: "redrive", "data-id": record.id }, "Redrive");
    const outcome = el("span", { class: "outcome" });
    action.append(button, " ", outcome);
    tr.append(action);
    const done = settled.get(record.id);
    if (done) {
      tr.dataset.result = done.state;
      button.disabled = true;
      outcome.textContent = done.text;
      if (done.state !== "redriven" && done.state !== "sending") {
        outcome.classList.add("problem");
        button.disabled = false;
      }
    }
    return tr;
  }

  function render(records) {
    const ids = new Set(records.map((record) => record.id));
    const gone = [...settled.values()].filter((done) => !ids.has(done.record.id));
    const shown = [...gone.map((done) => done.record), ...records];
    setRows(body, shown.map(row));
    empty.hidden = shown.length > 0;
  }

  let records = [];
  const refresh = poller(async () => {
    const query = new URLSearchParams();
    SUMP_FILTERS.forEach((name, index) => {
      if (inputs[index].value.trim()) query.set(name, inputs[index].value.trim());
    });
    const page = await getJson("/v1/sump?" + query);
    return () => {
      records = page.records;
      render(records);
    };
  }, refreshed);

  async function redrive(id) {
    const record = records.find((item) => item.id === id);
    if (!record) return;
    settled.set(id, { record, state: "sending", text: "sending…" });
    render(records);
    let state, text;
    try {
      const response = await fetch("/v1/sump/" + encodeURIComponent(id) + "/redrive", {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (response.status === 401) {
        loginAgain();
        return;
      }
      const answer = await response.json();
      if (answer.error) {
        [state, text] = ["failed", answer.error.message];
      } else {
        state = answer.result === "redriven" && !answer.detail ? "redriven" : answer.result;
        text = outcomeText(answer);
      }
    } catch (error) {
      [state, text] = ["failed", "not sent: " + error.message];
    }
    settled.set(id, { record, state, text });
    render(records);
  }

  body.addEventListener("click", (event) => {
    const button = event.target.closest("button.redrive");
    if (button && !button.disabled) redrive(button.dataset.id);
  });

  function filtersChanged() {
    const query = new URLSearchParams();
    SUMP_FILTERS.forEach((name, index) => {
      if (inputs[index].value.trim()) query.set(name, inputs[index].value.trim());
    });
    const search = query.toString();
    history.replaceState(null, "", "/ui/sump" + (search ? "?" + search : ""));
    refresh();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filtersChanged();
  });
  // The rows the server rendered, until the first poll answers.
  records = [...body.querySelectorAll("tr")].map((tr) => ({
    id: tr.dataset.id,
    actor: tr.querySelector(".actor").textContent,
    reason: tr.querySelector(".reason").textContent,
    attempt: tr.querySelector(".attempt").textContent === "" ? null : Number(tr.querySelector(".attempt").textContent),
    failed_at: tr.querySelector(".failed").textContent,
    error: tr.querySelector(".error").textContent,
  }));
  refresh();
}

// ------------------------------------------------------------------------- one task

function routeSteps(route, status) {
  const currState = status === "succeeded" ? "done" : "current";
  return [
    ...(route.prev || []).map((actor) => [actor, "done"]),
    ...(route.curr ? [[route.curr, currState]] : []),
    ...(route.next || []).map((actor) => [actor, "next"]),
  ];
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function renderTask(task) {
  const status = document.getElementById("status");
  status.textContent = task.status;
  status.className = "badge " + task.status;
  document.getElementById("actor").textContent = task.actor || "—";
  document.getElementById("progress").textContent = percent(task.progress);
  document.getElementById("updated").textContent = task.updated_at;
  document.getElementById("deadline").textContent = task.deadline_at || "—";
  document.getElementById("reason").textContent = task.reason || "—";
  document.getElementById("route").replaceChildren(
    ...routeSteps(task.route, task.status).map(([actor, state]) =>
      el("li", { class: state, "data-state": state }, actor),
    ),
  );
  const outcome = [];
  const section = (title, id, value) => outcome.push(el("h2", {}, title), el("pre", { id }, json(value)));
  if (task.pause) section("Waiting for input", "pause", task.pause);
  if (task.join) section("Join", "join", task.join);
  if (task.error !== null && task.error !== undefined) section("Error", "error", task.error);
  if (task.status === "succeeded") section("Result", "result", task.result);
  document.getElementById("outcome").replaceChildren(...outcome);
}

function describe(kind, data) {
  if (kind === "status") {
    const actor = data.actor ? " at " + data.actor : "";
    return data.status + actor + " (" + percent(data.progress) + ")";
  }
  return JSON.stringify(data);
}

function startTaskPage() {
  const log = document.getElementById("events");
  const state = document.getElementById("stream-state");
  const taskId = document.getElementById("task-id").textContent;
  const taskUrl = "/v1/tasks/" + encodeURIComponent(taskId);
  const stream = new EventSource(log.dataset.url);

  function append(kind, data) {
    const item = el("li", { class: "event " + kind, "data-kind": kind });
    if (kind === "status") item.dataset.status = data.status;
    item.append(
      el("time", {}, new Date().toLocaleTimeString()),
      el("span", { class: "kind" }, kind),
      el("span", { class: "data" }, describe(kind, data)),
    );
    log.append(item);
  }

  stream.addEventListener("open", () => {
    state.textContent = "live";
  });
  stream.addEventListener("status", async (event) => {
    const data = JSON.parse(event.data);
    append("status", data);
    if (TERMINAL.has(data.status)) {
      // The server ends the stream here; closing first keeps EventSource from reconnecting.
      stream.close();
      state.textContent = "ended";
    }
    try {
      // A change carries only status, actor and progress: the route and result come
      // from the task itself.
      renderTask(await getJson(taskUrl));
    } catch (error) {
      state.textContent = "not refreshed: " + error.message;
    }
  });
  stream.addEventListener("fly", (event) => append("fly", JSON.parse(event.data)));
  stream.addEventListener("error", () => {
    if (stream.readyState === EventSource.CLOSED) {
      state.textContent = "closed: reload the page (or log in again)";
    } else if (state.textContent !== "ended") {
      state.textContent = "reconnecting…";
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "tasks") startTaskList();
  if (page === "task") startTaskPage();
  if (page === "sump") startSumpPage();
});
