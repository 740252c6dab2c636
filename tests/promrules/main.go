// Checks Prometheus rule files as Prometheus loads them: the file's shape,
// every rule's fields, and every expression parsed by Prometheus's own
// PromQL parser (model/rulefmt, which promtool's `check rules` calls).
// Prints one line per file; exits 1 naming each error. `promrules metrics
// CONTENT-TYPE FILE` checks a scrape instead (metrics.go).
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "metrics" {
		os.Exit(checkMetrics(os.Args[2], os.Args[3]))
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: promrules RULES.yaml... | promrules metrics CONTENT-TYPE SCRAPE")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, parser.NewParser(parser.Options{}),
			slog.New(slog.DiscardHandler))
		for _, err := range errs {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
		}
		if len(errs) > 0 {
			continue
		}
		rules := 0
		for _, group := range groups.Groups {
			rules += len(group.Rules)
		}
		fmt.Printf("%s: %d groups, %d rules\n", path, len(groups.Groups), rules)
	}
	if failed {
		os.Exit(1)
	}
}
