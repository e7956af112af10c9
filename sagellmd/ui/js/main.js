// The shell: sign-in check, the hash router, and the live feed every view shares.

import { loadSession } from "./api.js";
import { h, fill } from "./dom.js";
import { startLive } from "./live.js";

// Each view module exports `render(container, params, session)`, which may return a
// function that undoes what it set up (subscriptions, long-polls) when the view changes.
const VIEWS = {
  overview: () => import("./views/overview.js"),
  engine: () => import("./views/engine.js"),
  presets: () => import("./views/presets.js"),
  history: () => import("./views/history.js"),
  models: () => import("./views/models.js"),
  playground: () => import("./views/playground.js"),
};

let session = null;
let cleanup = null;
let shown = 0;

function parseHash() {
  const parts = window.location.hash.replace(/^#\/?/, "").split("/");
  const name = parts[0] || "overview";
  const params = parts.slice(1).map(decodeURIComponent);
  return VIEWS[name] ? { name, params } : { name: "overview", params: [] };
}

function markNav(name) {
  const current = name === "engine" ? "overview" : name;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.id === `nav-${current}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function show() {
  const { name, params } = parseHash();
  const ticket = ++shown;
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  markNav(name);
  const container = document.getElementById("view");
  fill(container, h("p", { class: "muted" }, "loading…"));
  let module;
  try {
    module = await VIEWS[name]();
  } catch (error) {
    fill(container, h("div", { class: "api-error" }, `this view could not load: ${error}`));
    return;
  }
  if (ticket !== shown) return;
  fill(container);
  container.dataset.view = name;
  const undo = await module.render(container, params, session);
  if (ticket !== shown) {
    if (typeof undo === "function") undo();
    return;
  }
  cleanup = typeof undo === "function" ? undo : null;
}

async function main() {
  session = await loadSession();
  window.addEventListener("hashchange", show);
  await startLive();
  await show();
}

main().catch((error) => {
  const container = document.getElementById("view");
  if (container) fill(container, h("div", { class: "api-error" }, String(error.message || error)));
});
