package main

// The synthetic node the end-to-end test runs KubeVirt's plugins on: a directory laid out like sysfs and /dev, and a
// kubelet registration server speaking the device-plugin API on a real unix socket.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pluginapi "kubevirt.io/kubevirt/pkg/virt-handler/device-manager/deviceplugin/v1beta1"
)

type fakeHost struct {
	t    *testing.T
	root string
}

func (h fakeHost) path(rel string) string { return filepath.Join(h.root, rel) }

func (h fakeHost) write(rel, content string) {
	h.t.Helper()
	p := h.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatalf("writing %s: %v", p, err)
	}
}

func (h fakeHost) symlink(rel, target string) {
	h.t.Helper()
	p := h.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		h.t.Fatalf("symlink %s -> %s: %v", p, target, err)
	}
}

func (h fakeHost) mkdir(rel string) {
	h.t.Helper()
	if err := os.MkdirAll(h.path(rel), 0o755); err != nil {
		h.t.Fatal(err)
	}
}

func (h fakeHost) read(rel string) string {
	data, err := os.ReadFile(h.path(rel))
	if err != nil {
		return ""
	}
	return string(data)
}

// pciFunction lays out what KubeVirt's PCI plugin reads: uevent PCI_ID, the driver and iommu_group links,
// numa_node, and the /dev/vfio group node.
func (h fakeHost) pciFunction(addr, id, driver, group string, numa int) {
	dev := "sys/devices/pci0000:00/" + addr
	h.write(dev+"/uevent", fmt.Sprintf("DRIVER=%s\nPCI_CLASS=10802\nPCI_ID=%s\nPCI_SLOT_NAME=%s\n", driver, id, addr))
	h.write(dev+"/vendor", "0x"+id[:4]+"\n")
	h.write(dev+"/device", "0x"+id[5:]+"\n")
	h.write(dev+"/numa_node", fmt.Sprintf("%d\n", numa))
	h.mkdir("sys/bus/pci/drivers/" + driver)
	h.symlink(dev+"/driver", "../../../bus/pci/drivers/"+driver)
	h.mkdir("sys/kernel/iommu_groups/" + group + "/devices")
	h.symlink(dev+"/iommu_group", "../../../kernel/iommu_groups/"+group)
	h.symlink("sys/bus/pci/devices/"+addr, "../../../devices/pci0000:00/"+addr)
	h.write("dev/vfio/"+group, "")
}

// mdevParent lays out a parent with one supported type, as the mdev types manager globs and reads it.
func (h fakeHost) mdevParent(addr, typeID, typeName string, instances int) {
	dev := "sys/devices/pci0000:00/" + addr
	types := dev + "/mdev_supported_types/" + typeID
	h.write(types+"/name", typeName+"\n")
	h.write(types+"/available_instances", fmt.Sprintf("%d\n", instances))
	h.write(types+"/device_api", "vfio-pci\n")
	h.write(types+"/create", "")
	h.symlink("sys/class/mdev_bus/"+addr, "../../devices/pci0000:00/"+addr)
}

// mdev lays out an existing mediated device of typeID under parent.
func (h fakeHost) mdev(parent, uuid, typeID string) {
	dev := "sys/devices/pci0000:00/" + parent + "/" + uuid
	h.symlink(dev+"/mdev_type", "../mdev_supported_types/"+typeID)
	h.write(dev+"/remove", "")
	h.symlink("sys/bus/mdev/devices/"+uuid, "../../../devices/pci0000:00/"+parent+"/"+uuid)
}

// registrar is the kubelet's side: its Registration service records every Register call and, as the kubelet's
// device manager does, opens ListAndWatch on the plugin's endpoint and keeps reading it. (KubeVirt's plugins need
// that reader: a plugin whose device is missing blocks sending its first health update until someone reads.)
type registrar struct {
	t        *testing.T
	dir      string
	requests chan *pluginapi.RegisterRequest
	// closed when the program under test exits: nothing will register after that
	dead chan struct{}

	mu      sync.Mutex
	updates map[string]chan *pluginapi.ListAndWatchResponse
	clients map[string]pluginapi.DevicePluginClient
}

func (r *registrar) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	client := dialPlugin(r.t, filepath.Join(r.dir, req.Endpoint))
	updates := make(chan *pluginapi.ListAndWatchResponse, 64)
	r.mu.Lock()
	r.updates[req.ResourceName] = updates
	r.clients[req.ResourceName] = client
	r.mu.Unlock()
	go func() {
		stream, err := client.ListAndWatch(context.Background(), &pluginapi.Empty{})
		if err != nil {
			return
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			updates <- resp
		}
	}()
	r.requests <- req
	return &pluginapi.Empty{}, nil
}

// plugin returns the ListAndWatch responses and a client of a registered resource.
func (r *registrar) plugin(resource string) (<-chan *pluginapi.ListAndWatchResponse, pluginapi.DevicePluginClient) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.updates[resource], r.clients[resource]
}

func startRegistrar(t *testing.T, dir string) *registrar {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatalf("kubelet socket: %v", err)
	}
	r := &registrar{
		t: t, dir: dir,
		requests: make(chan *pluginapi.RegisterRequest, 64),
		dead:     make(chan struct{}),
		updates:  map[string]chan *pluginapi.ListAndWatchResponse{},
		clients:  map[string]pluginapi.DevicePluginClient{},
	}
	s := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(s, r)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return r
}

// waitRegistered returns the first registration of resource, failing after the deadline; it keeps every
// registration it saw in seen.
func (r *registrar) waitRegistered(t *testing.T, resource string, limit time.Duration, seen map[string]*pluginapi.RegisterRequest) *pluginapi.RegisterRequest {
	t.Helper()
	if req, ok := seen[resource]; ok {
		return req
	}
	deadline := time.After(limit)
	for {
		select {
		case req := <-r.requests:
			seen[req.ResourceName] = req
			if req.ResourceName == resource {
				return req
			}
		case <-r.dead:
			t.Fatalf("the program exited before %s registered; registered: %v", resource, keys(seen))
		case <-deadline:
			t.Fatalf("%s never registered within %s; registered: %v", resource, limit, keys(seen))
		}
	}
}

// next is the next ListAndWatch response, failing after the deadline.
func next(t *testing.T, updates <-chan *pluginapi.ListAndWatchResponse, what string, limit time.Duration) *pluginapi.ListAndWatchResponse {
	t.Helper()
	select {
	case resp := <-updates:
		return resp
	case <-time.After(limit):
		t.Fatalf("no ListAndWatch response (%s) within %s", what, limit)
		return nil
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func dialPlugin(t *testing.T, socket string) pluginapi.DevicePluginClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(fmt.Sprintf("dialing %s: %v", socket, err)) // only a malformed target fails here
	}
	t.Cleanup(func() { conn.Close() })
	return pluginapi.NewDevicePluginClient(conn)
}

// waitFor polls cond until it holds or the deadline passes (files written by another process have no event to
// wait on from here).
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
