// Schedule: interval and calendar schedules (SanteDB's two kinds), cron with a time zone, end date,
// misfire and overlap policies, several schedules per job, pause and resume. While typing, the next fire
// times come from the server (SetSchedule with validate_only), so what is shown is what will run.
import { clone, create } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { client, readError } from "./api";
import { announce, h, modal, uid } from "./dom";
import { DAYS, browserZone, fmtTs, seconds, zonedTime, zones } from "./format";
import {
  CalendarSpecSchema,
  CronSpecSchema,
  IntervalSpecSchema,
  MisfirePolicy,
  OverlapPolicy,
  ScheduleSchema,
  TimeOfDaySchema,
  type Job,
  type Schedule,
} from "./gen/xcron/v1/job_service_pb";
import { paramFields, readParams, showParamErrors, type ParamField } from "./params";

const UNITS: [string, number][] = [
  ["seconds", 1],
  ["minutes", 60],
  ["hours", 3600],
  ["days", 86400],
];

interface Editor {
  element: HTMLFieldSetElement;
  build(): Schedule | null;
  preview: HTMLOListElement;
  error: HTMLElement;
  params: ParamField[];
  inputs: Map<string, HTMLElement>;
}

function labelled(label: string, input: HTMLElement, hint = ""): HTMLElement {
  const id = input.id || uid("f");
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id, text: label }), input, hint ? h("span", { class: "hint", text: hint }) : null);
}

function select(name: string, options: [string, string][], value: string): HTMLSelectElement {
  const el = h("select", { name });
  for (const [v, text] of options) el.append(h("option", { value: v, text }));
  el.value = value;
  return el;
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}

function wallParts(d: Date, zone: string): { date: string; time: string } {
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: zone || undefined,
    hourCycle: "h23",
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
  }).formatToParts(d);
  const get = (t: string): string => parts.find((p) => p.type === t)?.value ?? "00";
  return { date: `${get("year")}-${get("month")}-${get("day")}`, time: `${get("hour")}:${get("minute")}` };
}

