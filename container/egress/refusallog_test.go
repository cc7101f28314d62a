package egress

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/environment"
)

// logLines are the lines of logs with message msg that have every one
// of attrs (key=value, as slog's text handler writes them).
func logLines(logs *logBuffer, msg string, attrs ...string) []string {
	var out []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, "msg="+strconv.Quote(msg)) {
			continue
		}
		ok := true
		for _, a := range attrs {
			ok = ok && strings.Contains(line, " "+a)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// waitLines waits (3 s at most) until logLines has at least n lines.
func waitLines(t *testing.T, logs *logBuffer, n int, msg string, attrs ...string) []string {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := logLines(logs, msg, attrs...)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
	}
}

// suppressed sums the "suppressed" counts of the summary lines with
// attrs.
func suppressed(t *testing.T, logs *logBuffer, attrs ...string) uint64 {
	t.Helper()
	var n uint64
	for _, line := range logLines(logs, "network refusals not logged", attrs...) {
		_, v, ok := strings.Cut(line, " suppressed=")
		if !ok {
			t.Fatalf("summary without a count: %s", line)
		}
		v, _, _ = strings.Cut(v, " ")
		c, err := strconv.ParseUint(v, 10, 64)
		must(t, err)
		n += c
	}
	return n
}

// TestRefusalLog checks the per-refusal log lines of a sandbox: one
// line per refused connection with its destination and reason, one per
// refused DNS name, a bounded number of lines under a flood with the
// rest accounted in summaries, and Close stopping the NFLOG reader.
func TestRefusalLog(t *testing.T) {
	requireNet(t)
	f, logs := newFirewall(t)
	newInternet(t)
	sb := newSandbox(t, 7, policy(environment.NetworkEgress, "pkg.example:80"))
	attach(t, f, sb)
	if f.nflog == nil {
		t.Fatal("no NFLOG group bound")
	}
	const msg = "network refused"
	session := "session=" + sb.sess.ID

	refusedFast(t, sb, inetEcho+":80")
	want := []string{session, "reason=" + ReasonPolicy, "dst=" + inetEcho, "port=80", "proto=tcp"}
	waitLines(t, logs, 1, msg, want...)
	time.Sleep(300 * time.Millisecond) // a second line would be here by now
	if got := logLines(logs, msg, session); len(got) != 1 || len(logLines(logs, msg, want...)) != 1 {
		t.Fatalf("one refused connect: want one line with %v, got:\n%s", want, strings.Join(got, "\n"))
	}

	nxdomainFast(t, sb.resolver(sb.sess.HostAddr.String()+":53"), "refused.example")
	if got := waitLines(t, logs, 1, msg, session, "reason="+ReasonDNS, "name=refused.example"); len(got) != 1 {
		t.Fatalf("refused name: %d lines\n%s", len(got), logs.String())
	}

	// A flood: at most logBurst lines a second, the rest in summaries
	// that add up, with the lines, to every refusal.
	const flood = 1000
	start := time.Now()
	for range flood {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if c, err := sb.dial(ctx, "tcp4", inetEcho+":81"); err == nil {
			c.Close()
			t.Fatal("connected, want refused")
		}
		cancel()
	}
	took := time.Since(start)
	policyAttrs := []string{session, "reason=" + ReasonPolicy}
	total := func() uint64 {
		return uint64(len(logLines(logs, msg, policyAttrs...))) + suppressed(t, logs, policyAttrs...)
	}
	for deadline := time.Now().Add(5 * time.Second); total() < flood+1 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // and no summary counts one twice
	lines := len(logLines(logs, msg, append(policyAttrs, "port=81")...))
	if bound := logBurst * (int(took/logEvery) + 2); lines > bound || lines == 0 {
		t.Errorf("flood of %d over %v: %d lines, want 1..%d", flood, took, lines, bound)
	}
	if got := total(); got != flood+1 {
		t.Errorf("lines + suppressed = %d, want %d (every refusal accounted once)\n%s", got, flood+1, logs.String())
	}
	t.Logf("flood of %d refused connects over %v: %d lines, %d suppressed", flood, took.Round(time.Millisecond), lines, suppressed(t, logs, policyAttrs...))

	group := f.nflog.group
	must(t, f.Close())
	select {
	case <-f.nflogDone:
	default:
		t.Fatal("NFLOG reader still running after Close")
	}
	again, err := openNFLOG(group) // free again: Close unbound it
	must(t, err)
	defer again.conn.Close()
	if again.group != group {
		t.Fatalf("group %d still taken after Close (got %d)", group, again.group)
	}
}

