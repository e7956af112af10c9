// Server-sent events read from a fetch Response as the bytes arrive (EventSource cannot POST).

/**
 * Yields `{data}` per event (its data lines joined by "\n") and `{comment}` per comment line
 * (the gateway's `: loading ...` keep-alives), in arrival order.
 */
export async function* serverSentEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      const lines = buffer.split(/\r?\n/);
      // The last piece may be half a line; it waits for the next chunk (or the end).
      buffer = done ? "" : lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield { data: data.join("\n") };
          data = [];
        } else if (line.startsWith(":")) {
          yield { comment: line.slice(1).trim() };
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        }
      }
      if (done) {
        if (data.length) yield { data: data.join("\n") };
        return;
      }
    }
  } finally {
    // Ends the request when the reader stopped early (Stop, [DONE] before the body's end).
    reader.cancel().catch(() => {});
  }
}
