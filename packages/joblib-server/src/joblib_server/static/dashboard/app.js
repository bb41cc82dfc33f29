// The dashboard: sign in with a token, then follow one room at a time live.
// Everything shown comes from the REST API and the room's Socket.IO events, as
// the signed-in identity may see them; every value is shown as text.

import { Api, Problem, roomPath } from "./api.js";
import { Chart } from "./chart.js";
import { Socket } from "./socket.js";

const TOKEN_KEY = "joblib.token";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const TASKS_SHOWN = 100;
const REFRESH_MS = 5000;
const DEPTH_JOBS = 8; // queue depths fetched for at most this many jobs

const $ = (selector) => document.querySelector(selector);
const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;

const token = () => sessionStorage.getItem(TOKEN_KEY);
const api = new Api(meta("joblib-api"), token);
const chart = new Chart($("#chart"), $("#legend"));

const state = {
  socket: null,
  rooms: [],
  room: null,
  joined: false,
  jobs: [],
  workers: new Map(), // worker id -> {id, last_heartbeat, job_count}
  tasks: new Map(), // task id -> task (REST shape; events merged in)
  rows: new Map(), // task id -> <tr>
  statuses: new Map(), // task id -> last status seen, for the queue depths
  depth: new Map(), // job full name -> pending tasks in the room
  refused: new Map(), // task id -> why its cancel was refused
  timers: [],
};

// --- signing in and out -----------------------------------------------------

function showSignIn(message = "") {
  $("#sign-in").hidden = false;
  $("#board").hidden = true;
  $("#sign-out").hidden = true;
  $("#whoami").textContent = "";
  $("#sign-in-error").textContent = message;
  $("#token").focus();
}

async function signIn() {
  try {
    await refreshRooms();
  } catch (error) {
    if (error instanceof Problem && error.status === 401) {
      signOut("That token was not accepted.");
      return;
    }
    showSignIn(`Cannot sign in: ${describe(error)}`);
    return;
  }
  $("#sign-in").hidden = true;
  $("#board").hidden = false;
  $("#sign-out").hidden = false;
  $("#whoami").textContent = "signed in";
  connect();
  state.timers.push(setInterval(everySecond, 1000));
  state.timers.push(setInterval(everyFewSeconds, REFRESH_MS));
  const wanted = roomFromHash() || (state.rooms[0] && state.rooms[0].room_id);
  if (wanted) selectRoom(wanted);
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.socket) state.socket.close();
  state.socket = null;
  state.timers.forEach(clearInterval);
  state.timers = [];
  state.room = null;
  setConnection("offline");
  showSignIn(message);
}

$("#sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("#token").value.trim();
  if (!value) return;
  $("#token").value = "";
  sessionStorage.setItem(TOKEN_KEY, value);
  signIn();
});

$("#sign-out").addEventListener("click", () => signOut());

// --- Socket.IO --------------------------------------------------------------

function setConnection(status) {
  const badge = $("#connection");
  badge.dataset.state = status;
  badge.textContent = status;
}

function connect() {
  const socket = new Socket(meta("joblib-socketio"), token);
  state.socket = socket;
  setConnection("connecting");
  socket.on("connect", () => {
    setConnection("live");
    if (state.room) {
      joinRoom(state.room);
      loadRoom(); // what happened while we were away
    }
  });
  socket.on("disconnect", () => {
    state.joined = false;
    $("#room").dataset.joined = "false";
    setConnection("reconnecting");
  });
  socket.on("retry", () => setConnection("reconnecting"));
  socket.on("refused", ({ message }) => {
    if (/unauthori[sz]ed/i.test(message)) signOut("That token was not accepted.");
    else setConnection(`refused: ${message}`);
  });
  socket.on("task_status_event", onTaskStatus);
  socket.on("task_progress_event", onTaskProgress);
  socket.on("jobs_invalidate", () => later("jobs", loadJobs, 200));
  socket.open();
}

