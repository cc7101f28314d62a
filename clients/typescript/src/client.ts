// TurnboxClient and Sandbox: the verbs of Go's remote.NativeSandboxEnvironment
// over the generated ConnectRPC stubs (src/gen), for `turnbox serve`.

import { createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { FilesService } from "./gen/turnbox/v1/files_pb.js";
import { ProcessService } from "./gen/turnbox/v1/process_pb.js";
import { SandboxService } from "./gen/turnbox/v1/sandbox_pb.js";
import { call, sessionConfig, type Services, type SessionOptions } from "./internal.js";
import { Sandbox } from "./sandbox.js";
import { capabilities, sessionInfo, type Capabilities, type SessionInfo } from "./types.js";

/** ClientOptions configure a TurnboxClient. */
export interface ClientOptions {
  /** baseUrl is the server's address, e.g. "http://127.0.0.1:8080". */
  baseUrl: string;
  /** token is sent as "Authorization: Bearer <token>" on every call. */
  token?: string;
  /** httpVersion: "1.1" (default) or "2" (h2c on http:// URLs). */
  httpVersion?: "1.1" | "2";
  /** timeoutMs bounds each call, streams included (default: none). */
  timeoutMs?: number;
}

/**
 * TurnboxClient talks to one `turnbox serve`. It makes sessions (create,
 * attach) and reports on the host; each session is driven through the
 * Sandbox it returns.
 */
export class TurnboxClient {
  readonly services: Services;

  constructor(opts: ClientOptions) {
    if (!opts?.baseUrl) throw new TypeError("turnbox: ClientOptions.baseUrl is required");
    const baseUrl = opts.baseUrl.replace(/\/+$/, "");
    const headers: Record<string, string> = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
    const auth: Interceptor = (next) => (req) => {
      for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
      return next(req);
    };
    const transport: Transport = createConnectTransport({
      baseUrl,
      httpVersion: opts.httpVersion ?? "1.1",
      interceptors: [auth],
      defaultTimeoutMs: opts.timeoutMs,
    });
    this.services = {
      sandbox: createClient(SandboxService, transport),
      files: createClient(FilesService, transport),
      processes: createClient(ProcessService, transport),
      baseUrl,
      headers,
      timeoutMs: opts.timeoutMs,
    };
  }

  /** create creates a session and returns its Sandbox. */
  async create(opts: SessionOptions = {}): Promise<Sandbox> {
    const resp = await call("CreateSession", () => this.services.sandbox.createSession({ config: sessionConfig(opts) }));
    return new Sandbox(this.services, sessionInfo(resp.session).id);
  }

  /**
   * attach binds to an existing session (SessionNotFoundError if there is
   * none), like NativeSandboxEnvironment.AttachSession.
   */
  async attach(sessionId: string): Promise<Sandbox> {
    const resp = await call("AttachSession", () => this.services.sandbox.attachSession({ sessionId }));
    return new Sandbox(this.services, sessionInfo(resp.session).id);
  }

  /** listSessions lists the server's sessions, sorted by id. */
  async listSessions(): Promise<SessionInfo[]> {
    const resp = await call("ListSessions", () => this.services.sandbox.listSessions({}));
    return resp.sessions.map(sessionInfo);
  }

  /** capabilities reports what the server's sessions can do. */
  async capabilities(): Promise<Capabilities> {
    const resp = await call("Capabilities", () => this.services.sandbox.capabilities({}));
    return capabilities(resp.capabilities);
  }

  /** health reports the server's status ("SERVING") and version. */
  async health(): Promise<{ status: string; version: string }> {
    const resp = await call("Health", () => this.services.sandbox.health({}));
    return { status: resp.status, version: resp.version };
  }
}
