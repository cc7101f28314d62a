package agent

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ProtocolVersion is the version of the wire protocol; the agent announces
// it in its Hello frame.
// Version 2 dropped Started (version 1 reported each command's pid before
// its output): nothing used it, and writing it competed for the CPU with
// the command's start. Version 3 added processes that live beyond one
// call: Exec's user, PTY and start-report fields, MsgStarted (on request
// only), MsgSignal, MsgResize, and MsgFailed's reason. Version 4 added
// tunnels to TCP ports inside the sandbox (Client.DialPort): MsgDial,
// MsgConnData, MsgConnClose and MsgConnCredit in both directions' ranges,
// MsgDialed, MsgConnEOF and MsgConnClosed, and FailRefused; each tunnel
// is flow-controlled by credit (see TunnelWindow).
const ProtocolVersion = 4

// MaxFrameSize bounds a frame's length (type, id and body). Frames larger
// than this are a protocol error.
const MaxFrameSize = 1 << 20

// outputChunk is the largest Output body the agent sends, and the largest
// ConnData body either side sends.
const outputChunk = 32 << 10

// TunnelWindow is the flow-control window of a tunnel, per direction: a
// side may send at most this many ConnData bytes that the other side has
// not yet granted back with MsgConnCredit. Each side starts with this much
// credit, and grants credit back as its consumer (the in-sandbox socket,
// the host's reader) takes bytes, so neither side ever buffers more than
// one window per tunnel and a slow consumer stalls only its own tunnel.
const TunnelWindow = 256 << 10

// MsgType is the type byte of a frame. Every frame on the wire is
//
//	uint32 big-endian length n | type (1 byte) | request id (uvarint) | body
//
// where n counts the bytes after the length. Host-to-agent types are below
// 0x40, agent-to-host types at or above it. Request ids are chosen by the
// host; replies and events carry the id of the request they belong to.
type MsgType byte

// Host-to-agent messages.
const (
	// MsgExec starts a command. Body: args (strings), env (strings), dir
	// (string), timeout in nanoseconds (uvarint), flags (byte; bit 0: the
	// host will send stdin; bit 1: run in a new pseudo-terminal; bit 2:
	// report the start with MsgStarted), user (string, "" for the agent's
	// own; resolved in the sandbox's /etc/passwd and /etc/group), PTY
	// rows and cols (uvarint each). The agent answers with MsgFailed, or
	// with MsgStarted (if asked), MsgOutput events and finally MsgExited.
	// It registers the command before it reads the next frame, so MsgStdin
	// may follow at once.
	MsgExec MsgType = 0x01
	// MsgStdin carries bytes for a command's standard input (a PTY's
	// master). Body: data.
	MsgStdin MsgType = 0x02
	// MsgStdinClose closes a command's standard input; for a PTY it writes
	// the terminal's end-of-file character (VEOF). Body: empty.
	MsgStdinClose MsgType = 0x03
	// MsgKill kills a command's whole process tree (its process group and
	// every process in its session). The command's MsgExited reports
	// TimedOut. Body: empty.
	MsgKill MsgType = 0x04
	// MsgKillAll kills every process the agent can kill (as init: every
	// process in the sandbox but itself) and waits until they are gone.
	// The agent answers with MsgReply. Body: empty.
	MsgKillAll MsgType = 0x05
	// MsgPing asks for a MsgReply. Body: empty.
	MsgPing MsgType = 0x06
	// MsgIdle asks whether any process other than the agent runs (as
	// init: in the whole sandbox; otherwise: left by its commands). The
	// MsgReply message is empty when idle, else says what runs.
	MsgIdle MsgType = 0x07
	// MsgSignal sends a signal to a command's process alone (not its
	// tree). Body: signal number (uvarint, 1 to 64).
	MsgSignal MsgType = 0x08
	// MsgResize sets the size of a command's PTY (TIOCSWINSZ on its
	// master; the kernel sends SIGWINCH). Body: rows, cols (uvarint each).
	MsgResize MsgType = 0x09
	// MsgDial opens a tunnel: the agent dials a TCP port on its loopback
	// (container.DialLoopback) and answers MsgDialed, or MsgFailed
	// (FailRefused: nothing listens; FailInvalid: bad port or too many
	// tunnels; FailStart: any other error). The request id names the
	// tunnel from then on. Body: port (uvarint).
	MsgDial MsgType = 0x0a
	// MsgConnData carries bytes for a tunnel's socket, within the credit
	// the agent granted (see TunnelWindow). Body: data (at most
	// outputChunk bytes). The agent-to-host one is MsgTunnelData.
	MsgConnData MsgType = 0x0b
	// MsgConnClose closes a tunnel. Body: mode (byte): ConnCloseWrite
	// half-closes it (the agent writes what is queued, then shuts down
	// its socket's writing side: the server reads end of file and may
	// still answer); ConnCloseAll ends it: the agent writes what is
	// queued (for a bounded time), closes the socket, and sends nothing
	// more for the tunnel.
	MsgConnClose MsgType = 0x0c
	// MsgConnCredit grants the other side more bytes to send on a tunnel.
	// Body: bytes (uvarint). The agent-to-host one is MsgTunnelCredit.
	MsgConnCredit MsgType = 0x0d
)