async function joinRoom(room) {
  try {
    const answer = await state.socket.emit("join_room", { room_id: room });
    if (room !== state.room) return;
    if (answer && answer.ok) {
      state.joined = true;
      $("#room").dataset.joined = "true";
    } else {
      const problem = new Problem(answer.error.status, answer.error);
      showRoomProblem(`live updates refused: ${problem.describe()}`);
    }
  } catch (error) {
    // Disconnected meanwhile: the next connect joins again.
  }
}

function onTaskStatus(event) {
  if (event.room_id !== state.room) return;
  const known = state.tasks.get(event.id) || { payload: {} };
  const task = { ...known, ...event, job_name: event.name };
  state.tasks.set(event.id, task);
  track(event.id, event.name, event.status);
  if (event.status === "completed" && known.status !== "completed") {
    chart.completion();
    fetchTask(event.id); // the event carries no result
  }
  if (event.status !== "pending") state.refused.delete(event.id);
  renderTask(task);
}

function onTaskProgress(event) {
  const task = state.tasks.get(event.id);
  if (event.room_id !== state.room || !task) return;
  task.progress = event.progress;
  renderTask(task);
}

async function fetchTask(id) {
  try {
    const task = await api.get(`/tasks/${id}`);
    if (task.room_id !== state.room) return;
    state.tasks.set(id, { ...state.tasks.get(id), ...task });
    renderTask(state.tasks.get(id));
  } catch (error) {
    // It stays as the event showed it.
  }
}

// --- rooms ------------------------------------------------------------------

async function refreshRooms() {
  const page = await api.get("/rooms?limit=500");
  state.rooms = page.items;
  renderRooms();
}

function renderRooms() {
  const items = state.rooms.map((room) => {
    const li = document.createElement("li");
    li.dataset.room = room.room_id;
    li.classList.toggle("selected", room.room_id === state.room);
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = room.room_id;
    button.addEventListener("click", () => selectRoom(room.room_id));
    const counts = document.createElement("span");
    counts.className = "counts";
    counts.textContent = `${room.jobs} jobs · ${room.pending} pending · ${room.running} running`;
    li.append(button, counts);
    return li;
  });
  $("#rooms").replaceChildren(...items);
}

function roomFromHash() {
  const match = /^#room=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

window.addEventListener("hashchange", () => {
  const room = roomFromHash();
  if (room && room !== state.room && token()) selectRoom(room);
});

$("#open-room-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const room = $("#open-room").value.trim();
  if (room) selectRoom(room);
  $("#open-room").value = "";
});

function selectRoom(room) {
  const previous = state.room;
  if (previous && previous !== room && state.socket && state.socket.connected) {
    state.socket.emit("leave_room", { room_id: previous }).catch(() => {});
  }
  state.room = room;
  state.joined = false;
  state.jobs = [];
  state.workers.clear();
  state.tasks.clear();
  state.rows.clear();
  state.statuses.clear();
  state.depth.clear();
  state.refused.clear();
  chart.reset();
  history.replaceState(null, "", `#room=${encodeURIComponent(room)}`);
  $("#room").hidden = false;
  $("#room").dataset.joined = "false";
  $("#room-title").textContent = room;
  $("#tasks tbody").replaceChildren();
  $("#jobs tbody").replaceChildren();
  showRoomProblem("");
  renderRooms();
  if (state.socket && state.socket.connected) joinRoom(room);
  loadRoom();
}

function showRoomProblem(text) {
  $("#room-problem").textContent = text;
}

async function loadRoom() {
  const room = state.room;
  try {
    const [tasks] = await Promise.all([
      api.get(`${roomPath(room)}/tasks?limit=${TASKS_SHOWN}`),
      loadJobs(),
    ]);
    if (room !== state.room) return;
    showRoomProblem("");
    for (const task of tasks.items.reverse()) {
      state.tasks.set(task.id, task);
      state.statuses.set(task.id, task.status);
      renderTask(task);
    }
    await loadDepths();
  } catch (error) {
    if (room === state.room) showRoomProblem(describe(error));
  }
}

