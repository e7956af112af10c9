// The difference between two generations' desired engines, worked out from their `engines`
// (the whole desired set after each change): engines added, removed, and changed with the
// spec fields that differ.

/** JSON with object keys sorted, so equal values give equal text whatever their key order. */
export function stableJson(value) {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((key) => `${JSON.stringify(key)}:${stableJson(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value === undefined ? null : value);
}

function byId(generation) {
  return new Map((generation.engines || []).map((engine) => [engine.id, engine]));
}

/** The spec fields whose values differ: [{field, before, after}], by field name. */
export function changedFields(before, after) {
  const fields = [...new Set([...Object.keys(before || {}), ...Object.keys(after || {})])].sort();
  return fields
    .filter((field) => stableJson(before?.[field]) !== stableJson(after?.[field]))
    .map((field) => ({ field, before: before?.[field], after: after?.[field] }));
}

/**
 * From generation `from` to generation `to`:
 * {added: [engine], removed: [engine], changed: [{id, fields: [{field, before, after}]}]}.
 */
export function diffGenerations(from, to) {
  const before = byId(from);
  const after = byId(to);
  const added = [...after.values()].filter((engine) => !before.has(engine.id));
  const removed = [...before.values()].filter((engine) => !after.has(engine.id));
  const changed = [];
  for (const [id, engine] of after) {
    if (!before.has(id)) continue;
    const fields = changedFields(before.get(id).spec, engine.spec);
    if (fields.length) changed.push({ id, fields });
  }
  const order = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  return { added: added.sort(order), removed: removed.sort(order), changed: changed.sort(order) };
}
