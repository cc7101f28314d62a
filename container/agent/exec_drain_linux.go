package agent

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// output is a running command's stdout and stderr, read by two
// goroutines (readOutput) that send what they read as MsgOutput frames;
// or a PTY master (err nil), read by one.
type output struct {
	out, err *os.File
	readers  sync.WaitGroup
	progress atomic.Int64 // bytes read from both pipes and sent
	inFlight atomic.Int64 // chunks read and not yet sent
}

// startOutput starts reading a command's stdout and stderr.
func (s *server) startOutput(id uint64, outR, errR *os.File) *output {
	o := &output{out: outR, err: errR}
	o.readers.Add(1)
	go s.readOutput(id, StreamStdout, outR, &o.readers, &o.progress, &o.inFlight)
	if errR != nil {
		o.readers.Add(1)
		go s.readOutput(id, StreamStderr, errR, &o.readers, &o.progress, &o.inFlight)
	}
	return o
}

// drain returns once the command's output is read, then closes the pipes.
//
// Output written just before exit is still in the pipes; processes left
// in the background may hold them open for longer. Read until both pipes
// end, or for a short grace period. Output still flowing is never cut
// off: the pipes are closed only after a grace period in which nothing
// was read, no chunk was on its way to the host and both pipes were empty
// (so a reader the scheduler starved, or one waiting on a slow host, does
// not look idle).
func (o *output) drain(grace time.Duration) {
	drained := make(chan struct{})
	go func() { o.readers.Wait(); close(drained) }()
	tick := time.NewTicker(grace)
	last := o.progress.Load()
wait:
	for {
		select {
		case <-drained:
			break wait
		case <-tick.C:
			if now := o.progress.Load(); now != last || o.inFlight.Load() > 0 || unread(o.out) > 0 || unread(o.err) > 0 {
				last = now
				continue
			}
			o.close()
			<-drained
			break wait
		}
	}
	tick.Stop()
	o.close()
}

func (o *output) close() {
	o.out.Close()
	if o.err != nil {
		o.err.Close()
	}
}

func (s *server) readOutput(id uint64, stream byte, r *os.File, wg *sync.WaitGroup, progress, inFlight *atomic.Int64) {
	defer wg.Done()
	buf := make([]byte, outputChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			inFlight.Add(1)
			werr := s.fw.write(newFrame(MsgOutput, id).byte1(stream).raw(buf[:n]).bytes())
			progress.Add(int64(n))
			inFlight.Add(-1)
			if werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// unread returns how many bytes wait in pipe r (FIONREAD, named TIOCINQ on
// Linux), without taking
// the descriptor out of the runtime poller as File.Fd would.
func unread(r *os.File) int {
	if r == nil {
		return 0
	}
	rc, err := r.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
	return n
}
