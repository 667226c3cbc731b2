// History: a chart of recent run durations coloured by outcome (as Hangfire's dashboard graphs), the
// executions newest first, paged, and one execution's detail.
import { timestampDate, timestampNow } from "@bufbuild/protobuf/wkt";
import { client, readError } from "./api";
import { h, modal } from "./dom";
import { EXECUTION_STATE_TEXT, fmtSeconds, fmtTs, fmtValue } from "./format";
import { ExecutionState, Trigger, type Execution, type Job } from "./gen/xcron/v1/job_service_pb";

const PAGE = 20;
const SVG = "http://www.w3.org/2000/svg";

function duration(e: Execution): number {
  const start = e.startTime ? timestampDate(e.startTime).getTime() : 0;
  const end = timestampDate(e.finishTime ?? timestampNow()).getTime();
  return Math.max(0, (end - start) / 1000);
}

function stateClass(s: ExecutionState): string {
  return `state-${ExecutionState[s]}`;
}

function chart(runs: Execution[]): SVGSVGElement {
  const recent = runs.slice(0, 40).reverse(); // oldest left
  const width = 400;
  const height = 80;
  const max = Math.max(...recent.map(duration), 0.001);
  const barWidth = width / Math.max(recent.length, 1);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  const counts = new Map<string, number>();
  for (const r of recent) counts.set(EXECUTION_STATE_TEXT[r.state], (counts.get(EXECUTION_STATE_TEXT[r.state]) ?? 0) + 1);
  const summary = [...counts].map(([k, v]) => `${v} ${k.toLowerCase()}`).join(", ");
  svg.setAttribute("aria-label", `Durations of the last ${recent.length} runs, oldest first: ${summary || "none"}`);
  recent.forEach((r, i) => {
    const d = duration(r);
    const barHeight = Math.max(2, (d / max) * (height - 4));
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("x", String(i * barWidth + 1));
    rect.setAttribute("y", String(height - barHeight));
    rect.setAttribute("width", String(Math.max(1, barWidth - 2)));
    rect.setAttribute("height", String(barHeight));
    rect.setAttribute("class", `bar ${stateClass(r.state)}`);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${fmtTs(r.startTime)}: ${EXECUTION_STATE_TEXT[r.state]}, ${fmtSeconds(d)}`;
    rect.append(title);
    svg.append(rect);
  });
  return svg;
}

function detail(e: Execution): HTMLElement {
  const rows: [string, string][] = [
    ["Execution", e.id],
    ["State", EXECUTION_STATE_TEXT[e.state]],
    ["Trigger", Trigger[e.trigger].toLowerCase()],
    ["Parameters", Object.entries(e.parameters).map(([k, v]) => `${k}=${fmtValue(v)}`).join(", ") || "none"],
    ["Started", fmtTs(e.startTime)],
    ["Finished", fmtTs(e.finishTime) || "still running"],
    ["Duration", fmtSeconds(duration(e))],
    ["Progress", `${Math.round(e.progress * 100)} %`],
    ["Status", e.statusText],
    ["Error", e.error || "none"],
    ["Scheduled for", fmtTs(e.scheduledTime) || "—"],
    ["Request id", e.requestId || "—"],
    ["Cancel requested", e.cancelRequested ? "yes" : "no"],
  ];
  return h("dl", { class: "detail" }, ...rows.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]));
}

export function openHistory(job: Job): void {
  const { body } = modal(`History of ${job.name}`, "history-dialog");
  const chartBox = h("figure", { class: "chart-box" }, h("figcaption", { text: "Recent runs: duration, coloured by outcome" }));
  const tbody = h("tbody");
  const table = h(
    "table",
    { class: "executions" },
    h("caption", { class: "sr-only", text: `Executions of ${job.name}, newest first` }),
    h(
      "thead",
      {},
      h("tr", {}, ...["State", "Trigger", "Parameters", "Started", "Duration", "Error", ""].map((t) => h("th", { scope: "col", text: t }))),
    ),
    tbody,
  );
  const more = h("button", { type: "button", class: "more", text: "Older runs", hidden: true });
  const detailBox = h("section", { class: "execution-detail", "aria-live": "polite", "aria-label": "Execution detail" });
  const error = h("p", { class: "form-error", role: "alert" });
  body.append(chartBox, error, table, more, detailBox);
  let token = "";
  let first = true;

  const load = async (): Promise<void> => {
    try {
      const res = await client.listExecutions({ jobId: job.id, pageSize: PAGE, pageToken: token });
      if (first) {
        chartBox.append(chart(res.executions));
        first = false;
      }
      if (res.executions.length === 0 && tbody.childElementCount === 0) {
        tbody.append(h("tr", {}, h("td", { colspan: "7", text: "This job has not run yet." })));
      }
      for (const e of res.executions) {
        const show = h("button", {
          type: "button",
          text: "Details",
          "aria-label": `Details of the run started ${fmtTs(e.startTime)}`,
          onclick: async () => {
            try {
              const one = await client.getExecution({ executionId: e.id });
              if (one.execution) detailBox.replaceChildren(h("h3", { text: "Execution" }), detail(one.execution));
            } catch (err) {
              error.textContent = readError(err).message;
            }
          },
        });
        tbody.append(
          h(
            "tr",
            { "data-execution-id": e.id },
            h("td", {}, h("span", { class: `badge ${stateClass(e.state)}`, text: EXECUTION_STATE_TEXT[e.state] })),
            h("td", { text: Trigger[e.trigger].toLowerCase() }),
            h("td", { text: Object.entries(e.parameters).map(([k, v]) => `${k}=${fmtValue(v)}`).join(", ") }),
            h("td", { text: fmtTs(e.startTime) }),
            h("td", { text: fmtSeconds(duration(e)) }),
            h("td", { class: "error-text", text: e.error }),
            h("td", {}, show),
          ),
        );
      }
      token = res.nextPageToken;
      more.hidden = token === "";
    } catch (err) {
      error.textContent = readError(err).message;
    }
  };
  more.addEventListener("click", () => void load());
  void load();
}
