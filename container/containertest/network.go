package containertest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/netns"
)

// PongServer listens on addr:0 in the test's own network namespace and
// answers each connection's first line with "pong " and that line, then
// closes it. It returns the port and a function reporting how many
// connections it accepted. It stops at the test's end.
func PongServer(t testing.TB, addr netip.Addr) (port int, accepted func() int) {
	t.Helper()
	ln, err := net.Listen("tcp4", net.JoinHostPort(addr.String(), "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	n := make(chan int, 1)
	n <- 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n <- <-n + 1
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "pong %s", line)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, func() int { v := <-n; n <- v; return v }
}

// CheckNetNSReach checks a sandbox started in a network namespace made
// by container/netns: a command in sb reaches a server the test runs on
// hostAddr (the host side of the namespace's veth), and the test reaches
// a server a command in sb runs on sandboxAddr. The image needs busybox's
// nc.
func CheckNetNSReach(t *testing.T, sb container.Sandbox, hostAddr, sandboxAddr netip.Addr) {
	t.Helper()
	port, _ := PongServer(t, hostAddr)
	got := MustSh(t, sb, fmt.Sprintf("echo ping | nc -w 5 %s %d", hostAddr, port))
	if got != "pong ping\n" {
		t.Errorf("sandbox -> %s:%d: %q, want \"pong ping\\n\"", hostAddr, port, got)
	}

	const inPort = 8080
	done := make(chan error, 1)
	var out Buffer
	go func() {
		st, err := sb.Exec(ctxT(t), container.Process{
			Args:   []string{"sh", "-c", "echo hello-from-sandbox | nc -l -p " + strconv.Itoa(inPort)},
			Stdout: &out, Stderr: &out, Timeout: 20 * time.Second,
		})
		if err == nil && st.Code != 0 {
			err = fmt.Errorf("nc -l: %+v: %s", st, out.String())
		}
		done <- err
	}()
	line, err := dialRetry(t, netip.AddrPortFrom(sandboxAddr, inPort))
	if err != nil || line != "hello-from-sandbox\n" {
		t.Errorf("host -> %s:%d: %q, %v", sandboxAddr, inPort, line, err)
	}
	if err := <-done; err != nil {
		t.Errorf("server in the sandbox: %v", err)
	}
}

// dialRetry connects to ap until a server answers there (10 s at most)
// and returns the first line it sends.
func dialRetry(t testing.TB, ap netip.AddrPort) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialRetry(ctx, ap)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return bufio.NewReader(c).ReadString('\n')
}

// DialRetry connects to ap over TCP until a server answers there or ctx
// is done (a server a sandbox is still starting).
func DialRetry(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp4", ap.String())
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// CheckNoNetwork checks that sb (network none) has loopback only and
// cannot reach a server the test runs on addr, an address of the host.
func CheckNoNetwork(t *testing.T, sb container.Sandbox, addr netip.Addr) {
	t.Helper()
	var ifaces []string
	for _, line := range strings.Split(MustSh(t, sb, "cat /proc/net/dev"), "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok {
			ifaces = append(ifaces, strings.TrimSpace(name))
		}
	}
	if len(ifaces) != 1 || ifaces[0] != "lo" {
		t.Errorf("interfaces %v, want lo only", ifaces)
	}
	port, accepted := PongServer(t, addr)
	st, out, _ := Sh(t, sb, fmt.Sprintf("echo ping | nc -w 2 %s %d", addr, port))
	if st.Code == 0 || strings.Contains(out, "pong") || accepted() != 0 {
		t.Errorf("a sandbox without network reached %s:%d: %+v %q", addr, port, st, out)
	}
}

// NewLink makes a network namespace with a veth pair for one sandbox
// (container/netns, in a directory of the test's), removed at the test's
// end, and returns its Manager and Link.
func NewLink(t testing.TB, id string) (*netns.Manager, *netns.Link) {
	t.Helper()
	m, err := netns.New(netns.Config{Dir: filepath.Join(t.TempDir(), "netns")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Reap(context.Background()); err != nil {
			t.Errorf("netns Reap: %v", err)
		}
		m.Close()
	})
	l, err := m.Create(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m, l
}
