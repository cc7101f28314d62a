package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/environment"
)

// forwardSnap is the machine's forwarding state, read at one instant
// (under the mutex every Firewall takes to change it).
type forwardSnap struct {
	idle   bool   // no live Firewall, in any process, holds a share
	fwd    string // net.ipv4.ip_forward
	wasOff bool   // the record that turnbox turned forwarding on
	guard  bool   // GuardTable exists
}

func readForwardSnap(t *testing.T) forwardSnap {
	t.Helper()
	var s forwardSnap
	must(t, withForwardMutex(func(dirfd int) error {
		fd, err := openRunFile(dirfd, forwardLockName)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		s.idle = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil
		s.wasOff = wasOff(dirfd)
		s.guard = tableExists(t, GuardTable)
		b, err := os.ReadFile(ipForwardPath)
		s.fwd = strings.TrimSpace(string(b))
		return err
	}))
	if s.wasOff != s.guard {
		t.Errorf("forwarding record %v but guard table %v", s.wasOff, s.guard)
	}
	return s
}

// checkForwarding checks that, with a live Firewall, forwarding is on,
// and that turnbox recorded turning it on if it was off with none.
func checkForwarding(t *testing.T, before forwardSnap) {
	t.Helper()
	s := readForwardSnap(t)
	if s.idle || s.fwd != "1" || (before.idle && before.fwd == "0" && !s.wasOff) {
		t.Fatalf("with a live Firewall: %+v (before any: %+v)", s, before)
	}
}

// checkRestored checks that the forwarding state is back to before's,
// unless Firewalls of other processes (other test packages running in
// parallel) are live at either instant: then forwarding must be on.
func checkRestored(t *testing.T, before forwardSnap) {
	t.Helper()
	s := readForwardSnap(t)
	switch {
	case !s.idle:
		if s.fwd != "1" {
			t.Fatalf("another process's Firewall is live but ip_forward is %s", s.fwd)
		}
	case before.idle && (s.fwd != before.fwd || s.wasOff || s.guard):
		t.Fatalf("after the last Firewall: %+v, want ip_forward %s restored and no record or guard", s, before.fwd)
	}
}

// helperEnv makes the test binary a process that makes a Firewall on
// the table named in it (interfaces "tbg-"), says "ready" and waits to
// be killed.
const helperEnv = "TURNBOX_EGRESS_HELPER_TABLE"

