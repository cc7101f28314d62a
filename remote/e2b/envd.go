package e2b

import (
	"context"
	"net/http"
	"time"

	"connectrpc.com/connect"
)

// mountEnvd registers envd's services and endpoints on mux.
func (s *Server) mountEnvd(mux *http.ServeMux) {
	s.mountProcess(mux)
	s.mountFilesystem(mux)
	s.mountFiles(mux)
}

// connectOptions are every envd service's limits and panic recovery.
func (s *Server) connectOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithInterceptors(&bound{max: s.maxDur}),
		connect.WithReadMaxBytes(s.maxMsg),
		connect.WithSendMaxBytes(s.maxMsg),
		connect.WithRecover(func(_ context.Context, spec connect.Spec, _ http.Header, p any) error {
			s.log.Error("e2b: panic in an envd call", "procedure", spec.Procedure, "panic", p)
			return connect.NewError(connect.CodeInternal, nil)
		}),
	}
}

// bound is an interceptor that bounds every call by max (a client's
// shorter Connect-Timeout-Ms wins: connect applies it to the context).
type bound struct{ max time.Duration }

func (b *bound) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, cancel := context.WithTimeout(ctx, b.max)
		defer cancel()
		return next(ctx, req)
	}
}

func (b *bound) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (b *bound) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, cancel := context.WithTimeout(ctx, b.max)
		defer cancel()
		return next(ctx, conn)
	}
}
