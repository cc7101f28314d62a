package server

import (
	"net/http"

	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
)

// imagesHandler serves turnbox.v1.ImageService for the server's host.
// Methods not implemented yet answer Unimplemented.
type imagesHandler struct {
	turnboxv1connect.UnimplementedImageServiceHandler
	h handler
}

var _ turnboxv1connect.ImageServiceHandler = imagesHandler{}

// ImageServiceHandler returns the path and handler of
// turnbox.v1.ImageService, with the service's auth, limits and metrics,
// to mount on a mux.
func (s *Server) ImageServiceHandler() (string, http.Handler) {
	path, h := turnboxv1connect.NewImageServiceHandler(imagesHandler{h: handler{s: s}}, s.handlerOptions()...)
	return path, s.rpcHTTP(h)
}