// TestNFLOGGroupTaken checks that a second Firewall on the same table
// name's group probes to the next free one.
func TestNFLOGGroupTaken(t *testing.T) {
	requireNet(t)
	first := logGroupFor("tbtest-groups")
	a, err := openNFLOG(first)
	must(t, err)
	defer a.conn.Close()
	b, err := openNFLOG(first)
	must(t, err)
	defer b.conn.Close()
	if a.group == b.group || b.group < first || b.group >= first+logGroupTries {
		t.Fatalf("groups %d and %d from %d", a.group, b.group, first)
	}
}

// ip4Packet is the head of an IPv4 packet to dst with transport
// protocol proto and destination port port; frag sets a fragment
// offset.
func ip4Packet(dst string, proto byte, port uint16, frag bool) []byte {
	p := make([]byte, 24)
	p[0] = 0x45
	p[9] = proto
	a := netip.MustParseAddr(dst).As4()
	copy(p[16:20], a[:])
	if frag {
		binary.BigEndian.PutUint16(p[6:8], 0x0010)
	}
	binary.BigEndian.PutUint16(p[22:24], port)
	return p
}

// record is an NFLOG packet message with prefix and payload.
func record(t *testing.T, prefix string, payload []byte) netlink.Message {
	t.Helper()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: nfulaPrefix, Data: append([]byte(prefix), 0)},
		{Type: nfulaPayload, Data: payload},
	})
	must(t, err)
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgPacket)},
		Data:   append([]byte{unix.AF_INET, 0, 0, 1}, attrs...),
	}
}

// TestDecodeRecord checks what is read from records, including
// packets too short or malformed to read (the sandbox writes them).
func TestDecodeRecord(t *testing.T) {
	v6 := make([]byte, 44)
	v6[0], v6[6] = 0x60, unix.IPPROTO_UDP
	a := netip.MustParseAddr("2001:db8::5").As16()
	copy(v6[24:40], a[:])
	binary.BigEndian.PutUint16(v6[42:44], 53)
	for _, c := range []struct {
		prefix  string
		payload []byte
		ok      bool
		want    string
	}{
		{logPrefix("s3", ReasonPolicy), ip4Packet("192.0.2.9", unix.IPPROTO_TCP, 443, false), true, "s3 not-allowed 192.0.2.9 443 tcp"},
		{logPrefix("s3", ReasonHost), ip4Packet("192.0.2.9", unix.IPPROTO_UDP, 53, true), true, "s3 host 192.0.2.9 0 udp"},
		{logPrefix("s3", ReasonReserved), ip4Packet("169.254.169.254", unix.IPPROTO_ICMP, 0, false), true, "s3 reserved 169.254.169.254 0 icmp"},
		{logPrefix("s4", ReasonIPv6), v6, true, "s4 ipv6 2001:db8::5 53 udp"},
		{logPrefix("s4", ReasonIPv6), v6[:30], true, "s4 ipv6 invalid IP 0 unknown"},
		{logPrefix("s4", ReasonPolicy), []byte{0x4f}, true, "s4 not-allowed invalid IP 0 unknown"},
		{logPrefix("s4", ReasonPolicy), ip4Packet("192.0.2.9", unix.IPPROTO_TCP, 80, false)[:21], true, "s4 not-allowed 192.0.2.9 0 tcp"},
		{logPrefix("s4", ReasonPolicy), nil, true, "s4 not-allowed invalid IP 0 unknown"},
		{"someone else's", ip4Packet("192.0.2.9", unix.IPPROTO_TCP, 80, false), false, ""},
	} {
		rec, ok := decodeRecord(record(t, c.prefix, c.payload))
		got := fmt.Sprintf("%s %s %s %d %s", rec.tag, rec.reason, rec.dst, rec.port, rec.proto)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("%q %x: %v %q, want %v %q", c.prefix, c.payload, ok, got, c.ok, c.want)
		}
	}
	if _, ok := decodeRecord(netlink.Message{Header: netlink.Header{Type: 7}, Data: []byte{1, 2}}); ok {
		t.Error("decoded a message that is no NFLOG record")
	}
}

