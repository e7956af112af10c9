// The GPU bars of the Overview: per GPU, the memory each engine reserved, what foreign
// processes use, and what is free, from the `gpus` document of /v1/status.

import { h, gb } from "./dom.js";

/** A stable colour per engine id, so an engine keeps its colour across GPUs and renders. */
export function engineColour(id) {
  let hash = 0;
  for (const char of id) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  // Golden-angle steps spread neighbouring hashes over the colour wheel.
  const hue = Math.round((hash * 137.508) % 360);
  return `hsl(${hue} 60% 52%)`;
}

function percent(part, total) {
  return total > 0 ? `${Math.max(0, Math.min(100, (part / total) * 100)).toFixed(2)}%` : "0%";
}

function segment(kind, label, sizeGb, totalGb, colour, engine) {
  return h("span", {
    dataset: engine ? { engine } : { kind },
    title: `${label}: ${gb(sizeGb)}`,
    style: { width: percent(sizeGb, totalGb), background: colour },
  });
}

function legendItem(colour, label, sizeGb, engine) {
  const name = engine
    ? h("a", { href: `#/engine/${encodeURIComponent(engine)}` }, label)
    : h("span", {}, label);
  return h(
    "li",
    {},
    h("span", { class: "swatch", style: { background: colour }, "aria-hidden": "true" }),
    name,
    h("span", { class: "muted" }, ` ${gb(sizeGb)}`),
  );
}

function gpuBar(device) {
  const total = Number(device.total_gb) || 0;
  const reservations = device.reservations || [];
  const reserved = reservations.reduce((sum, item) => sum + (Number(item.gb) || 0), 0);
  const foreign = Number(device.foreign_gb) || 0;
  const free = Math.max(0, total - reserved - foreign);
  const segments = reservations.map((item) =>
    segment("engine", item.engine, item.gb, total, engineColour(item.engine), item.engine),
  );
  const legend = reservations.map((item) =>
    legendItem(engineColour(item.engine), item.engine, item.gb, item.engine),
  );
  if (foreign > 0) {
    segments.push(segment("foreign", "foreign processes", foreign, total, "var(--seg-foreign)"));
    legend.push(legendItem("var(--seg-foreign)", "foreign processes", foreign));
  }
  segments.push(segment("free", "free", free, total, "var(--seg-free)"));
  legend.push(legendItem("var(--seg-free)", "free", free));
  const described = [
    ...reservations.map((item) => `${item.engine} ${gb(item.gb)}`),
    foreign > 0 ? `foreign ${gb(foreign)}` : null,
    `free ${gb(free)}`,
  ].filter(Boolean);
  return h(
    "div",
    { class: "gpu", dataset: { gpu: String(device.index) } },
    h(
      "div",
      { class: "gpu-head" },
      h("strong", {}, `GPU${device.index}`),
      h("span", {}, ` ${device.name || ""}`),
      device.simulated ? h("span", { class: "badge" }, "simulated") : null,
      h(
        "span",
        { class: "muted" },
        ` ${gb(reserved)} reserved, ${gb(foreign)} foreign, ${gb(free)} free of ${gb(total)}`,
      ),
    ),
    h(
      "div",
      { class: "bar", role: "img", "aria-label": `GPU${device.index}: ${described.join(", ")}` },
      segments,
    ),
    h("ul", { class: "legend" }, legend),
  );
}

/** The GPU section's content for a `gpus` document (mode none: its message). */
export function gpuBars(gpus) {
  if (!gpus) return [h("p", { class: "muted" }, "no GPU information yet")];
  const devices = gpus.devices || [];
  const head = h("p", { class: "muted", id: "gpu-mode" }, gpus.message || gpus.mode || "");
  const errors = (gpus.errors || []).map((error) =>
    h("p", { class: "api-error" }, typeof error === "string" ? error : JSON.stringify(error)),
  );
  return [head, ...errors, ...devices.map(gpuBar)];
}
