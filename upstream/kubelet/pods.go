package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/kubernetes/pkg/kubelet/checkpointmanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager/checkpoint"
)

// The active pods stand for what the real kubelet learns from the API server: the pods bound to the node that have
// not terminated. The device manager asks for them before each admission and frees the devices of every pod not in
// the list. They outlive a kubelet restart on a real node, so we keep them in a file beside the checkpoint.

// podsFileName is our file in the plugin directory (the manager deletes only sockets there at start).
const podsFileName = "kubelet-dm-pods.json"

type podsFile struct {
	Pods []savedPod `json:"pods"`
}

type savedPod struct {
	UID            string           `json:"uid"`
	InitContainers []savedContainer `json:"init_containers,omitempty"`
	Containers     []savedContainer `json:"containers,omitempty"`
}

type savedContainer struct {
	Name        string           `json:"name"`
	Resources   map[string]int64 `json:"resources"`
	Restartable bool             `json:"restartable,omitempty"`
}

func (n *node) podsFile() string { return filepath.Join(n.dir, podsFileName) }

// restorePods makes the pods of the previous run active again: those of our pods file, or, when there is none (a
// directory a real kubelet or the fake one left), every pod in the checkpoint, read with upstream's checkpoint code,
// each container asking for as many devices of each resource as it holds.
func (n *node) restorePods() (from string, err error) {
	raw, err := os.ReadFile(n.podsFile())
	switch {
	case err == nil:
		var f podsFile
		if err := json.Unmarshal(raw, &f); err != nil {
			return "", fmt.Errorf("pods file %s: %w", n.podsFile(), err)
		}
		for _, sp := range f.Pods {
			p := n.pod(sp.UID)
			for _, sc := range sp.InitContainers {
				setContainer(p, sc, true)
			}
			for _, sc := range sp.Containers {
				setContainer(p, sc, false)
			}
		}
		from = "pods-file"
	case errors.Is(err, fs.ErrNotExist):
		cm, err := checkpointmanager.NewCheckpointManager(n.dir)
		if err != nil {
			return "", fmt.Errorf("checkpoint in %s: %w", n.dir, err)
		}
		cp := checkpoint.New(nil, nil)
		if err := cm.GetCheckpoint(checkpointName, cp); err != nil {
			// A missing or corrupt checkpoint is the manager's to report (it logs and starts empty).
			n.logger.V(2).Info("No pods restored from checkpoint", "dir", n.dir, "err", err)
			return "none", nil
		}
		entries, _ := cp.GetData()
		for _, e := range entries {
			c := containerIn(n.pod(e.PodUID), e.ContainerName, false)
			c.Resources.Limits[v1.ResourceName(e.ResourceName)] =
				*resource.NewQuantity(int64(e.DeviceIDs.Devices().Len()), resource.DecimalSI)
		}
		from = "checkpoint"
	default:
		return "", fmt.Errorf("pods file %s: %w", n.podsFile(), err)
	}
	n.restored = append([]string(nil), n.order...)
	return from, nil
}

func setContainer(p *v1.Pod, sc savedContainer, init bool) {
	c := containerIn(p, sc.Name, init)
	for name, count := range sc.Resources {
		c.Resources.Limits[v1.ResourceName(name)] = *resource.NewQuantity(count, resource.DecimalSI)
	}
	if sc.Restartable {
		always := v1.ContainerRestartPolicyAlways
		c.RestartPolicy = &always
	}
}

// savePods writes the active pods, atomically, so a restart finds them.
func (n *node) savePods() error {
	f := podsFile{Pods: []savedPod{}}
	for _, p := range n.activePods() {
		sp := savedPod{UID: string(p.UID)}
		for _, c := range p.Spec.InitContainers {
			sp.InitContainers = append(sp.InitContainers, saved(c))
		}
		for _, c := range p.Spec.Containers {
			sp.Containers = append(sp.Containers, saved(c))
		}
		f.Pods = append(f.Pods, sp)
	}
	raw, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp := n.podsFile() + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("pods file %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, n.podsFile()); err != nil {
		return fmt.Errorf("pods file %s: %w", n.podsFile(), err)
	}
	return nil
}

func saved(c v1.Container) savedContainer {
	sc := savedContainer{Name: c.Name, Resources: map[string]int64{}}
	for name, q := range c.Resources.Limits {
		sc.Resources[string(name)] = q.Value()
	}
	sc.Restartable = c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways
	return sc
}

func (n *node) activePods() []*v1.Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*v1.Pod, 0, len(n.order))
	for _, uid := range n.order {
		out = append(out, n.pods[uid])
	}
	return out
}

// pod returns the active pod with this UID, creating it.
func (n *node) pod(uid string) *v1.Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.pods[uid]; ok {
		return p
	}
	p := &v1.Pod{}
	p.UID = types.UID(uid)
	p.Name = uid
	p.Namespace = "default"
	n.pods[uid] = p
	n.order = append(n.order, uid)
	return p
}

func (n *node) forget(uid string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.pods[uid]; !ok {
		return false
	}
	delete(n.pods, uid)
	for i, u := range n.order {
		if u == uid {
			n.order = append(n.order[:i], n.order[i+1:]...)
			break
		}
	}
	return true
}

// containerIn finds or adds a container in the pod spec. The manager tells init containers from app containers by
// looking the name up in pod.Spec.InitContainers.
func containerIn(p *v1.Pod, name string, init bool) *v1.Container {
	list := &p.Spec.Containers
	if init {
		list = &p.Spec.InitContainers
	}
	for i := range p.Spec.InitContainers {
		if p.Spec.InitContainers[i].Name == name {
			return &p.Spec.InitContainers[i]
		}
	}
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == name {
			return &p.Spec.Containers[i]
		}
	}
	*list = append(*list, v1.Container{Name: name, Resources: v1.ResourceRequirements{Limits: v1.ResourceList{}}})
	return &(*list)[len(*list)-1]
}