// Modes of MsgConnClose.
const (
	// ConnCloseWrite half-closes a tunnel (CloseWrite).
	ConnCloseWrite byte = 0
	// ConnCloseAll ends a tunnel (Close).
	ConnCloseAll byte = 1
)

// Agent-to-host messages.
const (
	// MsgHello is sent once by the agent when it starts serving (id 0).
	// Body: protocol version (uvarint), agent pid (uvarint).
	MsgHello MsgType = 0x40
	// 0x41 was MsgStarted in protocol version 1.
	// MsgOutput carries command output. Body: stream (byte: StreamStdout
	// or StreamStderr), data.
	MsgOutput MsgType = 0x42
	// MsgExited ends a command. Body: exit code (varint), signal
	// (uvarint, 0 if none), flags (byte; bit 0 timed out/killed, bit 1
	// OOM-killed), duration in nanoseconds (uvarint).
	MsgExited MsgType = 0x43
	// MsgFailed reports that a command could not be started. Body:
	// message (string), reason (byte: FailStart, or FailInvalid for a
	// request the agent refuses, such as an unknown user).
	MsgFailed MsgType = 0x44
	// MsgReply answers MsgPing and MsgKillAll. Body: error message
	// (string, empty on success).
	MsgReply MsgType = 0x45
	// MsgStarted reports that a command whose Exec asked for it runs.
	// Body: its pid in the sandbox (uvarint).
	MsgStarted MsgType = 0x46
	// MsgDialed reports that a tunnel's socket is connected. Body: empty.
	MsgDialed MsgType = 0x47
	// MsgTunnelData carries bytes the tunnel's socket read, within the
	// credit the host granted (see TunnelWindow). Body: data (at most
	// outputChunk bytes).
	MsgTunnelData MsgType = 0x48
	// MsgConnEOF reports that the tunnel's socket read end of file: no
	// more data comes. Body: empty.
	MsgConnEOF MsgType = 0x49
	// MsgConnClosed reports that the agent closed the tunnel's socket and
	// forgot the tunnel: both directions ended normally (message empty),
	// or the socket failed (message says how). Body: message (string).
	MsgConnClosed MsgType = 0x4a
	// MsgTunnelCredit grants the host more bytes to send on a tunnel (the
	// agent wrote that many to the socket). Body: bytes (uvarint).
	MsgTunnelCredit MsgType = 0x4b
)

// Reasons in MsgFailed.
const (
	// FailStart: the command could not be started (no such program...).
	FailStart byte = 0
	// FailInvalid: the request is invalid in this sandbox (unknown user,
	// no PTY device).
	FailInvalid byte = 1
	// FailRefused: a Dial found nothing listening on the port.
	FailRefused byte = 2
)

// Output streams in MsgOutput.
const (
	StreamStdout byte = 1
	StreamStderr byte = 2
)

