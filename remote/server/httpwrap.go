package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

// writerKey keys the call's http.ResponseWriter in its context (rpcHTTP).
type writerKey struct{}

// bodyBound is the largest Content-Length a request with messages of at
// most maxMsg bytes can have: the message, its 5-byte envelope prefix and
// gzip's worst-case growth (well under 1/4096 plus a header).
func bodyBound(maxMsg int) int64 {
	return int64(maxMsg) + int64(maxMsg>>12) + 64
}

// rpcHTTP wraps a ConnectRPC service's handler. A request whose
// Content-Length exceeds the message bound gets a body that fails at the
// first read with ResourceExhausted (LIMIT_EXCEEDED), so that the service
// answers at once, in the request's protocol, without reading the body.
// Every call's context carries its http.ResponseWriter, with which
// streams send their response headers at once (headerFlusher).
func (s *Server) rpcHTTP(h http.Handler) http.Handler {
	bound := bodyBound(s.maxMsg)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r2 := r.WithContext(context.WithValue(r.Context(), writerKey{}, w))
		if r.ContentLength > bound {
			// On the copy only: net/http still sees the real body,
			// too big to drain, and closes the connection after the
			// answer.
			r2.Body = refusedBody{err: wire.ToConnectError(fmt.Errorf(
				"%w: request body of %d bytes (Content-Length) exceeds the server's message bound of %d bytes (turnbox serve --max-message-bytes)",
				environment.ErrLimitExceeded, r.ContentLength, s.maxMsg))}
		}
		h.ServeHTTP(w, r2)
	})
}

// refusedBody stands for a request body that is never read.
type refusedBody struct{ err error }

func (b refusedBody) Read([]byte) (int, error) { return 0, b.err }
func (b refusedBody) Close() error             { return nil }

// headerFlusher is a stream's connection that sends the response headers
// as soon as the request was read to its end (connect reads a server
// stream's message, then checks that no second one follows), rather than
// with the first event, so that a client learns at once that the call
// was accepted (a quiet command sends no event until the first
// keepalive). Not before: over HTTP/1.1, writing the response ends
// reading the request body.
type headerFlusher struct {
	connect.StreamingHandlerConn
	w       http.ResponseWriter // the call's, from rpcHTTP; nil elsewhere
	flushed bool
}

// newHeaderFlusher wraps a stream's conn with the writer rpcHTTP put in
// ctx. gRPC-Web is left alone: connect answers an error before any event
// there as a trailers-only response, in the headers.
func newHeaderFlusher(ctx context.Context, conn connect.StreamingHandlerConn) connect.StreamingHandlerConn {
	w, _ := ctx.Value(writerKey{}).(http.ResponseWriter)
	if w == nil || conn.Peer().Protocol == connect.ProtocolGRPCWeb {
		return conn
	}
	return &headerFlusher{StreamingHandlerConn: conn, w: w}
}

// Receive implements connect.StreamingHandlerConn.
func (f *headerFlusher) Receive(msg any) error {
	err := f.StreamingHandlerConn.Receive(msg)
	if errors.Is(err, io.EOF) && !f.flushed {
		f.flushed = true
		_ = http.NewResponseController(f.w).Flush()
	}
	return err
}
