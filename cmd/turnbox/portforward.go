package main

import (
	"context"

	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	"github.com/turnbox/turnbox/remote/forward"
)

// session port-forward: a local TCP listener whose connections go to a
// port of a session's sandbox, in process (the host's DialPort) or
// through a server (the TCP form of a published port).

// dialFunc opens one connection to the session's port.
type dialFunc func(ctx context.Context) (net.Conn, error)

func sessionPortForwardCmd(c *cli) *cobra.Command {
	var address string
	cmd := &cobra.Command{
		Use:   "port-forward SESSION [LOCAL:]PORT",
		Short: "Forward a local TCP port to a port of a session's sandbox until interrupted",
		Long: `Forward a local TCP port to a port of a session's sandbox until interrupted.
LOCAL defaults to PORT; 0 picks a free one. With --server the port must be
published (session publish) and the connection goes through the server's
TCP form; in process it needs no publication.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			local, port, err := parseForward(args[1])
			if err != nil {
				return err
			}
			dial, done, err := c.portDialer(cmd.Context(), args[0], port)
			if err != nil {
				return err
			}
			defer done()
			ln, err := net.Listen("tcp", net.JoinHostPort(address, strconv.Itoa(local)))
			if err != nil {
				return fmt.Errorf("listening for port-forward: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "forwarding %s to %s:%d\n", ln.Addr(), args[0], port)
			return serveForward(cmd.Context(), ln, dial, c.g.logger.Warn)
		},
	}
	cmd.Flags().StringVar(&address, "address", "127.0.0.1", "local address to listen on")
	return cmd
}

// parseForward reads [LOCAL:]PORT.
func parseForward(arg string) (local, port int, err error) {
	l, p, found := strings.Cut(arg, ":")
	if !found {
		l, p = "", l
	}
	if port, err = parsePort(p); err != nil {
		return 0, 0, err
	}
	if l == "" {
		return port, port, nil
	}
	if local, err = strconv.Atoi(l); err != nil || local < 0 || local > 65535 {
		return 0, 0, fmt.Errorf("%w: local port %q (want 0-65535)", environment.ErrInvalidArgument, l)
	}
	return local, port, nil
}

// portDialer returns how to reach port of session id: through the
// server's TCP form, or the local host's DialPort.
func (c *cli) portDialer(ctx context.Context, id string, port int) (dialFunc, func(), error) {
	if u := c.t.url(); u != "" {
		tok, err := c.t.bearer()
		if err != nil {
			return nil, nil, err
		}
		return func(ctx context.Context) (net.Conn, error) {
			return remote.DialPort(ctx, u, tok, id, port)
		}, func() {}, nil
	}
	e, done, err := c.session(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	d, ok := e.(environment.PortDialer)
	if !ok {
		done()
		return nil, nil, fmt.Errorf("%w: this host cannot reach its sandboxes' ports", environment.ErrCapabilityNotSupported)
	}
	return func(ctx context.Context) (net.Conn, error) { return d.DialPort(ctx, port) }, done, nil
}

// serveForward accepts connections on ln until ctx ends, splicing each
// to a new connection from dial; a failed dial closes the local
// connection and is reported through warn.
func serveForward(ctx context.Context, ln net.Listener, dial dialFunc, warn func(string, ...any)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("port-forward: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			back, err := dial(ctx)
			if err != nil {
				warn("port-forward: connection refused", "err", err)
				return
			}
			defer back.Close()
			stopConn := context.AfterFunc(ctx, func() { conn.Close(); back.Close() })
			defer stopConn()
			forward.Splice(conn, conn, back)
		}()
	}
}
