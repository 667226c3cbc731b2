// The jobs panel: SanteDB's jobs screen, live. The table comes from ListJobs; states, progress and times
// then come from one WatchJobs stream (snapshot, then changes), resumed after a dropped connection with
// after_sequence. No polling: a job is re-read only when something about it changed (a run started or
// ended, its next fire time passed, or this page changed its schedules).
import { Code, client, hasToken, readError, setToken } from "./api";
import { announce, h } from "./dom";
import { JOB_STATE_TEXT, fmtDate, fmtTs, schedulesSummary } from "./format";
import { JobState, type Job, type JobStatus } from "./gen/xcron/v1/job_service_pb";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { openHistory } from "./history";
import { openRun } from "./run";
import { openSchedule } from "./schedule";

interface Row {
  job: Job;
  tr: HTMLTableRowElement;
  schedule: HTMLElement;
  badge: HTMLElement;
  progress: HTMLProgressElement;
  statusText: HTMLElement;
  lastStart: HTMLElement;
  lastFinish: HTMLElement;
  nextFire: HTMLElement;
  run: HTMLButtonElement;
  cancel: HTMLButtonElement;
  schedules: HTMLButtonElement;
  history: HTMLButtonElement;
  visible: boolean;
  painted: number;
}

const rows = new Map<string, Row>();
const byElement = new WeakMap<Element, Row>();
const dirty = new Set<Row>();
let roles = new Set<string>();
let frame = 0;
let lastSequence = 0n;
let watchAbort: AbortController | null = null;
const refreshTimers = new Map<string, number>();

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const can = (role: string): boolean => roles.has("admin") || roles.has(role);

function nextFire(job: Job): Date | null {
  if (job.schedulesPaused) return null;
  let best: Date | null = null;
  for (const s of job.schedules) {
    const t = s.nextFireTimes[0];
    if (t === undefined) continue;
    const d = timestampDate(t);
    if (best === null || d < best) best = d;
  }
  return best;
}

function setTime(el: HTMLElement, ts: JobStatus["lastStartTime"]): void {
  const text = fmtTs(ts);
  if (el.textContent !== text) {
    el.textContent = text;
    if (ts) el.setAttribute("datetime", timestampDate(ts).toISOString());
  }
}

function paintState(row: Row): void {
  const job = row.job;
  const stateName = JobState[job.state];
  if (row.tr.dataset.state !== stateName) {
    row.tr.dataset.state = stateName;
    row.badge.textContent = JOB_STATE_TEXT[job.state];
    row.badge.className = `badge state-${stateName}`;
  }
  // Only what changed is written: with a thousand rows changing ten times a second, every needless
  // write costs style and layout work.
  const running = job.state === JobState.RUNNING;
  if (row.progress.hidden === running) row.progress.hidden = !running;
  if (row.progress.value !== job.progress) {
    row.progress.value = job.progress;
    row.progress.setAttribute("aria-valuetext", `${Math.round(job.progress * 100)} %`);
  }
  if (row.statusText.textContent !== job.statusText) row.statusText.textContent = job.statusText;
  setTime(row.lastStart, job.lastStartTime);
  setTime(row.lastFinish, job.lastFinishTime);
  const cancellable = running && job.canCancel;
  if (row.cancel.hidden === cancellable) row.cancel.hidden = !cancellable;
  if (row.cancel.disabled === can("run")) row.cancel.disabled = !can("run");
}

function paintJob(row: Row): void {
  const job = row.job;
  row.schedule.textContent = schedulesSummary(job.schedules, job.schedulesPaused);
  row.tr.dataset.paused = String(job.schedulesPaused);
  const next = nextFire(job);
  row.nextFire.textContent = next ? fmtDate(next) : "";
  if (next) row.nextFire.setAttribute("datetime", next.toISOString());
  row.run.disabled = !can("run");
  row.run.title = can("run") ? "" : "needs the run role";
  row.schedules.title = can("schedule") ? "" : "read only: needs the schedule role to change";
  paintState(row);
  // When the next fire time passes, the job's plan moved on: re-read it then (a timer, not polling).
  window.clearTimeout(refreshTimers.get(job.id));
  if (next) {
    const wait = Math.min(Math.max(next.getTime() - Date.now() + 1000, 1000), 2 ** 31 - 1);
    refreshTimers.set(job.id, window.setTimeout(() => void refreshJob(job.id), wait));
  }
}