// Flag bits.
const (
	execFlagStdin    byte = 1 << 0
	execFlagPTY      byte = 1 << 1
	execFlagReport   byte = 1 << 2
	exitFlagTimedOut byte = 1 << 0
	exitFlagOOM      byte = 1 << 1
)

var msgNames = map[MsgType]string{
	MsgExec: "Exec", MsgStdin: "Stdin", MsgStdinClose: "StdinClose",
	MsgKill: "Kill", MsgKillAll: "KillAll", MsgPing: "Ping", MsgIdle: "Idle",
	MsgSignal: "Signal", MsgResize: "Resize", MsgDial: "Dial",
	MsgConnData: "ConnData", MsgConnClose: "ConnClose", MsgConnCredit: "ConnCredit",
	MsgHello: "Hello", MsgOutput: "Output", MsgExited: "Exited",
	MsgFailed: "Failed", MsgReply: "Reply", MsgStarted: "Started",
	MsgDialed: "Dialed", MsgTunnelData: "TunnelData", MsgConnEOF: "ConnEOF",
	MsgConnClosed: "ConnClosed", MsgTunnelCredit: "TunnelCredit",
}

// String returns the message type's name.
func (t MsgType) String() string {
	if n, ok := msgNames[t]; ok {
		return n
	}
	return fmt.Sprintf("MsgType(%#x)", byte(t))
}

// ErrProtocol reports a malformed frame.
var ErrProtocol = errors.New("agent: protocol error")

// frame is one decoded frame.
type frame struct {
	typ  MsgType
	id   uint64
	body []byte
}

// encoder builds a frame body.
type encoder struct{ b []byte }

func newFrame(typ MsgType, id uint64) *encoder {
	e := &encoder{b: make([]byte, 4, 64)}
	e.b = append(e.b, byte(typ))
	e.b = binary.AppendUvarint(e.b, id)
	return e
}

func (e *encoder) uvarint(v uint64) *encoder { e.b = binary.AppendUvarint(e.b, v); return e }
func (e *encoder) varint(v int64) *encoder   { e.b = binary.AppendVarint(e.b, v); return e }
func (e *encoder) byte1(v byte) *encoder     { e.b = append(e.b, v); return e }
func (e *encoder) raw(p []byte) *encoder     { e.b = append(e.b, p...); return e }

func (e *encoder) str(s string) *encoder {
	e.b = binary.AppendUvarint(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
	return e
}

func (e *encoder) strs(ss []string) *encoder {
	e.b = binary.AppendUvarint(e.b, uint64(len(ss)))
	for _, s := range ss {
		e.str(s)
	}
	return e
}

// bytes finishes the frame and returns it with its length prefix.
func (e *encoder) bytes() []byte {
	binary.BigEndian.PutUint32(e.b[:4], uint32(len(e.b)-4))
	return e.b
}

// decoder reads a frame body; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: short or malformed body", ErrProtocol)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte1() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) strs() []string {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) { // each string needs at least one byte
		d.fail()
		return nil
	}
	ss := make([]string, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		ss = append(ss, d.str())
	}
	return ss
}

// rest returns the remaining body bytes.
func (d *decoder) rest() []byte {
	b := d.b
	d.b = nil
	return b
}

// frameReader reads frames from a stream.
type frameReader struct {
	r   *bufio.Reader
	hdr [4]byte
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// read returns the next frame. Its body is a fresh slice the caller owns.
func (fr *frameReader) read() (frame, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return frame{}, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[:])
	if n < 2 || n > MaxFrameSize {
		return frame{}, fmt.Errorf("%w: frame length %d", ErrProtocol, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(fr.r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	id, k := binary.Uvarint(buf[1:])
	if k <= 0 {
		return frame{}, fmt.Errorf("%w: bad request id", ErrProtocol)
	}
	return frame{typ: MsgType(buf[0]), id: id, body: buf[1+k:]}, nil
}

// frameWriter writes whole frames atomically with respect to each other.
type frameWriter struct {
	mu  sync.Mutex
	w   io.Writer
	err error
}

func (fw *frameWriter) write(b []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.err != nil {
		return fw.err
	}
	if _, err := fw.w.Write(b); err != nil {
		fw.err = err
		return err
	}
	return nil
}
