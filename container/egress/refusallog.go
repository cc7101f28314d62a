package egress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// This file holds the per-refusal log: every refusing rule of a session
// sends the refused packet's head to an NFLOG group of the Firewall's
// own (behind a kernel-side rate limit), and a goroutine reading that
// group logs one "network refused" line per record (behind a Go-side
// rate limit, see refusalLogs).

// NFLOG's netlink protocol (linux/netfilter/nfnetlink_log.h); x/sys has
// none of it.
const (
	nfnlSubsysULOG   = 4
	nfulnlMsgPacket  = 0
	nfulnlMsgConfig  = 1
	nfulaPayload     = 9
	nfulaPrefix      = 10
	nfulaCfgCmd      = 1
	nfulaCfgMode     = 2
	nfulaCfgTimeout  = 4
	nfulaCfgQThresh  = 5
	nfulnlCfgCmdBind = 1
	nfulnlCopyPacket = 2
)

// Bounds of the refusal log.
const (
	// logGroupBase and logGroupSpan are where Firewalls' NFLOG groups
	// come from: logGroupBase + (hash of the table name) % logGroupSpan,
	// then the next ones while a group is taken (by another process or
	// another Firewall of this one).
	logGroupBase, logGroupSpan = 0x7400, 0x400
	// logGroupTries bounds that probing.
	logGroupTries = 16
	// logCopy is how much of a refused packet the kernel copies: the
	// IPv4 header with options and the ports, or the IPv6 header and
	// the ports.
	logCopy = 64
	// kernelLogRate and kernelLogBurst bound the records one refusing
	// rule (one session, one reason) sends, per second.
	kernelLogRate, kernelLogBurst = 10, 20
	// logPrefixTag starts every prefix of the Firewall's log records.
	logPrefixTag = "tb"
)

// logGroupFor is the first NFLOG group a Firewall on table tries.
func logGroupFor(table string) uint16 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(table))
	return logGroupBase + uint16(h.Sum32()%logGroupSpan)
}

// logPrefix is the prefix of the records of tag's refusals for reason:
// "tb s12 not-allowed" (well under the kernel's 64 bytes).
func logPrefix(tag, reason string) string { return logPrefixTag + " " + tag + " " + reason }

// parseLogPrefix splits a record's prefix into the session tag and the
// reason; ok is false for a prefix that is not one of ours.
func parseLogPrefix(p string) (tag, reason string, ok bool) {
	f := strings.Fields(p)
	if len(f) != 3 || f[0] != logPrefixTag {
		return "", "", false
	}
	return f[1], f[2], true
}

// logExprs are the expressions of the rule that logs a refusal of
// tag's for reason: a kernel-side rate limit, then the NFLOG record.
func logExprs(group uint16, tag, reason string) []expr.Any {
	return []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: kernelLogRate, Unit: expr.LimitTimeSecond, Burst: kernelLogBurst},
		&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: group, Data: []byte(logPrefix(tag, reason))},
	}
}

// nflog is the Firewall's NFLOG group, bound.
type nflog struct {
	conn  *netlink.Conn
	group uint16
}

// openNFLOG binds the first free group from first on (at most
// logGroupTries) and asks the kernel to send each record at once, with
// logCopy bytes of the packet.
func openNFLOG(first uint16) (*nflog, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("egress: nflog socket: %w", err)
	}
	var errs []error
	for i := range uint16(logGroupTries) {
		group := first + i
		err := nflogConfig(conn, group, []netlink.Attribute{{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdBind}}})
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EPERM) {
			errs = append(errs, fmt.Errorf("group %d: %w", group, err))
			continue // taken by another socket
		}
		if err == nil {
			mode := binary.BigEndian.AppendUint32(nil, logCopy)
			err = nflogConfig(conn, group, []netlink.Attribute{
				{Type: nfulaCfgMode, Data: append(mode, nfulnlCopyPacket, 0)},
				{Type: nfulaCfgQThresh, Data: binary.BigEndian.AppendUint32(nil, 1)},
				{Type: nfulaCfgTimeout, Data: binary.BigEndian.AppendUint32(nil, 1)},
			})
		}
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("egress: nflog group %d: %w", group, err)
		}
		return &nflog{conn: conn, group: group}, nil
	}
	conn.Close()
	return nil, fmt.Errorf("egress: no free nflog group from %d: %w", first, errors.Join(errs...))
}

