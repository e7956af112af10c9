// TODO(playground view): written by a helper.
import { h } from "../dom.js";

export function render(container) {
  container.append(h("p", { class: "notice" }, "the playground view is not built yet"));
}
