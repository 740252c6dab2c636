package hostapi

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options are the command-line options shared by the host binaries.
type Options struct {
	PluginDir string
	Name      string
	Version   string
	LogPath   string
	// ServerVersion is what the system view reports as the server version
	// (PluginEnv and the BAO_VERSION/VAULT_VERSION plugin environment).
	ServerVersion string
	// RollbackInterval, when positive, sends every mount a RollbackOperation
	// at that period, like the server's rollback manager (1m there).
	RollbackInterval time.Duration
	// WatchStdin makes the host exit when its standard input reaches EOF.
	WatchStdin bool
	// SkipRegistrationProbe skips the registration-time launch that the
	// server's catalog does to learn the plugin's version.
	SkipRegistrationProbe bool
	// LogLevel for the host logger (trace, debug, info, warn, error).
	LogLevel string
	// NoMultiplex makes the host behave as one that does not multiplex:
	// no multiplexing probe, no multiplex id on calls, one process per mount.
	NoMultiplex bool
}

// Command returns the plugin binary path.
func (o *Options) Command() string { return filepath.Join(o.PluginDir, o.Name) }

// ParseFlags parses the shared command line.
func ParseFlags(prog string, args []string, defaultServerVersion string) (*Options, error) {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	o := &Options{}
	fs.StringVar(&o.PluginDir, "plugin-dir", "", "plugin directory (required)")
	fs.StringVar(&o.Name, "name", "", "plugin name: the binary is <plugin-dir>/<name> (required)")
	fs.StringVar(&o.Version, "version", "", "plugin version to register in the catalog (e.g. v0.1.0)")
	fs.StringVar(&o.LogPath, "log", "", "log file (default: stderr)")
	fs.StringVar(&o.ServerVersion, "server-version", defaultServerVersion, "server version reported to the plugin")
	fs.DurationVar(&o.RollbackInterval, "rollback-interval", 0, "send periodic rollback requests to every mount at this interval (0: never)")
	noStdin := fs.Bool("no-stdin-watch", false, "do not exit when stdin reaches EOF")
	fs.BoolVar(&o.SkipRegistrationProbe, "skip-registration-probe", false, "do not launch the plugin once at registration to read its version")
	fs.BoolVar(&o.NoMultiplex, "no-multiplex", false, "behave as a host that does not multiplex plugins (no probe, no multiplex id, one process per mount)")
	fs.StringVar(&o.LogLevel, "log-level", "debug", "host log level (trace enables the SDK tracing middleware, as on a server at trace level)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.PluginDir == "" || o.Name == "" {
		return nil, errors.New("-plugin-dir and -name are required")
	}
	if strings.Contains(o.Name, "/") || strings.Contains(o.Name, "..") {
		return nil, errors.New("-name must be a plain file name")
	}
	abs, err := filepath.Abs(o.PluginDir)
	if err != nil {
		return nil, err
	}
	o.PluginDir = abs
	o.WatchStdin = !*noStdin
	return o, nil
}

// LogWriter writes one line per log record: time, [LEVEL], logger name,
// message and key=value pairs, quoting any value that contains spaces,
// quotes or newlines so a record never spans lines.
type LogWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLogWriter wraps w.
func NewLogWriter(w io.Writer) *LogWriter { return &LogWriter{w: w} }

// Write formats and writes one record.
func (l *LogWriter) Write(level, name, msg string, args []any) {
	var b strings.Builder
	b.WriteString(time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))
	b.WriteString(" [")
	b.WriteString(strings.ToUpper(level))
	b.WriteString("] ")
	if name != "" {
		b.WriteString(name)
		b.WriteString(": ")
	}
	b.WriteString(oneLine(msg))
	for i := 0; i < len(args); i += 2 {
		key := fmt.Sprint(args[i])
		var val any = "<missing>"
		if i+1 < len(args) {
			val = args[i+1]
		}
		b.WriteByte(' ')
		b.WriteString(key)
		b.WriteByte('=')
		b.WriteString(quoteIfNeeded(fmt.Sprint(val)))
	}
	b.WriteByte('\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, b.String())
}

func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\r\n\"=") {
		return strconv.Quote(s)
	}
	return s
}

// EngineFactory builds the engine once the options, faults and log writer
// are ready. It runs the catalog registration (hash, probe).
type EngineFactory func(ctx context.Context, o *Options, faults *Faults, logw *LogWriter) (Engine, error)

// Main runs a host binary: parse flags, build the engine, print
// "LISTEN 127.0.0.1:<port>", serve, and on SIGTERM/SIGINT or stdin EOF shut
// every mount down and exit. It returns the process exit code.
func Main(prog, defaultServerVersion string, newEngine EngineFactory) int {
	o, err := ParseFlags(prog, os.Args[1:], defaultServerVersion)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return 2
	}

	var logOut io.Writer = os.Stderr
	if o.LogPath != "" {
		f, err := os.OpenFile(o.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: opening log: %v\n", prog, err)
			return 1
		}
		defer f.Close()
		logOut = f
	}
	logw := NewLogWriter(logOut)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	faults := NewFaults()
	eng, err := newEngine(ctx, o, faults, logw)
	if err != nil {
		logw.Write("error", prog, "startup failed", []any{"error", err})
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return 1
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		eng.Shutdown(ctx)
		fmt.Fprintf(os.Stderr, "%s: listen: %v\n", prog, err)
		return 1
	}
	srv := &http.Server{Handler: NewHandler(eng, faults), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	fmt.Fprintf(os.Stdout, "LISTEN %s\n", ln.Addr().String())
	logw.Write("info", prog, "listening", []any{"addr", ln.Addr().String(), "plugin", o.Command(), "version", o.Version})

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	stdinEOF := make(chan struct{})
	if o.WatchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stdinEOF)
		}()
	}

	code := 0
	select {
	case s := <-sigs:
		logw.Write("info", prog, "signal received, shutting down", []any{"signal", s.String()})
	case <-stdinEOF:
		logw.Write("info", prog, "stdin closed, shutting down", nil)
	case err := <-serveErr:
		logw.Write("error", prog, "http server failed", []any{"error", err})
		code = 1
	}
	signal.Stop(sigs)

	shutCtx, shutCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer shutCancel()
	_ = srv.Shutdown(shutCtx)
	eng.Shutdown(shutCtx)
	logw.Write("info", prog, "stopped", nil)
	return code
}
