package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "kubevirt.io/api/core/v1"
)

const nvmeOnly = `permittedHostDevices: {pciHostDevices: [{pciVendorSelector: "8086:5845", resourceName: a.io/nvme}]}`
const nvmeAndQAT = `permittedHostDevices: {pciHostDevices: [{pciVendorSelector: "8086:5845", resourceName: a.io/nvme},
  {pciVendorSelector: "8086:6f54", resourceName: a.io/qat}]}`

type applied struct {
	configs chan *v1.KubeVirt
	labels  chan map[string]string
}

func newWatcher(t *testing.T, dir string) (*inputWatcher, applied) {
	got := applied{configs: make(chan *v1.KubeVirt, 8), labels: make(chan map[string]string, 8)}
	w := &inputWatcher{
		configPath:  filepath.Join(dir, "kubevirt.yaml"),
		labelsPath:  filepath.Join(dir, "node.labels"),
		nodeName:    "node-1",
		applyConfig: func(kv *v1.KubeVirt) { got.configs <- kv },
		applyLabels: func(l, _ map[string]string) error { got.labels <- l; return nil },
	}
	return w, got
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func pciCount(kv *v1.KubeVirt) int {
	return len(kv.Spec.Configuration.PermittedHostDevices.PciHostDevices)
}

func TestReloadAppliesOnlyChangedFilesThatParse(t *testing.T) {
	dir := t.TempDir()
	w, got := newWatcher(t, dir)
	writeFile(t, w.configPath, nvmeOnly)
	writeFile(t, w.labelsPath, "zone=a\n")

	w.reload()
	if kv := <-got.configs; pciCount(kv) != 1 {
		t.Fatalf("first config: %d PCI entries", pciCount(kv))
	}
	if l := <-got.labels; l["zone"] != "a" || l["kubernetes.io/hostname"] != "node-1" {
		t.Fatalf("first labels: %v", l)
	}

	w.reload() // nothing changed
	writeFile(t, w.configPath, "permittedHostDevices: [not, a, map]")
	writeFile(t, w.labelsPath, "zone=a\nbroken line\n")
	w.reload() // neither parses: the last good ones stay, nothing is applied
	if len(got.configs) != 0 || len(got.labels) != 0 {
		t.Fatalf("applied %d configs and %d label sets that should not have been", len(got.configs), len(got.labels))
	}

	writeFile(t, w.configPath, nvmeAndQAT)
	writeFile(t, w.labelsPath, "zone=b\n")
	w.reload()
	if kv := <-got.configs; pciCount(kv) != 2 {
		t.Fatalf("fixed config: %d PCI entries", pciCount(kv))
	}
	if l := <-got.labels; l["zone"] != "b" {
		t.Fatalf("fixed labels: %v", l)
	}
}

// A ConfigMap volume update: the files are symlinks through `..data`, which is swapped by rename; the watched
// directory sees the rename, the files themselves are never written.
func TestRunSeesAConfigMapDataSwap(t *testing.T) {
	dir := t.TempDir()
	w, got := newWatcher(t, dir)
	for _, step := range [][2]string{{"..v1/kubevirt.yaml", nvmeOnly}, {"..v1/node.labels", "zone=a\n"}} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, step[0])), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, step[0]), step[1])
	}
	for _, link := range [][2]string{{"..data", "..v1"}, {"kubevirt.yaml", "..data/kubevirt.yaml"},
		{"node.labels", "..data/node.labels"}} {
		if err := os.Symlink(link[1], filepath.Join(dir, link[0])); err != nil {
			t.Fatal(err)
		}
	}
	w.configBytes, w.labelsBytes = []byte(nvmeOnly), []byte("zone=a\n")
	w.labels = map[string]string{"zone": "a", "kubernetes.io/hostname": "node-1"}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- w.run(stop) }()
	defer func() {
		close(stop)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}()
	// Swap only once the directory is watched.
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		ready := w.watching
		w.mu.Unlock()
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("watcher never started")
		}
		time.Sleep(5 * time.Millisecond)
	}

	if err := os.MkdirAll(filepath.Join(dir, "..v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "..v2/kubevirt.yaml"), nvmeAndQAT)
	writeFile(t, filepath.Join(dir, "..v2/node.labels"), "zone=b\n")
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	select {
	case kv := <-got.configs:
		if pciCount(kv) != 2 {
			t.Fatalf("swapped config: %d PCI entries", pciCount(kv))
		}
	case <-time.After(5 * time.Second): // well under the 10 s resync: the watch, not the resync, saw it
		t.Fatal("config swap not applied within 5 s")
	}
	select {
	case l := <-got.labels:
		if l["zone"] != "b" {
			t.Fatalf("swapped labels: %v", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("labels swap not applied within 5 s")
	}
}
