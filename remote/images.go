package remote

import (
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
)

// NewImageClient returns a client of the ImageService of the turnbox
// server at baseURL (list, get, pull with progress, remove, prune the
// host's images), with the options NewClient takes: bearer token, HTTP
// client, retries of the idempotent calls (ListImages, GetImage,
// RemoveImage), message limit and protocol. Errors carry the server's
// ErrorInfo: an unknown image is NotFound (IMAGE_NOT_FOUND), removing an
// image in use FailedPrecondition (IMAGE_IN_USE); errors.Is matches the environment sentinels.
// It is safe for concurrent use.
func NewImageClient(baseURL string, opts ...ClientOption) turnboxv1connect.ImageServiceClient {
	cfg := clientConfig{attempts: 4, delay: 50 * time.Millisecond, maxMsg: DefaultMaxMessageBytes}
	for _, o := range opts {
		o(&cfg)
	}
	var hc connect.HTTPClient = cfg.httpClient
	if hc == nil {
		hc = defaultHTTPClient()
	}
	if cfg.token != "" {
		hc = authClient{next: hc, header: "Bearer " + cfg.token}
	}
	return turnboxv1connect.NewImageServiceClient(hc, strings.TrimRight(baseURL, "/"), cfg.connectOptions()...)
}
