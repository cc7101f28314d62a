// Sandbox: one session on a `turnbox serve`, with the verbs of Go's
// NativeSandboxEnvironment (exec and tools with streamed output, files,
// snapshots, rollback, fork, pause, resume, destroy) and its processes.

import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { call, newToolCallId, sessionConfig, streamName, type Services, type SessionOptions } from "./internal.js";
import { Code } from "@connectrpc/connect";
import { httpError, toTurnboxError, TurnboxError } from "./errors.js";
import { fileInfo, parseFileInfo, processExit, processInfo, sessionInfo, snapshotInfo } from "./types.js";
import type { FileInfo, ProcessExit, ProcessInfo, PublishedPort, SessionInfo, SnapshotInfo, State } from "./types.js";
import { decodeProgress, decodeToolOutput, encodeToolInput } from "./wire.js";
import type { ProcessEvent as ProcessEventMsg } from "./gen/turnbox/v1/process_pb.js";
import type { ToolResponse } from "./gen/turnbox/v1/sandbox_pb.js";

/** ToolResult is a finished tool call. */
export interface ToolResult {
  toolCallId: string;
  /** output is the tool's output as text (UTF-8); bytes the same, raw. */
  output: string;
  bytes: Uint8Array;
  exitCode: number;
  /** isError: the tool ran and failed. */
  isError: boolean;
  timedOut: boolean;
  /** truncated: the output was cut at the session's output cap. */
  truncated: boolean;
  oomKilled: boolean;
  durationMs: number;
  /** snapshotId is set when the call asked for a snapshot. */
  snapshotId: string;
  /** pid is a bash command's pid in the sandbox (0 when none). */
  pid: number;
}

/** OutputChunk is output a tool produced while it ran. */
export interface OutputChunk {
  stream: "stdout" | "stderr";
  data: Uint8Array;
  /**
   * text is data decoded as UTF-8, per stream: a character split between
   * two chunks comes whole in the second.
   */
  text: string;
}

/** ToolEvent is one event of a streamed tool call. */
export type ToolEvent = ({ type: "output" } & OutputChunk) | { type: "result"; result: ToolResult };

/** ToolOptions tune one tool call. */
export interface ToolOptions {
  /** toolCallId keys idempotency: a retried id runs nothing twice. */
  toolCallId?: string;
  /** snapshot asks for a snapshot right after the call. */
  snapshot?: boolean;
  /** onOutput receives output while the tool runs. */
  onOutput?: (chunk: OutputChunk) => void;
  /** signal cancels the call. */
  signal?: AbortSignal;
}

/** ExecOptions tune one bash command. */
export interface ExecOptions extends ToolOptions {
  /** timeoutMs bounds the command; its whole process tree is killed. */
  timeoutMs?: number;
  /** workdir is relative to the workspace (default "."). */
  workdir?: string;
}

/** StartOptions describe a process to start (ProcessService). */
export interface StartOptions {
  env?: Record<string, string>;
  cwd?: string;
  tag?: string;
  /** stdin keeps standard input open for sendInput. */
  stdin?: boolean;
  timeoutMs?: number;
}

/** ProcessEvent is one event of a process's stream. */
export type ProcessEvent =
  | { type: "output"; offset: number; stream: string; data: Uint8Array }
  | { type: "dropped"; offset: number; bytes: number }
  | { type: "exit"; exit: ProcessExit };

// The most of an error's body kept for its message.
const maxErrorBody = 64 << 10;

// readCapped reads at most max bytes of a response's body as text.
async function readCapped(resp: Response, max: number): Promise<string> {
  const reader = resp.body?.getReader();
  if (reader === undefined) return "";
  const parts: Uint8Array[] = [];
  let n = 0;
  while (n < max) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    n += value.length;
  }
  await reader.cancel().catch(() => {});
  return new TextDecoder().decode(Buffer.concat(parts).subarray(0, max));
}

function toolResult(r: ToolResponse): ToolResult {
  const out = decodeToolOutput(r);
  return {
    toolCallId: r.toolCallId,
    output: out.text,
    bytes: out.bytes,
    exitCode: r.exitCode,
    isError: r.isError,
    timedOut: r.timedOut,
    truncated: r.truncated,
    oomKilled: r.oomKilled,
    durationMs: r.duration ? Number(r.duration.seconds) * 1000 + r.duration.nanos / 1e6 : 0,
    snapshotId: r.snapshotId,
    pid: r.pid,
  };
}

