package embedded

import (
	"bytes"
	"testing"

	"github.com/turnbox/turnbox/environment"
)

// TestRingBoundsAndOffsets: whatever the write sizes, the ring holds the
// newest max bytes, few chunks for many small writes, and a reader from
// any offset gets contiguous events (a Dropped one first for what is
// gone) that match the bytes written.
func TestRingBoundsAndOffsets(t *testing.T) {
	p := newProc(environment.ProcessConfig{}, []string{"x"}, 1000)
	var all []byte
	w := p.writer(environment.StreamStdout)
	for i := range 5000 {
		b := []byte{byte('a' + i%26)}
		if i%1000 == 999 {
			b = bytes.Repeat([]byte{'Z'}, 1500) // larger than the ring
		}
		w.Write(b)
		all = append(all, b...)
	}
	if p.held != 1000 || p.total != int64(len(all)) {
		t.Fatalf("held %d total %d, want 1000 and %d", p.held, p.total, len(all))
	}
	if len(p.chunks) > 5 {
		t.Errorf("%d chunks for 1000 held bytes of one-byte writes: small writes are not coalesced", len(p.chunks))
	}
	for _, from := range []int64{0, int64(len(all)) - 1000, int64(len(all)) - 10, int64(len(all))} {
		var got []byte
		off := from
		for {
			evs, next, _, _ := p.read(off)
			if len(evs) == 0 {
				break
			}
			for _, ev := range evs {
				if ev.Offset != off {
					t.Fatalf("from %d: event at %d, want %d", from, ev.Offset, off)
				}
				if ev.Dropped > 0 {
					if from != 0 || ev.Dropped != int64(len(all))-1000 {
						t.Fatalf("from %d: dropped %d", from, ev.Dropped)
					}
					off += ev.Dropped
					continue
				}
				got = append(got, ev.Data...)
				off += int64(len(ev.Data))
			}
			if next != off {
				t.Fatalf("next %d, want %d", next, off)
			}
		}
		start := max(from, int64(len(all))-1000)
		if !bytes.Equal(got, all[start:]) {
			t.Fatalf("from %d: got %d bytes that differ from the last %d written", from, len(got), len(all)-int(start))
		}
	}
}
