// Errors mapped from the API's problem responses: {"error": {"code", "message", "details"}}.

/** One field error of a 422 (where in the body, what is wrong); a flow's bad node gives `path`
 * (`root.children[1]`) and `message` instead, with the node's own field `errors` when there are. */
export interface FieldError {
  loc: (string | number)[];
  msg: string;
  type: string;
  path?: string;
  message?: string;
  errors?: FieldError[];
}

/** Base of every error the client throws for an HTTP answer; `status` 0 means no answer at all. */
export class ConveyorError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: FieldError[] | null;

  constructor(status: number, code: string, message: string, details: FieldError[] | null = null) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** 400: malformed JSON or header. */
export class BadRequestError extends ConveyorError {}
/** 401: no API key, or an unknown one. */
export class AuthenticationError extends ConveyorError {}
/** 403: the key lacks the scope the call needs. */
export class PermissionDeniedError extends ConveyorError {}
/** 404: unknown queue, task or job. */
export class NotFoundError extends ConveyorError {}
/** 409: a conflict (see the subclasses). */
export class ConflictError extends ConveyorError {}
/** 409 `idempotency_conflict`: the idempotency key or job id was used with a different body. */
export class IdempotencyConflictError extends ConflictError {}
/** 409 `invalid_state`: the job is not in a state the action applies to. */
export class InvalidStateError extends ConflictError {}
/** 413: the body (or the job's payload) is too large. */
export class PayloadTooLargeError extends ConveyorError {}
/** 422: invalid options or payload; `details` lists the field errors. */
export class ValidationError extends ConveyorError {}
/** 429: rate limited; retry after `retryAfterS` seconds. */
export class RateLimitedError extends ConveyorError {
  readonly retryAfterS: number | null;

  constructor(status: number, code: string, message: string, details: FieldError[] | null, retryAfterS: number | null) {
    super(status, code, message, details);
    this.retryAfterS = retryAfterS;
  }
}
/** 503: the API cannot reach Redis. */
export class UnavailableError extends ConveyorError {}
/** No HTTP answer: connection refused, reset, DNS failure or the client's own timeout. */
export class ConnectionError extends ConveyorError {}

type ErrorClass = new (status: number, code: string, message: string, details: FieldError[] | null) => ConveyorError;

const BY_STATUS: Record<number, ErrorClass> = {
  400: BadRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: PayloadTooLargeError,
  422: ValidationError,
  503: UnavailableError,
};

const BY_CODE: Record<string, ErrorClass> = {
  idempotency_conflict: IdempotencyConflictError,
  invalid_state: InvalidStateError,
};

/** The error for a non-2xx response (its body already read as text). */
export function errorFromResponse(status: number, headers: Headers, text: string): ConveyorError {
  let code = "error";
  let message = `HTTP ${status}`;
  let details: FieldError[] | null = null;
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
    if (body && typeof body.error === "object" && body.error !== null) {
      if (typeof body.error.code === "string") code = body.error.code;
      if (typeof body.error.message === "string") message = body.error.message;
      if (Array.isArray(body.error.details)) details = body.error.details as FieldError[];
    }
  } catch {
    // not JSON (a proxy's error page, say): keep the status text
  }
  if (status === 429) {
    const after = Number(headers.get("retry-after"));
    return new RateLimitedError(status, code, message, details, Number.isFinite(after) && after >= 0 ? after : null);
  }
  const cls = BY_CODE[code] ?? BY_STATUS[status] ?? ConveyorError;
  return new cls(status, code, message, details);
}
