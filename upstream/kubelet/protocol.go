package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
)

// The line protocol; README.md documents every shape here, keep the two in step.

type allocateRequest struct {
	Pod         string           `json:"pod"`
	Container   string           `json:"container"`
	Resources   map[string]int64 `json:"resources"`
	Init        bool             `json:"init,omitempty"`
	Restartable bool             `json:"restartable,omitempty"`
}

type freeRequest struct {
	Pod string `json:"pod"`
}

type waitRequest struct {
	Resource    string `json:"resource"`
	Allocatable *int64 `json:"allocatable,omitempty"`
	Capacity    *int64 `json:"capacity,omitempty"`
	Endpoints   *int   `json:"endpoints,omitempty"`
	TimeoutMs   int64  `json:"timeout_ms,omitempty"`
}

// errorReply is the line for any command that failed. Error is the manager's error text unchanged when Kind is
// "manager"; "request" means the command itself was wrong (unknown command, bad JSON, missing field) and the manager
// was not called; "timeout" is a wait that did not see its condition.
type errorReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	Kind  string `json:"error_kind"`
}

type readyReply struct {
	OK         bool     `json:"ok"`
	Ready      bool     `json:"ready"`
	Socket     string   `json:"socket"`
	Checkpoint string   `json:"checkpoint"`
	Kubernetes string   `json:"kubernetes"`
	Restored   []string `json:"restored_pods"`
	From       string   `json:"restored_from"`
}

type allocateReply struct {
	OK          bool                `json:"ok"`
	Devices     map[string][]string `json:"devices"`
	Envs        map[string]string   `json:"envs"`
	Mounts      []mount             `json:"mounts"`
	DeviceSpecs []deviceSpec        `json:"device_specs"`
	Annotations map[string]string   `json:"annotations"`
	CDIDevices  []string            `json:"cdi_devices"`
}

type freeReply struct {
	OK    bool `json:"ok"`
	Freed bool `json:"freed"`
}

type okReply struct {
	OK bool `json:"ok"`
}

type statusReply struct {
	OK        bool                      `json:"ok"`
	Resources map[string]resourceStatus `json:"resources"`
	Removed   []string                  `json:"removed"`
	Pods      []podDevices              `json:"pods"`
}

// waitTimeoutReply is a timed-out wait: the error, and the last status seen.
type waitTimeoutReply struct {
	errorReply
	Resources map[string]resourceStatus `json:"resources"`
	Removed   []string                  `json:"removed"`
	Pods      []podDevices              `json:"pods"`
}

type mount struct {
	ContainerPath string `json:"container_path"`
	HostPath      string `json:"host_path"`
	ReadOnly      bool   `json:"read_only"`
}

type deviceSpec struct {
	ContainerPath string `json:"container_path"`
	HostPath      string `json:"host_path"`
	Permissions   string `json:"permissions"`
}

type resourceStatus struct {
	Capacity    int64    `json:"capacity"`
	Allocatable int64    `json:"allocatable"`
	Healthy     []string `json:"healthy"`
	Unhealthy   []string `json:"unhealthy"`
	Allocated   []string `json:"allocated"`
	Endpoints   []string `json:"endpoints"`
	Stopped     bool     `json:"stopped"`
}

type podDevices struct {
	Pod       string              `json:"pod"`
	Container string              `json:"container"`
	Devices   map[string][]string `json:"devices"`
}

func requestError(format string, args ...any) errorReply {
	return errorReply{Error: fmt.Sprintf(format, args...), Kind: "request"}
}

func managerError(err error) errorReply {
	return errorReply{Error: err.Error(), Kind: "manager"}
}

func (n *node) ready() readyReply {
	return readyReply{
		OK: true, Ready: true,
		Socket:     n.m.GetWatcherHandler().(interface{ SocketPath() string }).SocketPath(),
		Checkpoint: filepath.Join(n.dir, checkpointName),
		Kubernetes: kubernetesVersion(),
		Restored:   orEmpty(n.restored),
		From:       n.restoredFrom,
	}
}

// command runs one line and returns its reply; done is true after stop.
func (n *node) command(ctx context.Context, line string) (r any, done bool) {
	verb, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	decode := func(v any) error {
		if arg == "" {
			return fmt.Errorf("%s needs a JSON argument", verb)
		}
		d := json.NewDecoder(bytes.NewReader([]byte(arg)))
		d.DisallowUnknownFields()
		if err := d.Decode(v); err != nil {
			return fmt.Errorf("%s: bad argument %s: %v", verb, arg, err)
		}
		return nil
	}
	switch verb {
	case "allocate":
		var req allocateRequest
		if err := decode(&req); err != nil {
			return requestError("%v", err), false
		}
		if req.Pod == "" || req.Container == "" {
			return requestError("allocate: \"pod\" and \"container\" are required"), false
		}
		if req.Restartable && !req.Init {
			return requestError("allocate: \"restartable\" is for init containers only"), false
		}
		for name, count := range req.Resources {
			if count < 0 {
				return requestError("allocate: resource %q: count %d is negative", name, count), false
			}
		}
		opts, err := n.allocate(ctx, req)
		if err != nil {
			// The kubelet rejects the whole pod when admission fails; a rejected pod is no longer active, so
			// whatever it held is freed at the next admission, as on a node.
			n.forget(req.Pod)
			if err := n.savePods(); err != nil {
				n.logger.Error(err, "Saving the active pods")
			}
			return managerError(err), false
		}
		if err := n.savePods(); err != nil {
			return errorReply{Error: err.Error(), Kind: "io"}, false
		}
		a := runOptions(opts)
		a.Devices = idsByResource(n.m.GetDevices(req.Pod, req.Container))
		return a, false
	case "free":
		var req freeRequest
		if err := decode(&req); err != nil {
			return requestError("%v", err), false
		}
		if req.Pod == "" {
			return requestError("free: \"pod\" is required"), false
		}
		freed := n.forget(req.Pod)
		if err := n.savePods(); err != nil {
			return errorReply{Error: err.Error(), Kind: "io"}, false
		}
		// What the kubelet does for pods that are no longer active (it also runs this before every admission).
		n.m.UpdateAllocatedDevices(n.logger)
		return freeReply{OK: true, Freed: freed}, false
	case "status":
		if arg != "" {
			return requestError("status takes no argument"), false
		}
		return n.status(), false
	case "wait":
		var req waitRequest
		if err := decode(&req); err != nil {
			return requestError("%v", err), false
		}
		if req.Resource == "" {
			return requestError("wait: \"resource\" is required"), false
		}
		return n.wait(req), false
	case "stop":
		n.stop()
		return okReply{OK: true}, true
	default:
		return requestError("unknown command %q (allocate, free, status, wait, stop)", verb), false
	}
}

