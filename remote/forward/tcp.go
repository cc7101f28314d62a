package forward

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/turnbox/turnbox/environment"
)

// IsTCPUpgrade reports whether r asks for the plain TCP form: HTTP/1.x
// with "Connection: Upgrade" and "Upgrade: turnbox-tcp".
func IsTCPUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", TCPProtocol)
}

// headerHasToken reports whether a comma-separated header holds token
// (case-insensitively).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// ServeTCP serves the plain TCP form: it connects to port of session,
// answers 101 Switching Protocols and splices the client's connection
// and the sandbox's both ways until both directions end, passing a
// half-close (CloseWrite) of either side on to the other. It needs
// HTTP/1.1 and a TCP upgrade request (IsTCPUpgrade); anything else is
// answered 400.
func (f *Forwarder) ServeTCP(w http.ResponseWriter, r *http.Request, session string, port int) {
	if r.ProtoMajor != 1 || !IsTCPUpgrade(r) {
		f.fail(w, fmt.Errorf("%w: the TCP form needs HTTP/1.1 with \"Connection: Upgrade\" and \"Upgrade: %s\"", environment.ErrInvalidArgument, TCPProtocol))
		return
	}
	release, ok := f.admit(w, session, port)
	if !ok {
		return
	}
	defer release()
	back, err := f.dialTarget(r.Context(), session, port)
	if err != nil {
		f.fail(w, err)
		return
	}
	defer back.Close()
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		f.fail(w, fmt.Errorf("forward: hijacking the connection: %w", err))
		return
	}
	defer client.Close()
	_ = client.SetDeadline(time.Time{}) // the tunnel lasts as long as both ends keep it
	_, err = io.WriteString(client, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+TCPProtocol+"\r\n\r\n")
	if err != nil {
		f.count("canceled")
		return
	}
	f.count("tcp")
	// What the client sent after its request is in brw's buffer: read
	// through it (a bounded buffer, then the connection itself).
	Splice(client, brw.Reader, back)
}

// Splice copies clientR (client's bytes, perhaps behind a buffer) to back
// and back to client at once, closing the write half of each destination
// when its source ends, and returns when both directions are done. It
// closes neither connection.
func Splice(client net.Conn, clientR io.Reader, back net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		copyHalf(back, clientR)
	}()
	go func() {
		defer wg.Done()
		copyHalf(client, back)
	}()
	wg.Wait()
}

// copyHalf copies src to dst, then ends dst's write half (or, when dst
// cannot half-close, all of dst: the peer must see the end).
func copyHalf(dst net.Conn, src io.Reader) {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
		_ = cw.CloseWrite()
		return
	}
	_ = dst.Close()
}

// ParseHost finds the port and session a host name <port>-<session
// id>.<domain> names (an optional ":port" of the listener ignored). The
// domain compares case-insensitively, the session id is returned as
// written; ok is false for any other host.
func ParseHost(host, domain string) (session string, port int, ok bool) {
	if domain == "" {
		return "", 0, false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	domain = strings.TrimSuffix(domain, ".")
	host = strings.TrimSuffix(host, ".")
	if len(host) <= len(domain)+1 || host[len(host)-len(domain)-1] != '.' || !strings.EqualFold(host[len(host)-len(domain):], domain) {
		return "", 0, false
	}
	label := host[:len(host)-len(domain)-1]
	p, id, found := strings.Cut(label, "-")
	if !found || id == "" || strings.Contains(id, ".") {
		return "", 0, false
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 {
		return "", 0, false
	}
	return id, n, true
}
