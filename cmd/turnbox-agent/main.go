// Command turnbox-agent is turnbox's in-sandbox exec agent. A sandbox
// runtime (gvisor, runc) starts it as the sandbox's init with its stdin and
// stdout connected to the host, which speaks the protocol of package
// container/agent over them. Build it static, with cgo for its launcher
// (launcher.c: the process that starts commands, see agent.WithLauncher):
//
//	CGO_ENABLED=1 go build -tags netgo,osusergo -ldflags '-extldflags=-static' -o turnbox-agent ./cmd/turnbox-agent
//
// Built with CGO_ENABLED=0 it works too, starting commands itself (a few
// milliseconds slower per command in gVisor).
//
// Flags:
//
//	-link LINK=TARGET  create symlink LINK -> TARGET before serving
//	                   (repeatable; e.g. /workspace=/.turnbox/vol/ws)
//	-dir DIR           default working directory of commands
//	-root DIR          run commands chrooted into DIR, with /proc, /dev
//	                   and /sys mounted there (needs CAP_SYS_ADMIN,
//	                   which commands do not get)
//	-root-readonly     with -root: the root is read-only to commands but
//	                   for its /workspace
//	-pids-limit N      confine commands to N processes (pids cgroup)
//	-nproc-limit N     RLIMIT_NPROC N for the sandbox's user, zombies
//	                   included (the agent needs CAP_SYS_RESOURCE)
//
// TURNBOX_AGENT_LAUNCHER=0 in its environment turns the launcher off (for
// comparisons); it is removed from the environment commands get.
//
// Diagnostics go to stderr; stdout carries only protocol frames.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container/agent"
)

// envLauncher set to 0 in the agent's environment turns the launcher off
// (commands then fork from the agent), for comparisons.
const envLauncher = "TURNBOX_AGENT_LAUNCHER"

type links [][2]string

func (l *links) String() string { return fmt.Sprint(*l) }

func (l *links) Set(s string) error {
	link, target, ok := strings.Cut(s, "=")
	if !ok || link == "" || target == "" {
		return fmt.Errorf("want LINK=TARGET, got %q", s)
	}
	*l = append(*l, [2]string{link, target})
	return nil
}

func main() {
	var ls links
	flag.Var(&ls, "link", "create symlink `LINK=TARGET` before serving (repeatable)")
	dir := flag.String("dir", "", "default working directory of commands")
	root := flag.String("root", "", "run commands chrooted into `DIR` (the agent mounts /proc, /dev and /sys there)")
	rootRO := flag.Bool("root-readonly", false, "with -root: bind the root read-only but for its /workspace")
	pids := flag.Int64("pids-limit", 0, "confine commands to at most `N` processes (pids cgroup at /sys/fs/cgroup/pids)")
	nproc := flag.Int64("nproc-limit", 0, "set RLIMIT_NPROC to `N` (tasks of the agent's user, zombies included); the agent keeps CAP_SYS_RESOURCE, commands do not")
	mem := flag.Int64("memory-limit", 0, "kill the command holding the most memory when commands hold more than `N` bytes together")
	flag.Parse()

	var opts []agent.Option
	for _, l := range ls {
		opts = append(opts, agent.WithSymlink(l[0], l[1]))
	}
	if *dir != "" {
		opts = append(opts, agent.WithDefaultDir(*dir))
	}
	if *root != "" {
		opts = append(opts, agent.WithRoot(*root, *rootRO))
	}
	if *pids > 0 {
		opts = append(opts, agent.WithPidsLimit(*pids))
	}
	if *mem > 0 {
		opts = append(opts, agent.WithMemoryLimit(*mem))
	}
	if *nproc > 0 {
		opts = append(opts, agent.WithProcessLimit(*nproc))
	}
	useLauncher := launcherLinked && os.Getenv(envLauncher) != "0"
	os.Unsetenv(envLauncher) // not for commands
	if useLauncher {
		// This binary is its own launcher (launcher.c).
		if exe, err := os.Executable(); err == nil {
			opts = append(opts, agent.WithLauncher(exe))
		} else {
			fmt.Fprintln(os.Stderr, "turnbox-agent: no launcher:", err)
		}
	}
	if err := agent.Serve(pollable(os.Stdin), os.Stdout, opts...); err != nil {
		fmt.Fprintln(os.Stderr, "turnbox-agent:", err)
		os.Exit(1)
	}
}

// pollable returns f on the runtime's poller if its descriptor can be
// made non-blocking: a goroutine waiting for the host's next request then
// parks in the poller rather than holding a thread in read(2), which
// would make the scheduler hand its P to another thread on every request
// (a futex wake, costly in gVisor).
func pollable(f *os.File) *os.File {
	fd := int(f.Fd())
	if err := unix.SetNonblock(fd, true); err != nil {
		return f
	}
	return os.NewFile(uintptr(fd), f.Name())
}
