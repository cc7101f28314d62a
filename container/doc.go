// Package container isolates a session's commands from the host. A Runtime
// starts one long-lived Sandbox per session, with a read-only root
// filesystem and the session's volume at /workspace, or (Spec.Root) with
// the session's own root tree, writable, holding its workspace; commands
// run in it with Exec, which streams output and kills the whole process
// tree on timeout.
//
// Implementations live in subpackages:
//
//   - none: plain host processes in their own process group, with the
//     workspace as working directory. It ISOLATES NOTHING: a command can read
//     and write anything the host user can. For development only.
//   - gvisor: a gVisor (runsc) sandbox per session; commands are run by a
//     small agent inside it (package container/agent), so an Exec is a
//     fork+exec inside the sandbox, not a new runsc process.
//   - runc: a runc container per session through libcontainer, with the same
//     agent.
//
// # Status
//
// Every sandbox keeps its Status in a Lifecycle:
//
//	starting ─► running ◄─► paused
//	   └───────────┴───────────┴──► failed   (died on its own)
//	any of them ──► stopping ──► stopped     (Stop)
//
// Each operation names the statuses it accepts (Lifecycle.Require), so
// Pause, Stop and a sandbox's death mean the same on every runtime: Exec,
// KillAll and Idle need running, and return ErrPaused at once on a paused
// sandbox and ErrNotRunning on any other.
//
// # Shared parts
//
// gvisor and runc share the agent-backed sandbox of package
// container/agentbox (Exec with the Dir check and OOM detection, KillAll,
// Idle, noticing a lost agent); each supplies only how to freeze and tear
// down (agentbox.Ops). Package container/containertest is the conformance
// suite each runtime runs against itself.
//
// # Restart
//
// A restarted host never reattaches a sandbox: its only channel, the
// agent's pipes, died with the process that started it. It opens the
// runtime on the same root and calls Runtime.Reap once before any Start;
// each session then starts a fresh sandbox on first use. The workspace
// lives in the storage backend, so a session loses only its running
// processes.
package container
