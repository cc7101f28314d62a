package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/environment"
)

// Bounds of the DNS filter.
const (
	// maxAnswered bounds the names remembered and the addresses admitted
	// per session and port group.
	maxAnswered = 8192
	// minAdmit and maxAdmit bound how long an answered address stays
	// admitted (the answer's TTL, clamped).
	minAdmit, maxAdmit = 30 * time.Second, time.Hour
	// upstreamTimeout bounds one question to the upstream resolvers.
	upstreamTimeout = 3 * time.Second
	// maxInflight bounds a session's concurrent upstream questions and
	// maxTCPConns its open DNS-over-TCP connections.
	maxInflight, maxTCPConns = 32, 16
)

// answer is an address the filter handed out for a name, until expires.
type answer struct {
	addr    netip.Addr
	expires time.Time
}

// resolver is one session's DNS filter: a UDP and a TCP server on the
// session's HostAddr.
type resolver struct {
	f        *Firewall
	sess     *session
	udp, tcp *dns.Server
	inflight chan struct{}
	refused  atomic.Uint64

	mu      sync.Mutex // guards answers
	answers map[string][]answer
}

// startResolver binds the session's DNS filter (IP_FREEBIND: the address
// may not be on the veth yet) and serves it.
func startResolver(f *Firewall, s *session) (*resolver, error) {
	r := &resolver{f: f, sess: s, inflight: make(chan struct{}, maxInflight), answers: map[string][]answer{}}
	addr := netip.AddrPortFrom(s.cfg.HostAddr, f.cfg.ResolverPort).String()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("egress: dns filter for %q: %w", s.id(), err)
	}
	ln, err := lc.Listen(context.Background(), "tcp4", addr)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("egress: dns filter for %q: %w", s.id(), err)
	}
	r.udp = &dns.Server{PacketConn: pc, Handler: r}
	r.tcp = &dns.Server{Listener: &limitListener{Listener: ln, slots: make(chan struct{}, maxTCPConns)}, Handler: r,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, IdleTimeout: func() time.Duration { return 5 * time.Second }}
	for _, srv := range []*dns.Server{r.udp, r.tcp} {
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				f.log.Debug("egress: dns filter stopped", "session", s.id(), "err", err)
			}
		}()
	}
	return r, nil
}

// close stops both servers.
func (r *resolver) close() {
	for _, srv := range []*dns.Server{r.udp, r.tcp} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = srv.ShutdownContext(ctx)
		cancel()
	}
}

// ServeDNS answers one question from the sandbox.
func (r *resolver) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	reply := func(m *dns.Msg) {
		size := dns.MaxMsgSize
		if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
			size = dns.MinMsgSize
			if opt := q.IsEdns0(); opt != nil {
				size = max(int(opt.UDPSize()), dns.MinMsgSize)
			}
		}
		m.Truncate(size) // sets TC: the client retries over TCP
		_ = w.WriteMsg(m)
	}
	src, ok := netip.AddrFromSlice(addrIP(w.RemoteAddr()))
	if !ok || src.Unmap() != r.sess.cfg.SandboxAddr {
		reply(new(dns.Msg).SetRcode(q, dns.RcodeRefused))
		return
	}
	if q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 {
		reply(new(dns.Msg).SetRcode(q, dns.RcodeNotImplemented))
		return
	}
	question := q.Question[0]
	name := strings.TrimSuffix(strings.ToLower(question.Name), ".")
	st := r.sess.state.Load()
	if !r.nameAllowed(st, name) {
		r.refuse(name)
		reply(new(dns.Msg).SetRcode(q, dns.RcodeNameError))
		return
	}
	if question.Qtype == dns.TypeAAAA || question.Qclass != dns.ClassINET {
		reply(new(dns.Msg).SetReply(q)) // IPv6 is refused: no addresses
		return
	}
	select {
	case r.inflight <- struct{}{}:
		defer func() { <-r.inflight }()
	default:
		reply(new(dns.Msg).SetRcode(q, dns.RcodeServerFailure))
		return
	}
	up, err := r.ask(question)
	if err != nil {
		r.f.log.Debug("egress: upstream dns", "session", r.sess.id(), "name", name, "err", err)
		reply(new(dns.Msg).SetRcode(q, dns.RcodeServerFailure))
		return
	}
	m := new(dns.Msg).SetReply(q)
	m.Rcode = up.Rcode
	m.Answer, err = r.admit(name, question.Qtype, up.Answer)
	if err != nil {
		r.f.log.Warn("egress: admitting answered addresses", "session", r.sess.id(), "name", name, "err", err)
		m = new(dns.Msg).SetRcode(q, dns.RcodeServerFailure)
	}
	reply(m)
}

// addrIP is the IP of a UDP or TCP address.
func addrIP(a net.Addr) net.IP {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.IP
	case *net.TCPAddr:
		return a.IP
	}
	return nil
}

// nameAllowed reports whether the policy lets the sandbox resolve name:
// any name under open, a name an allow rule names under egress.
func (r *resolver) nameAllowed(st *policyState, name string) bool {
	switch st.mode {
	case environment.NetworkOpen:
		return true
	case environment.NetworkEgress:
		for _, rule := range st.rules {
			if rule.MatchesName(name) {
				return true
			}
		}
	}
	return false
}

