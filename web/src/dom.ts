// A few DOM helpers: elements built with properties and children, never with HTML strings.

type Props = Record<string, string | number | boolean | undefined | ((ev: Event) => void)>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(key.replace(/^on/, ""), value);
    else if (key === "class") el.className = String(value);
    else if (key === "text") el.textContent = String(value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

let ids = 0;
export function uid(prefix: string): string {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A modal dialog (keyboard: Tab stays inside, Escape closes) labelled by its heading; removed when closed. */
export function modal(title: string, cls: string): { dialog: HTMLDialogElement; body: HTMLElement } {
  const titleId = uid("dialog-title");
  const body = h("div", { class: "dialog-body" });
  const dialog = h(
    "dialog",
    { class: cls, "aria-labelledby": titleId },
    h(
      "div",
      { class: "dialog-head" },
      h("h2", { id: titleId, text: title }),
      h("button", { type: "button", class: "close", "aria-label": "Close", text: "×", onclick: () => dialog.close() }),
    ),
    body,
  );
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, body };
}

export function announce(text: string, isError = false): void {
  const notice = document.getElementById("notice");
  if (notice === null) return;
  notice.textContent = text;
  notice.className = isError ? "error" : "ok";
}
