// Server-sent events read with fetch(). EventSource can't send an Authorization header, and the
// API key must never travel in a URL, so the page parses text/event-stream itself (the WHATWG
// rules: https://html.spec.whatwg.org/multipage/server-sent-events.html) and resumes a dropped
// stream with Last-Event-ID, as EventSource would.

const LINE_END = /\r\n|\r|\n/g;

/** Turns chunks of text into events: {id, event, data}. */
export class EventStreamParser {
  constructor() {
    this.buffer = "";
    this.lastEventId = "";
    this.retryMs = null;
    this.type = "";
    this.data = [];
  }

  /** Feeds one chunk; returns the events it completes. */
  push(chunk) {
    this.buffer += chunk;
    const events = [];
    let start = 0;
    LINE_END.lastIndex = 0;
    for (let match = LINE_END.exec(this.buffer); match; match = LINE_END.exec(this.buffer)) {
      // A CR that ends the buffer may be the first half of a CRLF split across two chunks.
      if (match[0] === "\r" && match.index === this.buffer.length - 1) break;
      const event = this.line(this.buffer.slice(start, match.index));
      if (event) events.push(event);
      start = LINE_END.lastIndex;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  /** The stream ended: a pending lone CR still ends its line; an unfinished event is dropped. */
  finish() {
    const events = this.buffer.endsWith("\r") ? this.push("\n") : [];
    this.buffer = "";
    return events;
  }

  line(text) {
    if (text === "") return this.dispatch();
    if (text.startsWith(":")) return null; // a comment, such as the server's keep-alive ping
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
    return null;
  }

  dispatch() {
    const event = this.data.length
      ? { id: this.lastEventId, event: this.type || "message", data: this.data.join("\n") }
      : null;
    this.type = "";
    this.data = [];
    return event;
  }
}

async function* readEvents(body, parser) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      yield* parser.push(value);
    }
    yield* parser.finish();
  } finally {
    reader.releaseLock();
  }
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

/**
 * Follows an event stream until `isFinal(event)` holds, reconnecting with Last-Event-ID after a
 * drop. `open(lastEventId)` returns a Response or throws; an error with an HTTP status below 500
 * (such as 401 or 404) is final, anything else is retried `retries` times in a row.
 */
export async function followEvents({ open, onEvent, isFinal, signal, retries = 5 }) {
  let lastEventId = "";
  let retryMs = 1000;
  let failures = 0;
  for (;;) {
    const parser = new EventStreamParser();
    try {
      const response = await open(lastEventId);
      for await (const event of readEvents(response.body, parser)) {
        failures = 0;
        lastEventId = event.id || lastEventId;
        onEvent(event);
        if (isFinal(event)) return event;
      }
    } catch (error) {
      if (signal?.aborted || (error.status > 0 && error.status < 500)) throw error;
    }
    retryMs = parser.retryMs ?? retryMs;
    failures += 1;
    if (failures > retries) {
      throw new Error(`the event stream dropped ${failures} times in a row`);
    }
    await sleep(retryMs, signal);
  }
}
