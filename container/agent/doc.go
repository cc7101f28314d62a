// Package agent is turnbox's in-sandbox exec agent and its host-side
// client. The agent (cmd/turnbox-agent) runs as a sandbox's init and
// executes commands on request; the host talks to it over the agent's
// stdin and stdout, so a command costs a fork+exec inside the sandbox
// rather than a new runtime process (runsc exec, runc exec) per call.
//
// # Protocol
//
// Both directions carry length-prefixed binary frames (see MsgType for the
// layout and every message). The host picks a request id per request;
// the agent's replies and events carry it, so many commands run at once
// over one connection:
//
//	host  -> agent: Exec{args, env, dir, timeout, stdin?}  (id 7)
//	agent -> host : Output{stdout, "hi\n"} ... Exited{code}
//	host  -> agent: Kill (id 7)       kills the command's process tree
//	host  -> agent: KillAll, Ping     answered by Reply
//
// A process that outlives its call (Client.StartProcess) is the same
// Exec with more fields: a user (resolved by the agent in the sandbox's
// /etc/passwd and /etc/group), a pseudo-terminal and its size, and a
// request for MsgStarted{pid}, which the agent sends before any output.
// Stdin, StdinClose, Signal, Resize and Kill then act on it by its id.
// A plain Exec asks for no start report: it costs the hot path nothing.
//
// A tunnel (Client.DialPort, protocol version 4) reaches a TCP port inside
// the sandbox whatever its network: the agent dials it on its loopback
// and the socket's bytes flow over the agent's connection, under the
// Dial's id:
//
//	host  -> agent: Dial{port}                (id 9)
//	agent -> host : Dialed  | Failed{msg, FailRefused|FailInvalid|FailStart}
//	host  -> agent: ConnData{bytes}  ConnCredit{n}  ConnClose{write|all}
//	agent -> host : TunnelData{bytes}  TunnelCredit{n}  ConnEOF  ConnClosed{msg}
//
// Each direction of a tunnel is flow-controlled by credit, like an HTTP/2
// stream's window: a side starts with TunnelWindow bytes of credit, sends
// data only within its credit, and the receiver grants credit back
// (ConnCredit, TunnelCredit) as its consumer takes the bytes: the host's
// reader of the net.Conn, the server reading the agent's socket. Neither
// side buffers more than a window per tunnel, and a slow reader stalls
// only its own tunnel, never the connection's other commands and
// tunnels. ConnClose{write} half-closes (the agent shuts down its
// socket's writing side once the queued data is written);
// ConnClose{all} ends the tunnel, after which the agent sends nothing
// for it. ConnEOF says the server closed its writing side; ConnClosed
// says the agent closed the socket and forgot the tunnel (message empty
// when both sides ended normally, else the socket's error). The host
// treats every tunnel frame as hostile: data beyond the credit it
// granted, credit for bytes it never sent, data after ConnEOF, frames
// for a tunnel never dialed, ends the connection with ErrProtocol, and
// its read loop never waits for a tunnel's reader. KillAll leaves the
// tunnels alone: they are the agent's own sockets (one to a server that
// dies ends as that server's socket does).
//
// The agent announces ProtocolVersion in its Hello; a client refuses any
// other version (ErrVersion): agent and host are built from one tree.
//
// Every command runs in its own session (setsid). A timeout or Kill sends
// SIGKILL to the command's process group and to every process whose
// session id is the command's, found through /proc, so a whole tree dies
// even if part of it changed process group.
//
// # Agent
//
// Serve runs the agent over a reader and a writer. As PID 1 it reaps every
// zombie in the sandbox and KillAll kills every process but itself; run
// in-process (tests) it waits only for its own commands and KillAll kills
// only their trees.
//
// # Client
//
// NewClient wraps the host's ends of the agent's stdio. Client.Exec has the
// semantics of container.Sandbox.Exec, Client.StartProcess those of
// container.ProcessStarter, Client.DialPort those of container.PortDialer;
// when the agent dies, Done is closed and calls (and tunnels' reads and
// writes) fail with errors wrapping container.ErrNotRunning.
package agent
