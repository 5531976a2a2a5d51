package main

// End to end: the built program, unmodified KubeVirt code inside, runs in private mount and PID namespaces where the
// test's directories are /sys, /dev and the kubelet's plugin directory, and /usr/bin/virt-chroot is the lab's helper
// (run-in-namespace.sh).

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	pluginapi "kubevirt.io/kubevirt/pkg/virt-handler/device-manager/deviceplugin/v1beta1"
)

const (
	nvmeAddr  = "0000:05:00.0"
	nvmeGroup = "12"
	t4Parent  = "0000:65:00.0"
	oldParent = "0000:b3:00.0"
	staleMdev = "9c6ae1d2-0d4f-4f62-a2b7-3b8c1a0f0e11"
)

const configV1 = `
apiVersion: kubevirt.io/v1
kind: KubeVirt
metadata: {name: kubevirt, namespace: kubevirt}
spec:
  configuration:
    developerConfiguration: {featureGates: [HostDevices]}
    mediatedDevicesConfiguration:
      nodeMediatedDeviceTypes:
        - nodeSelector: {gpu: t4}
          mediatedDeviceTypes: [GRID_T4-1Q]
    permittedHostDevices:
      pciHostDevices:
        - {pciVendorSelector: "8086:5845", resourceName: devices.kubevirt.io/nvme}
`