// runOptions turns the manager's DeviceRunContainerOptions into the reply. Lists are sorted by container path
// (CDI devices by name): the manager builds them by walking a Go map of resources, so their order means nothing.
func runOptions(o *devicemanager.DeviceRunContainerOptions) allocateReply {
	r := allocateReply{OK: true, Envs: map[string]string{}, Annotations: map[string]string{},
		Mounts: []mount{}, DeviceSpecs: []deviceSpec{}, CDIDevices: []string{}}
	if o == nil {
		return r
	}
	for _, e := range o.Envs {
		r.Envs[e.Name] = e.Value
	}
	for _, a := range o.Annotations {
		r.Annotations[a.Name] = a.Value
	}
	for _, m := range o.Mounts {
		r.Mounts = append(r.Mounts, mount{ContainerPath: m.ContainerPath, HostPath: m.HostPath, ReadOnly: m.ReadOnly})
	}
	for _, d := range o.Devices {
		r.DeviceSpecs = append(r.DeviceSpecs,
			deviceSpec{ContainerPath: d.PathInContainer, HostPath: d.PathOnHost, Permissions: d.Permissions})
	}
	for _, c := range o.CDIDevices {
		r.CDIDevices = append(r.CDIDevices, c.Name)
	}
	sort.Slice(r.Mounts, func(i, j int) bool { return r.Mounts[i].ContainerPath < r.Mounts[j].ContainerPath })
	sort.Slice(r.DeviceSpecs, func(i, j int) bool { return r.DeviceSpecs[i].ContainerPath < r.DeviceSpecs[j].ContainerPath })
	sort.Strings(r.CDIDevices)
	return r
}

// status is what the kubelet's node-status update sees (GetCapacity, which also drops resources whose plugin has been
// gone past the 5-minute grace period), plus the manager's own device sets and endpoints.
func (n *node) status() statusReply {
	capacity, allocatable, removed := n.m.GetCapacity(n.logger)
	in := inspect(n.m)
	r := statusReply{OK: true, Resources: map[string]resourceStatus{}, Removed: orEmpty(removed), Pods: n.devices()}
	if r.Pods == nil {
		r.Pods = []podDevices{}
	}
	sort.Strings(r.Removed)
	names := map[string]bool{}
	for name := range capacity {
		names[string(name)] = true
	}
	for _, m := range []map[string][]string{in.healthy, in.unhealthy, in.allocated, in.endpoints} {
		for name := range m {
			names[name] = true
		}
	}
	for name := range names {
		c := capacity[v1.ResourceName(name)]
		a := allocatable[v1.ResourceName(name)]
		r.Resources[name] = resourceStatus{
			Capacity:    c.Value(),
			Allocatable: a.Value(),
			Healthy:     orEmpty(in.healthy[name]),
			Unhealthy:   orEmpty(in.unhealthy[name]),
			Allocated:   orEmpty(in.allocated[name]),
			Endpoints:   orEmpty(in.endpoints[name]),
			Stopped:     in.stopped[name],
		}
	}
	return r
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// wait polls status until the resource matches every given field. The manager has no change notification to wait
// on; polling here keeps the callers (tests, the Rust harness) free of sleeps.
func (n *node) wait(req waitRequest) any {
	timeout := 10 * time.Second
	if req.TimeoutMs > 0 {
		timeout = time.Duration(req.TimeoutMs) * time.Millisecond
	}
	deadline := time.Now().Add(timeout)
	for {
		s := n.status()
		got, ok := s.Resources[req.Resource]
		if ok && (req.Allocatable == nil || got.Allocatable == *req.Allocatable) &&
			(req.Capacity == nil || got.Capacity == *req.Capacity) &&
			(req.Endpoints == nil || len(got.Endpoints) == *req.Endpoints) {
			return s
		}
		if time.Now().After(deadline) {
			e := errorReply{Kind: "timeout",
				Error: fmt.Sprintf("wait: resource %q did not reach %s within %v", req.Resource, want(req), timeout)}
			return waitTimeoutReply{errorReply: e, Resources: s.Resources, Removed: s.Removed, Pods: s.Pods}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func want(req waitRequest) string {
	var parts []string
	if req.Allocatable != nil {
		parts = append(parts, fmt.Sprintf("allocatable=%d", *req.Allocatable))
	}
	if req.Capacity != nil {
		parts = append(parts, fmt.Sprintf("capacity=%d", *req.Capacity))
	}
	if req.Endpoints != nil {
		parts = append(parts, fmt.Sprintf("endpoints=%d", *req.Endpoints))
	}
	if len(parts) == 0 {
		return "existence"
	}
	return strings.Join(parts, ", ")
}
