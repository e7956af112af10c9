// The Playground: pick a model the gateway routes, then chat with it (streaming) or embed
// texts. Everything goes through the daemon's gateway relay, /v1/gateway/openai/v1/...

import { get, v1 } from "../api.js";
import { coalescing, h, fill, errorBox } from "../dom.js";
import { onStatus } from "../live.js";
import { ChatPanel } from "../chat_panel.js";
import { EmbedPanel } from "../embed_panel.js";

const MODELS = v1("gateway/openai/v1/models");

function optionText(entry) {
  const kind = entry.kind || "llm and embedding";
  return `${entry.id} (${kind}${entry.ready === false ? ", not ready" : ""})`;
}

export function render(container) {
  const picker = h("select", { id: "pg-model" });
  const mode = h(
    "select",
    { id: "pg-mode" },
    h("option", { value: "chat" }, "Chat"),
    h("option", { value: "embeddings" }, "Embeddings"),
  );
  const reload = h("button", { type: "button", id: "pg-reload" }, "Reload models");
  const modelErrors = errorBox();
  modelErrors.element.id = "pg-model-error";
  const about = h("p", { class: "muted", id: "pg-model-info" });
  let models = [];
  const chosen = () => picker.value;
  const chat = new ChatPanel(chosen);
  const embed = new EmbedPanel(chosen);
  const panels = h("div", {}, chat.element, embed.element);

  const showMode = () => {
    chat.element.hidden = mode.value !== "chat";
    embed.element.hidden = mode.value !== "embeddings";
  };
  const describe = () => {
    const entry = models.find((model) => model.id === picker.value);
    if (!entry) return fill(about, "");
    const engines = (entry.engines || []).map((engine) => `${engine.id} (${engine.state})`);
    const others = (entry.names || []).filter((name) => name !== entry.id);
    fill(
      about,
      `served by ${engines.join(", ") || "no engine"}`,
      others.length ? `; also called ${others.join(", ")}` : "",
    );
  };
  picker.addEventListener("change", () => {
    const entry = models.find((model) => model.id === picker.value);
    if (entry && entry.kind) mode.value = entry.kind === "embedding" ? "embeddings" : "chat";
    showMode();
    describe();
  });
  mode.addEventListener("change", showMode);

  // Reload clicks during a read make one more read after it.
  const loadModels = coalescing(async () => {
    try {
      const answer = await get(MODELS);
      modelErrors.clear();
      models = answer.data || [];
    } catch (error) {
      models = [];
      modelErrors.show(error);
    }
    const previous = picker.value;
    fill(
      picker,
      models.length ? null : h("option", { value: "" }, "no routable model"),
      models.map((entry) => h("option", { value: entry.id }, optionText(entry))),
    );
    if (models.some((entry) => entry.id === previous)) picker.value = previous;
    else if (models.length) picker.dispatchEvent(new Event("change"));
    picker.disabled = !models.length;
    describe();
  });
  reload.addEventListener("click", loadModels);

  container.append(
    h("h1", {}, "Playground"),
    h(
      "section",
      { "aria-label": "Model" },
      h(
        "div",
        { class: "row" },
        h("label", {}, "Model", picker),
        h("label", {}, "Mode", mode),
        reload,
      ),
      modelErrors.element,
      about,
    ),
    panels,
  );
  showMode();

  // Models come and go with engines and the gateway: re-read the list when their states change.
  let seen = null;
  const stopStatus = onStatus((status) => {
    const engines = (status.engines || []).map((engine) => [engine.id, engine.state, engine.label]);
    const gateway = status.gateway ? [status.gateway.enabled, status.gateway.state] : null;
    const signature = JSON.stringify([engines, gateway]);
    if (signature === seen) return;
    seen = signature;
    loadModels();
  });
  return () => {
    stopStatus();
    if (chat.running) chat.running.abort();
  };
}
