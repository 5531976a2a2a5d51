// kubevirt-device-plugins runs KubeVirt's own device plugins (virt-handler's device controller, its PCI, mediated
// and USB plugins, and the mediated-device types manager) outside a cluster. The KubeVirt CR comes from a file, the
// node's labels from another; both are watched and fed to KubeVirt's own update paths. See ../../README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	k8sv1 "k8s.io/api/core/v1"
	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	framework "k8s.io/client-go/tools/cache/testing"
	v1 "kubevirt.io/api/core/v1"
	"kubevirt.io/client-go/log"

	virtconfig "kubevirt.io/kubevirt/pkg/virt-config"
	devicemanager "kubevirt.io/kubevirt/pkg/virt-handler/device-manager"
	pluginapi "kubevirt.io/kubevirt/pkg/virt-handler/device-manager/deviceplugin/v1beta1"
	"kubevirt.io/kubevirt/pkg/virt-handler/heartbeat"
)

type options struct {
	config            string
	nodeName          string
	labelsFile        string
	maxDevices        int
	heartbeatInterval time.Duration
	verbosity         int
	permissions       string
}

func main() {
	var o options
	// Our own flag set: klog, linked in by KubeVirt, already defines -v on the global one.
	flags := flag.NewFlagSet("kubevirt-device-plugins", flag.ExitOnError)
	flags.StringVar(&o.config, "config", "", "KubeVirt CR (whole object or spec.configuration), YAML or JSON; watched")
	flags.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	flags.StringVar(&o.labelsFile, "node-labels-file", "", "the node's labels, key=value lines; watched")
	// virt-handler's --max-devices default: how many VMIs a permanent plugin (kvm, tun, vhost-net) can serve.
	flags.IntVar(&o.maxDevices, "max-devices", 1000, "devices each permanent plugin advertises")
	// virt-handler hard-codes one minute; the heartbeat is what re-evaluates mdev types against node labels.
	flags.DurationVar(&o.heartbeatInterval, "heartbeat-interval", time.Minute, "virt-handler heartbeat period")
	flags.StringVar(&o.permissions, "device-permissions", "",
		"cgroup permissions of the permanent plugins' devices (default: rwm on cgroup v2, else rw, as virt-handler)")
	flags.IntVar(&o.verbosity, "v", 2, "KubeVirt log verbosity")
	_ = flags.Parse(os.Args[1:])

	log.InitializeLogging("virt-handler")
	if err := log.Log.SetVerbosityLevel(o.verbosity); err != nil {
		fmt.Fprintf(os.Stderr, "kubevirt-device-plugins: --v: %v\n", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		log.Log.Reason(err).Error("kubevirt-device-plugins: exiting on error")
		os.Exit(1)
	}
}

func run(o options) error {
	// First: as pid 1 of a PID namespace, a SIGTERM that comes before a handler exists is simply dropped.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	if o.config == "" {
		return fmt.Errorf("--config is required")
	}
	if o.nodeName == "" {
		return fmt.Errorf("--node-name (or $NODE_NAME) is required")
	}
	kv, configBytes, err := loadKubeVirt(o.config)
	if err != nil {
		return err
	}
	labels, labelsBytes, err := loadLabels(o.labelsFile, o.nodeName)
	if err != nil {
		return err
	}

	stop := make(chan struct{})

	// The API server's part: the Node object virt-handler reads (labels for nodeMediatedDeviceTypes) and patches
	// (the heartbeat), held by client-go's in-memory clientset.
	clientset := fake.NewSimpleClientset(&k8sv1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: o.nodeName, Labels: labels},
	})

	// virt-handler's KubeVirt and CRD informers, with client-go's in-memory list/watch source in place of the API
	// server: a changed file becomes a watch event, so ClusterConfig's own handlers run the device controller's
	// config-modified callbacks, exactly as a CR edit does in a cluster.
	kvSource := framework.NewFakeControllerSource()
	kvSource.Add(kv)
	kvInformer := cache.NewSharedIndexInformer(kvSource, &v1.KubeVirt{}, 0,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	crdSource := framework.NewFakeControllerSource()
	crdInformer := cache.NewSharedIndexInformer(crdSource, &extv1.CustomResourceDefinition{}, 0,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	clusterConfig, err := virtconfig.NewClusterConfig(crdInformer, kvInformer, kubeVirtNamespace)
	if err != nil {
		return fmt.Errorf("building KubeVirt's cluster config: %w", err)
	}
	go kvInformer.Run(stop)
	go crdInformer.Run(stop)
	if !cache.WaitForCacheSync(stop, kvInformer.HasSynced, crdInformer.HasSynced) {
		return fmt.Errorf("KubeVirt config informers did not sync")
	}

	// As pkg/virt-handler/vm.go NewVirtualMachineController wires them.
	permissions := o.permissions
	if permissions == "" {
		permissions = devicePermissions()
	}
	controller := devicemanager.NewDeviceController(
		o.nodeName,
		o.maxDevices,
		permissions,
		devicemanager.PermanentHostDevicePlugins(o.maxDevices, permissions),
		clusterConfig,
		clientset.CoreV1())
	beat := heartbeat.NewHeartBeat(clientset.CoreV1(), controller, clusterConfig, o.nodeName)

	controllerDone := make(chan struct{})
	go func() {
		controller.Run(stop)
		close(controllerDone)
	}()
	beatDone := beat.Run(o.heartbeatInterval, stop)

	inputs := &inputWatcher{
		configPath: o.config,
		labelsPath: o.labelsFile,
		nodeName:   o.nodeName,
		// What was loaded above is in effect; only later versions are applied.
		configBytes: configBytes,
		labelsBytes: labelsBytes,
		labels:      maps.Clone(labels),
		applyConfig: func(kv *v1.KubeVirt) {
			kvSource.Modify(kv)
		},
		applyLabels: func(labels map[string]string, previous map[string]string) error {
			if err := setNodeLabels(clientset, o.nodeName, labels, previous); err != nil {
				return err
			}
			// The heartbeat would do this on its next beat; doing it now keeps a label change from waiting a minute.
			if !clusterConfig.MediatedDevicesHandlingDisabled() {
				controller.RefreshMediatedDeviceTypes()
			}
			return nil
		},
	}
	watchErr := make(chan error, 1)
	go func() { watchErr <- inputs.run(stop) }()
	log.Log.Infof("kubevirt-device-plugins: node %s, config %s, labels %s", o.nodeName, o.config, o.labelsFile)

	var result error
	select {
	case s := <-signals:
		log.Log.Infof("kubevirt-device-plugins: received %s, stopping the device plugins", s)
	case err := <-watchErr:
		result = err
	}
	close(stop)
	<-controllerDone
	<-beatDone
	waitForSocketsRemoved(5 * time.Second)
	return result
}

// devicePermissions is virt-handler's choice ("rwm" on the cgroup v2 unified hierarchy, else "rw"). virt-handler asks
// runc's IsCgroup2UnifiedMode, which panics when /sys/fs/cgroup is missing, as it is on a synthetic sysfs; so the
// same statfs is made here, and a missing cgroup mount means v2, today's default.
func devicePermissions() string {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		log.Log.Infof("kubevirt-device-plugins: /sys/fs/cgroup: %v; using cgroup v2 device permissions (rwm)", err)
		return "rwm"
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "rwm"
	}
	return "rw"
}

