package main

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	_ "unsafe" // for go:linkname

	cadvisorapi "github.com/google/cadvisor/lib/model"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/topologymanager"
	"k8s.io/kubernetes/pkg/kubelet/config"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"
)

// checkpointName is the file the manager keeps in the plugin directory (the constant is unexported upstream).
const checkpointName = "kubelet_internal_checkpoint"

// newManagerImpl is the constructor behind devicemanager.NewManagerImpl, which only differs by fixing the socket to
// /var/lib/kubelet/device-plugins/kubelet.sock (the real kubelet has no flag for it). Upstream's own manager tests
// call it with a temporary socket path; we do the same so that several managers can run on one machine, each on its
// own directory, without root or a mount namespace. The linker matches the name only, so this signature must be
// the pinned release's (devicemanager/manager.go); every test starts a manager through it.
//
//go:linkname newManagerImpl k8s.io/kubernetes/pkg/kubelet/cm/devicemanager.newManagerImpl
func newManagerImpl(logger klog.Logger, socketPath string, topology []cadvisorapi.Node,
	topologyAffinityStore topologymanager.Store) (*devicemanager.ManagerImpl, error)

// node is one kubelet's device manager plus the little of the kubelet it needs: the active pods it admitted.
type node struct {
	logger klog.Logger
	dir    string
	m      *devicemanager.ManagerImpl

	mu   sync.Mutex
	pods map[string]*v1.Pod // by UID, in the order they were admitted (see order)
	// order keeps status output in admission order rather than Go map order.
	order []string
	// restored lists the pods made active again at start, and restoredFrom where they came from.
	restored     []string
	restoredFrom string
}

func startNode(logger klog.Logger, dir string, numaNodes int) (*node, error) {
	if numaNodes < 1 {
		return nil, fmt.Errorf("--numa-nodes %d: a machine has at least one NUMA node", numaNodes)
	}
	var topology []cadvisorapi.Node
	for i := 0; i < numaNodes; i++ {
		topology = append(topology, cadvisorapi.Node{Id: i})
	}
	// The kubelet's default Topology Manager policy is "none"; the device manager asks it for each container's
	// NUMA affinity while it allocates.
	tm, err := topologymanager.NewManager(logger, topology, topologymanager.PolicyNone,
		topologymanager.ContainerTopologyScope, nil)
	if err != nil {
		return nil, fmt.Errorf("topology manager: %w", err)
	}
	socket := filepath.Join(dir, filepath.Base(pluginapi.KubeletSocket))
	m, err := newManagerImpl(logger, socket, topology, tm)
	if err != nil {
		return nil, fmt.Errorf("device manager on %s: %w", socket, err)
	}
	n := &node{logger: logger, dir: dir, m: m, pods: map[string]*v1.Pod{}}
	// A kubelet restart leaves the pods running, and the real kubelet learns them again from the API server
	// before it admits anything; without them the manager would free their devices at the next admission.
	if n.restoredFrom, err = n.restorePods(); err != nil {
		return nil, err
	}
	sourcesReady := config.NewSourcesReady(func(sets.Set[string]) bool { return true })
	if err := m.Start(logger, n.activePods, sourcesReady, containermap.NewContainerMap(), sets.New[string]()); err != nil {
		return nil, fmt.Errorf("device manager on %s: start: %w", socket, err)
	}
	// The kubelet drains this channel (device health of allocated devices for pod status); left full, the manager
	// logs an error for every further health change.
	go func() {
		for u := range m.Updates() {
			logger.V(2).Info("Device health changed for pods", "pods", u.PodUIDs)
		}
	}()
	return n, nil
}

// allocate admits one container the way the kubelet does: Allocate at admission, then GetDeviceRunContainerOptions
// when the container is started (which is where PreStartContainer is called).
func (n *node) allocate(ctx context.Context, req allocateRequest) (*devicemanager.DeviceRunContainerOptions, error) {
	p := n.pod(req.Pod)
	n.mu.Lock()
	c := containerIn(p, req.Container, req.Init)
	if req.Init && req.Restartable {
		always := v1.ContainerRestartPolicyAlways
		c.RestartPolicy = &always
	}
	c.Resources.Limits = v1.ResourceList{}
	for name, count := range req.Resources {
		q := *resource.NewQuantity(count, resource.DecimalSI)
		c.Resources.Limits[v1.ResourceName(name)] = q
		c.Resources.Requests = c.Resources.Limits
	}
	container := c.DeepCopy()
	n.mu.Unlock()

	if err := n.m.Allocate(ctx, p, container, lifecycle.AddOperation); err != nil {
		return nil, err
	}
	return n.m.GetDeviceRunContainerOptions(ctx, p, container)
}

// devices lists the device IDs the manager holds for each container of each active pod, sorted.
func (n *node) devices() []podDevices {
	var out []podDevices
	for _, p := range n.activePods() {
		for _, c := range append(append([]v1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
			got := idsByResource(n.m.GetDevices(string(p.UID), c.Name))
			if len(got) == 0 {
				continue
			}
			out = append(out, podDevices{Pod: string(p.UID), Container: c.Name, Devices: got})
		}
	}
	return out
}

func idsByResource(in devicemanager.ResourceDeviceInstances) map[string][]string {
	out := map[string][]string{}
	for res, devs := range in {
		for id := range devs {
			out[res] = append(out[res], id)
		}
		sort.Strings(out[res])
	}
	return out
}

func (n *node) stop() {
	if err := n.m.Stop(n.logger); err != nil {
		n.logger.Error(err, "Stopping the device manager")
	}
}

func kubernetesVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range info.Deps {
		if d.Path == "k8s.io/kubernetes" {
			return d.Version
		}
	}
	return "unknown"
}
