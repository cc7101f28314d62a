// Plain shapes the wrapper returns instead of the generated messages:
// numbers instead of bigint, Date instead of Timestamp, names instead of
// enum numbers. Each has one converter from its message.

import { fromJsonString } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { FileInfoSchema, FileType, type FileInfo as FileInfoMsg } from "./gen/turnbox/v1/files_pb.js";
import type { ProcessExit as ProcessExitMsg, ProcessInfo as ProcessInfoMsg } from "./gen/turnbox/v1/process_pb.js";
import {
  SessionState,
  type Session as SessionMsg,
  type SnapshotInfo as SnapshotInfoMsg,
  type Capabilities as CapabilitiesMsg,
} from "./gen/turnbox/v1/sandbox_pb.js";

/** State is a session's lifecycle state. */
export type State = "unspecified" | "creating" | "active" | "paused" | "destroying" | "destroyed" | "failed";

/** SessionInfo summarizes a session. */
export interface SessionInfo {
  id: string;
  state: State;
  createdAt?: Date;
  /** parentSession and parentSnapshot are set on forked sessions. */
  parentSession: string;
  parentSnapshot: string;
  /** lastTurn is the newest snapshot's turn (0: none yet). */
  lastTurn: number;
  /** network is the session's effective network policy. */
  network?: { mode: string; allow: string[] };
  /** ports are the ports the session publishes, by port. */
  ports: PublishedPort[];
  /** snapshotMemory: the session's snapshots hold its processes. */
  snapshotMemory: boolean;
  /** hibernated: the session is paused to disk (hibernate). */
  hibernated: boolean;
}

/** PublishedPort is a port a session publishes (docs/ports.md). */
export interface PublishedPort {
  port: number;
  /** public: requests through the server need no token. */
  public: boolean;
}

/** SnapshotInfo describes one snapshot of a session's workspace. */
export interface SnapshotInfo {
  id: string;
  sessionId: string;
  name: string;
  /** turn is the snapshot's sequence number in its session, from 1. */
  turn: number;
  createdAt?: Date;
  sizeBytes: number;
  /** memory: the snapshot holds the session's processes (memoryBytes of them). */
  memory: boolean;
  memoryBytes: number;
}

/** FileInfo describes one entry as lstat(2) sees it. */
export interface FileInfo {
  path: string;
  type: "file" | "dir" | "symlink" | "other" | "unspecified";
  size: number;
  /** mode: permission bits plus setuid, setgid and sticky. */
  mode: number;
  uid: number;
  gid: number;
  modTime?: Date;
  linkTarget: string;
}

/** ProcessExit is how a process ended. */
export interface ProcessExit {
  code: number;
  signal: number;
  oomKilled: boolean;
  timedOut: boolean;
  /** killed: the host killed it (rollback, destroy); reason says why. */
  killed: boolean;
  reason: string;
}

/** ProcessInfo describes a process of a session. */
export interface ProcessInfo {
  pid: number;
  tag: string;
  args: string[];
  pty: boolean;
  startedAt?: Date;
  outputBytes: number;
  /** exit is undefined while the process runs. */
  exit?: ProcessExit;
}

/** Capabilities reports what the server's sessions can do. */
export interface Capabilities {
  snapshots: boolean;
  rollback: boolean;
  fork: boolean;
  pause: boolean;
  streamingProgress: boolean;
  isolation: string;
  storage: string;
  /** writableRoot: the session's whole root filesystem is its own. */
  writableRoot: boolean;
  processes: boolean;
  pty: boolean;
  files: boolean;
  /** networkCeiling: the most open network mode (none, egress, open) a
   * session may ask for; "" or "none": loopback only. */
  networkCeiling: string;
  /** ports: sessions publish ports that the server forwards. */
  ports: boolean;
  /** memorySnapshots: sessions may set snapshotMemory; hibernate works. */
  memorySnapshots: boolean;
}

function date(t: Timestamp | undefined): Date | undefined {
  return t === undefined ? undefined : timestampDate(t);
}

/** sessionInfo converts a turnbox.v1.Session. */
export function sessionInfo(s: SessionMsg | undefined): SessionInfo {
  if (s === undefined) throw new Error("turnbox: the server's answer has no session");
  return {
    id: s.id,
    state: SessionState[s.state].toLowerCase() as State,
    createdAt: date(s.createdAt),
    parentSession: s.parentSession,
    parentSnapshot: s.parentSnapshot,
    lastTurn: Number(s.lastTurn),
    network: s.network ? { mode: s.network.mode, allow: [...s.network.allow] } : undefined,
    ports: s.ports.map((p) => ({ port: p.port, public: p.public })),
    snapshotMemory: s.snapshotMemory,
    hibernated: s.hibernated,
  };
}

/** snapshotInfo converts a turnbox.v1.SnapshotInfo. */
export function snapshotInfo(s: SnapshotInfoMsg | undefined): SnapshotInfo {
  if (s === undefined) throw new Error("turnbox: the server's answer has no snapshot");
  return {
    id: s.id,
    sessionId: s.sessionId,
    name: s.name,
    turn: Number(s.turn),
    createdAt: date(s.createdAt),
    sizeBytes: Number(s.sizeBytes),
    memory: s.memory,
    memoryBytes: Number(s.memoryBytes),
  };
}

/** fileInfo converts a turnbox.v1.FileInfo. */
export function fileInfo(f: FileInfoMsg | undefined): FileInfo {
  if (f === undefined) throw new Error("turnbox: the server's answer has no file info");
  return {
    path: f.path,
    type: FileType[f.type].toLowerCase() as FileInfo["type"],
    size: Number(f.size),
    mode: f.mode,
    uid: f.uid,
    gid: f.gid,
    modTime: date(f.modTime),
    linkTarget: f.linkTarget,
  };
}

/** parseFileInfo reads a FileInfo in protojson (upload's answer, download's header). */
export function parseFileInfo(json: string): FileInfo {
  return fileInfo(fromJsonString(FileInfoSchema, json, { ignoreUnknownFields: true }));
}

/** processExit converts a turnbox.v1.ProcessExit. */
export function processExit(e: ProcessExitMsg): ProcessExit {
  return { code: e.code, signal: e.signal, oomKilled: e.oomKilled, timedOut: e.timedOut, killed: e.killed, reason: e.reason };
}

/** processInfo converts a turnbox.v1.ProcessInfo. */
export function processInfo(p: ProcessInfoMsg | undefined): ProcessInfo {
  if (p === undefined) throw new Error("turnbox: the server's answer has no process");
  return {
    pid: p.pid,
    tag: p.tag,
    args: [...p.args],
    pty: p.pty,
    startedAt: date(p.startedAt),
    outputBytes: Number(p.outputBytes),
    exit: p.exit === undefined ? undefined : processExit(p.exit),
  };
}

/** capabilities converts a turnbox.v1.Capabilities. */
export function capabilities(c: CapabilitiesMsg | undefined): Capabilities {
  if (c === undefined) throw new Error("turnbox: the server's answer has no capabilities");
  return {
    snapshots: c.snapshots,
    rollback: c.rollback,
    fork: c.fork,
    pause: c.pause,
    streamingProgress: c.streamingProgress,
    isolation: c.isolation,
    storage: c.storage,
    writableRoot: c.writableRoot,
    processes: c.processes,
    pty: c.pty,
    files: c.files,
    networkCeiling: c.networkCeiling,
    ports: c.ports,
    memorySnapshots: c.memorySnapshots,
  };
}
