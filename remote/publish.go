package remote

import (
	"context"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

var _ environment.PortPublisher = (*NativeSandboxEnvironment)(nil)

// PublishPort implements environment.PortPublisher: the server forwards
// to port of the session's sandbox (docs/ports.md). It is idempotent, so
// retried.
func (e *NativeSandboxEnvironment) PublishPort(ctx context.Context, port int, opts environment.PublishOptions) (environment.PublishedPort, error) {
	id, err := e.bound()
	if err != nil {
		return environment.PublishedPort{}, err
	}
	if err := environment.ValidatePort(port); err != nil {
		return environment.PublishedPort{}, err
	}
	resp, err := call(ctx, "PublishPort", e.service.PublishPort, &turnboxv1.PublishPortRequest{SessionId: id, Port: int32(port), Public: opts.Public})
	if err != nil {
		return environment.PublishedPort{}, err
	}
	return environment.PublishedPort{Port: int(resp.GetPort().GetPort()), Public: resp.GetPort().GetPublic()}, nil
}

// UnpublishPort implements environment.PortPublisher. It is not retried:
// a retry of an unpublish that took effect would report
// environment.ErrPortNotPublished.
func (e *NativeSandboxEnvironment) UnpublishPort(ctx context.Context, port int) error {
	id, err := e.bound()
	if err != nil {
		return err
	}
	if err := environment.ValidatePort(port); err != nil {
		return err
	}
	_, err = call(ctx, "UnpublishPort", e.service.UnpublishPort, &turnboxv1.UnpublishPortRequest{SessionId: id, Port: int32(port)})
	return err
}

// PublishedPorts implements environment.PortPublisher.
func (e *NativeSandboxEnvironment) PublishedPorts(ctx context.Context) ([]environment.PublishedPort, error) {
	id, err := e.bound()
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, "ListPorts", e.service.ListPorts, &turnboxv1.ListPortsRequest{SessionId: id})
	if err != nil {
		return nil, err
	}
	return wire.PortsFromProto(resp.GetPorts()), nil
}
