package kata

import "fmt"

// Log writes message to the kata daemon's log at level, tagged with the
// plugin's name. Never log secrets (the plugin only ever holds
// `{{secret:NAME}}` placeholders anyway).
func Log(level LogLevel, message string) { hostLog(level, message) }

// Trace logs a very detailed line.
func Trace(message string) { Log(LevelTrace, message) }

// Debug logs a debugging line.
func Debug(message string) { Log(LevelDebug, message) }

// Info logs an informational line.
func Info(message string) { Log(LevelInfo, message) }

// Warn logs a warning.
func Warn(message string) { Log(LevelWarn, message) }

// Error logs an error line. (The error type is Error; this logs.)
func LogError(message string) { Log(LevelError, message) }

// Infof logs an informational line formatted with fmt.Sprintf.
func Infof(format string, args ...any) { Info(fmt.Sprintf(format, args...)) }

// Warnf logs a warning formatted with fmt.Sprintf.
func Warnf(format string, args ...any) { Warn(fmt.Sprintf(format, args...)) }

// Debugf logs a debugging line formatted with fmt.Sprintf.
func Debugf(format string, args ...any) { Debug(fmt.Sprintf(format, args...)) }
