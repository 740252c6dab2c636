package vaulthost

import (
	"io"

	"github.com/hashicorp/go-hclog"

	"lockstep/gohost/hostapi"
)

// NewLogger returns an hclog logger whose every record (host and, through
// go-plugin, the plugin's stderr) is written as one line by w.
func NewLogger(w *hostapi.LogWriter, level string) hclog.Logger {
	lvl := hclog.LevelFromString(level)
	if lvl == hclog.NoLevel {
		lvl = hclog.Debug
	}
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   "",
		Level:  lvl,
		Output: io.Discard,
	})
	l.RegisterSink(sink{w: w, level: lvl})
	return l
}

type sink struct {
	w     *hostapi.LogWriter
	level hclog.Level
}

func (s sink) Accept(name string, level hclog.Level, msg string, args ...interface{}) {
	if level < s.level {
		return
	}
	s.w.Write(level.String(), name, msg, args)
}
