// Command overhead measures the client's per-call cost over the raw socket
// request, side by side: batches of the client's call and of the same HTTP
// exchange written by hand on a kept-alive Unix socket alternate for -secs
// seconds; one JSON line per call with the medians of the batches' per-call
// times, in microseconds. Run by `make bench-clients`.
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	lockstep "lockstep/client"
)

type raw struct {
	conn net.Conn
	r    *bufio.Reader
}

func (r *raw) call(request string) {
	if _, err := io.WriteString(r.conn, request); err != nil {
		log.Fatal(err)
	}
	resp, err := http.ReadResponse(r.r, nil)
	if err != nil {
		log.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		log.Fatalf("raw request: HTTP %d", resp.StatusCode)
	}
}

func request(method, path, body string) string {
	head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: sidecar\r\nX-Lockstep-Request: 1\r\nContent-Length: %d\r\n", method, path, len(body))
	if body != "" {
		head += "Content-Type: application/json\r\n"
	}
	return head + "\r\n" + body
}

func measure(fn func(), batch int) float64 {
	started := time.Now()
	for i := 0; i < batch; i++ {
		fn()
	}
	return float64(time.Since(started).Microseconds()) / float64(batch)
}

func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

func main() {
	secs := flag.Float64("secs", 3, "seconds per call")
	batch := flag.Int("batch", 200, "calls per batch")
	flag.Parse()
	ctx := context.Background()
	c := lockstep.New(os.Getenv("LOCKSTEP_SOCKET"))
	conn, err := net.Dial("unix", c.Socket())
	if err != nil {
		log.Fatal(err)
	}
	r := &raw{conn: conn, r: bufio.NewReader(conn)}
	signed, err := c.JWTSign(ctx, "jwt", map[string]any{"sub": "bench"}, 600)
	if err != nil {
		log.Fatal(err)
	}
	must := func(_ any, err error) {
		if err != nil {
			log.Fatal(err)
		}
	}
	calls := []struct {
		name string
		call func()
		wire string
	}{
		{"keys", func() { must(c.Keys(ctx, "jwt", lockstep.KeysOptions{})) }, request("GET", "/v1/keys/jwt", "")},
		{"jwt_verify", func() { must(c.JWTVerify(ctx, "jwt", signed.Token, lockstep.VerifyOptions{})) },
			request("POST", "/v1/jwt/jwt/verify", `{"token":"`+signed.Token+`"}`)},
		{"mac", func() { must(c.MAC(ctx, "hooks", []byte(strings.Repeat("x", 64)))) },
			request("POST", "/v1/mac/hooks", `{"data":"`+base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", 64)))+`"}`)},
	}
	for _, call := range calls {
		var mine, theirs []float64
		deadline := time.Now().Add(time.Duration(*secs * float64(time.Second)))
		for time.Now().Before(deadline) {
			mine = append(mine, measure(call.call, *batch))
			theirs = append(theirs, measure(func() { r.call(call.wire) }, *batch))
		}
		out, _ := json.Marshal(map[string]any{"language": "go", "call": call.name, "client_us": median(mine),
			"raw_us": median(theirs), "batches": len(mine)})
		fmt.Println(string(out))
	}
}
