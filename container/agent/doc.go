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
// container.ProcessStarter; when the agent dies, Done is closed and calls
// fail with errors wrapping container.ErrNotRunning.
package agent
