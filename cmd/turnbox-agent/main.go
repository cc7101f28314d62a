// Command turnbox-agent is turnbox's in-sandbox exec agent. A sandbox
// runtime (gvisor, runc) starts it as the sandbox's init with its stdin and
// stdout connected to the host, which speaks the protocol of package
// container/agent over them. Build it static:
//
//	CGO_ENABLED=0 go build -o turnbox-agent ./cmd/turnbox-agent
//
// Flags:
//
//	-link LINK=TARGET  create symlink LINK -> TARGET before serving
//	                   (repeatable; e.g. /workspace=/.turnbox/vol/ws)
//	-dir DIR           default working directory of commands
//	-pids-limit N      confine commands to N processes (pids cgroup)
//	-nproc-limit N     RLIMIT_NPROC N for the sandbox's user, zombies
//	                   included (the agent needs CAP_SYS_RESOURCE)
//
// Diagnostics go to stderr; stdout carries only protocol frames.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/turnbox/turnbox/container/agent"
)

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
	pids := flag.Int64("pids-limit", 0, "confine commands to at most `N` processes (pids cgroup at /sys/fs/cgroup/pids)")
	nproc := flag.Int64("nproc-limit", 0, "set RLIMIT_NPROC to `N` (tasks of the agent's user, zombies included); the agent keeps CAP_SYS_RESOURCE, commands do not")
	flag.Parse()

	var opts []agent.Option
	for _, l := range ls {
		opts = append(opts, agent.WithSymlink(l[0], l[1]))
	}
	if *dir != "" {
		opts = append(opts, agent.WithDefaultDir(*dir))
	}
	if *pids > 0 {
		opts = append(opts, agent.WithPidsLimit(*pids))
	}
	if *nproc > 0 {
		opts = append(opts, agent.WithProcessLimit(*nproc))
	}
	if err := agent.Serve(os.Stdin, os.Stdout, opts...); err != nil {
		fmt.Fprintln(os.Stderr, "turnbox-agent:", err)
		os.Exit(1)
	}
}
