// Errors of the client: every failed call throws a TurnboxError (or one of
// its subclasses, chosen by the reasons the server named in its
// turnbox.v1.ErrorInfo detail).

import { Code, ConnectError } from "@connectrpc/connect";
import { fromJson } from "@bufbuild/protobuf";
import { ErrorInfoSchema, ErrorReason } from "./gen/turnbox/v1/sandbox_pb.js";

/**
 * Reason names a turnbox sentinel error, as the server lists them in
 * ErrorInfo.reasons (ERROR_REASON_ stripped): "SESSION_NOT_FOUND", ...
 */
export type Reason = Exclude<keyof typeof ErrorReason, "UNSPECIFIED">;

/**
 * TurnboxError is a failed call. `reasons` holds every sentinel the server
 * named (a call on a destroyed session is both NOT_ACTIVE and
 * SESSION_NOT_FOUND); `code` is the Connect code; `cause` the ConnectError.
 */
export class TurnboxError extends Error {
  override name = "TurnboxError";
  constructor(
    message: string,
    readonly code: Code,
    readonly reasons: readonly Reason[],
    readonly procedure: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** has reports whether the server named this reason. */
  has(reason: Reason): boolean {
    return this.reasons.includes(reason);
  }
}

/** SessionNotFoundError: no session with that id (or it was destroyed). */
export class SessionNotFoundError extends TurnboxError {
  override name = "SessionNotFoundError";
}
/** SnapshotNotFoundError: the id is not one of the session's snapshots. */
export class SnapshotNotFoundError extends TurnboxError {
  override name = "SnapshotNotFoundError";
}
/** NotActiveError: the session is paused, failed or being destroyed. */
export class NotActiveError extends TurnboxError {
  override name = "NotActiveError";
}
/** InvalidArgumentError: the request was malformed; nothing changed. */
export class InvalidArgumentError extends TurnboxError {
  override name = "InvalidArgumentError";
}
/** FileNotFoundError: no file at that path in the session. */
export class FileNotFoundError extends TurnboxError {
  override name = "FileNotFoundError";
}
/** PathEscapesError: the path resolves outside the session's root. */
export class PathEscapesError extends TurnboxError {
  override name = "PathEscapesError";
}
/** ProcessNotFoundError: no process with that pid in the session. */
export class ProcessNotFoundError extends TurnboxError {
  override name = "ProcessNotFoundError";
}
/** UnauthenticatedError: the server refused the bearer token. */
export class UnauthenticatedError extends TurnboxError {
  override name = "UnauthenticatedError";
}
/** UnavailableError: the server could not be reached or went away. */
export class UnavailableError extends TurnboxError {
  override name = "UnavailableError";
}

type ErrorClass = new (...a: ConstructorParameters<typeof TurnboxError>) => TurnboxError;

// The class of an error by the reasons it carries, most specific first:
// SESSION_NOT_FOUND before NOT_ACTIVE, as a destroyed session has both.
const byReason: [Reason, ErrorClass][] = [
  ["SESSION_NOT_FOUND", SessionNotFoundError],
  ["SNAPSHOT_NOT_FOUND", SnapshotNotFoundError],
  ["PROCESS_NOT_FOUND", ProcessNotFoundError],
  ["FILE_NOT_FOUND", FileNotFoundError],
  ["PATH_ESCAPES", PathEscapesError],
  ["NOT_ACTIVE", NotActiveError],
  ["INVALID_ARGUMENT", InvalidArgumentError],
];

// Without a detail the failure came from outside the service (auth, the
// transport, a proxy): the class follows the code.
const byCode = new Map<Code, ErrorClass>([
  [Code.Unauthenticated, UnauthenticatedError],
  [Code.PermissionDenied, UnauthenticatedError],
  [Code.Unavailable, UnavailableError],
  [Code.InvalidArgument, InvalidArgumentError],
]);

function reasonName(r: ErrorReason): Reason | undefined {
  const name = ErrorReason[r] as keyof typeof ErrorReason | undefined;
  return name === undefined || name === "UNSPECIFIED" ? undefined : name;
}

/** toTurnboxError maps anything a call threw to a TurnboxError. */
export function toTurnboxError(procedure: string, err: unknown): TurnboxError {
  if (err instanceof TurnboxError) {
    return err;
  }
  const ce = ConnectError.from(err);
  const reasons: Reason[] = [];
  for (const info of ce.findDetails(ErrorInfoSchema)) {
    for (const r of info.reasons) {
      const name = reasonName(r);
      if (name !== undefined && !reasons.includes(name)) reasons.push(name);
    }
  }
  const cls =
    byReason.find(([r]) => reasons.includes(r))?.[1] ??
    (reasons.length === 0 ? byCode.get(ce.code) : undefined) ??
    TurnboxError;
  return new cls(`${procedure}: ${ce.rawMessage || Code[ce.code]}`, ce.code, reasons, procedure, { cause: ce });
}

// HTTP status -> Connect code, for the upload and download streams (the
// inverse of the server's mapping for the codes it uses).
const codeOfStatus = new Map<number, Code>([
  [400, Code.InvalidArgument],
  [401, Code.Unauthenticated],
  [403, Code.PermissionDenied],
  [404, Code.NotFound],
  [408, Code.DeadlineExceeded],
  [409, Code.AlreadyExists],
  [412, Code.FailedPrecondition],
  [413, Code.ResourceExhausted],
  [429, Code.ResourceExhausted],
  [499, Code.Canceled],
  [501, Code.Unimplemented],
  [503, Code.Unavailable],
  [504, Code.DeadlineExceeded],
]);

/**
 * httpError maps a failed upload or download (status, body text and the
 * Turnbox-Error-Info header, protojson) to a TurnboxError.
 */
export function httpError(procedure: string, status: number, body: string, errorInfo: string | null): TurnboxError {
  const code = codeOfStatus.get(status) ?? (status >= 500 ? Code.Internal : Code.Unknown);
  const ce = new ConnectError(body.trim() || `HTTP ${status}`, code);
  if (errorInfo) {
    try {
      const info = fromJson(ErrorInfoSchema, JSON.parse(errorInfo));
      ce.details.push({ desc: ErrorInfoSchema, value: info });
    } catch {
      // A header we cannot read: the code still classifies the error.
    }
  }
  return toTurnboxError(procedure, ce);
}