// TestRefusalLogsSummary checks the Go-side rate limit and that
// summaries report each refusal without a line once.
func TestRefusalLogsSummary(t *testing.T) {
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	var l refusalLogs
	now := time.Unix(1000, 0)
	for i := range 3 * logBurst {
		l.name(log, "s", fmt.Sprint("n", i), now)
	}
	if got := len(logLines(logs, "network refused")); got != logBurst {
		t.Fatalf("%d lines in one window, want %d", got, logBurst)
	}
	l.name(log, "s", "later", now.Add(logEvery))
	if got := len(logLines(logs, "network refused", "name=later")); got != 1 {
		t.Fatal("no line in the next window")
	}
	l.summarize(log, "s", map[string]uint64{ReasonDNS: 3*logBurst + 1})
	if n := suppressed(t, logs); n != 0 {
		t.Fatalf("first summary reported %d before a second passed", n)
	}
	l.summarize(log, "s", map[string]uint64{ReasonDNS: 3*logBurst + 1})
	l.summarize(log, "s", map[string]uint64{ReasonDNS: 3*logBurst + 1})
	if n := suppressed(t, logs, "reason="+ReasonDNS); n != 2*logBurst {
		t.Fatalf("suppressed %d, want %d", n, 2*logBurst)
	}
}

// TestLogGroupFor checks that groups stay in their range and that the
// prefixes fit the kernel's limit.
func TestLogGroupFor(t *testing.T) {
	for _, table := range []string{"turnbox", TableFor("0123456789abcdef"), "x"} {
		if g := logGroupFor(table); g < logGroupBase || g >= logGroupBase+logGroupSpan {
			t.Errorf("%s: group %d", table, g)
		}
	}
	for _, r := range packetReasons {
		if p := logPrefix("s4294967295", r); len(p) >= 64 {
			t.Errorf("prefix %q: %d bytes", p, len(p))
		}
	}
}

// BenchmarkRefusedConnect measures what the per-refusal log costs a
// refused connection: the median time of a sandbox's refused connect
// with the log on (every one logged: within the kernel's burst) and
// off, in alternating rounds, each on a fresh Firewall:
//
//	go test -run '^$' -bench BenchmarkRefusedConnect -benchtime 1x ./container/egress/
func BenchmarkRefusedConnect(b *testing.B) {
	requireNet(b)
	newInternet(b)
	sb := newSandbox(b, 8, policy(environment.NetworkEgress))
	const rounds, perRound = 6, kernelLogBurst - 5
	var on, off []float64
	for i := 0; i < b.N*rounds; i++ {
		for _, logOn := range []bool{true, false} {
			f, _ := newFirewallConfig(b, testPrefix, func(c *Config) { c.noPacketLog = !logOn })
			if err := f.Attach(sb.sess); err != nil {
				b.Fatal(err)
			}
			for range perRound {
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				c, err := sb.dial(ctx, "tcp4", inetEcho+":80")
				cancel()
				if err == nil {
					c.Close()
					b.Fatal("connected, want refused")
				}
				us := float64(time.Since(start).Nanoseconds()) / 1e3
				if logOn {
					on = append(on, us)
				} else {
					off = append(off, us)
				}
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
	mOn, mOff := median(on), median(off)
	b.ReportMetric(mOn, "logged-refusal-µs")
	b.ReportMetric(mOff, "unlogged-refusal-µs")
	b.Logf("refused connect, median of %d: log on %.0f µs, off %.0f µs (delta %.0f µs)", len(on), mOn, mOff, mOn-mOff)
}