// ask sends question to the upstream resolvers in turn (TCP when a UDP
// answer is truncated).
func (r *resolver) ask(question dns.Question) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), upstreamTimeout)
	defer cancel()
	var errs []error
	for _, up := range r.f.cfg.Upstream {
		m := new(dns.Msg)
		m.SetQuestion(question.Name, question.Qtype)
		m.RecursionDesired = true
		m.SetEdns0(dns.DefaultMsgSize, false)
		for _, proto := range []string{"udp", "tcp"} {
			c := &dns.Client{Net: proto, Timeout: upstreamTimeout, UDPSize: dns.DefaultMsgSize}
			resp, _, err := c.ExchangeContext(ctx, m, up.String())
			if err != nil {
				errs = append(errs, err)
				break
			}
			if !resp.Truncated {
				return resp, nil
			}
		}
	}
	return nil, fmt.Errorf("no upstream answered: %w", errors.Join(errs...))
}

// admit filters an upstream answer for the sandbox and admits its IPv4
// addresses into the sets of the rules naming name. It keeps CNAMEs and
// A records (their TTL capped at maxAdmit) for an A question, the
// records of the asked type for others, and never AAAA records.
func (r *resolver) admit(name string, qtype uint16, rrs []dns.RR) ([]dns.RR, error) {
	var out []dns.RR
	var got []answer
	now := time.Now()
	for _, rr := range rrs {
		h := rr.Header()
		switch {
		case h.Rrtype == dns.TypeCNAME, h.Rrtype == qtype && qtype != dns.TypeA && qtype != dns.TypeAAAA:
		case h.Rrtype == dns.TypeA && qtype == dns.TypeA:
			h.Ttl = min(h.Ttl, uint32(maxAdmit/time.Second))
			a, _ := netip.AddrFromSlice(rr.(*dns.A).A.To4())
			got = append(got, answer{addr: a, expires: now.Add(admitFor(h.Ttl))})
		default:
			continue
		}
		out = append(out, rr)
	}
	if len(got) == 0 {
		return out, nil
	}
	if err := r.f.admitAddrs(r.sess, name, got); err != nil {
		return nil, err
	}
	r.remember(name, got)
	return out, nil
}

// admitFor is how long an address answered with ttl stays admitted.
func admitFor(ttl uint32) time.Duration {
	return min(max(time.Duration(ttl)*time.Second, minAdmit), maxAdmit)
}

// admitAddrs adds got to the sets of s's rules naming name, under the
// current policy.
func (f *Firewall) admitAddrs(s *session, name string, got []answer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("firewall closed")
	}
	if err := f.newBatch(); err != nil {
		return err
	}
	now := time.Now()
	for _, g := range s.state.Load().groupsFor(name) {
		elems := make([]nftables.SetElement, 0, len(got))
		for _, a := range got {
			if d := a.expires.Sub(now); d > 0 && a.addr.Is4() {
				elems = append(elems, nftables.SetElement{Key: a.addr.AsSlice(), Timeout: d})
			}
		}
		if err := f.conn.SetAddElements(g.set, elems); err != nil {
			return err
		}
	}
	return f.conn.Flush()
}

// remember records name's answered addresses for readmit.
func (r *resolver) remember(name string, got []answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.answers[name]; !ok && len(r.answers) >= maxAnswered {
		now := time.Now()
		for n, as := range r.answers {
			if len(as) == 0 || as[0].expires.Before(now) {
				delete(r.answers, n)
			}
		}
		if len(r.answers) >= maxAnswered {
			return
		}
	}
	r.answers[name] = got
}

// readmit admits again, into st's new sets, the unexpired addresses of
// the names st still allows. Called by Update with f.mu held.
func (r *resolver) readmit(st *policyState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.f.newBatch(); err != nil {
		r.f.log.Warn("egress: re-admitting answered addresses", "session", r.sess.id(), "err", err)
		return
	}
	now := time.Now()
	for name, got := range r.answers {
		for _, g := range st.groupsFor(name) {
			var elems []nftables.SetElement
			for _, a := range got {
				if d := a.expires.Sub(now); d > 0 {
					elems = append(elems, nftables.SetElement{Key: a.addr.AsSlice(), Timeout: d})
				}
			}
			_ = r.f.conn.SetAddElements(g.set, elems)
		}
	}
	if err := r.f.conn.Flush(); err != nil {
		r.f.log.Warn("egress: re-admitting answered addresses", "session", r.sess.id(), "err", err)
	}
}

// refuse counts and (rate limited) logs a refused name.
func (r *resolver) refuse(name string) {
	r.refused.Add(1)
	r.sess.logs.name(r.f.log, r.sess.id(), name, time.Now())
}

// limitListener accepts at most cap(slots) connections at a time; more
// are closed at once.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

// Accept returns the next connection, closing those over the limit.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &slotConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			c.Close()
		}
	}
}

// slotConn frees its listener slot once, on Close.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// Close closes the connection and frees its slot.
func (c *slotConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// resolvConfServers reads the nameservers of a resolv.conf.
func resolvConfServers(path string) ([]netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("egress: upstream resolvers: %w", err)
	}
	defer f.Close()
	var out []netip.AddrPort
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a.WithZone(""), 53))
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: egress: no nameserver in %s; set Config.Upstream", environment.ErrInvalidArgument, path)
	}
	return out, nil
}
