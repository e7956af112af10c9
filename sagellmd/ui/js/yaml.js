// JSON values written as YAML for display (the API speaks JSON; people read YAML).

const PLAIN = /^[A-Za-z_./][A-Za-z0-9_./:@+-]*$/;
const RESERVED = /^(true|false|null|yes|no|on|off|~|-?\d.*)$/i;

function scalar(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  const text = String(value);
  if (text !== "" && PLAIN.test(text) && !RESERVED.test(text)) return text;
  return JSON.stringify(text);
}

function isEmpty(value) {
  return Array.isArray(value) ? value.length === 0 : Object.keys(value).length === 0;
}

function lines(value, indent) {
  const pad = " ".repeat(indent);
  if (Array.isArray(value)) {
    return value.flatMap((item) => {
      if (item !== null && typeof item === "object" && !isEmpty(item)) {
        const inner = lines(item, indent + 2);
        return [`${pad}- ${inner[0].trimStart()}`, ...inner.slice(1)];
      }
      return [`${pad}- ${item !== null && typeof item === "object" ? (Array.isArray(item) ? "[]" : "{}") : scalar(item)}`];
    });
  }
  return Object.entries(value).flatMap(([key, item]) => {
    const name = scalar(key);
    if (item !== null && typeof item === "object") {
      if (isEmpty(item)) return [`${pad}${name}: ${Array.isArray(item) ? "[]" : "{}"}`];
      return [`${pad}${name}:`, ...lines(item, Array.isArray(item) ? indent : indent + 2)];
    }
    return [`${pad}${name}: ${scalar(item)}`];
  });
}

/** The YAML text of a JSON value. */
export function toYaml(value) {
  if (value === null || typeof value !== "object") return `${scalar(value)}\n`;
  if (isEmpty(value)) return Array.isArray(value) ? "[]\n" : "{}\n";
  return `${lines(value, 0).join("\n")}\n`;
}
