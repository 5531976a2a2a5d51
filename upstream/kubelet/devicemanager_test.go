package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

const nvme = "devices.kubevirt.io/nvme"

func healthy(ids ...string) map[string]string {
	m := map[string]string{}
	for _, id := range ids {
		m[id] = pluginapi.Healthy
	}
	return m
}

func equal[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %#v\n want %#v", what, got, want)
	}
}

type checkpointFile struct {
	Data struct {
		PodDeviceEntries  []any
		RegisteredDevices map[string][]string
	}
	Checksum uint64
}

// waitForCheckpoint polls the manager's checkpoint file until ok accepts it, and returns its bytes.
func waitForCheckpoint(t *testing.T, dir string, ok func(checkpointFile) bool) []byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last []byte
	for time.Now().Before(deadline) {
		raw, err := os.ReadFile(checkpointPath(dir))
		if err == nil {
			last = raw
			var cp checkpointFile
			if json.Unmarshal(raw, &cp) == nil && ok(cp) {
				return raw
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("checkpoint %s never matched within 10s; last content: %s", checkpointPath(dir), last)
	return nil
}

func TestRegistrationCapacityAndCheckpoint(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	equal(t, "ready socket", k.ready.Socket, filepath.Join(dir, "kubelet.sock"))
	if !strings.HasPrefix(k.ready.Kubernetes, "v1.") {
		t.Fatalf("ready line names no Kubernetes release: %+v", k.ready)
	}
	devs := healthy("a", "b")
	devs["c"] = pluginapi.Unhealthy
	p := newTestPlugin(t, dir, nvme, "nvme.sock", devs)
	p.serve()

	s := k.waitFor(nvme, 2, 1)
	equal(t, "status of "+nvme, s.Resources[nvme], resourceStatus{
		Capacity: 3, Allocatable: 2, Healthy: []string{"a", "b"}, Unhealthy: []string{"c"},
		Allocated: []string{}, Endpoints: []string{filepath.Join(dir, "nvme.sock")}})

	// The manager rewrites its checkpoint after each ListAndWatch message (just after it updates its device sets,
	// so the status above may come first): the healthy devices are registered.
	raw := waitForCheckpoint(t, dir, func(cp checkpointFile) bool {
		got := cp.Data.RegisteredDevices[nvme]
		slices.Sort(got)
		return slices.Equal(got, []string{"a", "b"})
	})
	var cp checkpointFile
	if err := json.Unmarshal(raw, &cp); err != nil {
		t.Fatal(err)
	}
	if cp.Data.PodDeviceEntries != nil || cp.Checksum == 0 {
		t.Fatalf("checkpoint with no pods: %s", raw)
	}

	// A device turning unhealthy: capacity stays, allocatable drops.
	p.setDevices(map[string]string{"a": pluginapi.Healthy, "b": pluginapi.Unhealthy, "c": pluginapi.Unhealthy})
	s = k.waitFor(nvme, 1, 1)
	equal(t, "capacity after b turned unhealthy", s.Resources[nvme].Capacity, int64(3))
	k.stop()
}

func TestStatusLineShape(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	newTestPlugin(t, dir, nvme, "nvme.sock", healthy("a")).serve()
	k.waitFor(nvme, 1, 1)
	k.mustAllocate("p1", "c", map[string]int64{nvme: 1})
	var raw map[string]any
	k.do(&raw, "status", nil)
	b, _ := json.Marshal(raw)
	want := `{"ok":true,"pods":[{"container":"c","devices":{"devices.kubevirt.io/nvme":["a"]},"pod":"p1"}],` +
		`"removed":[],"resources":{"devices.kubevirt.io/nvme":{"allocatable":1,"allocated":["a"],"capacity":1,` +
		`"endpoints":["` + filepath.Join(dir, "nvme.sock") + `"],"healthy":["a"],"stopped":false,"unhealthy":[]}}}`
	equal(t, "status line", string(b), want)
}

func TestAllocateReturnsThePluginsRunOptions(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	p := newTestPlugin(t, dir, nvme, "nvme.sock", healthy("a", "b", "c"))
	p.opts.PreStartRequired = true
	p.serve()
	k.waitFor(nvme, 3, 1)

	a := k.mustAllocate("pod-1", "compute", map[string]int64{nvme: 2})
	ids := a.Devices[nvme]
	if len(ids) != 2 || len(a.Devices) != 1 {
		t.Fatalf("devices chosen: %v", a.Devices)
	}
	equal(t, "IDs in the one Allocate RPC", p.allocateCalls(), [][]string{ids})
	equal(t, "IDs in PreStartContainer", p.preStartCalls(), [][]string{ids})
	joined := strings.Join(ids, ",")
	equal(t, "envs", a.Envs, map[string]string{"TEST_DEVICES": joined})
	equal(t, "annotations", a.Annotations, map[string]string{"test/devices": joined})
	equal(t, "mounts", a.Mounts, []mount{{ContainerPath: "/etc/test", HostPath: "/var/test", ReadOnly: true}})
	equal(t, "device specs", a.DeviceSpecs, []deviceSpec{
		{ContainerPath: "/dev/test-" + ids[0], HostPath: "/dev/host-" + ids[0], Permissions: "rw"},
		{ContainerPath: "/dev/test-" + ids[1], HostPath: "/dev/host-" + ids[1], Permissions: "rw"}})
	equal(t, "CDI devices", a.CDIDevices, []string{"test.dev/device=" + ids[0], "test.dev/device=" + ids[1]})
	s := k.status()
	equal(t, "allocated", s.Resources[nvme].Allocated, ids)
	equal(t, "allocatable stays the healthy count", s.Resources[nvme].Allocatable, int64(3))

	// Admitting the same container again (a restart) keeps its devices: no new Allocate, a new PreStartContainer.
	again := k.mustAllocate("pod-1", "compute", map[string]int64{nvme: 2})
	equal(t, "devices on re-admission", again.Devices, a.Devices)
	equal(t, "Allocate RPCs after re-admission", len(p.allocateCalls()), 1)
	equal(t, "PreStartContainer calls after re-admission", len(p.preStartCalls()), 2)

	// A resource no plugin serves is skipped, not an error (the kubelet leaves it to the scheduler).
	other := k.mustAllocate("pod-2", "c", map[string]int64{"example.com/none": 1})
	equal(t, "devices for an unknown resource", other.Devices, map[string][]string{})
}

func TestOverAllocationIsTheManagersError(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	newTestPlugin(t, dir, nvme, "nvme.sock", healthy("a", "b")).serve()
	k.waitFor(nvme, 2, 1)

	_, e := k.allocate("big", "c", map[string]int64{nvme: 3})
	equal(t, "over-allocation", e, errorReply{OK: false, Kind: "manager",
		Error: "requested number of devices unavailable for devices.kubevirt.io/nvme. Requested: 3, Available: 2"})
	k.mustAllocate("p1", "c", map[string]int64{nvme: 2})
	_, e = k.allocate("p2", "c", map[string]int64{nvme: 1})
	equal(t, "allocation with all devices taken", e.Error,
		"requested number of devices unavailable for devices.kubevirt.io/nvme. Requested: 1, Available: 0")

	// The container's request cannot change once admitted.
	_, e = k.allocate("p1", "c", map[string]int64{nvme: 1})
	equal(t, "changed request", e.Error,
		`pod "p1" container "c" changed request for resource "devices.kubevirt.io/nvme" from 2 to 1`)
}

func TestFreeReturnsDevices(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	newTestPlugin(t, dir, nvme, "nvme.sock", healthy("a", "b")).serve()
	k.waitFor(nvme, 2, 1)
	k.mustAllocate("p1", "c", map[string]int64{nvme: 2})

	var f freeReply
	k.do(&f, "free", map[string]any{"pod": "p1"})
	equal(t, "free p1", f, freeReply{OK: true, Freed: true})
	s := k.status()
	equal(t, "allocated after free", s.Resources[nvme].Allocated, []string{})
	equal(t, "pods after free", s.Pods, []podDevices{})
	k.do(&f, "free", map[string]any{"pod": "p1"})
	equal(t, "free p1 again", f, freeReply{OK: true, Freed: false})

	a := k.mustAllocate("p2", "c", map[string]int64{nvme: 2})
	equal(t, "p2 gets both freed devices", a.Devices, map[string][]string{nvme: {"a", "b"}})
}

func TestCheckpointSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	p := newTestPlugin(t, dir, nvme, "nvme.sock", healthy("a", "b"))
	p.serve()
	k.waitFor(nvme, 2, 1)
	held := k.mustAllocate("p1", "c", map[string]int64{nvme: 1}).Devices[nvme]
	k.stop()
	p.stop()

	// The restarted manager deletes every socket but its checkpoint, reads the checkpoint, and keeps the
	// resource at 0 allocatable with its allocation until the plugin registers again.
	k = startKubelet(t, dir)
	equal(t, "restored pods", k.ready.Restored, []string{"p1"})
	equal(t, "restored from", k.ready.From, "pods-file")
	if _, err := os.Stat(filepath.Join(dir, "nvme.sock")); !os.IsNotExist(err) {
		t.Fatalf("the old plugin socket survived the restart: %v", err)
	}
	s := k.status()
	equal(t, "status after restart", s.Resources[nvme], resourceStatus{
		Healthy: []string{}, Unhealthy: []string{}, Allocated: held, Endpoints: []string{}, Stopped: true})
	equal(t, "pods after restart", s.Pods, []podDevices{{Pod: "p1", Container: "c",
		Devices: map[string][]string{nvme: held}}})
	_, e := k.allocate("p2", "c", map[string]int64{nvme: 1})
	equal(t, "allocation before re-registration", e.Error,
		"no healthy devices present; cannot allocate unhealthy devices devices.kubevirt.io/nvme")

	p2 := newTestPlugin(t, dir, nvme, "nvme-2.sock", healthy("a", "b"))
	p2.serve()
	s = k.waitFor(nvme, 2, 1)
	equal(t, "allocated after re-registration", s.Resources[nvme].Allocated, held)
	_, e = k.allocate("p3", "c", map[string]int64{nvme: 2})
	equal(t, "allocation over the checkpointed one", e.Error,
		"requested number of devices unavailable for devices.kubevirt.io/nvme. Requested: 2, Available: 1")
	other := k.mustAllocate("p4", "c", map[string]int64{nvme: 1}).Devices[nvme]
	if slices.Equal(other, held) {
		t.Fatalf("p4 got %v, which p1 holds from before the restart", other)
	}
}

func TestPluginGoneLeavesCapacityButNoAllocatable(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	p := newTestPlugin(t, dir, nvme, "nvme.sock", healthy("a", "b"))
	p.serve()
	k.waitFor(nvme, 2, 1)
	p.stop()
	s := k.waitFor(nvme, 0, 0)
	equal(t, "status with the plugin gone", s.Resources[nvme], resourceStatus{Capacity: 2, Allocatable: 0,
		Healthy: []string{}, Unhealthy: []string{"a", "b"}, Allocated: []string{}, Endpoints: []string{}, Stopped: true})
	_, e := k.allocate("p1", "c", map[string]int64{nvme: 1})
	equal(t, "allocation with the plugin gone", e.Error,
		"no healthy devices present; cannot allocate unhealthy devices devices.kubevirt.io/nvme")
}

func TestRegistrationErrorsAreTheKubelets(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	err := register(dir, "v1alpha1", "x.sock", nvme, nil)
	equal(t, "bad version", status.Convert(err).Message(),
		`requested API version "v1alpha1" is not supported by kubelet. Supported version is ["v1beta1"]`)
	err = register(dir, pluginapi.Version, "x.sock", "nvme", nil)
	equal(t, "bad resource name", status.Convert(err).Message(), `the ResourceName "nvme" is invalid`)
	equal(t, "resources after bad registrations", k.status().Resources, map[string]resourceStatus{})
}

func TestBadCommandsAreRequestErrors(t *testing.T) {
	k := startKubelet(t, t.TempDir())
	for _, line := range []struct{ verb, arg string }{
		{"bogus", ""}, {"allocate", ""}, {"allocate", `{"pod":"p"}`}, {"allocate", `{"pod":"p","container":"c","x":1}`},
		{"free", `{}`}, {"status", `{}`}, {"wait", `{}`},
	} {
		var e errorReply
		cmd := line.verb
		if line.arg != "" {
			cmd += " " + line.arg
		}
		if _, err := k.stdin.Write([]byte(cmd + "\n")); err != nil {
			t.Fatal(err)
		}
		k.read(&e)
		if e.OK || e.Kind != "request" || e.Error == "" {
			t.Fatalf("%q: %+v", cmd, e)
		}
	}
	var e errorReply
	k.do(&e, "wait", map[string]any{"resource": nvme, "timeout_ms": 50})
	if e.OK || e.Kind != "timeout" {
		t.Fatalf("wait on a resource nobody serves: %+v", e)
	}
}

// A pod freed before a restart stays in the checkpoint (the manager does not rewrite it on free, as on a node), but
// it is not active any more: the restarted manager frees its devices at the next admission.
func TestFreedPodIsNotRestored(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	p := newTestPlugin(t, dir, nvme, "nvme.sock", healthy("a"))
	p.serve()
	k.waitFor(nvme, 1, 1)
	k.mustAllocate("p1", "c", map[string]int64{nvme: 1})
	var f freeReply
	k.do(&f, "free", map[string]any{"pod": "p1"})
	k.stop()
	p.stop()

	k = startKubelet(t, dir)
	equal(t, "restored pods", k.ready.Restored, []string{})
	s := k.status()
	equal(t, "allocated from the checkpoint", s.Resources[nvme].Allocated, []string{"a"})
	equal(t, "active pods", s.Pods, []podDevices{})
	newTestPlugin(t, dir, nvme, "nvme-2.sock", healthy("a")).serve()
	k.waitFor(nvme, 1, 1)
	a := k.mustAllocate("p2", "c", map[string]int64{nvme: 1})
	equal(t, "p2 gets the device of the freed pod", a.Devices, map[string][]string{nvme: {"a"}})
}

// Without our pods file (a directory another kubelet left), every pod in the checkpoint is taken as running.
func TestPodsRestoredFromACheckpointAlone(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	p := newTestPlugin(t, dir, nvme, "nvme.sock", healthy("a", "b"))
	p.serve()
	k.waitFor(nvme, 2, 1)
	k.mustAllocate("p1", "c1", map[string]int64{nvme: 2})
	k.stop()
	p.stop()
	if err := os.Remove(filepath.Join(dir, podsFileName)); err != nil {
		t.Fatal(err)
	}

	k = startKubelet(t, dir)
	equal(t, "restored pods", k.ready.Restored, []string{"p1"})
	equal(t, "restored from", k.ready.From, "checkpoint")
	newTestPlugin(t, dir, nvme, "nvme-2.sock", healthy("a", "b")).serve()
	k.waitFor(nvme, 2, 1)
	// Re-admitting the restored container asks for what it holds: the manager finds its devices, no new Allocate.
	a := k.mustAllocate("p1", "c1", map[string]int64{nvme: 2})
	equal(t, "devices of the restored container", a.Devices, map[string][]string{nvme: {"a", "b"}})
	equal(t, "its run options come from the checkpointed response", a.Envs, map[string]string{"TEST_DEVICES": "a,b"})
}

func TestAppContainerReusesTheInitContainersDevices(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	p := newTestPlugin(t, dir, nvme, "nvme.sock", healthy("a", "b", "c"))
	p.serve()
	k.waitFor(nvme, 3, 1)
	var a allocateReply
	line := k.do(&a, "allocate", map[string]any{"pod": "p1", "container": "setup", "init": true,
		"resources": map[string]int64{nvme: 1}})
	if !a.OK {
		t.Fatalf("allocate init container: %s", line)
	}
	app := k.mustAllocate("p1", "compute", map[string]int64{nvme: 1})
	equal(t, "app container's devices", app.Devices, a.Devices)
	equal(t, "allocated", k.status().Resources[nvme].Allocated, a.Devices[nvme])
	equal(t, "Allocate RPCs (the reused device is allocated again)", p.allocateCalls(),
		[][]string{a.Devices[nvme], a.Devices[nvme]})
}

// v1.37 keeps every connected plugin of a resource: a plugin re-registering on a new socket before its old stream
// ends adds an endpoint, and the old one going away leaves the resource served.
func TestReRegistrationOnANewSocket(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	old := newTestPlugin(t, dir, nvme, "nvme-1.sock", healthy("a", "b"))
	old.serve()
	k.waitFor(nvme, 2, 1)
	newTestPlugin(t, dir, nvme, "nvme-2.sock", healthy("a", "b", "c")).serve()
	s := k.waitFor(nvme, 3, 2)
	equal(t, "endpoints", s.Resources[nvme].Endpoints,
		[]string{filepath.Join(dir, "nvme-1.sock"), filepath.Join(dir, "nvme-2.sock")})
	old.stop()
	s = k.waitFor(nvme, 3, 1)
	equal(t, "after the old plugin left", s.Resources[nvme], resourceStatus{Capacity: 3, Allocatable: 3,
		Healthy: []string{"a", "b", "c"}, Unhealthy: []string{}, Allocated: []string{},
		Endpoints: []string{filepath.Join(dir, "nvme-2.sock")}})
	k.mustAllocate("p1", "c", map[string]int64{nvme: 3})
}
