package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Time limits of a child process's life.
const (
	// startTimeout bounds how long a program may take to accept
	// connections after it was started.
	startTimeout = 30 * time.Second
	// stopGrace is how long a program may take to exit after SIGTERM
	// before it is killed.
	stopGrace = 5 * time.Second
	// outputDrain bounds the wait for a program's output after it exited,
	// since a worker process it left behind may hold the pipe open.
	outputDrain = 2 * time.Second
	// tailLines is how many of a program's last output lines are kept for
	// error messages.
	tailLines = 40
)

// child is a program that the benchmark started. Stop ends it by its PID,
// and its process group, which holds the workers it started.
type child struct {
	name string
	cmd  *exec.Cmd
	// done is closed when the program has exited and waitErr is set.
	done    chan struct{}
	waitErr error

	// ready, when not nil, is tried on each output line until it accepts
	// one. found receives the value it returned, once.
	ready func(line string) (string, bool)
	found chan string

	mu sync.Mutex
	// The fields below are guarded by mu.
	tail    []string
	partial []byte
	matched bool
}

// startChild starts path with args and env. When ready is not nil, it
// waits until ready accepts a line that the program printed, on stdout or
// stderr, and returns the value that ready extracted from it.
func startChild(ctx context.Context, name, path string, args, env []string, ready func(line string) (string, bool)) (*child, string, error) {
	// Start the program in its own process group, with its output in one
	// pipe that this process reads line by line.
	c := &child{name: name, done: make(chan struct{}), ready: ready, found: make(chan string, 1)}
	c.cmd = exec.Command(path, args...)
	c.cmd.Env = env
	c.cmd.Stdout = c
	c.cmd.Stderr = c
	c.cmd.SysProcAttr = childProcessAttributes()
	c.cmd.WaitDelay = outputDrain
	if err := c.cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("starting %s (%s): %w", name, path, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.done)
	}()
	if ready == nil {
		return c, "", nil
	}

	// Wait for the line that reports it ready.
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case value := <-c.found:
		return c, value, nil
	case <-c.done:
		return nil, "", fmt.Errorf("%s exited before it was ready (%v); its last output:\n%s", name, c.waitErr, c.output())
	case <-timer.C:
		err := fmt.Errorf("%s was not ready within %v; its last output:\n%s", name, startTimeout, c.output())
		return nil, "", errors.Join(err, c.stop())
	case <-ctx.Done():
		return nil, "", errors.Join(ctx.Err(), c.stop())
	}
}

// Write receives the program's stdout and stderr. exec calls it from one
// goroutine, since both streams use this same writer.
func (c *child) Write(data []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, data...)
	for {
		end := bytes.IndexByte(c.partial, '\n')
		if end < 0 {
			return len(data), nil
		}
		c.lineLocked(string(bytes.TrimRight(c.partial[:end], "\r")))
		c.partial = c.partial[end+1:]
	}
}

// lineLocked keeps one line of output and offers it to ready.
func (c *child) lineLocked(line string) {
	if len(c.tail) == tailLines {
		c.tail = c.tail[1:]
	}
	c.tail = append(c.tail, line)
	if c.ready == nil || c.matched {
		return
	}
	if value, ok := c.ready(line); ok {
		c.matched = true
		c.found <- value
	}
}

// output returns the last lines the program printed, indented.
func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tail) == 0 {
		return "  (nothing)"
	}
	return "  " + strings.Join(c.tail, "\n  ")
}

// exited reports whether the program has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// pid returns the program's process id.
func (c *child) pid() int {
	return c.cmd.Process.Pid
}

// stop ends the program: SIGTERM, then SIGKILL after stopGrace. Then it
// kills what is left of the program's process group, such as workers
// whose master exited. It returns an error only when the program
// outlived SIGKILL.
func (c *child) stop() error {
	if !c.exited() {
		_ = terminate(c.cmd.Process)
		select {
		case <-c.done:
		case <-time.After(stopGrace):
			_ = c.cmd.Process.Kill()
			killGroup(c.pid())
			select {
			case <-c.done:
			case <-time.After(stopGrace):
				return fmt.Errorf("stopping %s: process %d still runs after SIGKILL", c.name, c.pid())
			}
		}
	}
	killGroup(c.pid())
	return nil
}

// waitForPort dials address until it accepts a connection, the program
// exits, or startTimeout passes.
func waitForPort(ctx context.Context, c *child, address string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		conn, err := net.DialTimeout("tcp", address, time.Second)
		if err == nil {
			return conn.Close()
		}
		if c.exited() {
			return fmt.Errorf("%s exited (%v) before it accepted connections on %s; its last output:\n%s", c.name, c.waitErr, address, c.output())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not accept connections on %s within %v: %w; its last output:\n%s", c.name, address, startTimeout, err, c.output())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freeLoopbackAddress returns a 127.0.0.1 address whose port was free a
// moment ago, for programs that cannot report a port they chose.
func freeLoopbackAddress() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port on 127.0.0.1: %w", err)
	}
	address := lis.Addr().String()
	if err := lis.Close(); err != nil {
		return "", fmt.Errorf("finding a free port on 127.0.0.1: %w", err)
	}
	return address, nil
}

// childEnvironment returns this process's environment without the
// variables that would change a gateway's configuration behind the
// benchmark's back: SSEGW_ overrides and OpenTelemetry settings.
func childEnvironment() []string {
	var env []string
	for _, entry := range os.Environ() {
		if strings.HasPrefix(entry, "SSEGW_") || strings.HasPrefix(entry, "OTEL_") {
			continue
		}
		env = append(env, entry)
	}
	return env
}
