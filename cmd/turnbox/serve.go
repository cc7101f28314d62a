package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/remote/server"
)

// serveLong is serve's help.
const serveLong = `Serve the host's sessions over ConnectRPC: turnbox.v1.SandboxService (Connect,
gRPC and gRPC-Web protocols), /healthz (no auth) and /metrics (Prometheus).

Without --tls-cert/--tls-key the server speaks cleartext HTTP/2 (h2c) and
HTTP/1.1. Callers authenticate with "Authorization: Bearer <token>"; tokens
come from --token-file (one per line, '#' starts a comment) and from
$TURNBOX_TOKEN. Serving without tokens is allowed on a loopback address only,
unless --insecure-no-auth.

On SIGINT or SIGTERM the server stops accepting connections, lets calls in
progress (streams included) finish for up to --shutdown-timeout, then closes
the host, which keeps every session's data for the next start.

Sessions' published ports are forwarded (HTTP, WebSocket and plain TCP) at
/ports/<session id>/<port>/... and /tcp/<session id>/<port>, and with
--port-domain at host names <port>-<session id>.<domain> (a wildcard DNS name
pointing here), with the same tokens unless a port is published as public.

With --e2b the same listener also serves E2B's API, so that the unmodified
E2B SDKs drive the host's sessions: the control plane (X-API-KEY; keys from
--e2b-api-key-file and $TURNBOX_E2B_API_KEY, required) and envd (per-sandbox
access tokens derived from <state-dir>/e2b-secret, made on first use).`

// serveCmd serves the host over ConnectRPC until SIGINT or SIGTERM.
// checkServeFlags refuses flags of serve that do not go together.
func checkServeFlags(certFile, keyFile, portDomain, e2bDomain string) error {
	if (certFile == "") != (keyFile == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if portDomain != "" && strings.EqualFold(strings.TrimSuffix(portDomain, "."), strings.TrimSuffix(e2bDomain, ".")) {
		return errors.New("--port-domain and --e2b-domain must differ (E2B's host names would shadow turnbox's)")
	}
	return nil
}

func serveCmd(g *globals) *cobra.Command {
	var (
		listen, certFile, keyFile, tokenFile string
		portDomain                           string
		maxMsg                               int
		maxDur, shutdownTimeout              time.Duration
		noAuth                               bool
		e2bf                                 e2bFlags
	)
	cmd := &cobra.Command{
		Use:   "serve [--listen ADDR] [--tls-cert FILE --tls-key FILE] [--token-file FILE]",
		Short: "Serve the host's sessions over ConnectRPC (HTTP/2; h2c without TLS)",
		Long:  serveLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tokens, err := loadTokens(tokenFile)
			if err != nil {
				return err
			}
			if err := checkServeFlags(certFile, keyFile, portDomain, e2bf.domain); err != nil {
				return err
			}
			ln, err := listenChecked(listen, len(tokens) > 0 || noAuth)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			h, err := g.openHost(ctx)
			if err != nil {
				ln.Close()
				return err
			}
			defer closeHost(h)
			srv := server.New(h,
				server.WithAuthTokens(tokens...),
				server.WithMaxMessageBytes(maxMsg),
				server.WithMaxRequestDuration(maxDur),
				server.WithLogger(g.logger),
				server.WithPortDomain(portDomain),
			)
			hs := srv.HTTPServer(certFile == "") // h2c without TLS
			scheme := "http"
			if certFile != "" {
				scheme = "https"
				hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			es, err := e2bf.server(h, g.stateDir, maxMsg, maxDur, g.logger)
			if err != nil {
				ln.Close()
				return err
			}
			if es != nil {
				defer es.Close() // before closeHost: stops the sandbox deadlines
				hs.Handler = es.Handler(hs.Handler)
			}
			auth := fmt.Sprintf("%d token(s)", len(tokens))
			if len(tokens) == 0 {
				auth = "NO AUTH"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "turnbox: serving %s://%s (%s; storage %s, runtime %s)\n",
				scheme, ln.Addr(), auth, h.Capabilities().Storage, h.Capabilities().Isolation)
			if es != nil {
				fmt.Fprint(cmd.ErrOrStderr(), e2bf.banner(scheme+"://"+ln.Addr().String()))
			}
			// The deferred closeHost keeps the sessions' data.
			return serveUntilDone(ctx, cmd, hs, ln, certFile, keyFile, srv.Drain, shutdownTimeout, g.logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:7420", "address to listen on")
	f.StringVar(&certFile, "tls-cert", "", "TLS certificate (PEM); with --tls-key, serve HTTPS instead of h2c")
	f.StringVar(&keyFile, "tls-key", "", "TLS private key (PEM)")
	f.StringVar(&tokenFile, "token-file", "", "file of accepted bearer tokens, one per line (also $TURNBOX_TOKEN)")
	f.IntVar(&maxMsg, "max-message-bytes", server.DefaultMaxMessageBytes, "largest request or response message")
	f.DurationVar(&maxDur, "max-request-duration", server.DefaultMaxRequestDuration, "longest call")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long to let calls finish on SIGTERM")
	f.StringVar(&portDomain, "port-domain", "", "serve published ports at host names <port>-<session id>.<domain> too")
	f.BoolVar(&noAuth, "insecure-no-auth", false, "serve a non-loopback address without tokens")
	e2bf.register(f)
	return cmd
}

// listenChecked listens on addr, refusing a non-loopback address unless
// authed (the server has tokens, or the user said --insecure-no-auth).
func listenChecked(addr string, authed bool) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if !authed && !isLoopback(ln.Addr()) {
		ln.Close()
		return nil, fmt.Errorf("refusing to serve %s without auth tokens: give --token-file or TURNBOX_TOKEN (or --insecure-no-auth)", ln.Addr())
	}
	return ln, nil
}

// serveUntilDone serves hs on ln (TLS when certFile is set) until ctx
// ends, then drains (drain marks the server as shutting down), lets
// calls in progress finish for up to timeout and closes what is left.
func serveUntilDone(ctx context.Context, cmd *cobra.Command, hs *http.Server, ln net.Listener, certFile, keyFile string,
	drain func(), timeout time.Duration, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() {
		if certFile != "" {
			errc <- hs.ServeTLS(ln, certFile, keyFile)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintln(cmd.ErrOrStderr(), "turnbox: shutting down: draining calls in progress")
	drain()
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("calls still running at the shutdown timeout; closing their connections", "err", err)
		_ = hs.Close()
	}
	return nil
}

// loadTokens reads the accepted tokens from file (if given) and
// $TURNBOX_TOKEN. It never prints a token.
func loadTokens(file string) ([]string, error) {
	return loadKeys("TURNBOX_TOKEN", "--token-file", file)
}

// loadKeys reads secrets, one per line ('#' starts a comment), from file
// (if given; named flag in errors) and the environment variable env. It
// never prints one.
func loadKeys(env, flag, file string) ([]string, error) {
	var keys []string
	if t := strings.TrimSpace(os.Getenv(env)); t != "" {
		keys = append(keys, t)
	}
	if file == "" {
		return keys, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		keys = append(keys, line)
		n++
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%s %s holds no key", flag, file)
	}
	return keys, nil
}

// isLoopback reports whether addr is a loopback address.
func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
