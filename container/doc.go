// Package container isolates a session's commands from the host. A Runtime
// starts one long-lived Sandbox per session, with a read-only root
// filesystem and the session's volume at /workspace; commands run in it with
// Exec, which streams output and kills the whole process tree on timeout.
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
// gvisor and runc share the agent-backed sandbox of package
// container/agentbox (Exec, KillAll, Idle, OOM detection); every sandbox
// keeps its Status in a Lifecycle, so Pause, Stop and a sandbox's death
// mean the same on every runtime. Package container/containertest is the
// conformance suite each runtime runs against itself.
package container
