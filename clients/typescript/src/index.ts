// @turnbox/client: a TypeScript client of `turnbox serve`.

export { TurnboxClient, type ClientOptions } from "./client.js";
export { sessionConfig, type SessionOptions } from "./internal.js";
export { Sandbox, type ExecOptions, type OutputChunk, type ProcessEvent, type StartOptions, type ToolEvent, type ToolOptions, type ToolResult } from "./sandbox.js";
export {
  TurnboxError,
  SessionNotFoundError,
  SnapshotNotFoundError,
  NotActiveError,
  InvalidArgumentError,
  FileNotFoundError,
  PathEscapesError,
  ProcessNotFoundError,
  UnauthenticatedError,
  UnavailableError,
  type Reason,
} from "./errors.js";
export type { Capabilities, FileInfo, ProcessExit, ProcessInfo, PublishedPort, SessionInfo, SnapshotInfo, State } from "./types.js";
export { encodeToolInput, decodeToolOutput, decodeProgress, type ToolOutput } from "./wire.js";
