package main

import (
	"fmt"
	"reflect"
	"sort"
	"sync"
	"time"
	"unsafe"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
)

// managerState is the part of the manager's state that its exported API does not show: which devices it counts as
// healthy, unhealthy and allocated, and which plugin sockets it holds per resource.
type managerState struct {
	healthy, unhealthy, allocated map[string][]string
	// endpoints are the sockets of the connected plugins (several while a plugin re-registers on a new socket).
	endpoints map[string][]string
	// stopped is true while the resource's endpoint is stopped: its plugin is gone (or not yet back after a restart)
	// and the 5-minute grace period runs.
	stopped map[string]bool
}

// inspect reads the manager's own maps under its own mutex. Status must report what the real manager decided, not
// a copy we keep beside it, and the manager has no getters for these. The field names are those of the pinned
// release; any change there makes this panic with the field's name, and the status test catches it.
func inspect(m *devicemanager.ManagerImpl) managerState {
	v := reflect.ValueOf(m).Elem()
	mu := field(v, "mutex").Addr().Interface().(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()

	st := managerState{
		healthy:   setsByResource(field(v, "healthyDevices")),
		unhealthy: setsByResource(field(v, "unhealthyDevices")),
		allocated: setsByResource(field(v, "allocatedDevices")),
		endpoints: map[string][]string{},
		stopped:   map[string]bool{},
	}
	store := field(v, "endpointStore") // resource -> socket path -> *endpointInfo
	for _, res := range store.MapKeys() {
		var socks []string
		for _, s := range store.MapIndex(res).MapKeys() {
			socks = append(socks, s.String())
		}
		sort.Strings(socks)
		st.endpoints[res.String()] = socks
	}
	eps := field(v, "endpoints") // resource -> endpointInfo{e endpoint; opts}
	for _, res := range eps.MapKeys() {
		e := eps.MapIndex(res).FieldByName("e")
		if e.IsNil() {
			continue
		}
		impl := e.Elem() // *endpointImpl
		if impl.Kind() != reflect.Pointer {
			panic(fmt.Sprintf("devicemanager endpoint is %s, not a pointer", impl.Type()))
		}
		implV := impl.Elem()
		emu := field(implV, "mutex").Addr().Interface().(*sync.Mutex)
		emu.Lock()
		stopTime := field(implV, "stopTime").Interface().(time.Time)
		emu.Unlock()
		st.stopped[res.String()] = !stopTime.IsZero()
	}
	return st
}

// field returns a usable (addressable, readable) view of an unexported struct field.
func field(v reflect.Value, name string) reflect.Value {
	f := v.FieldByName(name)
	if !f.IsValid() {
		panic(fmt.Sprintf("%s has no field %q: the pinned devicemanager changed", v.Type(), name))
	}
	return reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
}

func setsByResource(v reflect.Value) map[string][]string {
	m, ok := v.Interface().(map[string]sets.Set[string])
	if !ok {
		panic(fmt.Sprintf("devicemanager device map is %s, not map[string]sets.Set[string]", v.Type()))
	}
	out := make(map[string][]string, len(m))
	for res, ids := range m {
		out[res] = sets.List(ids)
	}
	return out
}