function processEvent(ev: ProcessEventMsg | undefined): ProcessEvent | undefined {
  switch (ev?.event.case) {
    case "output":
      return { type: "output", offset: Number(ev.event.value.offset), stream: ev.event.value.stream, data: ev.event.value.data };
    case "dropped":
      return { type: "dropped", offset: Number(ev.event.value.offset), bytes: Number(ev.event.value.bytes) };
    case "exit":
      return { type: "exit", exit: processExit(ev.event.value) };
    default:
      return undefined; // keepalive
  }
}

/**
 * Sandbox drives one session. Get one from TurnboxClient.create, attach
 * or Sandbox.fork. Every failed call throws a TurnboxError.
 */
export class Sandbox {
  constructor(
    private readonly s: Services,
    /** id is the session's id. */
    readonly id: string,
  ) {}

  /** info reports the session. */
  async info(): Promise<SessionInfo> {
    const resp = await call("GetSession", () => this.s.sandbox.getSession({ sessionId: this.id }));
    return sessionInfo(resp.session);
  }

  /** state reports the session's lifecycle state. */
  async state(): Promise<State> {
    return (await this.info()).state;
  }

  /**
   * toolStream runs one tool call and yields its output as it comes, then
   * its result (the last event).
   */
  async *toolStream(name: string, input: Record<string, unknown>, opts: ToolOptions = {}): AsyncGenerator<ToolEvent> {
    const request = { toolCallId: opts.toolCallId ?? newToolCallId(), toolName: name, arguments: encodeToolInput(input), snapshot: opts.snapshot ?? false };
    let done = false;
    const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    try {
      for await (const msg of this.s.sandbox.executeToolStream({ sessionId: this.id, request }, { signal: opts.signal })) {
        if (msg.event.case === "progress") {
          const p = msg.event.value;
          const stream = streamName(p.stream);
          const out = decodeProgress(p, decoders[stream]);
          yield { type: "output", stream, data: out.bytes, text: out.text };
        } else if (msg.event.case === "response") {
          done = true;
          yield { type: "result", result: toolResult(msg.event.value) };
        }
      }
    } catch (err) {
      throw toTurnboxError("ExecuteToolStream", err);
    }
    if (!done) {
      throw new TurnboxError("ExecuteToolStream: the stream ended without a response", Code.Unknown, [], "ExecuteToolStream");
    }
  }

  /**
   * tool runs one tool call (bash, read_file, write_file, edit_file,
   * list_files, grep) with its JSON arguments; opts.onOutput sees output
   * as it comes.
   */
  async tool(name: string, input: Record<string, unknown>, opts: ToolOptions = {}): Promise<ToolResult> {
    let result: ToolResult | undefined;
    for await (const ev of this.toolStream(name, input, opts)) {
      if (ev.type === "output") opts.onOutput?.(ev);
      else result = ev.result;
    }
    return result!;
  }

  /** bashInput is the bash tool's input for a command. */
  private static bashInput(command: string, opts: ExecOptions): Record<string, unknown> {
    const input: Record<string, unknown> = { command };
    if (opts.timeoutMs) input.timeout_ms = opts.timeoutMs;
    if (opts.workdir) input.workdir = opts.workdir;
    return input;
  }

  /** exec runs a shell command (the bash tool), streaming to opts.onOutput. */
  exec(command: string, opts: ExecOptions = {}): Promise<ToolResult> {
    return this.tool("bash", Sandbox.bashInput(command, opts), opts);
  }

  /** execStream runs a shell command and yields its output, then its result. */
  execStream(command: string, opts: ExecOptions = {}): AsyncGenerator<ToolEvent> {
    return this.toolStream("bash", Sandbox.bashInput(command, opts), opts);
  }

  /** turnComplete snapshots the workspace as the next turn. */
  async turnComplete(label = ""): Promise<SnapshotInfo> {
    const resp = await call("TurnComplete", () => this.s.sandbox.turnComplete({ sessionId: this.id, label }));
    return snapshotInfo(resp.snapshot);
  }

  /** snapshot records the workspace as a new, named snapshot. */
  async snapshot(name = ""): Promise<SnapshotInfo> {
    const resp = await call("CreateSnapshot", () => this.s.sandbox.createSnapshot({ sessionId: this.id, name }));
    return snapshotInfo(resp.snapshot);
  }

  /** listSnapshots lists the session's snapshots, oldest first. */
  async listSnapshots(): Promise<SnapshotInfo[]> {
    const resp = await call("ListSnapshots", () => this.s.sandbox.listSnapshots({ sessionId: this.id }));
    return resp.snapshots.map(snapshotInfo);
  }

