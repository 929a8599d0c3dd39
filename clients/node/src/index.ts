// @conveyor/client: enqueue Conveyor jobs from Node and follow them to their end over the HTTP API.
// No runtime dependencies: Node's own fetch, streams and AbortController.

import { ConnectionError, ConveyorError, errorFromResponse } from "./errors.js";
import { SseParser } from "./sse.js";
import {
  TERMINAL_STATES,
  type Enqueued,
  type FlowNode,
  type FlowStarted,
  type Job,
  type JobAction,
  type JobEvent,
  type JobOptions,
  type JobSpec,
  type JobState,
} from "./types.js";

export * from "./errors.js";
export * from "./types.js";

export interface ClientOptions {
  /** Where the API is served, e.g. "http://127.0.0.1:8000" (or ".../conveyor" when mounted). */
  baseUrl: string;
  /** An API key (`conveyor keys create`); sent as `Authorization: Bearer <key>`. */
  apiKey?: string;
  /** Per-request timeout in ms for ordinary calls (default 30 s; long-polls add their own wait). */
  timeoutMs?: number;
  /** A fetch implementation (default: the global fetch). */
  fetch?: typeof fetch;
}

export interface EnqueueOptions extends JobOptions {
  /** Sent as the Idempotency-Key header: repeating the call returns the same job. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface WaitOptions {
  /** Give up after this many seconds and return the job as it is (default: wait as long as it takes). */
  timeoutS?: number;
  signal?: AbortSignal;
}

export interface EventsOptions {
  /** Resume after this event id (the `id` of the last event seen); the state snapshot is then skipped. */
  lastEventId?: string;
  /** Reconnect this many times in a row when the stream drops (default 5); each waits the server's retry delay. */
  maxReconnects?: number;
  signal?: AbortSignal;
}

const END_EVENTS = new Set(["completed", "failed", "cancelled", "removed"]);
const LONG_POLL_S = 30;

