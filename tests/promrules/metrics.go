package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
)

// checkMetrics checks a scrape's body as Prometheus reads it: the parser its
// scraper picks for the answer's Content-Type must take every entry, and a
// body in the classic text format must pass promlint, the linter behind
// `promtool check metrics` (which reads only that format). Returns the exit
// status: 0 clean, 1 unparsable, 3 lint problems (as promtool's).
func checkMetrics(contentType, path string) int {
	body, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	parser, err := textparse.New(body, contentType, labels.NewSymbolTable(), textparse.ParserOptions{})
	if parser == nil || err != nil {
		fmt.Fprintf(os.Stderr, "%s: no parser for %q: %v\n", path, contentType, err)
		return 1
	}
	samples := 0
	for {
		entry, err := parser.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			return 1
		}
		if entry == textparse.EntrySeries {
			samples++
		}
	}
	fmt.Printf("%s: %d samples parsed as %s\n", path, samples, contentType)
	if !bytes.HasPrefix([]byte(contentType), []byte("text/plain")) {
		return 0
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
		return 1
	}
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "%s: %s: %s\n", path, p.Metric, p.Text)
	}
	if len(problems) > 0 {
		return 3
	}
	return 0
}
