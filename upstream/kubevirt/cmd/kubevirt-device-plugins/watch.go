package main

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	v1 "kubevirt.io/api/core/v1"
	"kubevirt.io/client-go/log"
)

// How long a burst of events (an editor's save, a ConfigMap `..data` swap: create, rename, remove) is let settle
// before the files are read once.
const settle = 100 * time.Millisecond

// A safety net: a change the watch missed (a directory replaced under us) is still picked up.
const resync = 10 * time.Second

// inputWatcher re-reads the config and labels files when anything in their directories changes. Directories, not
// files, are watched: a file replaced by rename, or a ConfigMap-style `..data` symlink swap, never touches the
// watched inode. A file is applied only when its bytes changed; one that does not parse is reported and the last good
// one stays in effect.
type inputWatcher struct {
	// configBytes, labelsBytes and labels start as what is already in effect.
	configPath  string
	labelsPath  string
	nodeName    string
	applyConfig func(*v1.KubeVirt)
	applyLabels func(labels, previous map[string]string) error

	configBytes []byte
	labelsBytes []byte
	labels      map[string]string

	mu       sync.Mutex
	watching bool // set once the directories are watched (tests wait for it)
}

func (w *inputWatcher) run(stop <-chan struct{}) error {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("creating a file watcher: %w", err)
	}
	defer watcher.Close()
	for _, p := range []string{w.configPath, w.labelsPath} {
		if p == "" {
			continue
		}
		dir := filepath.Dir(p)
		if err := watcher.Add(dir); err != nil {
			return fmt.Errorf("watching %s (directory of %s): %w", dir, p, err)
		}
	}

	w.mu.Lock()
	w.watching = true
	w.mu.Unlock()

	ticker := time.NewTicker(resync)
	defer ticker.Stop()
	var settleC <-chan time.Time
	for {
		select {
		case <-stop:
			return nil
		case err := <-watcher.Errors:
			log.Log.Reason(err).Warning("kubevirt-device-plugins: file watch error; the periodic re-read still applies")
		case ev := <-watcher.Events:
			log.Log.V(4).Infof("kubevirt-device-plugins: %s", ev)
			if settleC == nil {
				settleC = time.After(settle)
			}
		case <-settleC:
			settleC = nil
			w.reload()
		case <-ticker.C:
			w.reload()
		}
	}
}

func (w *inputWatcher) reload() {
	if data, err := os.ReadFile(w.configPath); err != nil {
		log.Log.Reason(err).Errorf("kubevirt-device-plugins: reading %s; keeping the last good config", w.configPath)
	} else if !bytes.Equal(data, w.configBytes) {
		w.configBytes = data
		kv, err := parseKubeVirt(data)
		if err != nil {
			log.Log.Reason(err).Errorf("kubevirt-device-plugins: config %s does not parse; keeping the last good one",
				w.configPath)
		} else {
			log.Log.Infof("kubevirt-device-plugins: config %s changed, updating the KubeVirt object", w.configPath)
			w.applyConfig(kv)
		}
	}

	if w.labelsPath == "" {
		return
	}
	data, err := os.ReadFile(w.labelsPath)
	if err != nil {
		log.Log.Reason(err).Errorf("kubevirt-device-plugins: reading %s; keeping the last labels", w.labelsPath)
		return
	}
	if bytes.Equal(data, w.labelsBytes) {
		return
	}
	w.labelsBytes = data
	labels := map[string]string{}
	if err := parseLabels(data, w.labelsPath, labels); err != nil {
		log.Log.Reason(err).Errorf("kubevirt-device-plugins: keeping the last labels")
		return
	}
	labels["kubernetes.io/hostname"] = w.nodeName
	if maps.Equal(labels, w.labels) {
		return
	}
	log.Log.Infof("kubevirt-device-plugins: labels %s changed: %v", w.labelsPath, labels)
	if err := w.applyLabels(labels, w.labels); err != nil {
		log.Log.Reason(err).Error("kubevirt-device-plugins: applying node labels")
		return
	}
	w.labels = labels
}
