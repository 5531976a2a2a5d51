// Command schemas writes the OpenAPI v3 schemas of KubeVirt's KubeVirt and VirtualMachineInstance
// CRDs, exactly as KubeVirt's operator installs them (v1.7.0), for the harness to validate
// scenarios against.
//
//	go run . ../../harness/schema/kubevirt-v1.7.0
//
// The schemas come from the operator's own CRD constructors (NewKubeVirtCrd and
// NewVirtualMachineInstanceCrd in pkg/virt-operator/resource/generate/components), so they are
// what `kubectl apply --validate=strict` checks against, not a copy of the Go types.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
)

// Generated files, by name: each is the served version's openAPIV3Schema.
var crds = []struct {
	file string
	make func() (*extv1.CustomResourceDefinition, error)
}{
	{"kubevirt.json", components.NewKubeVirtCrd},
	{"virtualmachineinstance.json", components.NewVirtualMachineInstanceCrd},
}

// The API version scenarios use.
const version = "v1"

// render returns every file's content, by file name.
func render() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, c := range crds {
		crd, err := c.make()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.file, err)
		}
		var schema *extv1.JSONSchemaProps
		for _, v := range crd.Spec.Versions {
			if v.Name == version && v.Schema != nil {
				schema = v.Schema.OpenAPIV3Schema
			}
		}
		if schema == nil {
			return nil, fmt.Errorf("%s: CRD %s has no %s schema", c.file, crd.Name, version)
		}
		// encoding/json sorts map keys, so the output is stable across runs.
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", " ")
		if err := enc.Encode(schema); err != nil {
			return nil, fmt.Errorf("%s: %w", c.file, err)
		}
		out[c.file] = buf.Bytes()
	}
	return out, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: schemas OUTPUT_DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	files, err := render()
	if err != nil {
		fmt.Fprintln(os.Stderr, "schemas:", err)
		os.Exit(1)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "schemas:", err)
		os.Exit(1)
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "schemas:", err)
			os.Exit(1)
		}
	}
}
