// The gateway's public HTTP API, as the page uses it. Same origin; the key goes in a header.

import { followEvents } from "./sse.js";

const KEY_STORAGE = "qie.apiKey";
export const FINAL_EVENTS = new Set(["completed", "failed", "cancelled"]);

/** An answer of the API in its one error shape: {code, message, detail}. */
export class ApiError extends Error {
  constructor(status, code, message, detail = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
  }

  static async from(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON: a proxy in between, say; the status line is all there is
    }
    if (body && typeof body.message === "string") {
      return new ApiError(response.status, body.code || "error", body.message, body.detail);
    }
    const text = `${response.status} ${response.statusText}`.trim();
    return new ApiError(response.status, "http_error", `the gateway answered ${text}`);
  }
}

const NETWORK_ERROR = () =>
  new ApiError(0, "network_error", "could not reach the gateway; is it still running?");

export class Api {
  constructor(base = "") {
    this.base = base;
  }

  get key() {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  }

  set key(value) {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  }

  headers(extra = {}) {
    return this.key ? { ...extra, Authorization: `Bearer ${this.key}` } : { ...extra };
  }

  async request(path, { method = "GET", headers = {}, body, signal } = {}) {
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        body,
        signal,
        headers: this.headers(headers),
        cache: "no-store",
      });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw NETWORK_ERROR();
    }
    if (!response.ok) throw await ApiError.from(response);
    return response;
  }

  /** /health answers 503 while starting or unhealthy, with the same body. */
  async health() {
    let response;
    try {
      response = await fetch(`${this.base}/health`, { cache: "no-store" });
      return await response.json();
    } catch {
      throw NETWORK_ERROR();
    }
  }

  async models() {
    return (await this.request("/models")).json();
  }

  /**
   * Submits an edit as a job (Prefer: respond-async); resolves to {job_id, status, ...}. A
   * `mask` (a PNG blob of the image's upright size) or a `region` ("x,y,w,h") makes it local.
   */
  async submit({ file, prompt, negativePrompt, model, options, mask, region }) {
    const form = new FormData();
    form.append("image", file, file.name);
    form.append("prompt", prompt);
    if (negativePrompt) form.append("negative_prompt", negativePrompt);
    if (model) form.append("model", model);
    form.append("options", JSON.stringify(options));
    appendLocalEdit(form, { mask, region });
    const response = await this.request("/process", {
      method: "POST",
      headers: { Prefer: "respond-async" },
      body: form,
    });
    return response.json();
  }

  async job(jobId) {
    return (await this.request(`/jobs/${encodeURIComponent(jobId)}`)).json();
  }

  async cancel(jobId) {
    const path = `/jobs/${encodeURIComponent(jobId)}/cancel`;
    return (await this.request(path, { method: "POST" })).json();
  }

  async result(jobId) {
    return (await this.request(`/jobs/${encodeURIComponent(jobId)}/result`)).blob();
  }

  /** Calls onEvent({id, event, data}) for each event until the job's final one, returned. */
  events(jobId, { onEvent, signal }) {
    return this.follow(`/jobs/${encodeURIComponent(jobId)}/events`, {
      onEvent,
      signal,
      isFinal: (event) => FINAL_EVENTS.has(event.event),
    });
  }

  /**
   * Submits several images (or one, with `variations`) as one batch; resolves to BatchAccepted.
   * A mask or region goes with one image's variations only.
   */
  async submitBatch({ files, variations, prompt, negativePrompt, model, options, mask, region }) {
    const form = new FormData();
    for (const file of files) form.append("images", file, file.name);
    form.append("prompt", prompt);
    if (negativePrompt) form.append("negative_prompt", negativePrompt);
    if (model) form.append("model", model);
    form.append("options", JSON.stringify(options));
    if (variations) form.append("variations", String(variations));
    appendLocalEdit(form, { mask, region });
    return (await this.request("/batches", { method: "POST", body: form })).json();
  }

  async batch(batchId) {
    return (await this.request(`/batches/${encodeURIComponent(batchId)}`)).json();
  }

  async cancelBatch(batchId) {
    const path = `/batches/${encodeURIComponent(batchId)}/cancel`;
    return (await this.request(path, { method: "POST" })).json();
  }

  /** The zip of a batch's results: {blob, name}, named as the gateway names it. */
  async batchZip(batchId) {
    const response = await this.request(`/batches/${encodeURIComponent(batchId)}/result`);
    const disposition = response.headers.get("Content-Disposition") ?? "";
    const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? `batch-${batchId}.zip`;
    return { blob: await response.blob(), name };
  }

  /**
   * Follows a batch's events (its own "batch" counts, and every job's events with job_id and
   * index) until its final "batch" event, returned; an "error" of no one job ends it too.
   */
  batchEvents(batchId, { onEvent, signal }) {
    return this.follow(`/batches/${encodeURIComponent(batchId)}/events`, {
      onEvent,
      signal,
      isFinal: isFinalBatchEvent,
    });
  }

  follow(path, { onEvent, signal, isFinal }) {
    const connect = (lastEventId) =>
      this.request(path, {
        signal,
        headers: lastEventId
          ? { Accept: "text/event-stream", "Last-Event-ID": lastEventId }
          : { Accept: "text/event-stream" },
      });
    return followEvents({ open: connect, onEvent, signal, isFinal });
  }
}

/** A local edit's part: the mask as a PNG file, or the region as "x,y,w,h". */
function appendLocalEdit(form, { mask, region }) {
  if (mask) form.append("mask", mask, "mask.png");
  if (region) form.append("region", region);
}

function isFinalBatchEvent(event) {
  if (event.event !== "batch" && event.event !== "error") return false;
  try {
    const data = JSON.parse(event.data);
    return event.event === "batch" ? data.final === true : data.job_id === undefined;
  } catch {
    return false;
  }
}