async function loadJobs() {
  const room = state.room;
  const [jobs, workers] = await Promise.all([
    api.get(`${roomPath(room)}/jobs?limit=500`),
    api.get(`${roomPath(room)}/workers?limit=500`),
  ]);
  if (room !== state.room) return;
  state.jobs = jobs.items;
  state.workers = new Map(workers.items.map((w) => [w.id, w]));
  renderJobs();
}

async function loadDepths() {
  const room = state.room;
  const jobs = state.jobs.slice(0, DEPTH_JOBS);
  const totals = await Promise.all(
    jobs.map((job) =>
      api
        .get(
          `${roomPath(room)}/jobs/${encodeURIComponent(job.full_name)}/tasks` +
            "?status=pending&limit=0",
        )
        .then((page) => page.total)
        .catch(() => null),
    ),
  );
  if (room !== state.room) return;
  jobs.forEach((job, i) => {
    if (totals[i] !== null) state.depth.set(job.full_name, totals[i]);
  });
}

/** Keep each job's pending count up to date from status events between loads. */
function track(id, job, status) {
  const previous = state.statuses.get(id);
  state.statuses.set(id, status);
  if (previous === status) return;
  // Nothing but a pending task is claimed: an unseen claimed one was pending.
  if (previous === "pending" || (previous === undefined && status === "claimed")) {
    state.depth.set(job, Math.max(0, (state.depth.get(job) || 0) - 1));
  }
  if (status === "pending") state.depth.set(job, (state.depth.get(job) || 0) + 1);
}

// --- rendering --------------------------------------------------------------

function cell(...children) {
  const td = document.createElement("td");
  td.append(...children);
  return td;
}

function text(tag, value, className) {
  const element = document.createElement(tag);
  element.textContent = value;
  if (className) element.className = className;
  return element;
}