  /** rollback makes the workspace equal to a snapshot; newer ones survive. */
  async rollback(snapshotId: string): Promise<void> {
    await call("Rollback", () => this.s.sandbox.rollback({ sessionId: this.id, snapshotId }));
  }

  /** deleteSnapshot deletes one of the session's snapshots. */
  async deleteSnapshot(snapshotId: string): Promise<void> {
    await call("DeleteSnapshot", () => this.s.sandbox.deleteSnapshot({ sessionId: this.id, snapshotId }));
  }

  /** fork creates a new session whose workspace starts as a snapshot of this one. */
  async fork(snapshotId: string, opts: SessionOptions = {}): Promise<Sandbox> {
    const resp = await call("Fork", () => this.s.sandbox.fork({ sessionId: this.id, snapshotId, config: sessionConfig(opts) }));
    return new Sandbox(this.s, sessionInfo(resp.session).id);
  }

  /** pause freezes the session's sandbox. */
  async pause(): Promise<void> {
    await call("PauseSession", () => this.s.sandbox.pauseSession({ sessionId: this.id }));
  }

  /**
   * hibernate pauses the session to disk: its processes are saved and its
   * memory freed; resume brings them back, also after a server restart
   * (capabilities().memorySnapshots).
   */
  async hibernate(): Promise<void> {
    await call("HibernateSession", () => this.s.sandbox.hibernateSession({ sessionId: this.id }));
  }

  /** resume thaws a paused or hibernated session. */
  async resume(): Promise<void> {
    await call("ResumeSession", () => this.s.sandbox.resumeSession({ sessionId: this.id }));
  }

  // Published ports (docs/ports.md).

  /**
   * publishPort publishes a port a process of the session listens on; the
   * server forwards HTTP, WebSocket and TCP to it at portUrl(port).
   * public lets requests through without the token.
   */
  async publishPort(port: number, opts: { public?: boolean } = {}): Promise<PublishedPort> {
    const resp = await call("PublishPort", () => this.s.sandbox.publishPort({ sessionId: this.id, port, public: opts.public ?? false }));
    return { port: resp.port?.port ?? port, public: resp.port?.public ?? false };
  }

  /** unpublishPort ends a port's publication. */
  async unpublishPort(port: number): Promise<void> {
    await call("UnpublishPort", () => this.s.sandbox.unpublishPort({ sessionId: this.id, port }));
  }

  /** listPorts lists the ports the session publishes. */
  async listPorts(): Promise<PublishedPort[]> {
    const resp = await call("ListPorts", () => this.s.sandbox.listPorts({ sessionId: this.id }));
    return resp.ports.map((p) => ({ port: p.port, public: p.public }));
  }

  /** portUrl is where the server forwards a published port, by path. */
  portUrl(port: number): string {
    return `${this.s.baseUrl}/ports/${encodeURIComponent(this.id)}/${port}/`;
  }

  /** destroy deletes the session and all its data. */
  async destroy(): Promise<void> {
    await call("DestroySession", () => this.s.sandbox.destroySession({ sessionId: this.id }));
  }

  // Files.

  /** stat describes a path without following a final symlink. */
  async stat(path: string): Promise<FileInfo> {
    const resp = await call("Stat", () => this.s.files.stat({ sessionId: this.id, path }));
    return fileInfo(resp.info);
  }

  /** list lists a directory in name order (depth 2+: subdirectories too). */
  async list(path: string, depth = 1): Promise<FileInfo[]> {
    const resp = await call("ListDir", () => this.s.files.listDir({ sessionId: this.id, path, depth }));
    return resp.entries.map(fileInfo);
  }

  /** mkdir creates a directory (and its parents with parents=true). */
  async mkdir(path: string, parents = false): Promise<void> {
    await call("MakeDir", () => this.s.files.makeDir({ sessionId: this.id, path, parents }));
  }

  /** move renames a path. */
  async move(src: string, dst: string, overwrite = false): Promise<void> {
    await call("Move", () => this.s.files.move({ sessionId: this.id, src, dst, overwrite }));
  }

  /** remove deletes a path (a directory's contents with recursive=true). */
  async remove(path: string, recursive = false): Promise<void> {
    await call("Remove", () => this.s.files.remove({ sessionId: this.id, path, recursive }));
  }