function editor(job: Job, index: number, base: Schedule, onChange: () => void, onRemove: (e: Editor) => void): Editor {
  const inputs = new Map<string, HTMLElement>();
  const zone = base.timeZone || "";
  const kind = select(
    "kind",
    [
      ["interval", "Interval (every N)"],
      ["calendar", "Calendar (days and time)"],
      ["cron", "Cron expression"],
    ],
    base.spec.case ?? "interval",
  );
  // interval
  const every = seconds(base.spec.case === "interval" ? base.spec.value.interval : undefined) || 3600;
  const [unitName, unitSize] = [...UNITS].reverse().find(([, size]) => every % size === 0) ?? UNITS[0];
  const amount = h("input", { type: "number", min: "1", step: "1", name: "every", value: String(every / unitSize) });
  const unit = select("unit", UNITS.map(([n, s]) => [String(s), n]), String(unitSize));
  void unitName;
  const intervalBox = h("div", { class: "kind-interval" }, labelled("Every", amount), labelled("Unit", unit));
  // calendar
  const cal = base.spec.case === "calendar" ? base.spec.value : create(CalendarSpecSchema, { timeOfDay: { hours: 23 } });
  const dayBoxes = DAYS.map(([day, name]) => {
    const box = h("input", { type: "checkbox", name: "day", value: String(day), id: uid(`day-${name}`) });
    box.checked = cal.days.includes(day);
    return { day, box, label: h("label", { class: "inline", for: box.id }, box, ` ${name}`) };
  });
  const t = cal.timeOfDay;
  const time = h("input", { type: "time", name: "time", value: `${pad(t?.hours ?? 0)}:${pad(t?.minutes ?? 0)}` });
  const start = h("input", { type: "date", name: "start" });
  if (base.startTime && base.spec.case === "calendar") start.value = wallParts(timestampDate(base.startTime), zone).date;
  const startOriginal = start.value;
  const calendarBox = h(
    "div",
    { class: "kind-calendar" },
    h("fieldset", { class: "days" }, h("legend", { text: "Days (none: once)" }), ...dayBoxes.map((d) => d.label)),
    labelled("Time", time),
    labelled("Start date", start, "optional: not before this day"),
  );
  // cron
  const cron = h("input", {
    type: "text",
    name: "cron",
    spellcheck: "false",
    value: base.spec.case === "cron" ? base.spec.value.expression : "0 3 * * *",
  });
  const cronBox = h("div", { class: "kind-cron" }, labelled("Cron expression", cron, "minute hour day month weekday [second]"));
  // common
  const tz = h("input", { type: "text", name: "time_zone", list: "xcron-zones", value: zone, placeholder: "server's zone" });
  const end = h("input", { type: "datetime-local", name: "end" });
  if (base.endTime) {
    const p = wallParts(timestampDate(base.endTime), zone);
    end.value = `${p.date}T${p.time}`;
  }
  const misfire = select(
    "misfire",
    [
      [String(MisfirePolicy.RUN_ONCE), "run once now"],
      [String(MisfirePolicy.SKIP), "skip"],
      [String(MisfirePolicy.RUN_ALL), "run each"],
    ],
    String(base.misfirePolicy || MisfirePolicy.RUN_ONCE),
  );
  const overlap = select(
    "overlap",
    [
      [String(OverlapPolicy.SKIP), "skip it"],
      [String(OverlapPolicy.BUFFER_ONE), "run once it ends"],
      [String(OverlapPolicy.CANCEL_OTHER), "cancel the running one"],
    ],
    String(base.overlapPolicy || OverlapPolicy.SKIP),
  );
  const params = paramFields(job.parameters, base.parameters, `s${index}`);
  const preview = h("ol", { class: "preview", "aria-label": "Next fire times (computed by the server)" });
  const error = h("p", { class: "field-error schedule-error", "aria-live": "polite" });
  inputs.set("interval", amount).set("calendar", time).set("cron", cron).set("time_zone", tz).set("end_time", end);
  inputs.set("start_time", start).set("misfire_policy", misfire).set("overlap_policy", overlap);
  const legend = h("legend", { text: `Schedule ${index + 1}` });
  const remove = h("button", { type: "button", class: "remove", text: "Remove this schedule" });
  const element = h(
    "fieldset",
    { class: "schedule-editor" },
    legend,
    labelled("Kind", kind),
    intervalBox,
    calendarBox,
    cronBox,
    labelled("Time zone", tz, "IANA name, e.g. Europe/Paris"),
    labelled("End", end, "optional: no runs after this"),
    labelled("Missed runs", misfire),
    labelled("When still running", overlap),
    h("fieldset", { class: "schedule-params" }, h("legend", { text: "Parameters" }), params.element),
    h("div", { class: "preview-box" }, h("h3", { text: "Next runs" }), preview),
    error,
    remove,
  );
  const showKind = (): void => {
    intervalBox.hidden = kind.value !== "interval";
    calendarBox.hidden = kind.value !== "calendar";
    cronBox.hidden = kind.value !== "cron";
  };
  showKind();
  element.addEventListener("input", () => {
    showKind();
    onChange();
  });
  element.addEventListener("change", () => {
    showKind();
    onChange();
  });
  const ed: Editor = {
    element,
    preview,
    error,
    params: params.fields,
    inputs,
    build(): Schedule | null {
      const s = clone(ScheduleSchema, base);
      s.nextFireTimes = [];
      s.lastFireTime = undefined;
      s.overlapSkippedCount = 0n;
      s.misfireSkippedCount = 0n;
      s.timeZone = tz.value.trim();
      const zoneName = s.timeZone || browserZone();
      if (kind.value === "interval") {
        const n = Number(amount.value);
        s.spec = {
          case: "interval",
          value: create(IntervalSpecSchema, { interval: durationFromMs(Math.round(n * Number(unit.value)) * 1000) }),
        };
        if (base.spec.case !== "interval") s.startTime = undefined;
      } else if (kind.value === "calendar") {
        const [hh, mm] = (time.value || "00:00").split(":").map(Number);
        s.spec = {
          case: "calendar",
          value: create(CalendarSpecSchema, {
            days: dayBoxes.filter((d) => d.box.checked).map((d) => d.day),
            timeOfDay: create(TimeOfDaySchema, { hours: hh, minutes: mm }),
          }),
        };
        if (start.value === "") s.startTime = undefined;
        else if (start.value !== startOriginal || base.spec.case !== "calendar") {
          const [y, mo, d] = start.value.split("-").map(Number);
          s.startTime = timestampFromDate(zonedTime(y, mo, d, 0, 0, zoneName));
        }
      } else {
        s.spec = { case: "cron", value: create(CronSpecSchema, { expression: cron.value.trim() }) };
        if (base.spec.case !== "cron") s.startTime = undefined;
      }
      if (end.value === "") s.endTime = undefined;
      else {
        const [date, hm] = end.value.split("T");
        const [y, mo, d] = date.split("-").map(Number);
        const [hh, mm] = hm.split(":").map(Number);
        s.endTime = timestampFromDate(zonedTime(y, mo, d, hh, mm, zoneName));
      }
      s.misfirePolicy = Number(misfire.value);
      s.overlapPolicy = Number(overlap.value);
      const read = readParams(params.fields);
      if (showParamErrors(params.fields, read.errors)) return null;
      s.parameters = read.values;
      return s;
    },
  };
  remove.addEventListener("click", () => onRemove(ed));
  return ed;
}

