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
// semantics of container.Sandbox.Exec; when the agent dies, Done is closed
// and calls fail with errors wrapping container.ErrNotRunning.
package agent
