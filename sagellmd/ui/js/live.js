// The page's one live feed: a long-poll of /v1/events, and /v1/status re-read after every
// batch of events (one read in flight at most). Views subscribe; nothing polls on a timer.

import { get, v1 } from "./api.js";
import { coalescing } from "./dom.js";

const statusListeners = new Set();
const eventListeners = new Set();
let status = null;
let recent = [];
let lastId = null;
let started = false;

const RECENT_KEPT = 200;

/** The latest /v1/status document (null before the first read). */
export const currentStatus = () => status;
/** The latest events, oldest first. */
export const recentEvents = () => recent;

/** cb(status) now (if known) and after every change; returns the unsubscribe function. */
export function onStatus(cb) {
  statusListeners.add(cb);
  if (status) cb(status);
  return () => statusListeners.delete(cb);
}

/** cb(newEvents) for every batch; returns the unsubscribe function. */
export function onEvents(cb) {
  eventListeners.add(cb);
  return () => eventListeners.delete(cb);
}

function indicate(text, ok) {
  const element = document.getElementById("live");
  if (!element) return;
  element.textContent = text;
  element.className = `live ${ok ? "ok" : "bad"}`;
}

/** Re-reads /v1/status; calls made during a read coalesce into one more read. */
export const refreshStatus = coalescing(async () => {
  status = await get(v1("status"));
  for (const cb of statusListeners) cb(status);
});

async function followEvents() {
  let failures = 0;
  for (;;) {
    try {
      const query =
        lastId === null ? "limit=50" : `after=${lastId}&wait=25&limit=500&load=true`;
      const answer = await get(v1(`events?${query}`));
      failures = 0;
      indicate("live", true);
      const events = answer.events || [];
      if (lastId === null) {
        recent = events;
        lastId = answer.last_id ?? (events.length ? events[events.length - 1].id : 0);
        continue;
      }
      // The gateway's in-flight and queued counts changed: they show in status only.
      if (answer.load_changed && !events.length) refreshStatus().catch(() => {});
      if (!events.length) continue;
      lastId = answer.last_id ?? events[events.length - 1].id;
      recent = recent.concat(events).slice(-RECENT_KEPT);
      refreshStatus().catch(() => {});
      for (const cb of eventListeners) cb(events);
    } catch (error) {
      failures += 1;
      indicate("reconnecting", false);
      // A short, growing pause: the daemon may be restarting.
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 250 * 2 ** failures)));
      if (failures > 1) refreshStatus().catch(() => {});
    }
  }
}

/** Starts the feed once: the first status read, then the events long-poll. */
export async function startLive() {
  if (started) return;
  started = true;
  await refreshStatus();
  followEvents();
}
