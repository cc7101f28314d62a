// Command memhog holds a block of random data in its memory and serves
// requests for the memory snapshot benchmark: each line read from the
// FIFO -req names a reply FIFO and a number of MiB; memhog rewrites that
// many MiB of its block with new random bytes and writes the number of
// requests it has served (a counter that lives only in its memory) to
// the reply FIFO.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	mb := flag.Int("mb", 100, "MiB of data to hold")
	req := flag.String("req", "/tmp/memhog", "request FIFO to create and read")
	flag.Parse()
	data := make([]byte, *mb<<20)
	fill(data)
	if err := syscall.Mkfifo(*req, 0o600); err != nil {
		log.Fatal(err)
	}
	served, off := 0, 0
	for {
		f, err := os.Open(*req)
		if err != nil {
			continue // interrupted by a checkpoint: wait again
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			reply, n, ok := strings.Cut(sc.Text(), " ")
			mib, err := strconv.Atoi(n)
			if !ok || err != nil || mib < 0 || mib > *mb {
				continue
			}
			for i := 0; i < mib; i++ {
				fill(data[off : off+1<<20])
				off = (off + 1<<20) % len(data)
			}
			served++
			if err := os.WriteFile(reply, []byte(fmt.Sprintln(served)), 0); err != nil {
				log.Print(err)
			}
		}
		f.Close()
	}
}

// fill writes random bytes into b.
func fill(b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rand.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}
