// Plain-text renderings: times, durations, schedule summaries, parameter values.
import { timestampDate, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  DayOfWeek,
  ExecutionState,
  JobState,
  type ParameterValue,
  type Schedule,
} from "./gen/xcron/v1/job_service_pb";

const pad = (n: number, w = 2): string => String(n).padStart(w, "0");

/** Local time as YYYY-MM-DD HH:MM:SS (sortable, unambiguous). */
export function fmtDate(d: Date): string {
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

export function fmtTs(ts: Timestamp | undefined): string {
  return ts === undefined ? "" : fmtDate(timestampDate(ts));
}

export function seconds(d: Duration | undefined): number {
  return d === undefined ? 0 : Number(d.seconds) + d.nanos / 1e9;
}

export function fmtSeconds(s: number): string {
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function fmtEvery(s: number): string {
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]] as const) {
    if (s >= size && s % size === 0) return `every ${s / size} ${unit}`;
  }
  return `every ${s} s`;
}

const DAY_NAMES: Record<number, string> = {
  [DayOfWeek.MONDAY]: "Mon",
  [DayOfWeek.TUESDAY]: "Tue",
  [DayOfWeek.WEDNESDAY]: "Wed",
  [DayOfWeek.THURSDAY]: "Thu",
  [DayOfWeek.FRIDAY]: "Fri",
  [DayOfWeek.SATURDAY]: "Sat",
  [DayOfWeek.SUNDAY]: "Sun",
};
export const DAYS: [DayOfWeek, string][] = Object.entries(DAY_NAMES).map(([k, v]) => [Number(k) as DayOfWeek, v]);

export function scheduleSummary(s: Schedule): string {
  const zone = s.timeZone ? ` ${s.timeZone}` : "";
  switch (s.spec.case) {
    case "interval":
      return fmtEvery(seconds(s.spec.value.interval));
    case "calendar": {
      const t = s.spec.value.timeOfDay;
      const at = `${pad(t?.hours ?? 0)}:${pad(t?.minutes ?? 0)}${t?.seconds ? ":" + pad(t.seconds) : ""}`;
      const days = s.spec.value.days.map((d) => DAY_NAMES[d] ?? "?").join(", ");
      return days ? `${days} ${at}${zone}` : `once at ${at}${zone}`;
    }
    case "cron":
      return `${s.spec.value.expression}${zone}`;
    default:
      return "?";
  }
}

export function schedulesSummary(schedules: Schedule[], paused: boolean): string {
  if (schedules.length === 0) return paused ? "paused" : "not scheduled";
  const text = schedules.map(scheduleSummary).join("; ");
  return paused ? `paused · ${text}` : text;
}

export const JOB_STATE_TEXT: Record<JobState, string> = {
  [JobState.UNSPECIFIED]: "Unknown",
  [JobState.NOT_YET_RUN]: "Not yet run",
  [JobState.RUNNING]: "Running",
  [JobState.COMPLETED]: "Completed",
  [JobState.ABORTED]: "Aborted",
  [JobState.CANCELLED]: "Cancelled",
};

export const EXECUTION_STATE_TEXT: Record<ExecutionState, string> = {
  [ExecutionState.UNSPECIFIED]: "Unknown",
  [ExecutionState.RUNNING]: "Running",
  [ExecutionState.COMPLETED]: "Completed",
  [ExecutionState.ABORTED]: "Aborted",
  [ExecutionState.CANCELLED]: "Cancelled",
};

export function fmtValue(v: ParameterValue | undefined): string {
  if (v === undefined) return "";
  switch (v.kind.case) {
    case "stringValue":
      return JSON.stringify(v.kind.value);
    case "intValue":
      return v.kind.value.toString();
    case "boolValue":
      return v.kind.value ? "true" : "false";
    case "doubleValue":
      return String(v.kind.value);
    case "timestampValue":
      return fmtTs(v.kind.value);
    case "durationValue":
      return fmtSeconds(seconds(v.kind.value));
    default:
      return "";
  }
}

/** The UTC instant of a wall time in an IANA zone (the first one, in a repeated hour). */
export function zonedTime(y: number, mo: number, d: number, h: number, mi: number, zone: string): Date {
  const guess = Date.UTC(y, mo - 1, d, h, mi);
  const offset = (t: number): number => {
    const parts = new Intl.DateTimeFormat("en-US", {
      timeZone: zone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    }).formatToParts(new Date(t));
    const get = (type: string): number => Number(parts.find((p) => p.type === type)?.value ?? 0);
    return Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second")) - t;
  };
  const first = guess - offset(guess);
  const second = guess - offset(first);
  return new Date(Math.min(first, second));
}

export function browserZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

export function zones(): string[] {
  const intl = Intl as unknown as { supportedValuesOf?: (key: string) => string[] };
  return intl.supportedValuesOf?.("timeZone") ?? ["UTC"];
}