func TestMain(m *testing.M) {
	if table := os.Getenv(helperEnv); table != "" {
		_, err := New(context.Background(), Config{Table: table, InterfacePrefix: "tbg-",
			Upstream: []netip.AddrPort{netip.MustParseAddrPort(inetDNS + ":53")}})
		if err == nil {
			fmt.Println("ready")
			select {}
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// crashedFirewall runs a Firewall on a new table in another process and
// kills it (SIGKILL: its flock goes with it, its table stays); it
// returns the table's name.
func crashedFirewall(t *testing.T) string {
	t.Helper()
	table := randName("tbcrash")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+table)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err != nil || line != "ready\n" {
		t.Fatalf("helper: %q %v", line, err)
	}
	t.Cleanup(func() { _ = delTable(table) })
	if !tableExists(t, table) {
		t.Fatalf("the killed process's table %s is not there", table)
	}
	return table
}

func TestCloseAndReap(t *testing.T) {
	requireNet(t)
	before := readForwardSnap(t)
	f, err := New(context.Background(), Config{Upstream: []netip.AddrPort{netip.MustParseAddrPort(inetDNS + ":53")}, Table: randName("tbtest")})
	must(t, err)
	if !tableExists(t, f.cfg.Table) {
		t.Fatalf("after New: no table")
	}
	checkForwarding(t, before)
	must(t, f.Close())
	if tableExists(t, f.cfg.Table) {
		t.Fatalf("after Close: table left")
	}
	checkRestored(t, before)

	// A table left by a process that died is reaped, and forwarding
	// restored.
	table := crashedFirewall(t)
	must(t, Reap(table))
	if tableExists(t, table) {
		t.Fatalf("after Reap: table left")
	}
	checkRestored(t, before)
	must(t, Reap(table)) // nothing left: not an error
}

// get fetches url from sb (resolving through its filter).
func get(sb *sandbox, url string) error {
	resp, err := sb.httpClient().Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && (resp.StatusCode != 200 || !strings.HasPrefix(string(b), "hello from "+inetDNS)) {
		err = fmt.Errorf("status %d, %q", resp.StatusCode, b)
	}
	return err
}

// getAll fetches url from every sandbox at once.
func getAll(t *testing.T, url string, sbs ...*sandbox) {
	t.Helper()
	errs := make([]error, len(sbs))
	var wg sync.WaitGroup
	for i, sb := range sbs {
		wg.Go(func() {
			if err := get(sb, url); err != nil {
				errs[i] = fmt.Errorf("%s: %w", sb.sess.ID, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// TestTwoFirewalls: two hosts' Firewalls (own tables and interface
// prefixes) on one machine, a session each. Each one's traffic passes
// while the other exists; closing (or reaping) one keeps the other's
// forwarding; the last one restores ip_forward.
func TestTwoFirewalls(t *testing.T) {
	requireNet(t)
	newInternet(t)
	before := readForwardSnap(t)
	fa, _ := newFirewallPrefix(t, testPrefix)
	fb, _ := newFirewallPrefix(t, "tbf-")
	a := newSandboxPrefix(t, 50, testPrefix, policy(environment.NetworkEgress, "pkg.example:80"))
	b := newSandboxPrefix(t, 51, "tbf-", policy(environment.NetworkEgress, "pkg.example:80"))
	attach(t, fa, a)
	attach(t, fb, b)
	getAll(t, "http://pkg.example/", a, b)
	checkForwarding(t, before)

	must(t, fa.Close())
	if tableExists(t, fa.cfg.Table) || !tableExists(t, fb.cfg.Table) {
		t.Fatalf("after closing a: table a %v, table b %v", tableExists(t, fa.cfg.Table), tableExists(t, fb.cfg.Table))
	}
	checkForwarding(t, before)
	getAll(t, "http://pkg.example/", b)

	// A crashed host's Reap leaves the live one alone.
	table := crashedFirewall(t)
	must(t, Reap(table))
	if tableExists(t, table) || !tableExists(t, fb.cfg.Table) {
		t.Fatalf("after Reap: crashed table %v, table b %v", tableExists(t, table), tableExists(t, fb.cfg.Table))
	}
	checkForwarding(t, before)
	getAll(t, "http://pkg.example/", b)

	must(t, fb.Close())
	checkRestored(t, before)
}

func TestInvalidConfig(t *testing.T) {
	requireNet(t)
	before := readForwardSnap(t)
	up := []netip.AddrPort{netip.MustParseAddrPort(inetDNS + ":53")}
	for name, cfg := range map[string]Config{
		"prefix not tb":   {InterfacePrefix: "eth"},
		"prefix too long": {InterfacePrefix: "tb12345-"},
		"prefix no dash":  {InterfacePrefix: "tbx"},
		"guard table":     {Table: GuardTable},
		"bad table":       {Table: "Turnbox table"},
	} {
		cfg.Upstream = up
		if f, err := New(context.Background(), cfg); !errors.Is(err, environment.ErrInvalidArgument) {
			if f != nil {
				f.Close()
			}
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	if tableExists(t, "Turnbox table") {
		t.Error("a bad config made a table")
	}
	checkRestored(t, before)
}

func TestTableFor(t *testing.T) {
	if a, b := TableFor("ab12"), TableFor("cd34"); a != "turnbox-ab12" || a == b {
		t.Errorf("TableFor: %q %q", a, b)
	}
	if _, err := (Config{Table: TableFor("ab12"), InterfacePrefix: "tbab12-", Upstream: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}}).withDefaults(); err != nil {
		t.Errorf("a host's derived config: %v", err)
	}
}
