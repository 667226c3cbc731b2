// Run: a form generated from the job's parameters, then a confirmation step (as in SanteDB's panel).
// Server field errors (BadRequest) go next to their field; "already running" (ABORTED) is said plainly.
import { Code, client, readError } from "./api";
import { announce, h, modal } from "./dom";
import { fmtValue } from "./format";
import type { Job, ParameterValue } from "./gen/xcron/v1/job_service_pb";
import { paramFields, readParams, showParamErrors } from "./params";

export function openRun(job: Job): void {
  const { dialog, body } = modal(`Run ${job.name}`, "run-dialog");
  const { fields, element } = paramFields(job.parameters, {}, "run");
  const formError = h("p", { class: "form-error", role: "alert" });
  const form = h(
    "form",
    { class: "run-form", novalidate: true },
    h("p", { class: "hint", text: job.description }),
    element,
    formError,
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "submit", class: "primary", text: "Next" }),
      h("button", { type: "button", text: "Close", onclick: () => dialog.close() }),
    ),
  );
  const confirmList = h("dl", { class: "confirm-list" });
  const confirmError = h("p", { class: "form-error", role: "alert" });
  const runButton = h("button", { type: "button", class: "primary", text: "Run now" });
  const confirm = h(
    "section",
    { class: "confirm", hidden: true, "aria-label": "Confirm" },
    h("p", { text: `Run ${job.name} with these parameters?` }),
    confirmList,
    confirmError,
    h(
      "div",
      { class: "buttons" },
      runButton,
      h("button", { type: "button", text: "Back", onclick: () => back() }),
    ),
  );
  body.append(form, confirm);
  fields[0]?.input.focus();

  let values: Record<string, ParameterValue> = {};
  const back = (): void => {
    confirm.hidden = true;
    form.hidden = false;
    fields[0]?.input.focus();
  };

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    formError.textContent = "";
    const read = readParams(fields);
    if (showParamErrors(fields, read.errors)) return;
    values = read.values;
    confirmList.replaceChildren();
    for (const f of fields) {
      const v = values[f.decl.name];
      confirmList.append(h("dt", { text: f.decl.name }), h("dd", { text: v ? fmtValue(v) : "(default)" }));
    }
    if (fields.length === 0) confirmList.append(h("dt", { text: "no parameters" }));
    confirmError.textContent = "";
    form.hidden = true;
    confirm.hidden = false;
    runButton.focus();
  });

  runButton.addEventListener("click", async () => {
    runButton.disabled = true;
    try {
      const res = await client.runJob({ jobId: job.id, parameters: values, requestId: crypto.randomUUID() });
      dialog.close();
      announce(`${job.name} started (execution ${res.execution?.id ?? ""}).`);
    } catch (err) {
      const e = readError(err);
      if (e.code === Code.Aborted) {
        confirmError.textContent = `${job.name} is already running. Wait for it to finish, or cancel it first.`;
      } else if (e.fields.size > 0) {
        const byName = new Map<string, string>();
        const other: string[] = [];
        for (const [field, text] of e.fields) {
          const name = field.startsWith("parameters.") ? field.slice("parameters.".length) : "";
          if (fields.some((f) => f.decl.name === name)) byName.set(name, text);
          else other.push(`${field}: ${text}`);
        }
        back();
        formError.textContent = other.join("; ");
        showParamErrors(fields, byName);
      } else {
        confirmError.textContent = e.message;
      }
    } finally {
      runButton.disabled = false;
    }
  });
}
