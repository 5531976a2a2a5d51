package main

import (
	"strings"
	"testing"
)

func TestParseKubeVirtAcceptsTheThreeShapes(t *testing.T) {
	docs := map[string]string{
		"whole CR": `
apiVersion: kubevirt.io/v1
kind: KubeVirt
metadata: {name: other, namespace: elsewhere}
spec:
  configuration:
    permittedHostDevices:
      pciHostDevices: [{pciVendorSelector: "8086:5845", resourceName: devices.kubevirt.io/nvme}]`,
		"configuration key": `{"configuration": {"permittedHostDevices": {"pciHostDevices":
			[{"pciVendorSelector": "8086:5845", "resourceName": "devices.kubevirt.io/nvme"}]}}}`,
		"spec.configuration itself": `
permittedHostDevices:
  pciHostDevices: [{pciVendorSelector: "8086:5845", resourceName: devices.kubevirt.io/nvme}]
unknownField: pruned by the API server, ignored here`,
	}
	for name, doc := range docs {
		kv, err := parseKubeVirt([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		hd := kv.Spec.Configuration.PermittedHostDevices
		if hd == nil || len(hd.PciHostDevices) != 1 || hd.PciHostDevices[0].ResourceName != "devices.kubevirt.io/nvme" {
			t.Fatalf("%s: permittedHostDevices = %+v", name, hd)
		}
		// The config store serves only a deployed object in its own namespace.
		if kv.Namespace != kubeVirtNamespace || kv.Name != kubeVirtName || kv.Status.Phase != "Deployed" ||
			kv.Status.DefaultArchitecture == "" {
			t.Fatalf("%s: object meta/status = %s/%s %q %q", name, kv.Namespace, kv.Name, kv.Status.Phase,
				kv.Status.DefaultArchitecture)
		}
	}
}

func TestParseKubeVirtRejectsOtherKindsAndNonObjects(t *testing.T) {
	for doc, want := range map[string]string{
		"kind: ConfigMap\nspec: {}": `kind: "ConfigMap" is not KubeVirt`,
		"- a\n- list":               "not a YAML/JSON object",
		"":                          "empty document",
		"permittedHostDevices: 3":   "as spec.configuration",
	} {
		_, err := parseKubeVirt([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: error %v, want one containing %q", doc, err, want)
		}
	}
}

func TestParseLabels(t *testing.T) {
	labels := map[string]string{}
	err := parseLabels([]byte("# downward API style\nnvidia.com/gpu.product=\"Tesla T4\"\n\n zone = a \n"), "labels", labels)
	if err != nil {
		t.Fatal(err)
	}
	if labels["nvidia.com/gpu.product"] != "Tesla T4" || labels["zone"] != "a" || len(labels) != 2 {
		t.Fatalf("labels = %v", labels)
	}
	err = parseLabels([]byte("a=b\nno-equals-sign\n"), "node.labels", map[string]string{})
	if err == nil || !strings.Contains(err.Error(), `node.labels:2: "no-equals-sign" is not key=value`) {
		t.Fatalf("error = %v", err)
	}
}