  /** fileRequest sends one upload or download (plain HTTP, files.proto). */
  private async fileRequest(op: "Upload" | "Download", path: string, init: RequestInit, extra: Record<string, string> = {}): Promise<Response> {
    const q = new URLSearchParams({ session: this.id, path, ...extra });
    const url = `${this.s.baseUrl}/turnbox.v1.FilesService/${op}?${q}`;
    let resp: Response;
    try {
      const signal = this.s.timeoutMs ? AbortSignal.timeout(this.s.timeoutMs) : undefined;
      resp = await fetch(url, { ...init, signal, headers: { ...this.s.headers, ...(init.headers as Record<string, string>) } });
    } catch (err) {
      throw httpError(op, 503, String((err as Error)?.message ?? err), null);
    }
    if (!resp.ok) {
      throw httpError(op, resp.status, await readCapped(resp, maxErrorBody), resp.headers.get("Turnbox-Error-Info"));
    }
    return resp;
  }

  /** upload writes a file (created or replaced) and describes it. */
  async upload(path: string, data: Uint8Array | string, opts: { mode?: number } = {}): Promise<FileInfo> {
    const extra: Record<string, string> = opts.mode === undefined ? {} : { mode: (opts.mode & 0o7777).toString(8) };
    const body = typeof data === "string" ? new TextEncoder().encode(data) : data;
    const resp = await this.fileRequest("Upload", path, { method: "PUT", body, headers: { "Content-Type": "application/octet-stream" } }, extra);
    return parseFileInfo(await resp.text());
  }

  /** download reads a whole file into memory. */
  async download(path: string): Promise<{ data: Uint8Array; info: FileInfo }> {
    const resp = await this.fileRequest("Download", path, { method: "GET" });
    const info = parseFileInfo(resp.headers.get("Turnbox-File-Info") ?? "");
    const data = new Uint8Array(await resp.arrayBuffer());
    if (data.length !== info.size) {
      throw new TurnboxError(`Download: got ${data.length} bytes of a ${info.size}-byte file`, Code.DataLoss, [], "Download");
    }
    return { data, info };
  }

  // Processes (ProcessService): programs that live between calls.

  /** start starts a shell command (or argv) and returns at once. */
  async start(command: string | string[], opts: StartOptions = {}): Promise<ProcessInfo> {
    const config = {
      ...(Array.isArray(command) ? { args: command } : { command }),
      env: opts.env ?? {},
      cwd: opts.cwd ?? "",
      tag: opts.tag ?? "",
      stdin: opts.stdin ?? false,
      timeout: opts.timeoutMs ? durationFromMs(opts.timeoutMs) : undefined,
    };
    const resp = await call("StartProcess", () => this.s.processes.startProcess({ sessionId: this.id, config }));
    return processInfo(resp.process);
  }

  /**
   * attachProcess yields a process's output from offset (what the server
   * still holds, then live output) and last its exit.
   */
  async *attachProcess(pid: number, offset = 0, signal?: AbortSignal): AsyncGenerator<ProcessEvent> {
    try {
      for await (const msg of this.s.processes.attachProcess({ sessionId: this.id, pid, offset: BigInt(offset) }, { signal })) {
        const ev = processEvent(msg.event);
        if (ev !== undefined) yield ev;
      }
    } catch (err) {
      throw toTurnboxError("AttachProcess", err);
    }
  }

  /** listProcesses lists running and recently ended processes. */
  async listProcesses(): Promise<ProcessInfo[]> {
    const resp = await call("ListProcesses", () => this.s.processes.listProcesses({ sessionId: this.id }));
    return resp.processes.map(processInfo);
  }

  /** sendInput writes to a process's standard input. */
  async sendInput(pid: number, data: Uint8Array | string): Promise<void> {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    await call("SendInput", () => this.s.processes.sendInput({ sessionId: this.id, pid, data: bytes }));
  }

  /** closeInput closes a process's standard input. */
  async closeInput(pid: number): Promise<void> {
    await call("CloseInput", () => this.s.processes.closeInput({ sessionId: this.id, pid }));
  }

  /** signal sends a signal by number (15: SIGTERM, 9: SIGKILL). */
  async signal(pid: number, signal: number): Promise<void> {
    await call("SignalProcess", () => this.s.processes.signalProcess({ sessionId: this.id, pid, signal }));
  }

  /** wait waits for a process's end (bounded by the server's stream limit). */
  async wait(pid: number): Promise<ProcessExit> {
    const resp = await call("WaitProcess", () => this.s.processes.waitProcess({ sessionId: this.id, pid }));
    if (resp.exit === undefined) throw new TurnboxError("WaitProcess: the server's answer has no exit", Code.Unknown, [], "WaitProcess");
    return processExit(resp.exit);
  }
}
