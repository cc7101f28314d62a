package e2b

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/turnbox/turnbox/environment"
)

// maxUploadParts bounds the files of one multipart upload.
const maxUploadParts = 1000

// mountFiles registers envd's /files (upload, download) and /health on
// mux.
func (s *Server) mountFiles(mux *http.ServeMux) {
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /files", s.bounded(s.serveDownload))
	mux.HandleFunc("POST /files", s.bounded(s.serveUpload))
}

// bounded runs fn under the server's call bound and answers its error
// as E2B's JSON error body.
func (s *Server) bounded(fn func(ctx context.Context, w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.maxDur)
		defer cancel()
		if err := fn(ctx, w, r.WithContext(ctx)); err != nil {
			writeJSONError(w, httpStatus(err), err.Error())
		}
	}
}

// filesUser opens the sandbox of a /files request as its user: the
// username query parameter, else the Authorization header's, else
// DefaultUser.
func (s *Server) filesUser(ctx context.Context, r *http.Request) (*userFS, error) {
	name := r.URL.Query().Get("username")
	if name == "" {
		n, err := requestUser(r.Header)
		if err != nil {
			return nil, err
		}
		name = n
	}
	// lookupAccount refuses a name the sandbox's /etc/passwd lacks.
	return s.userFor(ctx, name)
}

// serveDownload streams a regular file's bytes (gzip-compressed when
// the client accepts it).
func (s *Server) serveDownload(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	u, err := s.filesUser(ctx, r)
	if err != nil {
		return err
	}
	p, err := u.abs(r.URL.Query().Get("path"))
	if err != nil {
		return err
	}
	rc, fi, err := u.env.Download(ctx, p)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p)}))
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		h.Add("Vary", "Accept-Encoding")
		w.WriteHeader(http.StatusOK)
		zw := gzip.NewWriter(w)
		if _, err := io.CopyN(zw, rc, fi.Size); err != nil {
			s.log.Warn("e2b: download cut short", "sandbox", sandboxID(ctx), "path", p, "err", err)
			return nil
		}
		_ = zw.Close()
		return nil
	}
	h.Set("Content-Length", strconv.FormatInt(fi.Size, 10))
	w.WriteHeader(http.StatusOK)
	// Exactly the size announced, even if the sandbox grows the file.
	if _, err := io.CopyN(w, rc, fi.Size); err != nil {
		s.log.Warn("e2b: download cut short", "sandbox", sandboxID(ctx), "path", p, "err", err)
	}
	return nil
}

// acceptsGzip reports an Accept-Encoding that lists gzip (not with q=0).
func acceptsGzip(v string) bool {
	for _, part := range strings.Split(v, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}

// uploaded is one entry of an upload's answer.
type uploaded struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// serveUpload writes the request's files, streamed: multipart/form-data
// (each "file" part; its file name is its path when the query names
// none) or the raw body (application/octet-stream, the path from the
// query); either may be sent with Content-Encoding gzip. Files and the
// directories made for them belong to the user. It answers
// [{path, name, type}].
func (s *Server) serveUpload(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	u, err := s.filesUser(ctx, r)
	if err != nil {
		return err
	}
	qpath := r.URL.Query().Get("path")
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/octet-stream" && !strings.HasPrefix(mt, "multipart/") {
		return fmt.Errorf("%w: Content-Type %q: want multipart/form-data or application/octet-stream", environment.ErrInvalidArgument, r.Header.Get("Content-Type"))
	}
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return fmt.Errorf("%w: gzip body: %v", environment.ErrInvalidArgument, err)
		}
		defer zr.Close()
		r.Body = zr
	default:
		return fmt.Errorf("%w: Content-Encoding %q: want gzip or none", environment.ErrInvalidArgument, enc)
	}
	var out []uploaded
	if mt == "application/octet-stream" {
		if qpath == "" {
			return fmt.Errorf("%w: an octet-stream upload needs a path", environment.ErrInvalidArgument)
		}
		var one uploaded
		one, err = u.upload(ctx, qpath, r.Body)
		out = []uploaded{one}
	} else {
		out, err = s.uploadMultipart(ctx, u, r, qpath)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// uploadMultipart writes each "file" part of a multipart body.
func (s *Server) uploadMultipart(ctx context.Context, u *userFS, r *http.Request, qpath string) ([]uploaded, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, fmt.Errorf("%w: multipart body: %v", environment.ErrInvalidArgument, err)
	}
	var out []uploaded
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("%w: multipart body: %v", environment.ErrInvalidArgument, err)
		}
		if part.FormName() != "file" {
			part.Close()
			continue
		}
		if len(out) >= maxUploadParts {
			return out, fmt.Errorf("%w: more than %d files in one upload", environment.ErrLimitExceeded, maxUploadParts)
		}
		p := qpath
		if p == "" {
			p = partFileName(part)
		}
		if p == "" {
			return out, fmt.Errorf("%w: a file part names no path and the request no path", environment.ErrInvalidArgument)
		}
		for _, o := range out {
			if abs, _ := u.abs(p); o.Path == abs {
				return out, fmt.Errorf("%w: %s twice in one upload", environment.ErrInvalidArgument, abs)
			}
		}
		one, err := u.upload(ctx, p, part)
		part.Close()
		if err != nil {
			return out, err
		}
		out = append(out, one)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: the multipart body has no \"file\" part", environment.ErrInvalidArgument)
	}
	return out, nil
}

// partFileName is a part's file name as the client sent it
// (multipart.Part.FileName keeps only its last element).
func partFileName(part *multipart.Part) string {
	_, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}

// upload writes r to p (resolved for the user) as the user's file,
// making its missing parents the user's.
func (u *userFS) upload(ctx context.Context, p string, r io.Reader) (uploaded, error) {
	abs, err := u.abs(p)
	if err != nil {
		return uploaded{}, err
	}
	if dir := path.Dir(abs); dir != "/" {
		if err := u.mkdirAll(ctx, dir); err != nil {
			return uploaded{}, err
		}
	}
	owner := u.owner()
	if _, err := u.env.Upload(ctx, abs, r, environment.UploadOptions{Owner: &owner}); err != nil {
		return uploaded{}, err
	}
	return uploaded{Path: abs, Name: path.Base(abs), Type: "file"}, nil
}