export function openSchedule(initial: Job, onSaved: (job: Job) => void, canSchedule: boolean): void {
  let job = initial;
  const { dialog, body } = modal(`Schedule ${job.name}`, "schedule-dialog");
  if (document.getElementById("xcron-zones") === null) {
    document.body.append(h("datalist", { id: "xcron-zones" }, ...zones().map((z) => h("option", { value: z }))));
  }
  const list = h("div", { class: "editors" });
  const status = h("p", { class: "schedule-status", role: "status" });
  const formError = h("p", { class: "form-error", role: "alert" });
  const add = h("button", { type: "button", text: "Add a schedule" });
  const save = h("button", { type: "submit", class: "primary", text: "Save" });
  const pause = h("button", { type: "button", class: "pause" });
  const form = h(
    "form",
    { novalidate: true },
    status,
    list,
    formError,
    h("div", { class: "buttons" }, add, save, pause, h("button", { type: "button", text: "Close", onclick: () => dialog.close() })),
  );
  body.append(form);
  let editors: Editor[] = [];
  let timer = 0;
  let generation = 0;

  const renumber = (): void => {
    editors.forEach((e, i) => {
      const legend = e.element.querySelector("legend");
      if (legend) legend.textContent = `Schedule ${i + 1}`;
    });
    status.textContent = editors.length === 0 ? "No schedules: saving clears them (the job then runs only on demand)." : "";
  };
  const showPaused = (): void => {
    pause.textContent = job.schedulesPaused ? "Resume schedules" : "Pause schedules";
    pause.setAttribute("aria-pressed", String(job.schedulesPaused));
  };
  const build = (): Schedule[] | null => {
    const out: Schedule[] = [];
    for (const e of editors) {
      const s = e.build();
      if (s === null) return null;
      out.push(s);
    }
    return out;
  };
  const showErrors = (fields: Map<string, string>, message: string): void => {
    const general: string[] = [];
    editors.forEach((e) => {
      e.error.textContent = "";
      for (const el of e.inputs.values()) el.removeAttribute("aria-invalid");
    });
    const paramErrors = editors.map(() => new Map<string, string>());
    for (const [field, text] of fields) {
      const m = /^schedules\[(\d+)\]\.?(.*)$/.exec(field);
      const e = m ? editors[Number(m[1])] : undefined;
      if (!m || !e) {
        general.push(field ? `${field}: ${text}` : text);
        continue;
      }
      const sub = m[2];
      if (sub.startsWith("parameters.")) {
        paramErrors[Number(m[1])].set(sub.slice("parameters.".length), text);
        continue;
      }
      e.error.textContent = (e.error.textContent ? e.error.textContent + " " : "") + text;
      const key = [...e.inputs.keys()].find((k) => sub.startsWith(k));
      if (key) e.inputs.get(key)?.setAttribute("aria-invalid", "true");
    }
    editors.forEach((e, i) => {
      for (const f of e.params) {
        f.error.textContent = paramErrors[i].get(f.decl.name) ?? "";
      }
    });
    formError.textContent = fields.size === 0 ? message : general.join("; ");
  };
  const runPreview = async (): Promise<void> => {
    const schedules = build();
    if (schedules === null) return;
    const mine = ++generation;
    try {
      const res = await client.setSchedule({ jobId: job.id, schedules, validateOnly: true });
      if (mine !== generation) return;
      showErrors(new Map(), "");
      res.job?.schedules.forEach((s, i) => {
        const e = editors[i];
        if (!e) return;
        e.preview.replaceChildren(...s.nextFireTimes.map((t) => h("li", {}, h("time", { text: fmtTs(t) }))));
        if (s.nextFireTimes.length === 0) e.preview.append(h("li", { text: "never (it has ended)" }));
      });
    } catch (err) {
      if (mine !== generation) return;
      const e = readError(err);
      showErrors(e.fields, e.message);
      for (const ed of editors) ed.preview.replaceChildren();
    }
  };
  const changed = (): void => {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => void runPreview(), 250);
  };
  const addEditor = (base: Schedule): Editor => {
    const e = editor(job, editors.length, base, changed, (gone) => {
      editors = editors.filter((x) => x !== gone);
      gone.element.remove();
      renumber();
      changed();
      add.focus();
    });
    editors.push(e);
    list.append(e.element);
    renumber();
    return e;
  };
  for (const s of job.schedules) addEditor(s);
  add.addEventListener("click", () => {
    const e = addEditor(create(ScheduleSchema, { timeZone: browserZone() }));
    e.element.querySelector("select")?.focus();
    changed();
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const schedules = build();
    if (schedules === null) return;
    save.disabled = true;
    try {
      const res = await client.setSchedule({ jobId: job.id, schedules });
      if (res.job) {
        job = res.job;
        onSaved(res.job);
      }
      dialog.close();
      announce(`Saved ${schedules.length} schedule(s) of ${job.name}.`);
    } catch (err) {
      const e = readError(err);
      showErrors(e.fields, e.message);
    } finally {
      save.disabled = !canSchedule;
    }
  });
  pause.addEventListener("click", async () => {
    try {
      const res = job.schedulesPaused
        ? await client.resumeSchedule({ jobId: job.id })
        : await client.pauseSchedule({ jobId: job.id });
      if (res.job) {
        job = res.job;
        onSaved(res.job);
      }
      showPaused();
      announce(job.schedulesPaused ? `Schedules of ${job.name} paused.` : `Schedules of ${job.name} resumed.`);
    } catch (err) {
      formError.textContent = readError(err).message;
    }
  });
  showPaused();
  for (const b of [add, save, pause]) b.disabled = !canSchedule;
  if (!canSchedule) status.textContent = "Read only: your token does not have the schedule role.";
  if (editors.length > 0) changed();
  (editors[0]?.element.querySelector("select") ?? add).focus();
}
