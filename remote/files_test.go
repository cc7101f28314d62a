package remote_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	"github.com/turnbox/turnbox/remote/server"
)

// TestFilesStreamsAuth: the upload and download streams need the bearer
// token like the RPCs (ErrUnauthenticated without it, nothing written),
// and their failures map back to the sentinels the host returned.
func TestFilesStreamsAuth(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithAuthTokens(testToken))
	good, err := host.CreateSession(t.Context(), environment.SessionConfig{SessionID: "files-auth"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := good.Upload(t.Context(), "secret.txt", strings.NewReader("secret"), environment.UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := remote.NewNativeSandboxEnvironment(remote.NewClient(srv.URL, remote.WithBearerToken("wrong")), remote.DefaultConfig(), nil)
	if err := bad.AttachSession("files-auth"); !errors.Is(err, remote.ErrUnauthenticated) {
		t.Fatalf("AttachSession with a wrong token: %v", err)
	}
	// A raw request without a token, as any HTTP client could send.
	for _, req := range []*http.Request{
		httpRequest(t, http.MethodPut, srv.URL+server.UploadPath+"?session=files-auth&path=x.txt", strings.NewReader("intruder")),
		httpRequest(t, http.MethodGet, srv.URL+server.DownloadPath+"?session=files-auth&path=secret.txt", nil),
	} {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || bytes.Contains(body, []byte("secret")) {
			t.Errorf("%s without a token: %d %q, want 401 and no content", req.Method, resp.StatusCode, body)
		}
	}
	if _, err := good.Stat(t.Context(), "x.txt"); !errors.Is(err, environment.ErrFileNotFound) {
		t.Errorf("an unauthenticated upload wrote x.txt (Stat: %v)", err)
	}
	var fsys environment.FileSystem = newEnv(t, remote.NewClient(srv.URL, remote.WithBearerToken(testToken)))
	if _, _, err := fsys.Download(t.Context(), "missing.bin"); !errors.Is(err, environment.ErrFileNotFound) {
		t.Errorf("Download of a missing file: %v, want ErrFileNotFound", err)
	}
	if _, err := fsys.Upload(t.Context(), "/etc/x", strings.NewReader("x"), environment.UploadOptions{}); !errors.Is(err, environment.ErrPathEscapes) {
		t.Errorf("Upload outside: %v, want ErrPathEscapes", err)
	}
	for _, q := range []string{"mode=9", "owner=1000", "owner=x:1", "owner=1:-1", "owner=4294967296:0"} {
		req := httpRequest(t, http.MethodPut, srv.URL+server.UploadPath+"?session=files-auth&path=m.txt&"+q, strings.NewReader("x"))
		req.Header.Set("Authorization", "Bearer "+testToken)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest || resp.Header.Get(server.ErrorInfoHeader) == "" {
			t.Errorf("an upload with %s: %v %v, want 400 with an ErrorInfo", q, resp, err)
		}
	}
	if _, err := good.Stat(t.Context(), "m.txt"); !errors.Is(err, environment.ErrFileNotFound) {
		t.Errorf("a refused upload wrote m.txt (Stat: %v)", err)
	}
}

func httpRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
