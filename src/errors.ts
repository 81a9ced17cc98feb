/**
 * The closed catalogue of error codes. Every error a client can see has one of these codes and is rendered
 * as RFC 9457 problem+json by the errors plugin; anything else becomes `internal` with nothing internal in
 * the body. docs/errors.md lists the codes for API users.
 */
export const ERROR_CATALOGUE = {
  validation_failed: { status: 400, title: 'The request is not valid' },
  bad_request: { status: 400, title: 'The request could not be read' },
  unauthenticated: { status: 401, title: 'Authentication required' },
  invalid_credentials: { status: 401, title: 'Wrong username or password' },
  forbidden: { status: 403, title: 'Not allowed' },
  invalid_signature: { status: 403, title: 'The download link is invalid or has expired' },
  account_disabled: { status: 403, title: 'The account is disabled' },
  not_found: { status: 404, title: 'Not found' },
  request_timeout: { status: 408, title: 'The request took too long to arrive' },
  conflict: { status: 409, title: 'Conflicts with existing data' },
  area_not_empty: { status: 409, title: 'The area still has sub-areas, devices or users' },
  in_use: { status: 409, title: 'Still in use' },
  not_approved: { status: 409, title: 'The programme is not approved' },
  invalid_transition: { status: 409, title: 'Not possible in its current status' },
  schedule_conflict: { status: 409, title: 'Overlaps other schedules on the same loudspeakers' },
  idempotency_key_in_use: { status: 409, title: 'A request with this Idempotency-Key is still in progress' },
  idempotency_key_reused: { status: 422, title: 'The Idempotency-Key was used for a different request' },
  payload_too_large: { status: 413, title: 'The request body is too large' },
  range_not_satisfiable: { status: 416, title: 'The requested range is outside the file' },
  uri_too_long: { status: 414, title: 'A path segment is too long' },
  unsupported_media_type: { status: 415, title: 'Unsupported content type' },
  audio_undecodable: { status: 422, title: 'The audio could not be decoded' },
  audio_too_long: { status: 422, title: 'The audio is longer than allowed' },
  no_target_devices: { status: 422, title: 'No loudspeaker matches the targets' },
  too_many_requests: { status: 429, title: 'Too many requests' },
  headers_too_large: { status: 431, title: 'The request line and headers are too large' },
  internal: { status: 500, title: 'Internal server error' },
  not_ready: { status: 503, title: 'Not ready to serve' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export interface FieldError {
  /** Dotted path of the offending field, prefixed by where it was: `body.params.level`, `query.limit`. */
  field: string;
  message: string;
}

export class AppError extends Error {
  override name = 'AppError';
  readonly status: number;

  constructor(
    readonly code: ErrorCode,
    readonly detail?: string,
    readonly extra: {
      errors?: FieldError[];
      retryAfterS?: number;
      /** RFC 9457 extension members added to the body, e.g. `conflicts` of a schedule_conflict. */
      members?: Record<string, unknown>;
    } = {},
  ) {
    super(detail ?? ERROR_CATALOGUE[code].title);
    this.status = ERROR_CATALOGUE[code].status;
  }
}

export const problemType = (code: ErrorCode) => `urn:loa:problem:${code}`;

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  code: ErrorCode;
  errors?: FieldError[];
  [member: string]: unknown;
}

export function toProblem(err: AppError, instance?: string): Problem {
  const entry = ERROR_CATALOGUE[err.code];
  return {
    // Extension members first: they can never replace a standard member.
    ...err.extra.members,
    type: problemType(err.code),
    title: entry.title,
    status: entry.status,
    ...(err.detail ? { detail: err.detail } : {}),
    ...(instance ? { instance } : {}),
    code: err.code,
    ...(err.extra.errors ? { errors: err.extra.errors } : {}),
  };
}

/** Convenience constructors for the common cases, so call sites read as sentences. */
export const notFound = (what: string) => new AppError('not_found', `${what} not found`);
export const forbidden = (detail: string) => new AppError('forbidden', detail);
export const invalid = (field: string, message: string) =>
  new AppError('validation_failed', `${field}: ${message}`, { errors: [{ field, message }] });
