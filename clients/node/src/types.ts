// Shapes of the API's requests and responses (see the API's /openapi.json).

export type JobState =
  | "waiting"
  | "delayed"
  | "active"
  | "waiting-children"
  | "completed"
  | "failed"
  | "cancelled";

export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(["completed", "failed", "cancelled"]);

export interface Backoff {
  type: "fixed" | "exponential";
  delay: number;
  [extra: string]: unknown;
}

/** Per-job options; unset ones come from the task's and the queue's defaults. Times are seconds. */
export interface JobOptions {
  job_id?: string;
  idempotency_key?: string;
  idempotency_ttl?: number;
  priority?: number;
  delay?: number;
  /** ISO 8601 time with an offset; an alternative to `delay`. */
  run_at?: string;
  attempts?: number;
  backoff?: number | Backoff;
  timeout?: number;
  result_ttl?: number;
  failed_ttl?: number;
  group?: string;
  cost?: number;
}

/** One job of a bulk enqueue. */
export interface JobSpec<D = unknown> {
  name: string;
  data?: D;
  options?: JobOptions;
}

/** What an enqueue returns for each job. */
export interface Enqueued {
  id: string;
  queue: string;
  state: JobState;
  /** False when an idempotent repeat returned the job made the first time. */
  created: boolean;
  status_url: string;
  events_url: string;
}

/** A job as the API shows it. `data` and `result` are null unless the key has the read-data scope. */
export interface Job<D = unknown, R = unknown> {
  id: string;
  queue: string;
  name: string;
  state: JobState;
  data: D | null;
  result: R | null;
  data_hidden: boolean;
  progress: unknown;
  error: { type?: string; message?: string; stack?: string; attempt?: number } | null;
  attempts_made: number;
  max_attempts: number;
  priority: number;
  stalls: number;
  options: Record<string, unknown>;
  created_ms: number | null;
  started_ms: number | null;
  finished_ms: number | null;
  worker: string | null;
  cancel_requested: boolean;
  idempotency_key: string | null;
  /** The flow job this one is a child of, or null. */
  parent?: { queue: string; id: string } | null;
  /** The children of a flow job (empty for a job without children). */
  children?: { queue: string; id: string; name: string; state: JobState | null }[];
}

/** One node of a flow (POST /api/flows): a job whose children all end before it runs; its handler
 * gets their results. Children may be on any queue; a tree of any depth (docs/flows.md). */
export interface FlowNode<D = unknown> {
  queue: string;
  name: string;
  data?: D;
  options?: JobOptions;
  children?: FlowNode[];
  /** What a child that fails for good does to this node: fail it (default), be ignored (the node
   * gets the error in place of the result) or let it run at once with what has ended so far. */
  on_child_failure?: "fail" | "ignore" | "continue";
}

/** What starting a flow returns: the root job. */
export interface FlowStarted {
  id: string;
  queue: string;
  status_url: string;
  events_url: string;
}

/** The state of a job after cancel or retry (`active` after cancel = cancellation requested). */
export interface JobAction {
  id: string;
  queue: string;
  state: JobState;
}

/** One Server-Sent Event of a job: `state` (a snapshot), then added, active, progress, log,
 * retrying, completed, failed, cancelled, stalled, removed. `id` is the stream id to resume from. */
export interface JobEvent {
  id: string | null;
  event: string;
  data: Record<string, unknown>;
}
