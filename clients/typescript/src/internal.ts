// Helpers shared by client.ts and sandbox.ts (kept apart so that neither
// imports the other's module for them).

import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { FilesService } from "./gen/turnbox/v1/files_pb.js";
import type { ProcessService } from "./gen/turnbox/v1/process_pb.js";
import { OutputStream, SessionConfigSchema, type SandboxService, type SessionConfig } from "./gen/turnbox/v1/sandbox_pb.js";
import { toTurnboxError } from "./errors.js";

/** SessionOptions configure a new session (all optional). */
export interface SessionOptions {
  /** id is the new session's id; empty lets the server choose. */
  id?: string;
  /** image names the base root filesystem (isolated runtimes). */
  image?: string;
  /** fromSnapshot starts the workspace as a copy of that snapshot. */
  fromSnapshot?: string;
  /** env is added to the environment of every command. */
  env?: Record<string, string>;
  /** labels are free-form metadata kept with the session. */
  labels?: Record<string, string>;
  /** toolTimeoutMs bounds each tool call (0: the server's default). */
  toolTimeoutMs?: number;
  /** maxOutputBytes caps each tool's output (0: the server's default). */
  maxOutputBytes?: number;
  /** network is the session's network policy (default: the server's). */
  network?: { mode: "none" | "egress" | "open"; allow?: string[] };
  /**
   * snapshotMemory makes snapshots hold the session's processes too:
   * rollback and fork bring them back (capabilities().memorySnapshots).
   */
  snapshotMemory?: boolean;
}

/** sessionConfig builds the turnbox.v1.SessionConfig of options. */
export function sessionConfig(o: SessionOptions = {}): SessionConfig {
  return create(SessionConfigSchema, {
    sessionId: o.id ?? "",
    image: o.image ?? "",
    fromSnapshot: o.fromSnapshot ?? "",
    env: o.env ?? {},
    labels: o.labels ?? {},
    toolTimeout: o.toolTimeoutMs ? durationFromMs(o.toolTimeoutMs) : undefined,
    maxOutputBytes: BigInt(o.maxOutputBytes ?? 0),
    network: o.network ? { mode: o.network.mode, allow: o.network.allow ?? [] } : undefined,
    snapshotMemory: o.snapshotMemory ?? false,
  });
}

/** The generated clients a Sandbox calls, and how to reach the file streams. */
export interface Services {
  sandbox: Client<typeof SandboxService>;
  files: Client<typeof FilesService>;
  processes: Client<typeof ProcessService>;
  baseUrl: string;
  headers: Record<string, string>;
  timeoutMs?: number;
}

/**
 * call runs one unary RPC and turns its failure into a TurnboxError.
 */
export async function call<T>(procedure: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toTurnboxError(procedure, err);
  }
}

/** streamName names a progress event's stream. */
export function streamName(s: OutputStream): "stdout" | "stderr" {
  return s === OutputStream.STDERR ? "stderr" : "stdout";
}

/** newToolCallId returns a fresh id for a tool call. */
export function newToolCallId(): string {
  return `ts-${randomUUID()}`;
}
