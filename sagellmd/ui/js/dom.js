// A small element builder and the formatters the views share.

/**
 * h("td", {class: "x", dataset: {col: "state"}, onclick: f}, "text", child, [more])
 * Strings become text nodes (never HTML), null/false children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "class") element.className = value;
    else if (key === "style" && typeof value === "object") Object.assign(element.style, value);
    else if (key in element && typeof value !== "string") element[key] = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's children. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** An `.api-error` box placed next to the control that caused it; `show(error)` / `clear()`. */
export function errorBox() {
  const box = h("div", { class: "api-error", role: "alert" });
  return {
    element: box,
    show(error) {
      box.textContent = error && error.describe ? error.describe() : String(error);
    },
    clear() {
      box.textContent = "";
    },
  };
}

export function gb(value) {
  if (value === null || value === undefined) return "";
  return `${Number(value).toFixed(value >= 10 ? 0 : 1)} GiB`;
}

export function bytes(value) {
  if (value === null || value === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let size = Number(value);
  let unit = 0;
  while (size >= 1000 && unit < units.length - 1) {
    size /= 1000;
    unit += 1;
  }
  return `${size.toFixed(size >= 100 || unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** "3h 4m" from now back to an ISO time. */
export function since(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${seconds % 60}s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h ${minutes % 60}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

export function clock(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString();
}

export function stateCell(state, message) {
  return h(
    "td",
    { class: "state", dataset: { col: "state", state: state || "" }, title: message || "" },
    state || "",
  );
}

/** A confirmation dialog; resolves true when the user confirms. */
export function confirmAction(question, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { "aria-label": question },
      h("p", {}, question),
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", class: "danger", value: "yes", id: "confirm-yes" }, confirmLabel),
        h("button", { type: "button", value: "no", id: "confirm-no" }, "Cancel"),
      ),
    );
    dialog.addEventListener("click", (event) => {
      const value = event.target && event.target.value;
      if (value === "yes" || value === "no") dialog.close(value);
    });
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "yes");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/**
 * `read` wrapped so that calls made while it runs do not start another run beside it but
 * one more run after it (a view re-reads what changed at most once behind the news).
 * Every caller gets the promise of the run that covers its call.
 */
export function coalescing(read) {
  let running = null;
  let again = false;
  return function run() {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await read();
        } while (again);
      } finally {
        running = null;
      }
    })();
    return running;
  };
}
