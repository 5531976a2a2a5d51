package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	v1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The cluster config looks the KubeVirt object up in this namespace; whatever the file says, the object lives here.
const (
	kubeVirtNamespace = "kubevirt"
	kubeVirtName      = "kubevirt"
)

// loadKubeVirt reads a KubeVirt CR in any of the shapes our agent accepts: the whole object, `{configuration: ...}`,
// or the configuration itself; YAML or JSON. Unknown fields are ignored, as the API server prunes them.
// The bytes read are returned too, for the watcher to compare later versions with.
func loadKubeVirt(path string) (*v1.KubeVirt, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading KubeVirt config %s: %w", path, err)
	}
	kv, err := parseKubeVirt(data)
	if err != nil {
		return nil, nil, fmt.Errorf("KubeVirt config %s: %w", path, err)
	}
	return kv, data, nil
}

func parseKubeVirt(data []byte) (*v1.KubeVirt, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(js, &top); err != nil {
		return nil, fmt.Errorf("not a YAML/JSON object: %w", err)
	}
	if top == nil {
		return nil, fmt.Errorf("empty document")
	}
	kv := &v1.KubeVirt{}
	switch {
	case top["kind"] != nil || top["spec"] != nil:
		if err := json.Unmarshal(js, kv); err != nil {
			return nil, fmt.Errorf("as a KubeVirt object: %w", err)
		}
		if kv.Kind != "" && kv.Kind != "KubeVirt" {
			return nil, fmt.Errorf("kind: %q is not KubeVirt", kv.Kind)
		}
	case top["configuration"] != nil:
		if err := json.Unmarshal(top["configuration"], &kv.Spec.Configuration); err != nil {
			return nil, fmt.Errorf("configuration: %w", err)
		}
	default:
		if err := json.Unmarshal(js, &kv.Spec.Configuration); err != nil {
			return nil, fmt.Errorf("as spec.configuration: %w", err)
		}
	}
	// What virt-operator and the API server would have filled in: the config store only serves a KubeVirt
	// object that has a phase, and the default architecture comes from its status.
	kv.TypeMeta = metav1.TypeMeta{APIVersion: "kubevirt.io/v1", Kind: "KubeVirt"}
	kv.Name = kubeVirtName
	kv.Namespace = kubeVirtNamespace
	kv.DeletionTimestamp = nil
	kv.Status.Phase = v1.KubeVirtPhaseDeployed
	if kv.Status.DefaultArchitecture == "" {
		kv.Status.DefaultArchitecture = runtime.GOARCH
	}
	return kv, nil
}

// loadLabels reads `key=value` lines (blank lines and `#` comments skipped; a value may be double-quoted, as the
// downward API writes them). `kubernetes.io/hostname` is always the node name, as the kubelet sets it.
func loadLabels(path, nodeName string) (map[string]string, []byte, error) {
	labels := map[string]string{}
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, nil, fmt.Errorf("reading node labels %s: %w", path, err)
		}
		if err := parseLabels(data, path, labels); err != nil {
			return nil, nil, err
		}
	}
	labels["kubernetes.io/hostname"] = nodeName
	return labels, data, nil
}

func parseLabels(data []byte, origin string, into map[string]string) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return fmt.Errorf("%s:%d: %q is not key=value", origin, n, line)
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && strings.HasPrefix(value, `"`) && strings.HasSuffix(value, `"`) {
			unquoted, err := strconv.Unquote(value)
			if err != nil {
				return fmt.Errorf("%s:%d: value of %s: %w", origin, n, key, err)
			}
			value = unquoted
		}
		into[key] = value
	}
	return sc.Err()
}
