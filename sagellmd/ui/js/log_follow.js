// An engine's log tail that follows the file live: the last lines, then a long-poll of
// `logs?after=OFFSET&wait=25` for the lines written since, until the signal aborts it.

import { get, v1 } from "./api.js";
import { h } from "./dom.js";

const TAIL = 200;
const KEPT = 2000; // lines on screen; older ones scroll away
const WAIT_S = 25;

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The log's <pre> and its status line; `follow(signal)` runs until the signal aborts. */
export class LogView {
  constructor(engineId) {
    this.engineId = engineId;
    this.pre = h("pre", {
      id: "engine-log",
      class: "log",
      tabindex: "0",
      "aria-label": `log of ${engineId}`,
    });
    this.state = h("p", { class: "muted", id: "log-state", role: "status" }, "reading the log…");
    this.path = h("span", { class: "muted" });
    const foot = h("div", { class: "row log-foot" }, this.state, this.path);
    this.element = h("div", {}, this.pre, foot);
  }

  atBottom() {
    return this.pre.scrollHeight - this.pre.scrollTop - this.pre.clientHeight < 24;
  }

  write(lines, replace) {
    const follow = replace || this.atBottom();
    if (replace) this.pre.replaceChildren();
    if (lines.length) this.pre.append(lines.map((line) => `${line}\n`).join(""));
    // Each append is one text node; drop whole old nodes until the line count fits.
    let count = this.pre.textContent.split("\n").length - 1;
    while (count > KEPT && this.pre.firstChild) {
      count -= this.pre.firstChild.textContent.split("\n").length - 1;
      this.pre.firstChild.remove();
    }
    if (follow) this.pre.scrollTop = this.pre.scrollHeight;
  }

  url(query) {
    return v1(`engines/${encodeURIComponent(this.engineId)}/logs?${query}`);
  }

  async follow(signal) {
    let offset = null;
    let failures = 0;
    while (!signal.aborted) {
      try {
        const answer =
          offset === null
            ? await get(this.url(`tail=${TAIL}`), { signal })
            : await get(this.url(`after=${offset}&wait=${WAIT_S}`), { signal });
        failures = 0;
        this.write(answer.lines || [], offset === null || answer.reset === true);
        this.path.textContent = answer.path ? ` ${answer.path}` : "";
        if (answer.offset === undefined || answer.offset === null) {
          this.state.textContent = "this daemon does not follow logs (its answer has no offset)";
          return;
        }
        offset = answer.offset;
        this.state.textContent = answer.reset ? "following (the log was truncated)" : "following";
      } catch (error) {
        if (signal.aborted) return;
        failures += 1;
        this.state.textContent = `${error.describe ? error.describe() : error}; retrying`;
        await pause(Math.min(5000, 250 * 2 ** failures), signal);
      }
    }
  }
}