// setNodeLabels makes the node carry `labels`: keys the labels file no longer has are removed, and labels it never
// set (the heartbeat's kubevirt.io/schedulable, for one) are kept.
func setNodeLabels(clientset *fake.Clientset, nodeName string, labels, previous map[string]string) error {
	nodes := clientset.CoreV1().Nodes()
	node, err := nodes.Get(context.Background(), nodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node %s: %w", nodeName, err)
	}
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	for k := range previous {
		if _, still := labels[k]; !still {
			delete(node.Labels, k)
		}
	}
	for k, v := range labels {
		node.Labels[k] = v
	}
	if _, err := nodes.Update(context.Background(), node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating labels of node %s: %w", nodeName, err)
	}
	return nil
}

// waitForSocketsRemoved gives the plugins' goroutines, which DeviceController.Run does not wait for, time to send
// their empty device list and remove their sockets, so a stop leaves no stale kubevirt-*.sock behind.
func waitForSocketsRemoved(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for {
		left, _ := filepath.Glob(filepath.Join(pluginapi.DevicePluginPath, "kubevirt-*.sock"))
		if len(left) == 0 {
			log.Log.Info("kubevirt-device-plugins: all plugin sockets removed")
			return
		}
		if time.Now().After(deadline) {
			log.Log.Warningf("kubevirt-device-plugins: sockets still present after %s: %v", limit, left)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
