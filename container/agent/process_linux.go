package agent

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// decodeExec decodes an Exec body (see MsgExec).
func decodeExec(f frame) (execRequest, error) {
	d := decoder{b: f.body}
	req := execRequest{
		id:      f.id,
		args:    d.strs(),
		env:     d.strs(),
		dir:     d.str(),
		timeout: time.Duration(d.uvarint()),
	}
	flags := d.byte1()
	req.user = d.str()
	rows, cols := d.uvarint(), d.uvarint()
	if d.err != nil {
		return req, d.err
	}
	if rows > 0xffff || cols > 0xffff {
		return req, fmt.Errorf("%w: terminal size %dx%d", errInvalid, rows, cols)
	}
	req.stdin = flags&execFlagStdin != 0
	req.pty = flags&execFlagPTY != 0
	req.report = flags&execFlagReport != 0
	req.rows, req.cols = uint16(rows), uint16(cols)
	return req, nil
}

// newPTY opens a pseudo-terminal of req's size for command c: the child
// gets its slave as stdin, stdout and stderr (and as its controlling
// terminal, see command.sysProcAttr); the agent keeps the master, through
// the runtime's poller, for output and input.
func (s *server) newPTY(req execRequest, c *command) (*pipes, error) {
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	slave, err := openSlave(master)
	if err != nil {
		unix.Close(master)
		return nil, err
	}
	ws := &unix.Winsize{Row: req.rows, Col: req.cols}
	if err := unix.IoctlSetWinsize(master, unix.TIOCSWINSZ, ws); err != nil {
		unix.Close(master)
		unix.Close(slave)
		return nil, fmt.Errorf("set terminal size: %w", err)
	}
	if c.cred != nil {
		// As login does: the terminal belongs to its user, so that a
		// program reopening it (/dev/tty, ttyname) may. Best effort: the
		// child holds the descriptors either way.
		_ = unix.Fchown(slave, int(c.cred.uid), int(c.cred.gid))
	}
	m, err := pollable(master, "pty")
	if err != nil {
		unix.Close(slave)
		return nil, err
	}
	return &pipes{child: [3]int{slave, slave, slave}, ownStdin: true, pty: true, in: m, out: m}, nil
}

// openSlave unlocks the PTY master and opens its slave.
func openSlave(master int) (int, error) {
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return -1, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(master, unix.TIOCGPTN)
	if err != nil {
		return -1, fmt.Errorf("pty number: %w", err)
	}
	slave, err := unix.Open("/dev/pts/"+strconv.FormatUint(uint64(n), 10), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open pty slave: %w", err)
	}
	return slave, nil
}

// signal sends sig to the command's process alone, unless it exited.
func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		_ = syscall.Kill(p.pid, sig)
	}
}

// resize sets the size of the command's PTY, if it has one.
func (p *proc) resize(rows, cols uint16) {
	if p.pty == nil {
		return
	}
	rc, err := p.pty.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
}

// ptyEOF returns a function that writes the terminal's end-of-file
// character (VEOF, ^D unless changed) to the PTY master m: a PTY's
// "close stdin".
func ptyEOF(m *os.File) func() {
	return func() {
		eof := byte(4)
		if rc, err := m.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				if t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS); err == nil && t.Cc[unix.VEOF] != 0 {
					eof = t.Cc[unix.VEOF]
				}
			})
		}
		_, _ = m.Write([]byte{eof})
	}
}

// handleControl handles the frames that act on a running command:
// Stdin, StdinClose, Kill, Signal and Resize. Frames for unknown ids,
// and malformed ones, are ignored.
func (s *server) handleControl(f frame) {
	s.mu.Lock()
	p := s.procs[f.id]
	s.mu.Unlock()
	if p == nil {
		return
	}
	switch f.typ {
	case MsgStdin:
		if p.stdin != nil {
			p.stdin.push(f.body)
		}
	case MsgStdinClose:
		if p.stdin != nil {
			p.stdin.close()
		}
	case MsgKill:
		p.kill(true)
	case MsgSignal:
		d := decoder{b: f.body}
		if sig := d.uvarint(); d.err == nil && sig >= 1 && sig <= 64 {
			p.signal(syscall.Signal(sig))
		}
	case MsgResize:
		d := decoder{b: f.body}
		rows, cols := d.uvarint(), d.uvarint()
		if d.err == nil && rows <= 0xffff && cols <= 0xffff {
			p.resize(uint16(rows), uint16(cols))
		}
	}
}

// nonblockingWriter returns a function that writes what it can of b to
// f without waiting and returns how much it wrote (errors, EAGAIN
// included, stop it: the pump's write then meets them). nil if f is nil
// or not a pollable file.
func nonblockingWriter(f *os.File) func(b []byte) int {
	if f == nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	return func(b []byte) int {
		n := 0
		_ = rc.Control(func(fd uintptr) {
			for n < len(b) {
				k, err := unix.Write(int(fd), b[n:])
				if err == unix.EINTR {
					continue
				}
				if err != nil || k <= 0 {
					return
				}
				n += k
			}
		})
		return n
	}
}
