package embedded_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// Publications: listed by port, changed by publishing again, refused
// when malformed or past the bound, changing nothing.
func TestPublishPorts(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, embedded.Config{})
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "pub"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		port   int
		public bool
	}{{8080, false}, {3000, true}, {8080, true}} {
		if _, err := e.PublishPort(ctx, p.port, environment.PublishOptions{Public: p.public}); err != nil {
			t.Fatal(err)
		}
	}
	want := []environment.PublishedPort{{Port: 3000, Public: true}, {Port: 8080, Public: true}}
	if got, err := e.PublishedPorts(ctx); err != nil || !slices.Equal(got, want) {
		t.Fatalf("PublishedPorts = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []int{0, -1, 65536} {
		if _, err := e.PublishPort(ctx, bad, environment.PublishOptions{}); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("PublishPort(%d) = %v, want ErrInvalidArgument", bad, err)
		}
	}
	if err := e.UnpublishPort(ctx, 9999); !errors.Is(err, environment.ErrPortNotPublished) {
		t.Errorf("UnpublishPort of an unpublished port = %v, want ErrPortNotPublished", err)
	}
	for p := 10000; len(want) < environment.MaxPublishedPorts; p++ {
		if _, err := e.PublishPort(ctx, p, environment.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, environment.PublishedPort{Port: p})
	}
	if _, err := e.PublishPort(ctx, 20000, environment.PublishOptions{}); !errors.Is(err, environment.ErrLimitExceeded) {
		t.Errorf("publishing past the bound = %v, want ErrLimitExceeded", err)
	}
	if err := e.UnpublishPort(ctx, 8080); err != nil {
		t.Fatal(err)
	}
	if _, err := h.PublishedPort("pub", 8080); !errors.Is(err, environment.ErrPortNotPublished) {
		t.Errorf("Host.PublishedPort after unpublish = %v, want ErrPortNotPublished", err)
	}
	if p, err := h.PublishedPort("pub", 3000); err != nil || !p.Public {
		t.Errorf("Host.PublishedPort(3000) = %+v, %v; want public", p, err)
	}
	if info, _ := h.Session("pub"); len(info.Ports) != environment.MaxPublishedPorts-1 {
		t.Errorf("SessionInfo.Ports has %d ports, want %d", len(info.Ports), environment.MaxPublishedPorts-1)
	}
}

// A publication is the session's: it survives Pause/Resume, Rollback and
// a host restart, a fork does not inherit it, Destroy ends it.
func TestPublishedPortLifetime(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	h := newHost(t, embedded.Config{StateDir: dir})
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "life"})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := e.TurnComplete(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.PublishPort(ctx, 8000, environment.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PublishPort(ctx, 8001, environment.PublishOptions{}); err != nil {
		t.Fatalf("publishing while paused: %v", err)
	}
	if err := e.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Rollback(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	fork, err := e.Fork(ctx, snap.ID, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := fork.(environment.PortPublisher).PublishedPorts(ctx); len(got) != 0 {
		t.Errorf("a fork inherited ports %v", got)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h2 := newHost(t, embedded.Config{StateDir: dir})
	e2 := h2.NewEnvironment()
	if err := e2.AttachSession("life"); err != nil {
		t.Fatal(err)
	}
	want := []environment.PublishedPort{{Port: 8000}, {Port: 8001}}
	if got, err := e2.PublishedPorts(ctx); err != nil || !slices.Equal(got, want) {
		t.Fatalf("ports after pause, rollback and restart = %v, %v; want %v", got, err, want)
	}
	if err := e2.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.PublishedPort("life", 8000); !errors.Is(err, environment.ErrSessionNotFound) {
		t.Errorf("Host.PublishedPort after Destroy = %v, want ErrSessionNotFound", err)
	}
	if _, err := e2.PublishPort(ctx, 8002, environment.PublishOptions{}); !errors.Is(err, environment.ErrNotActive) {
		t.Errorf("PublishPort after Destroy = %v, want ErrNotActive", err)
	}
}

// DialPort on the none runtime reaches the host's loopback (the none
// sandbox's); nothing listening is ErrPortRefused, a paused session
// ErrNotActive.
func TestDialPortNone(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, embedded.Config{})
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		_, _ = c.Write([]byte("echo " + line))
	}()
	c, err := e.DialPort(ctx, port)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "echo hi\n" {
		t.Errorf("through DialPort: %q, %v", got, err)
	}
	c.Close()
	ln.Close()
	if _, err := e.DialPort(ctx, port); !errors.Is(err, environment.ErrPortRefused) {
		t.Errorf("DialPort with nothing listening = %v, want ErrPortRefused", err)
	}
	if err := e.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DialPort(ctx, port); !errors.Is(err, environment.ErrNotActive) {
		t.Errorf("DialPort of a paused session = %v, want ErrNotActive", err)
	}
}
