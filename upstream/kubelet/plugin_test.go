package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// testPlugin is a tiny device plugin written against the published v1beta1 API. Its Allocate answer is a function
// of the device IDs, so a test can tell exactly what the manager passed through.
type testPlugin struct {
	pluginapi.UnimplementedDevicePluginServer

	t        *testing.T
	dir      string
	resource string
	socket   string
	// opts is read by value in GetDevicePluginOptions; set it before serve.
	opts pluginapi.DevicePluginOptions

	mu        sync.Mutex
	devices   []*pluginapi.Device
	changed   chan struct{}
	allocates [][]string
	preStarts [][]string

	srv *grpc.Server
}

func newTestPlugin(t *testing.T, dir, resource, socket string, devices map[string]string) *testPlugin {
	p := &testPlugin{t: t, dir: dir, resource: resource, socket: socket, changed: make(chan struct{}, 1)}
	p.setDevices(devices)
	return p
}

// setDevices replaces the device set (ID -> health) and pushes it on the open ListAndWatch stream.
func (p *testPlugin) setDevices(devices map[string]string) {
	ids := make([]string, 0, len(devices))
	for id := range devices {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	p.mu.Lock()
	p.devices = nil
	for _, id := range ids {
		p.devices = append(p.devices, &pluginapi.Device{ID: id, Health: devices[id]})
	}
	p.mu.Unlock()
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// serve listens on its socket, then registers with the kubelet, as a plugin must (the kubelet dials back during
// Register).
func (p *testPlugin) serve() {
	p.t.Helper()
	path := filepath.Join(p.dir, p.socket)
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		p.t.Fatalf("plugin %s: listen on %s: %v", p.resource, path, err)
	}
	p.srv = grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(p.srv, p)
	go func() { _ = p.srv.Serve(ln) }()
	p.t.Cleanup(p.stop)
	if err := register(p.dir, pluginapi.Version, p.socket, p.resource, nil); err != nil {
		p.t.Fatalf("plugin %s: register: %v", p.resource, err)
	}
}

func (p *testPlugin) stop() {
	if p.srv != nil {
		p.srv.Stop()
	}
}

// register sends one RegisterRequest to the kubelet in dir.
func register(dir, version, endpoint, resource string, opts *pluginapi.DevicePluginOptions) error {
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		return fmt.Errorf("dial kubelet.sock in %s: %w", dir, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: version, Endpoint: endpoint, ResourceName: resource, Options: opts})
	return err
}

func (p *testPlugin) allocateCalls() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]string(nil), p.allocates...)
}

func (p *testPlugin) preStartCalls() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]string(nil), p.preStarts...)
}

func (p *testPlugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{PreStartRequired: p.opts.PreStartRequired,
		GetPreferredAllocationAvailable: p.opts.GetPreferredAllocationAvailable}, nil
}

func (p *testPlugin) ListAndWatch(_ *pluginapi.Empty, s grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	for {
		p.mu.Lock()
		resp := &pluginapi.ListAndWatchResponse{Devices: p.devices}
		p.mu.Unlock()
		if err := s.Send(resp); err != nil {
			return err
		}
		select {
		case <-p.changed:
		case <-s.Context().Done():
			return nil
		}
	}
}

func (p *testPlugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		ids := append([]string(nil), c.DevicesIds...)
		sort.Strings(ids)
		p.mu.Lock()
		p.allocates = append(p.allocates, ids)
		p.mu.Unlock()
		r := &pluginapi.ContainerAllocateResponse{
			Envs:        map[string]string{"TEST_DEVICES": strings.Join(ids, ",")},
			Annotations: map[string]string{"test/devices": strings.Join(ids, ",")},
			Mounts:      []*pluginapi.Mount{{ContainerPath: "/etc/test", HostPath: "/var/test", ReadOnly: true}},
		}
		for _, id := range ids {
			r.Devices = append(r.Devices, &pluginapi.DeviceSpec{
				ContainerPath: "/dev/test-" + id, HostPath: "/dev/host-" + id, Permissions: "rw"})
			r.CdiDevices = append(r.CdiDevices, &pluginapi.CDIDevice{Name: "test.dev/device=" + id})
		}
		resp.ContainerResponses = append(resp.ContainerResponses, r)
	}
	return resp, nil
}

func (p *testPlugin) PreStartContainer(_ context.Context, req *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	ids := append([]string(nil), req.DevicesIds...)
	sort.Strings(ids)
	p.mu.Lock()
	p.preStarts = append(p.preStarts, ids)
	p.mu.Unlock()
	return &pluginapi.PreStartContainerResponse{}, nil
}
