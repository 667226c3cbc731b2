// Inputs generated from a job's parameter declarations: one labelled, typed input per parameter,
// defaults filled in, required ones marked; read back as ParameterValue messages.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  ParameterType,
  ParameterValueSchema,
  type ParameterDeclaration,
  type ParameterValue,
} from "./gen/xcron/v1/job_service_pb";
import { h, uid } from "./dom";
import { seconds } from "./format";

export interface ParamField {
  decl: ParameterDeclaration;
  input: HTMLInputElement;
  error: HTMLElement;
  row: HTMLElement;
}

function localInputValue(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function initial(decl: ParameterDeclaration, value: ParameterValue | undefined): string | boolean {
  const v = value ?? decl.defaultValue;
  if (v === undefined) return decl.type === ParameterType.BOOL ? false : "";
  switch (v.kind.case) {
    case "stringValue":
      return v.kind.value;
    case "intValue":
      return v.kind.value.toString();
    case "boolValue":
      return v.kind.value;
    case "doubleValue":
      return String(v.kind.value);
    case "timestampValue":
      return localInputValue(new Date(Number(v.kind.value.seconds) * 1000));
    case "durationValue":
      return String(seconds(v.kind.value));
    default:
      return "";
  }
}

export function paramFields(
  decls: ParameterDeclaration[],
  values: Record<string, ParameterValue> = {},
  idPrefix = "param",
): { fields: ParamField[]; element: HTMLElement } {
  const fields: ParamField[] = [];
  const element = h("div", { class: "params" });
  if (decls.length === 0) element.append(h("p", { class: "hint", text: "This job takes no parameters." }));
  for (const decl of decls) {
    const id = uid(`${idPrefix}-${decl.name}`);
    const errorId = `${id}-error`;
    const hintId = `${id}-hint`;
    const value = initial(decl, values[decl.name]);
    let input: HTMLInputElement;
    const common = { id, name: decl.name, "aria-describedby": `${hintId} ${errorId}`, "data-param": decl.name };
    switch (decl.type) {
      case ParameterType.BOOL:
        input = h("input", { ...common, type: "checkbox" });
        input.checked = value === true;
        break;
      case ParameterType.INT:
        input = h("input", { ...common, type: "number", step: "1", inputmode: "numeric" });
        break;
      case ParameterType.DOUBLE:
        input = h("input", { ...common, type: "number", step: "any", inputmode: "decimal" });
        break;
      case ParameterType.TIMESTAMP:
        input = h("input", { ...common, type: "datetime-local" });
        break;
      case ParameterType.DURATION:
        input = h("input", { ...common, type: "number", step: "any", min: "0", inputmode: "decimal" });
        break;
      default:
        input = h("input", { ...common, type: "text" });
    }
    if (typeof value === "string") input.value = value;
    if (decl.required) input.setAttribute("aria-required", "true");
    const typeName = ParameterType[decl.type].toLowerCase() + (decl.type === ParameterType.DURATION ? ", seconds" : "");
    const label = h(
      "label",
      { for: id },
      decl.name,
      decl.required ? h("span", { class: "required", "aria-hidden": "true", text: " *" }) : null,
      decl.required ? h("span", { class: "sr-only", text: " (required)" }) : null,
    );
    const hint = h("span", { class: "hint", id: hintId, text: `${decl.description || ""} (${typeName})` });
    const error = h("span", { class: "field-error", id: errorId, "aria-live": "polite" });
    const row = h("div", { class: decl.type === ParameterType.BOOL ? "field checkbox" : "field" }, label, input, hint, error);
    element.append(row);
    fields.push({ decl, input, error, row });
  }
  return { fields, element };
}

/** The entered values (empty inputs omitted, so that defaults apply), or the client-side errors by name. */
export function readParams(fields: ParamField[]): { values: Record<string, ParameterValue>; errors: Map<string, string> } {
  const values: Record<string, ParameterValue> = {};
  const errors = new Map<string, string>();
  for (const { decl, input } of fields) {
    const text = input.value.trim();
    const set = (kind: ParameterValue["kind"]): void => {
      values[decl.name] = create(ParameterValueSchema, { kind });
    };
    switch (decl.type) {
      case ParameterType.BOOL:
        set({ case: "boolValue", value: input.checked });
        break;
      case ParameterType.INT:
        if (text === "") break;
        if (!/^-?\d+$/.test(text)) errors.set(decl.name, "must be a whole number");
        else set({ case: "intValue", value: BigInt(text) });
        break;
      case ParameterType.DOUBLE:
        if (text === "") break;
        if (!Number.isFinite(Number(text))) errors.set(decl.name, "must be a number");
        else set({ case: "doubleValue", value: Number(text) });
        break;
      case ParameterType.TIMESTAMP:
        if (text === "") break;
        set({ case: "timestampValue", value: timestampFromDate(new Date(text)) });
        break;
      case ParameterType.DURATION: {
        if (text === "") break;
        const s = Number(text);
        if (!Number.isFinite(s) || s < 0) errors.set(decl.name, "must be a number of seconds");
        else
          set({
            case: "durationValue",
            value: { $typeName: "google.protobuf.Duration", seconds: BigInt(Math.floor(s)), nanos: Math.round((s % 1) * 1e9) },
          });
        break;
      }
      default:
        if (text !== "" || decl.required) {
          if (text !== "") set({ case: "stringValue", value: input.value });
        }
    }
  }
  return { values, errors };
}

export function showParamErrors(fields: ParamField[], errors: Map<string, string>): boolean {
  let first: HTMLInputElement | null = null;
  for (const f of fields) {
    const message = errors.get(f.decl.name) ?? "";
    f.error.textContent = message;
    if (message) {
      f.input.setAttribute("aria-invalid", "true");
      first ??= f.input;
    } else f.input.removeAttribute("aria-invalid");
  }
  first?.focus();
  return first !== null;
}
