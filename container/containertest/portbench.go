package containertest

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// PortDialer names one way of reaching an echo server, for BenchPortEcho.
type PortDialer struct {
	Name string
	Dial func(ctx context.Context) (net.Conn, error)
}

// BenchPortEcho measures connections to an echo server (it writes back
// what it reads, and half-closes at end of file) made by each of
// dialers, interleaved op by op so that all see the same machine:
//
//   - rt100B: a 100-byte write and its echo on an established
//     connection; reports each dialer's median as "<name>-us";
//   - echo64MB: 64 MiB written (then CloseWrite) and read back on a fresh
//     connection; reports each dialer's median one-way rate as
//     "<name>-MB/s".
func BenchPortEcho(b *testing.B, dialers []PortDialer) {
	b.Run("rt100B", func(b *testing.B) {
		conns := make([]net.Conn, len(dialers))
		for i, d := range dialers {
			c, err := d.Dial(context.Background())
			if err != nil {
				b.Fatalf("%s: %v", d.Name, err)
			}
			defer c.Close()
			conns[i] = c
		}
		msg, buf := make([]byte, 100), make([]byte, 100)
		times := make([][]time.Duration, len(dialers))
		b.ResetTimer()
		for range b.N {
			for i, c := range conns {
				t0 := time.Now()
				if _, err := c.Write(msg); err != nil {
					b.Fatalf("%s: %v", dialers[i].Name, err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatalf("%s: %v", dialers[i].Name, err)
				}
				times[i] = append(times[i], time.Since(t0))
			}
		}
		b.StopTimer()
		for i, d := range dialers {
			b.ReportMetric(medianMS(times[i])*1000, d.Name+"-us")
		}
	})
	b.Run("echo64MB", func(b *testing.B) {
		data := make([]byte, 64<<20)
		times := make([][]time.Duration, len(dialers))
		b.SetBytes(int64(len(data) * len(dialers)))
		b.ResetTimer()
		for range b.N {
			for i, d := range dialers {
				t0 := time.Now()
				echo64(b, d, data)
				times[i] = append(times[i], time.Since(t0))
			}
		}
		b.StopTimer()
		for i, d := range dialers {
			b.ReportMetric(float64(len(data))/(1<<20)/(medianMS(times[i])/1000), d.Name+"-MB/s")
		}
	})
}

// echo64 sends data through a fresh connection of d and reads it back.
func echo64(b *testing.B, d PortDialer, data []byte) {
	c, err := d.Dial(context.Background())
	if err != nil {
		b.Fatalf("%s: %v", d.Name, err)
	}
	defer c.Close()
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	n, err := io.Copy(io.Discard, c)
	if err == nil {
		err = <-werr
	}
	if err != nil || n != int64(len(data)) {
		b.Fatalf("%s: %d bytes back of %d: %v", d.Name, n, len(data), err)
	}
}
