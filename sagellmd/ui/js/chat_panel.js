// The Playground's chat: a conversation sent to the gateway (through the daemon's relay)
// with `stream: true`, each token appended to the answer as its chunk arrives.

import { api, v1 } from "./api.js";
import { h, errorBox } from "./dom.js";
import { serverSentEvents } from "./sse.js";

const CHAT = v1("gateway/openai/v1/chat/completions");

function streamError(error) {
  const code = error.code || error.type;
  return code ? `${error.message} (${code})` : error.message || JSON.stringify(error);
}

export class ChatPanel {
  /** `model()` answers the picked model name (or "" when none). */
  constructor(model) {
    this.model = model;
    this.history = [];
    this.running = null;
    this.errors = errorBox();
    this.transcript = h("div", {
      id: "pg-transcript",
      class: "transcript",
      role: "log",
      "aria-live": "polite",
      "aria-label": "Conversation",
    });
    this.system = h("input", { id: "pg-system", type: "text", placeholder: "optional" });
    this.prompt = h("textarea", { id: "pg-prompt", rows: 3, placeholder: "Ctrl+Enter sends" });
    this.maxTokens = h("input", { id: "pg-max-tokens", type: "number", min: 1, value: "256" });
    this.send = h("button", { type: "submit", id: "pg-send", class: "primary" }, "Send");
    this.stop = h("button", { type: "button", id: "pg-stop", disabled: true }, "Stop");
    this.clear = h("button", { type: "button", id: "pg-clear" }, "Clear");
    this.stats = h("p", { class: "muted", id: "pg-stats", role: "status" });
    this.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
    this.stop.addEventListener("click", () => this.running && this.running.abort());
    this.clear.addEventListener("click", () => {
      this.history = [];
      this.transcript.replaceChildren();
      this.stats.textContent = "";
      this.errors.clear();
    });
    this.form = h(
      "form",
      { class: "chat-form", onsubmit: (event) => (event.preventDefault(), this.ask()) },
      h("label", { class: "grow" }, "System prompt", this.system),
      h("label", { class: "grow" }, "Message", this.prompt),
      h(
        "div",
        { class: "row" },
        h("label", {}, "Max tokens", this.maxTokens),
        this.send,
        this.stop,
        this.clear,
      ),
      this.errors.element,
    );
    this.element = h("div", { id: "pg-chat" }, this.transcript, this.form, this.stats);
  }

  bubble(role, text) {
    const content = h("div", { class: "content" }, text);
    const who = h("div", { class: "who" }, role === "user" ? "You" : this.model());
    this.transcript.append(h("div", { class: `msg ${role}`, dataset: { role } }, who, content));
    return content;
  }

  async ask() {
    const text = this.prompt.value.trim();
    const model = this.model();
    this.errors.clear();
    if (!model) return this.errors.show("pick a model first");
    if (!text || this.running) return;
    const system = this.system.value.trim();
    const question = { role: "user", content: text };
    const preamble = system ? [{ role: "system", content: system }] : [];
    const messages = [...preamble, ...this.history, question];
    const body = { model, messages, stream: true, stream_options: { include_usage: true } };
    const maxTokens = Number(this.maxTokens.value);
    if (Number.isInteger(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
    this.bubble("user", text);
    this.prompt.value = "";
    const answer = this.bubble("assistant", "");
    answer.dataset.streaming = "true";
    this.running = new AbortController();
    this.send.disabled = true;
    this.stop.disabled = false;
    const started = performance.now();
    let first = null;
    let chunks = 0;
    let usage = null;
    let reply = "";
    this.stats.textContent = "waiting for the first token…";
    try {
      const response = await api("POST", CHAT, { body, raw: true, signal: this.running.signal });
      for await (const event of serverSentEvents(response)) {
        if (event.comment !== undefined) {
          if (first === null && event.comment) this.stats.textContent = event.comment;
          continue;
        }
        if (event.data === "[DONE]") break;
        const chunk = JSON.parse(event.data);
        if (chunk.error) {
          this.errors.show(streamError(chunk.error));
          continue;
        }
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (first === null) first = performance.now() - started;
          chunks += 1;
          reply += delta.content;
          // A text node per token: the answer grows as the tokens come.
          answer.append(delta.content);
          this.stats.textContent = `${chunks} tokens…`;
        }
      }
      this.history.push(question, { role: "assistant", content: reply });
      const seconds = (performance.now() - started) / 1000;
      this.stats.textContent =
        `${usage ? usage.completion_tokens : chunks} tokens in ${seconds.toFixed(2)} s` +
        (first !== null ? `, first after ${Math.round(first)} ms` : "") +
        (seconds > 0 ? `, ${(chunks / seconds).toFixed(1)} tokens/s` : "");
    } catch (error) {
      if (error.name === "AbortError") {
        this.stats.textContent = `stopped after ${chunks} tokens`;
        if (reply) this.history.push(question, { role: "assistant", content: reply });
      } else {
        this.errors.show(error);
        this.stats.textContent = "";
      }
    } finally {
      delete answer.dataset.streaming;
      answer.closest(".msg").dataset.done = "true";
      this.running = null;
      this.send.disabled = false;
      this.stop.disabled = true;
    }
  }
}
