package e2b

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/environment"
)

// filesReq sends an envd /files (or other path) request for sandbox id.
func (r *fsRig) filesReq(t *testing.T, id, method, path string, q url.Values, body io.Reader, h http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, r.hs.URL+path+"?"+q.Encode(), body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.headers(id) {
		req.Header[k] = v
	}
	for k, v := range h {
		req.Header[k] = v
	}
	// The test decides compression itself.
	tr := r.hs.Client().Transport.(*http.Transport).Clone()
	tr.DisableCompression = true
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// fsWantStatus fails unless resp has status (and, for an error, E2B's JSON
// body with the same code).
func fsWantStatus(t *testing.T, what string, resp *http.Response, status int) []byte {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Errorf("%s: status %d (%s), want %d", what, resp.StatusCode, b, status)
		return b
	}
	if status >= 400 {
		var e apiError
		if err := json.Unmarshal(b, &e); err != nil || e.Code != status || e.Message == "" {
			t.Errorf("%s: error body %q, want {code: %d, message}", what, b, status)
		}
	}
	return b
}

// fsAllBytes is every byte value, many times.
func fsAllBytes() []byte {
	b := make([]byte, 256*1024)
	for i := range b {
		b[i] = byte(i*7 + i/256)
	}
	return b
}

func fsGzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fsMultipart is a multipart/form-data body with one "file" part per
// path (named by its file name), and its Content-Type.
func fsMultipart(t *testing.T, paths ...string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("other", "ignored")
	for _, p := range paths {
		fw, err := mw.CreateFormFile("file", p)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fw.Write([]byte("content of " + p))
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw.FormDataContentType()
}

// TestFilesUploadDownload: octet-stream (plain and gzip) and multipart
// uploads (several parts, each part's file name its path) write the bytes
// as the user's files, in new directories that are the user's; download
// returns them (gzip when asked), with E2B's errors for a missing file, a
// directory, a link out of the root and a bad token; /health is 204.
func TestFilesUploadDownload(t *testing.T) {
	r := newFSRig(t, environment.Limits{})
	ctx := t.Context()
	data := fsAllBytes()
	oct := http.Header{"Content-Type": {"application/octet-stream"}}
	resp := r.filesReq(t, r.id, "POST", "/files", url.Values{"path": {"new/dir/bin.dat"}}, bytes.NewReader(data), oct)
	var got []uploaded
	if err := json.Unmarshal(fsWantStatus(t, "octet-stream upload", resp, 200), &got); err != nil || len(got) != 1 ||
		got[0] != (uploaded{Path: "/home/user/new/dir/bin.dat", Name: "bin.dat", Type: "file"}) {
		t.Errorf("octet-stream upload answered %+v %v", got, err)
	}
	for _, p := range []string{"/home/user/new", "/home/user/new/dir", "/home/user/new/dir/bin.dat"} {
		if fi, err := r.env.Stat(ctx, p); err != nil || fi.UID != 1000 || fi.GID != 1000 {
			t.Errorf("%s: %+v %v, want owned by 1000:1000", p, fi, err)
		}
	}
	if out := strings.TrimSpace(fsSh(t, r.env, "su user -c 'echo more >> /home/user/new/dir/bin.dat && stat -c %U /home/user/new/dir/bin.dat'")); out != "user" {
		t.Errorf("the user cannot append to its uploaded file: %q", out)
	}
	gz := http.Header{"Content-Type": {"application/octet-stream"}, "Content-Encoding": {"gzip"}}
	resp = r.filesReq(t, r.id, "POST", "/files", url.Values{"path": {"/tmp/gz.dat"}, "username": {"root"}}, bytes.NewReader(fsGzipped(t, data)), gz)
	fsWantStatus(t, "gzip upload", resp, 200)
	if fi, err := r.env.Stat(ctx, "/tmp/gz.dat"); err != nil || fi.UID != 0 {
		t.Errorf("upload as root: %+v %v, want uid 0", fi, err)
	}

	body, ctype := fsMultipart(t, "m/one.txt", "/home/user/m/two.txt")
	resp = r.filesReq(t, r.id, "POST", "/files", nil, bytes.NewReader(fsGzipped(t, body)), http.Header{"Content-Type": {ctype}, "Content-Encoding": {"gzip"}})
	if err := json.Unmarshal(fsWantStatus(t, "gzip multipart upload", resp, 200), &got); err != nil || len(got) != 2 ||
		got[0].Path != "/home/user/m/one.txt" || got[1].Path != "/home/user/m/two.txt" {
		t.Errorf("multipart upload answered %+v %v", got, err)
	}
	body, ctype = fsMultipart(t, "dup.txt", "/home/user/dup.txt")
	resp = r.filesReq(t, r.id, "POST", "/files", nil, bytes.NewReader(body), http.Header{"Content-Type": {ctype}})
	fsWantStatus(t, "multipart upload naming a path twice", resp, 400)
	resp = r.filesReq(t, r.id, "POST", "/files", url.Values{"path": {"plain.txt"}}, strings.NewReader("x"), http.Header{"Content-Type": {"text/plain"}})
	fsWantStatus(t, "upload of text/plain", resp, 400)

	resp = r.filesReq(t, r.id, "GET", "/files", url.Values{"path": {"/tmp/gz.dat"}}, nil, nil)
	if b := fsWantStatus(t, "download", resp, 200); !bytes.Equal(b, data) || resp.Header.Get("Content-Type") != "application/octet-stream" ||
		resp.ContentLength != int64(len(data)) {
		t.Errorf("download: %d bytes (%q, length %d), want the %d uploaded", len(b), resp.Header.Get("Content-Type"), resp.ContentLength, len(data))
	}
	resp = r.filesReq(t, r.id, "GET", "/files", url.Values{"path": {"/tmp/gz.dat"}}, nil, http.Header{"Accept-Encoding": {"gzip"}})
	b := fsWantStatus(t, "gzip download", resp, 200)
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip download: %v, Content-Encoding %q", err, resp.Header.Get("Content-Encoding"))
	}
	if plain, err := io.ReadAll(zr); err != nil || !bytes.Equal(plain, data) {
		t.Errorf("gzip download: %d bytes, %v", len(plain), err)
	}
	resp = r.filesReq(t, r.id, "GET", "/files", url.Values{"path": {"m/one.txt"}}, nil, nil)
	if b := fsWantStatus(t, "download of a multipart file", resp, 200); string(b) != "content of m/one.txt" {
		t.Errorf("m/one.txt = %q", b)
	}

	fsSh(t, r.env, "ln -s /etc /home/user/etclink")
	fsWantStatus(t, "download of a missing file", r.filesReq(t, r.id, "GET", "/files", url.Values{"path": {"nope"}}, nil, nil), 404)
	fsWantStatus(t, "download of a directory", r.filesReq(t, r.id, "GET", "/files", url.Values{"path": {"new"}}, nil, nil), 400)
	fsWantStatus(t, "download through a link out", r.filesReq(t, r.id, "GET", "/files", url.Values{"path": {"etclink/passwd"}}, nil, nil), 400)
	resp = r.filesReq(t, r.id, "POST", "/files", url.Values{"path": {"etclink/x"}}, strings.NewReader("x"), oct)
	fsWantStatus(t, "upload through a link out", resp, 400)
	fsWantStatus(t, "download as an unknown user", r.filesReq(t, r.id, "GET", "/files", url.Values{"path": {"/tmp/gz.dat"}, "username": {"nobody9"}}, nil, nil), 400)
	fsWantStatus(t, "octet-stream upload without a path", r.filesReq(t, r.id, "POST", "/files", nil, strings.NewReader("x"), oct), 400)
	bad := http.Header{"X-Access-Token": {"tbx_wrong"}}
	fsWantStatus(t, "download with a bad token", r.filesReq(t, r.id, "GET", "/files", url.Values{"path": {"/tmp/gz.dat"}}, nil, bad), 401)
	if resp := r.filesReq(t, r.id, "GET", "/health", nil, nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("/health: %d, want 204", resp.StatusCode)
	}
}

// TestFilesUploadDiskLimit: an upload past the sandbox's disk limit is
// 507 (the SDKs' NotEnoughSpaceError) and leaves no file.
func TestFilesUploadDiskLimit(t *testing.T) {
	r := newFSRig(t, environment.Limits{DiskBytes: 1 << 20})
	big := bytes.Repeat([]byte("x"), 4<<20)
	resp := r.filesReq(t, r.id, "POST", "/files", url.Values{"path": {"big.dat"}}, bytes.NewReader(big), http.Header{"Content-Type": {"application/octet-stream"}})
	fsWantStatus(t, "upload past the disk limit", resp, http.StatusInsufficientStorage)
	if _, err := r.env.Stat(t.Context(), "/home/user/big.dat"); !errors.Is(err, environment.ErrFileNotFound) {
		t.Errorf("the refused upload left a file: %v", err)
	}
}
