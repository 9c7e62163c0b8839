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

function startTaskList() {
  const form = document.getElementById("filters");
  const statusFilter = document.getElementById("status-filter");
  const idFilter = document.getElementById("id-filter");
  const body = document.querySelector("#tasks tbody");
  const empty = document.getElementById("empty");
  const refreshed = document.getElementById("refreshed");
  const limit = document.getElementById("tasks").dataset.limit;
  let timer = null;
  let latest = 0; // typing starts refreshes that may answer out of order: the last one wins

  async function refresh() {
    clearTimeout(timer);
    const mine = ++latest;
    const query = new URLSearchParams({ limit });
    if (statusFilter.value) query.set("status", statusFilter.value);
    try {
      const page = await getJson("/v1/tasks?" + query);
      if (mine !== latest) return;
      const needle = idFilter.value.trim().toLowerCase();
      const shown = page.tasks.filter((task) => task.id.toLowerCase().includes(needle));
      body.replaceChildren(...shown.map(taskRow));
      empty.hidden = shown.length > 0;
      refreshed.textContent = "updated " + new Date().toLocaleTimeString();
      refreshed.classList.remove("problem");
    } catch (error) {
      if (mine !== latest) return;
      refreshed.textContent = "not refreshed: " + error.message;
      refreshed.classList.add("problem");
    }
    timer = setTimeout(refresh, POLL_MS);
  }

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
  timer = setTimeout(refresh, POLL_MS);
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
});