// nflogConfig sends one NFULNL_MSG_CONFIG for group and waits for the
// kernel's acknowledgement.
func nflogConfig(conn *netlink.Conn, group uint16, attrs []netlink.Attribute) error {
	body, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(group >> 8), byte(group)}
	_, err = conn.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append(hdr, body...),
	})
	return err
}

// logRecord is one refusal the kernel logged.
type logRecord struct {
	tag, reason string
	dst         netip.Addr
	port        uint16 // 0: no port (not TCP or UDP, or a fragment)
	proto       string
}

// decodeRecord reads an NFLOG packet message; ok is false for anything
// else or a record that is not one of ours. The payload is the
// sandbox's packet: every length in it is checked.
func decodeRecord(m netlink.Message) (rec logRecord, ok bool) {
	if m.Header.Type != netlink.HeaderType(nfnlSubsysULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
		return rec, false
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return rec, false
	}
	var prefix string
	var payload []byte
	for ad.Next() {
		switch ad.Type() {
		case nfulaPrefix:
			prefix = ad.String()
		case nfulaPayload:
			payload = ad.Bytes()
		}
	}
	if ad.Err() != nil {
		return rec, false
	}
	if rec.tag, rec.reason, ok = parseLogPrefix(prefix); !ok {
		return rec, false
	}
	rec.dst, rec.port, rec.proto = packetDest(payload)
	return rec, true
}

// packetDest reads the destination address, port and protocol of an
// IPv4 or IPv6 packet's head (zero values where it is too short).
func packetDest(p []byte) (dst netip.Addr, port uint16, proto string) {
	if len(p) < 1 {
		return dst, 0, "unknown"
	}
	var l4 byte
	var off int
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0x0f) * 4
		if len(p) < 20 || ihl < 20 {
			return dst, 0, "unknown"
		}
		dst = netip.AddrFrom4([4]byte(p[16:20]))
		l4, off = p[9], ihl
		if binary.BigEndian.Uint16(p[6:8])&0x1fff != 0 {
			off = -1 // a later fragment: no transport header
		}
	case 6:
		if len(p) < 40 {
			return dst, 0, "unknown"
		}
		dst = netip.AddrFrom16([16]byte(p[24:40]))
		l4, off = p[6], 40
	default:
		return dst, 0, "unknown"
	}
	proto = protoName(l4)
	if (l4 == unix.IPPROTO_TCP || l4 == unix.IPPROTO_UDP) && off > 0 && len(p) >= off+4 {
		port = binary.BigEndian.Uint16(p[off+2 : off+4])
	}
	return dst, port, proto
}

// protoName names a transport protocol number.
func protoName(n byte) string {
	switch n {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	}
	return fmt.Sprint(n)
}

// readNFLOG logs the records of f's group until the socket is closed.
func (f *Firewall) readNFLOG(l *nflog, done chan<- struct{}) {
	defer close(done)
	for {
		msgs, err := l.conn.Receive()
		if errors.Is(err, unix.ENOBUFS) {
			continue // records lost: counted as suppressed by the summary
		}
		if err != nil {
			if !f.isClosed() {
				f.log.Warn("egress: reading refusal records", "err", err)
			}
			return
		}
		for _, m := range msgs {
			rec, ok := decodeRecord(m)
			if !ok {
				continue
			}
			if s := f.sessionByTag(rec.tag); s != nil {
				s.logs.packet(f.log, s.id(), rec, time.Now())
			}
		}
	}
}

// isClosed reports whether Close was called.
func (f *Firewall) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// sessionByTag is the attached session tagged tag, or nil.
func (f *Firewall) sessionByTag(tag string) *session {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.sessions {
		if s.tag == tag {
			return s
		}
	}
	return nil
}
