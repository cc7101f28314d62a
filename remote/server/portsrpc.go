package server

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/container/egress"
	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

// PublishPort implements turnboxv1connect.SandboxServiceHandler.
func (h handler) PublishPort(ctx context.Context, r *connect.Request[turnboxv1.PublishPortRequest]) (*connect.Response[turnboxv1.PublishPortResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.PublishPortRequest) (*turnboxv1.PublishPortResponse, error) {
		env, err := h.session(req.GetSessionId())
		if err != nil {
			return nil, err
		}
		p, err := env.PublishPort(ctx, int(req.GetPort()), environment.PublishOptions{Public: req.GetPublic()})
		if err != nil {
			return nil, err
		}
		return &turnboxv1.PublishPortResponse{Port: wire.PortsToProto([]environment.PublishedPort{p})[0]}, nil
	})
}

// UnpublishPort implements turnboxv1connect.SandboxServiceHandler.
func (h handler) UnpublishPort(ctx context.Context, r *connect.Request[turnboxv1.UnpublishPortRequest]) (*connect.Response[turnboxv1.UnpublishPortResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.UnpublishPortRequest) (*turnboxv1.UnpublishPortResponse, error) {
		env, err := h.session(req.GetSessionId())
		if err != nil {
			return nil, err
		}
		if err := env.UnpublishPort(ctx, int(req.GetPort())); err != nil {
			return nil, err
		}
		return &turnboxv1.UnpublishPortResponse{}, nil
	})
}

// ListPorts implements turnboxv1connect.SandboxServiceHandler.
func (h handler) ListPorts(ctx context.Context, r *connect.Request[turnboxv1.ListPortsRequest]) (*connect.Response[turnboxv1.ListPortsResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.ListPortsRequest) (*turnboxv1.ListPortsResponse, error) {
		env, err := h.session(req.GetSessionId())
		if err != nil {
			return nil, err
		}
		ports, err := env.PublishedPorts(ctx)
		if err != nil {
			return nil, err
		}
		return &turnboxv1.ListPortsResponse{Ports: wire.PortsToProto(ports)}, nil
	})
}

// networkStats returns session id's network counters for the wire, nil
// for a session without a network.
func (h handler) networkStats(id string) *turnboxv1.NetworkStats {
	st, err := h.s.host.NetworkStats(id)
	if err != nil {
		if !errors.Is(err, egress.ErrUnknownSession) && !errors.Is(err, environment.ErrSessionNotFound) {
			h.s.log.Warn("reading a session's network counters", "session", id, "err", err)
		}
		return nil
	}
	return &turnboxv1.NetworkStats{BytesIn: st.BytesIn, BytesOut: st.BytesOut, PacketsIn: st.PacketsIn, PacketsOut: st.PacketsOut, Refused: st.Refused}
}
