// A table of events, newest first, kept to a fixed number of rows as new ones arrive.

import { h, clock } from "./dom.js";

// The gateway's events carry engine "gateway"; it has a page of its own too.
function engineLink(engine) {
  if (!engine) return "";
  return h("a", { href: `#/engine/${encodeURIComponent(engine)}` }, engine);
}

function eventRow(event, showEngine) {
  return h(
    "tr",
    { dataset: { eventId: String(event.id), type: event.type || "" } },
    h("td", { dataset: { col: "time" }, title: event.ts || "" }, clock(event.ts)),
    showEngine ? h("td", { dataset: { col: "engine" } }, engineLink(event.engine)) : null,
    h("td", { dataset: { col: "type" }, class: `event-type` }, event.type || ""),
    h("td", { class: "wrap", dataset: { col: "message" } }, event.message || ""),
  );
}

export class EventList {
  /** `showEngine`: a column naming each event's engine (off on an engine's own page). */
  constructor({ limit = 20, showEngine = true, label = "Events" } = {}) {
    this.limit = limit;
    this.showEngine = showEngine;
    this.ids = new Set();
    this.body = h("tbody");
    this.empty = h("p", { class: "muted" }, "no events yet");
    const heads = ["Time", showEngine ? "Engine" : null, "Type", "Message"].filter(Boolean);
    this.element = h(
      "div",
      {},
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "events", "aria-label": label },
          h("thead", {}, h("tr", {}, heads.map((title) => h("th", { scope: "col" }, title)))),
          this.body,
        ),
      ),
      this.empty,
    );
  }

  /** Adds events (any order, duplicates ignored) and keeps the newest `limit`. */
  add(events) {
    const fresh = events.filter((event) => !this.ids.has(event.id)).sort((a, b) => a.id - b.id);
    for (const event of fresh) {
      this.ids.add(event.id);
      // Usually the newest, so the first row is where it goes; an older one finds its place.
      let before = this.body.firstElementChild;
      while (before && Number(before.dataset.eventId) > event.id) {
        before = before.nextElementSibling;
      }
      this.body.insertBefore(eventRow(event, this.showEngine), before);
    }
    while (this.body.children.length > this.limit) {
      const last = this.body.lastElementChild;
      this.ids.delete(Number(last.dataset.eventId));
      last.remove();
    }
    this.empty.hidden = this.body.children.length > 0;
  }
}