export class ConveyorClient {
  private readonly baseUrl: string;
  private readonly apiKey: string | undefined;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.fetchImpl = options.fetch ?? globalThis.fetch;
  }

  /** Enqueue one job of task `name` on `queue`. */
  async enqueue<D = unknown>(queue: string, name: string, data?: D, options: EnqueueOptions = {}): Promise<Enqueued> {
    const { idempotencyKey, signal, ...jobOptions } = options;
    const body: JobSpec<D> = { name, data };
    if (Object.keys(jobOptions).length > 0) body.options = jobOptions;
    return this.request<Enqueued>("POST", `/api/queues/${seg(queue)}/jobs`, {
      body,
      headers: idempotencyKey ? { "Idempotency-Key": idempotencyKey } : undefined,
      signal,
    });
  }

  /** Enqueue up to 1,000 jobs at once, all or nothing. With an idempotency key K, job i gets `K:i`. */
  async enqueueBulk(
    queue: string,
    jobs: JobSpec[],
    options: { idempotencyKey?: string; signal?: AbortSignal } = {},
  ): Promise<Enqueued[]> {
    const reply = await this.request<{ jobs: Enqueued[] }>("POST", `/api/queues/${seg(queue)}/jobs:bulk`, {
      body: { jobs },
      headers: options.idempotencyKey ? { "Idempotency-Key": options.idempotencyKey } : undefined,
      signal: options.signal,
    });
    return reply.jobs;
  }

  /** Start a flow: the whole tree is checked first and written all or nothing; a bad node is a
   * ValidationError whose `details[0].path` names it (`root.children[1]`). Returns the root job. */
  async enqueueFlow(root: FlowNode, options: { signal?: AbortSignal } = {}): Promise<FlowStarted> {
    return this.request<FlowStarted>("POST", "/api/flows", { body: root, signal: options.signal });
  }

  /** The job as it is now. */
  async getJob<D = unknown, R = unknown>(queue: string, id: string, signal?: AbortSignal): Promise<Job<D, R>> {
    return this.request<Job<D, R>>("GET", jobPath(queue, id), { signal });
  }

  /** Wait until the job is completed, failed or cancelled (server long-polls of up to 30 s each);
   * with `timeoutS`, returns the job in whatever state it is in when that time is up. */
  async wait<D = unknown, R = unknown>(queue: string, id: string, options: WaitOptions = {}): Promise<Job<D, R>> {
    const deadline = options.timeoutS === undefined ? Infinity : Date.now() + options.timeoutS * 1000;
    for (;;) {
      const left = Math.max(0, (deadline - Date.now()) / 1000);
      const timeout = Math.min(LONG_POLL_S, left);
      const job = await this.request<Job<D, R>>("GET", `${jobPath(queue, id)}/wait?timeout=${timeout.toFixed(3)}`, {
        signal: options.signal,
        extraTimeoutMs: timeout * 1000,
      });
      if (TERMINAL_STATES.has(job.state) || Date.now() >= deadline) return job;
    }
  }

  /** Follow a job as Server-Sent Events: a `state` snapshot first, then each event until the job ends.
   * A dropped stream is resumed from the last event id (no event is seen twice). */
  async *events(queue: string, id: string, options: EventsOptions = {}): AsyncGenerator<JobEvent> {
    let lastId = options.lastEventId;
    let reconnects = 0;
    const maxReconnects = options.maxReconnects ?? 5;
    const parser = new SseParser();
    for (;;) {
      let response: Response;
      try {
        response = await this.send("GET", `${jobPath(queue, id)}/events`, {
          headers: { Accept: "text/event-stream", ...(lastId ? { "Last-Event-ID": lastId } : {}) },
          signal: options.signal,
          stream: true,
        });
      } catch (error) {
        if (!(error instanceof ConnectionError) || reconnects >= maxReconnects || options.signal?.aborted) throw error;
        reconnects += 1;
        await delay(parser.retryMs ?? 1000, options.signal);
        continue;
      }
      let ended = false;
      try {
        const decoder = new TextDecoder();
        for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
          for (const message of parser.push(decoder.decode(chunk, { stream: true }))) {
            reconnects = 0;
            if (message.id) lastId = message.id;
            const data = JSON.parse(message.data) as Record<string, unknown>;
            yield { id: message.id, event: message.event, data };
            if (END_EVENTS.has(message.event) || (message.event === "state" && isTerminal(data.state))) {
              ended = true;
              return;
            }
          }
        }
      } catch (error) {
        if (options.signal?.aborted) throw error;
        // the connection dropped mid-stream: resume below
      } finally {
        if (!ended) await response.body?.cancel().catch(() => undefined);
      }
      if (reconnects >= maxReconnects) {
        throw new ConnectionError(0, "stream_ended", "the event stream ended before the job did");
      }
      reconnects += 1;
      await delay(parser.retryMs ?? 1000, options.signal);
    }
  }

  /** Cancel a waiting or delayed job, or ask a running one to stop (state `active` until it does). */
  async cancel(queue: string, id: string, signal?: AbortSignal): Promise<JobAction> {
    return this.request<JobAction>("DELETE", jobPath(queue, id), { signal });
  }

  /** Send a failed or cancelled job back to waiting. */
  async retry(queue: string, id: string, signal?: AbortSignal): Promise<JobAction> {
    return this.request<JobAction>("POST", `${jobPath(queue, id)}/retry`, { signal });
  }

  private async request<T>(method: string, path: string, init: RequestInit2 = {}): Promise<T> {
    const response = await this.send(method, path, init);
    return (await response.json()) as T;
  }

  private async send(method: string, path: string, init: RequestInit2): Promise<Response> {
    const headers: Record<string, string> = { Accept: "application/json", ...(init.headers ?? {}) };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    if (init.body !== undefined) headers["Content-Type"] = "application/json";
    const timeout = init.stream ? undefined : AbortSignal.timeout(this.timeoutMs + (init.extraTimeoutMs ?? 0));
    const signals = [init.signal, timeout].filter((s): s is AbortSignal => s !== undefined);
    let response: Response;
    try {
      response = await this.fetchImpl(this.baseUrl + path, {
        method,
        headers,
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        signal: signals.length ? AbortSignal.any(signals) : undefined,
        redirect: "error",
      });
    } catch (error) {
      if (init.signal?.aborted) throw error;
      const cause = error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : String(error);
      throw new ConnectionError(0, "connection_failed", `${method} ${path}: ${cause}`);
    }
    if (!response.ok) {
      throw errorFromResponse(response.status, response.headers, await response.text());
    }
    return response;
  }
}

interface RequestInit2 {
  body?: unknown;
  headers?: Record<string, string> | undefined;
  signal?: AbortSignal | undefined;
  stream?: boolean;
  extraTimeoutMs?: number;
}

function seg(value: string): string {
  return encodeURIComponent(value);
}

function jobPath(queue: string, id: string): string {
  return `/api/jobs/${seg(queue)}/${seg(id)}`;
}

function isTerminal(state: unknown): boolean {
  return typeof state === "string" && TERMINAL_STATES.has(state as JobState);
}

function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

export { ConveyorError };