/** Takes a job's schedules from a GetJob/SetSchedule/Pause answer; its live state stays the stream's. */
function replaceJob(job: Job): void {
  const row = rows.get(job.id);
  if (row === undefined) return;
  row.job.schedules = job.schedules;
  row.job.schedulesPaused = job.schedulesPaused;
  paintJob(row);
}

async function refreshJob(id: string): Promise<void> {
  try {
    const res = await client.getJob({ jobId: id, nextFireTimeCount: 1 });
    if (res.job) replaceJob(res.job);
  } catch {
    /* the stream's next change will try again */
  }
}

function makeRow(job: Job): Row {
  const button = (text: string, cls: string): HTMLButtonElement =>
    h("button", { type: "button", class: cls, text, "aria-label": `${text} ${job.name}` });
  const badge = h("span", { class: "badge" });
  const progress = h("progress", { max: "1", "aria-label": `${job.name} progress` });
  const statusText = h("span", { class: "status-text" });
  const row: Row = {
    job,
    tr: h("tr", { "data-job-id": job.id, role: "row" }),
    schedule: h("td", { class: "schedule", "data-label": "Schedule", role: "cell" }),
    badge,
    progress,
    statusText,
    lastStart: h("time", { class: "last-start" }),
    lastFinish: h("time", { class: "last-finish" }),
    nextFire: h("time", { class: "next-fire" }),
    run: button("Run", "run"),
    cancel: button("Cancel", "cancel"),
    schedules: button("Schedule", "schedule"),
    history: button("History", "history"),
    visible: false,
    painted: 0,
  };
  row.tr.append(
    h(
      "th",
      { scope: "row", class: "job", role: "rowheader" },
      h("span", { class: "name", text: job.name }),
      h("span", { class: "id", text: job.id }),
      h("span", { class: "description", text: job.description }),
    ),
    row.schedule,
    h("td", { class: "state", "data-label": "State", role: "cell" }, badge, progress, statusText),
    h("td", { "data-label": "Last start", role: "cell" }, row.lastStart),
    h("td", { "data-label": "Last finish", role: "cell" }, row.lastFinish),
    h("td", { "data-label": "Next run", role: "cell" }, row.nextFire),
    h("td", { class: "actions", role: "cell" }, row.run, row.cancel, row.schedules, row.history),
  );
  row.run.addEventListener("click", () => openRun(row.job));
  row.cancel.addEventListener("click", async () => {
    try {
      await client.cancelJob({ jobId: row.job.id, executionId: row.job.executionId });
      announce(`Cancel requested for ${row.job.name}.`);
    } catch (err) {
      announce(readError(err).message, true);
    }
  });
  row.schedules.addEventListener("click", async () => {
    try {
      const res = await client.getJob({ jobId: row.job.id, nextFireTimeCount: 5 });
      openSchedule(res.job ?? row.job, replaceJob, can("schedule"));
    } catch (err) {
      announce(readError(err).message, true);
    }
  });
  row.history.addEventListener("click", () => openHistory(row.job));
  paintJob(row);
  byElement.set(row.tr, row);
  visibility.observe(row.tr);
  return row;
}

async function loadJobs(): Promise<void> {
  const jobs: Job[] = [];
  let pageToken = "";
  do {
    const res = await client.listJobs({ pageSize: 1000, pageToken });
    jobs.push(...res.jobs);
    pageToken = res.nextPageToken;
  } while (pageToken !== "");
  const tbody = $<HTMLTableElement>("jobs").tBodies[0];
  const fragment = document.createDocumentFragment();
  rows.clear();
  dirty.clear();
  visibility.disconnect();
  for (const job of jobs) {
    const row = makeRow(job);
    rows.set(job.id, row);
    fragment.append(row.tr);
  }
  tbody.replaceChildren(fragment);
  $("jobs").hidden = false;
  // The table is in the DOM; the next frame paints it (bench/panel.py reads this mark).
  requestAnimationFrame(() => performance.mark("xcron:jobs-painted"));
}

const FRAME_BUDGET_MS = 8;
const OFFSCREEN_EVERY_MS = 1000;
const OFFSCREEN_PER_FRAME = 50;

