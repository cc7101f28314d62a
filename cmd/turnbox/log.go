package main

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zapcore"
)

// newLogger builds the CLI's slog.Logger on stderr; see newLoggerTo.
func newLogger(level string, json bool) (*slog.Logger, error) {
	return newLoggerTo(os.Stderr, level, json)
}

// newLoggerTo builds a slog.Logger whose handler is zap, writing to w at
// level (debug|info|warn|error). Go stack traces follow ERROR lines only at
// the debug level: in ordinary use an error line is a message for a
// person, not a crash (zap's slog handler adds a stack at Error by
// default). Panics print their own stack through the Go runtime.
func newLoggerTo(w io.Writer, level string, json bool) (*slog.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	encoder := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	if json {
		encoder = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	}
	stackAt := slog.Level(math.MaxInt32) // never
	if lvl <= zapcore.DebugLevel {
		stackAt = slog.LevelError
	}
	core := zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return slog.New(zapslog.NewHandler(core, zapslog.AddStacktraceAt(stackAt))), nil
}
