package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The tests run the real program as a child process: this test binary, re-executed with asChild set, is
// kubelet-dm. A kubelet restart is then a real process restart over the same directory.
const asChild = "KUBELET_DM_TEST_AS_PROGRAM"

func TestMain(m *testing.M) {
	if os.Getenv(asChild) == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// kubelet is one running kubelet-dm process.
type kubelet struct {
	t      *testing.T
	dir    string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan []byte
	stderr *logBuffer
	ready  readyReply
}

func startKubelet(t *testing.T, dir string) *kubelet {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("test binary path: %v", err)
	}
	cmd := exec.Command(self, "--dir", dir, "--v", "4")
	cmd.Env = append(os.Environ(), asChild+"=1")
	k := &kubelet{t: t, dir: dir, cmd: cmd, lines: make(chan []byte, 16), stderr: &logBuffer{}}
	cmd.Stderr = k.stderr
	if k.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kubelet-dm: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<16), 1<<24)
		for sc.Scan() {
			k.lines <- append([]byte(nil), sc.Bytes()...)
		}
		close(k.lines)
	}()
	t.Cleanup(func() {
		if k.cmd.ProcessState == nil {
			_ = k.cmd.Process.Kill()
			_ = k.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("kubelet-dm stderr (%s):\n%s", dir, k.stderr.String())
		}
	})
	k.read(&k.ready)
	if !k.ready.OK || !k.ready.Ready {
		t.Fatalf("first line is not the ready line: %+v", k.ready)
	}
	return k
}

// read decodes the next stdout line into v and returns the raw line.
func (k *kubelet) read(v any) []byte {
	k.t.Helper()
	select {
	case line, ok := <-k.lines:
		if !ok {
			k.t.Fatalf("kubelet-dm closed stdout; stderr:\n%s", k.stderr.String())
		}
		if err := json.Unmarshal(line, v); err != nil {
			k.t.Fatalf("reply %s: %v", line, err)
		}
		return line
	case <-time.After(30 * time.Second):
		k.t.Fatalf("no reply from kubelet-dm within 30s; stderr:\n%s", k.stderr.String())
		return nil
	}
}

// do sends one command and decodes its reply into v.
func (k *kubelet) do(v any, verb string, arg any) []byte {
	k.t.Helper()
	line := verb
	if arg != nil {
		b, err := json.Marshal(arg)
		if err != nil {
			k.t.Fatal(err)
		}
		line += " " + string(b)
	}
	if _, err := fmt.Fprintln(k.stdin, line); err != nil {
		k.t.Fatalf("write %q: %v", line, err)
	}
	return k.read(v)
}

func (k *kubelet) status() statusReply {
	k.t.Helper()
	var s statusReply
	k.do(&s, "status", nil)
	if !s.OK {
		k.t.Fatalf("status failed: %+v", s)
	}
	return s
}

// waitFor blocks until the resource has the given allocatable count and number of endpoints.
func (k *kubelet) waitFor(resource string, allocatable int64, endpoints int) statusReply {
	k.t.Helper()
	var s statusReply
	line := k.do(&s, "wait", map[string]any{"resource": resource, "allocatable": allocatable,
		"endpoints": endpoints, "timeout_ms": 20000})
	if !s.OK {
		k.t.Fatalf("wait: %s", line)
	}
	return s
}

func (k *kubelet) allocate(pod, container string, resources map[string]int64) (allocateReply, errorReply) {
	k.t.Helper()
	var raw json.RawMessage
	k.do(&raw, "allocate", map[string]any{"pod": pod, "container": container, "resources": resources})
	var e errorReply
	if err := json.Unmarshal(raw, &e); err != nil {
		k.t.Fatal(err)
	}
	if !e.OK {
		return allocateReply{}, e
	}
	var a allocateReply
	if err := json.Unmarshal(raw, &a); err != nil {
		k.t.Fatal(err)
	}
	return a, e
}

func (k *kubelet) mustAllocate(pod, container string, resources map[string]int64) allocateReply {
	k.t.Helper()
	a, e := k.allocate(pod, container, resources)
	if !e.OK {
		k.t.Fatalf("allocate %s/%s %v: %s (%s)", pod, container, resources, e.Error, e.Kind)
	}
	return a
}

// stop sends stop and waits for the process to exit 0.
func (k *kubelet) stop() {
	k.t.Helper()
	var r okReply
	k.do(&r, "stop", nil)
	if !r.OK {
		k.t.Fatalf("stop: %+v", r)
	}
	if err := k.cmd.Wait(); err != nil {
		k.t.Fatalf("kubelet-dm exit after stop: %v", err)
	}
}

// logBuffer collects the child's stderr; the exec package writes it from its own goroutine.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func checkpointPath(dir string) string { return filepath.Join(dir, checkpointName) }
