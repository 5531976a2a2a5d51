// Command kubelet-dm runs the kubelet's own device manager
// (k8s.io/kubernetes/pkg/kubelet/cm/devicemanager, pinned in go.mod) on a plugin directory, so the lab can check its
// fake kubelet and its device plugins against the real thing. It serves kubelet.sock in --dir and takes one command
// a line on stdin, answering each with one JSON line on stdout; logs go to stderr. README.md is the protocol.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/klog/v2"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is the whole program; main only wires the process's files, so tests can run it as a child process.
func run(args []string, stdin io.Reader, stdout io.Writer, stderr io.Writer) int {
	fs := flag.NewFlagSet("kubelet-dm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "plugin directory: kubelet.sock and kubelet_internal_checkpoint live here (required)")
	numa := fs.Int("numa-nodes", 1, "NUMA nodes the machine reports to the manager (IDs 0..N-1)")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.Var(klogFlags.Lookup("v").Value, "v", "log verbosity of the device manager (klog -v); 2 shows registrations")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: kubelet-dm --dir DIR [--numa-nodes N] [--v N]")
		return 2
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "kubelet-dm: plugin directory %q: %v\n", *dir, err)
		return 1
	}
	// Every log line once, to our stderr (klog would otherwise copy an error to each lower severity's writer).
	_ = klogFlags.Set("logtostderr", "false")
	_ = klogFlags.Set("one_output", "true")
	_ = klogFlags.Set("stderrthreshold", "FATAL")
	klog.SetOutput(stderr)
	logger := klog.Background()

	n, err := startNode(logger, abs, *numa)
	if err != nil {
		fmt.Fprintf(stderr, "kubelet-dm: %v\n", err)
		return 1
	}
	out := json.NewEncoder(stdout)
	_ = out.Encode(n.ready())

	// A signal is a stop too, so a harness that kills us with SIGTERM still gets the server closed.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 1<<16), 1<<24)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	ctx := klog.NewContext(context.Background(), logger)
	for {
		select {
		case <-sigs:
			n.stop()
			return 0
		case line, ok := <-lines:
			if !ok {
				n.stop()
				return 0
			}
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			reply, done := n.command(ctx, line)
			_ = out.Encode(reply)
			if done {
				return 0
			}
		}
	}
}