/** Takes in a WatchJobs message: the jobs' data at once, their rows at the next frame. */
function takeStatuses(statuses: JobStatus[]): void {
  for (const s of statuses) {
    const row = rows.get(s.jobId);
    if (row === undefined) continue;
    const job = row.job;
    const rerun =
      s.executionId !== job.executionId || (job.state === JobState.RUNNING) !== (s.state === JobState.RUNNING);
    job.state = s.state;
    job.progress = s.progress;
    job.statusText = s.statusText;
    job.lastStartTime = s.lastStartTime;
    job.lastFinishTime = s.lastFinishTime;
    job.executionId = s.executionId;
    dirty.add(row);
    // A run started or ended: its schedules' next fire time may have moved.
    if (rerun && job.schedules.length) void refreshJob(job.id);
  }
  if (frame === 0) frame = requestAnimationFrame(paintDirty);
}

/** Paints changed rows. On screen: every frame. Off screen (nothing to see, but screen readers and
 * find-in-page read them): at most once a second per row and a few rows per frame, since style and
 * layout of a thousand changing rows would take the main thread for ~100 ms a frame. */
function paintDirty(): void {
  frame = 0;
  const began = performance.now();
  let offscreen = 0;
  for (const row of dirty) {
    if (performance.now() - began > FRAME_BUDGET_MS) break;
    if (!row.visible) {
      if (offscreen >= OFFSCREEN_PER_FRAME || began - row.painted < OFFSCREEN_EVERY_MS) continue;
      offscreen += 1;
    }
    dirty.delete(row);
    row.painted = began;
    paintState(row);
  }
  if (dirty.size > 0) frame = requestAnimationFrame(paintDirty);
}

const visibility = new IntersectionObserver(
  (entries) => {
    for (const entry of entries) {
      const row = byElement.get(entry.target);
      if (row === undefined) continue;
      row.visible = entry.isIntersecting;
      if (row.visible && dirty.has(row) && frame === 0) frame = requestAnimationFrame(paintDirty);
    }
  },
  { rootMargin: "200px 0px" },
);

function setConnection(text: string, ok: boolean): void {
  const el = $("connection");
  el.textContent = text;
  el.className = ok ? "live" : "offline";
}

async function watch(): Promise<void> {
  watchAbort?.abort();
  const abort = new AbortController();
  watchAbort = abort;
  let delay = 500;
  while (!abort.signal.aborted) {
    try {
      const stream = client.watchJobs({ afterSequence: lastSequence }, { signal: abort.signal });
      for await (const msg of stream) {
        setConnection("live", true);
        delay = 500;
        takeStatuses(msg.statuses);
        lastSequence = msg.sequence;
      }
    } catch (err) {
      if (abort.signal.aborted) return;
      const e = readError(err);
      if (e.code === Code.Unauthenticated || e.code === Code.PermissionDenied) {
        setConnection(e.message, false);
        return;
      }
    }
    if (abort.signal.aborted) return;
    setConnection(`reconnecting in ${Math.round(delay / 1000)} s…`, false);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}

function showCaller(name: string, required: boolean): void {
  const box = $("caller");
  box.replaceChildren();
  if (!required) return;
  const out = h("button", {
    type: "button",
    text: "Sign out",
    onclick: () => {
      setToken(null);
      watchAbort?.abort();
      $("jobs").hidden = true;
      box.replaceChildren();
      void start();
    },
  });
  box.append(h("span", { text: `${name} (${[...roles].join(", ") || "no roles"})` }), out);
}

async function start(): Promise<void> {
  try {
    const caller = await client.getCaller({});
    roles = new Set(caller.roles);
    $("signin").hidden = true;
    showCaller(caller.name, caller.authenticationRequired);
    await loadJobs();
    if (!can("read")) {
      announce("Your token does not have the read role: the job states cannot be shown.", true);
      return;
    }
    void watch();
  } catch (err) {
    const e = readError(err);
    if (e.code === Code.Unauthenticated) {
      const form = $<HTMLFormElement>("signin");
      form.hidden = false;
      setConnection("signed out", false);
      $("signin-error").textContent = hasToken() ? e.message : "";
      setToken(null);
      $<HTMLInputElement>("signin-token").focus();
    } else if (e.code === Code.PermissionDenied) {
      setConnection("signed in", false);
      announce(`Your token may not read the jobs: ${e.message}`, true);
    } else {
      setConnection(`cannot reach the server: ${e.message}`, false);
    }
  }
}

$<HTMLFormElement>("signin").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>("signin-token");
  setToken(input.value.trim(), $<HTMLInputElement>("signin-remember").checked);
  input.value = "";
  void start();
});

void start();