function age(timestamp) {
  const seconds = Math.max(0, Math.round((api.now() - Date.parse(timestamp)) / 1000));
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

function renderJobs() {
  const rows = state.jobs.map((job) => {
    const tr = document.createElement("tr");
    tr.dataset.job = job.full_name;
    const workers = job.workers.map((id) => {
      const worker = state.workers.get(id);
      const span = text("span", "", "worker");
      span.dataset.workerId = id;
      span.title = id;
      const heartbeat = worker ? age(worker.last_heartbeat) : "?";
      span.textContent = `${id.slice(0, 8)} · ${heartbeat}`;
      if (worker) span.dataset.heartbeat = worker.last_heartbeat;
      return span;
    });
    tr.append(
      cell(text("span", job.full_name)),
      cell(...(workers.length ? workers : [text("span", "no worker", "muted")])),
    );
    return tr;
  });
  $("#jobs tbody").replaceChildren(...rows);
}

function tickAges() {
  for (const span of document.querySelectorAll("#jobs .worker[data-heartbeat]")) {
    span.textContent = `${span.dataset.workerId.slice(0, 8)} · ${age(span.dataset.heartbeat)}`;
  }
}

function progressCell(task) {
  const progress = task.progress;
  if (!progress) return cell();
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuenow", String(progress.current));
  bar.setAttribute("aria-valuemin", "0");
  const fill = document.createElement("div");
  fill.className = "fill";
  let label = String(progress.current);
  if (progress.total) {
    bar.setAttribute("aria-valuemax", String(progress.total));
    const share = Math.min(1, Math.max(0, progress.current / progress.total));
    fill.style.width = `${(share * 100).toFixed(1)}%`;
    label = `${progress.current} / ${progress.total}`;
  } else {
    bar.classList.add("indeterminate");
  }
  bar.append(fill);
  if (progress.message) label += ` ${progress.message}`;
  return cell(bar, text("span", label, "bar-label"));
}

function outcomeCell(task) {
  if (task.status === "completed") {
    const json = JSON.stringify(task.result ?? null);
    const code = text("code", json.length > 200 ? `${json.slice(0, 200)}…` : json);
    code.className = "result";
    code.title = json;
    return cell(code);
  }
  if (task.status === "failed") {
    const why = task.error_code ? `${task.error || "failed"} (${task.error_code})` : task.error;
    return cell(text("span", why || "failed", "error"));
  }
  return cell();
}

function actionCell(task) {
  if (TERMINAL.has(task.status)) return cell();
  const refused = state.refused.get(task.id);
  if (refused) return cell(text("span", refused, "problem"));
  const button = text("button", "Cancel", "cancel");
  button.type = "button";
  // Only the submitter or an admin may: the server says which (403 otherwise).
  button.title = "Cancel (the submitter or an admin)";
  button.addEventListener("click", () => cancel(task.id, button));
  return cell(button);
}

async function cancel(id, button) {
  button.disabled = true;
  try {
    const task = await api.patch(`/tasks/${id}`, { status: "cancelled" });
    if (task.room_id === state.room) {
      state.tasks.set(id, { ...state.tasks.get(id), ...task });
      track(id, task.job_name, task.status);
      renderTask(state.tasks.get(id));
    }
  } catch (error) {
    state.refused.set(id, `cannot cancel: ${describe(error)}`);
    const task = state.tasks.get(id);
    if (task) renderTask(task);
  }
}

function renderTask(task) {
  let tr = state.rows.get(task.id);
  const fresh = !tr;
  if (fresh) {
    tr = document.createElement("tr");
    tr.dataset.taskId = task.id;
    state.rows.set(task.id, tr);
  }
  tr.dataset.status = task.status;
  const status = text("span", task.status, "status");
  status.dataset.status = task.status;
  const id = text("code", task.id.slice(0, 8));
  id.title = task.id;
  tr.replaceChildren(
    cell(id),
    cell(text("span", task.job_name || "")),
    cell(status),
    cell(text("span", String(task.attempt ?? 1))),
    progressCell(task),
    outcomeCell(task),
    cell(text("span", new Date(task.created_at).toLocaleTimeString())),
    actionCell(task),
  );
  if (fresh) placeRows();
}

function placeRows() {
  const ordered = [...state.tasks.values()]
    .filter((task) => state.rows.has(task.id))
    .sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
  const body = $("#tasks tbody");
  for (const task of ordered.slice(TASKS_SHOWN)) {
    state.rows.get(task.id).remove();
    state.rows.delete(task.id);
    state.tasks.delete(task.id);
  }
  body.append(...ordered.slice(0, TASKS_SHOWN).map((task) => state.rows.get(task.id)));
}

// --- timers -----------------------------------------------------------------

const pending = new Map();

/** Run `action` once after `ms`, however often it is asked for meanwhile. */
function later(key, action, ms) {
  if (pending.has(key)) return;
  pending.set(
    key,
    setTimeout(() => {
      pending.delete(key);
      Promise.resolve(action()).catch(() => {});
    }, ms),
  );
}

function everySecond() {
  if (!state.room) return;
  chart.sample(state.depth);
  tickAges();
}

function everyFewSeconds() {
  // The rooms' counts: a slow read (about 85 ms over 300,000 tasks on SQLite),
  // so every few seconds rather than after every event.
  refreshRooms().catch((error) => {
    if (error instanceof Problem && error.status === 401) signOut("Signed out.");
  });
  if (!state.room) return;
  // Heartbeats send no event: ages and workers come from the lists.
  loadJobs()
    .then(loadDepths)
    .catch((error) => showRoomProblem(describe(error)));
}

function describe(error) {
  return error instanceof Problem ? error.describe() : String(error);
}

if (token()) signIn();
else showSignIn();
