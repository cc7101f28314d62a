// Command portserver is the HTTP server the published-port benchmark runs
// inside a sandbox: it answers every request with "small", keeping
// connections alive, on the address given as its argument.
package main

import (
	"log"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: portserver ADDR")
	}
	log.Fatal(http.ListenAndServe(os.Args[1], http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("small"))
	})))
}