// configV2 adds a PCI entry; KubeVirt starts a plugin for the new resource without touching the running ones.
const configV2 = configV1 + `        - {pciVendorSelector: "1AF4:1001", resourceName: example.org/virtio-blk}
`

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestKubeVirtPluginsServeASyntheticNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: the program runs in private mount and PID namespaces (unshare)")
	}
	for _, tool := range []string{"unshare", "mount", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("needs %s on PATH: %v", tool, err)
		}
	}
	// Not t.TempDir(): its long name would push the plugin sockets past the 108-byte sun_path limit.
	work, err := os.MkdirTemp("", "kvdp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	bin := filepath.Join(work, "bin")
	build := exec.Command("go", "build", "-trimpath", "-o", bin+"/", "./cmd/...")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}

	h := fakeHost{t: t, root: filepath.Join(work, "node")}
	h.pciFunction(nvmeAddr, "8086:5845", "vfio-pci", nvmeGroup, 0)
	h.pciFunction("0000:06:00.0", "1af4:1001", "vfio-pci", "13", -1)
	h.pciFunction("0000:07:00.0", "8086:5845", "nvme", "14", 0) // not vfio-pci: never advertised
	h.write("dev/vfio/vfio", "")
	h.mdevParent(t4Parent, "nvidia-222", "GRID T4-1Q", 1)
	h.mdevParent(oldParent, "nvidia-999", "GRID T4-8Q", 1)
	h.mdev(oldParent, staleMdev, "nvidia-999")
	plugins := h.path("plugins")
	h.mkdir("plugins")

	// A ConfigMap-style volume: kubevirt.yaml -> ..data/kubevirt.yaml, ..data -> ..v1.
	h.write("config/..v1/kubevirt.yaml", configV1)
	h.symlink("config/..data", "..v1")
	h.symlink("config/kubevirt.yaml", "..data/kubevirt.yaml")
	h.write("labels/node.labels", "zone=a\n")

	kubelet := startRegistrar(t, plugins)

	script, err := filepath.Abs("../../run-in-namespace.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script, h.path("sys"), h.path("dev"), plugins, work, "--", "kubevirt-device-plugins",
		"--config", h.path("config/kubevirt.yaml"), "--node-name", "node-1",
		"--node-labels-file", h.path("labels/node.labels"), "--v", "4")
	cmd.Env = append(os.Environ(), "KUBEVIRT_BIN="+bin)
	logPath := filepath.Join(work, "plugins.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", script, err)
	}
	exited := make(chan error, 1)
	go func() {
		exited <- cmd.Wait()
		close(kubelet.dead)
	}()
	stopped := false
	defer func() {
		if !stopped {
			// unshare dies with the script (pdeathsig) and SIGTERMs the program; the namespace and its mounts go
			// with it.
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			log, _ := os.ReadFile(logPath)
			t.Logf("kubevirt-device-plugins log:\n%s", tail(string(log), 80))
		}
	}()

	seen := map[string]*pluginapi.RegisterRequest{}
	// 1. Registration, with the socket name KubeVirt derives from the resource name.
	reg := kubelet.waitRegistered(t, "devices.kubevirt.io/nvme", 60*time.Second, seen)
	if reg.Version != "v1beta1" || reg.Endpoint != "kubevirt-devices.kubevirt.io-nvme.sock" {
		t.Fatalf("registration = %+v", reg)
	}
	socket := filepath.Join(plugins, reg.Endpoint)
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("plugin socket: %v", err)
	}
	// The permanent plugins virt-handler always runs.
	for _, r := range []string{"devices.kubevirt.io/kvm", "devices.kubevirt.io/tun", "devices.kubevirt.io/vhost-net"} {
		kubelet.waitRegistered(t, r, 30*time.Second, seen)
	}

	// 2. ListAndWatch (read as the kubelet reads it): the vfio-pci function only, keyed by IOMMU group, with its
	// NUMA node.
	updates, client := kubelet.plugin("devices.kubevirt.io/nvme")
	first := next(t, updates, "initial device list", 30*time.Second)
	if len(first.Devices) != 1 || first.Devices[0].ID != nvmeGroup || first.Devices[0].Health != "Healthy" {
		t.Fatalf("devices = %v", first.Devices)
	}
	if topo := first.Devices[0].Topology; topo == nil || len(topo.Nodes) != 1 || topo.Nodes[0].ID != 0 {
		t.Fatalf("topology = %v", first.Devices[0].Topology)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// 3. Allocate: the env var with the PCI address, and both VFIO nodes.
	resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIDs: []string{nvmeGroup}}},
	})
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	cr := resp.ContainerResponses[0]
	if got := cr.Envs["PCI_RESOURCE_DEVICES_KUBEVIRT_IO_NVME"]; got != nvmeAddr {
		t.Fatalf("envs = %v", cr.Envs)
	}
	var paths []string
	for _, d := range cr.Devices {
		paths = append(paths, d.HostPath+"="+d.ContainerPath+":"+d.Permissions)
	}
	if strings.Join(paths, " ") != "/dev/vfio/vfio=/dev/vfio/vfio:mrw /dev/vfio/12=/dev/vfio/12:mrw" {
		t.Fatalf("device specs = %v", paths)
	}

	// 4. Health: the group's /dev node disappearing is reported through the open stream.
	if err := os.Remove(h.path("dev/vfio/" + nvmeGroup)); err != nil {
		t.Fatal(err)
	}
	update := next(t, updates, "after removing /dev/vfio/"+nvmeGroup, 30*time.Second)
	if len(update.Devices) != 1 || update.Devices[0].Health != "Unhealthy" {
		t.Fatalf("devices after removal = %v", update.Devices)
	}

	// 5. mdevs: with no matching node label nothing is desired, so the stale mdev is removed through virt-chroot,
	// and nothing is created.
	waitFor(t, "virt-chroot remove-mdev to write 1 to the stale mdev's remove", 30*time.Second, func() bool {
		return h.read("sys/devices/pci0000:00/"+oldParent+"/"+staleMdev+"/remove") == "1"
	})
	createFile := "sys/devices/pci0000:00/" + t4Parent + "/mdev_supported_types/nvidia-222/create"
	if got := h.read(createFile); got != "" {
		t.Fatalf("created an mdev before the node matched: %q", got)
	}
	// The stale mdev stays (nothing models the kernel here); the parent that holds it is "configured", so only
	// the T4 parent is a candidate once the label matches. The labels file is replaced by rename.
	h.write("labels/node.labels.tmp", "zone=a\ngpu=t4\n")
	if err := os.Rename(h.path("labels/node.labels.tmp"), h.path("labels/node.labels")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "virt-chroot create-mdev to write a UUID to "+createFile, 30*time.Second, func() bool {
		return uuidRE.MatchString(h.read(createFile))
	})

	// 6. A config change by `..data` swap reaches KubeVirt's update path: a plugin for the new resource starts.
	h.write("config/..v2/kubevirt.yaml", configV2)
	h.symlink("config/..data_tmp", "..v2")
	if err := os.Rename(h.path("config/..data_tmp"), h.path("config/..data")); err != nil {
		t.Fatal(err)
	}
	reg2 := kubelet.waitRegistered(t, "example.org/virtio-blk", 30*time.Second, seen)
	if reg2.Endpoint != "kubevirt-example.org-virtio-blk.sock" {
		t.Fatalf("registration = %+v", reg2)
	}

	// 7. SIGTERM, passed on by the script to the program (the namespace's pid 1), stops it cleanly: exit 0,
	// sockets removed.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %d: %v", cmd.Process.Pid, err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("still running 20 s after SIGTERM")
	}
	left, _ := filepath.Glob(filepath.Join(plugins, "kubevirt-*.sock"))
	if len(left) != 0 {
		t.Fatalf("sockets left after stop: %v", left)
	}
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
