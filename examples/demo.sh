#!/usr/bin/env bash
# Serves examples/gpu-node.yaml on a real FUSE mount and asks hostdev-agent what it would
# advertise there, and why it skips the rest. Needs root (FUSE). Unmounts on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p mocksys -p hostdev-agent
dir=$(mktemp -d /tmp/hostdev-demo.XXXXXX)
./target/debug/mocksys mount examples/gpu-node.yaml "$dir" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rmdir "$dir" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -e "$dir/sys/bus/pci/devices" ] && break; sleep 0.05; done
echo "== lspci-style view of the synthetic host: ls $dir/sys/bus/pci/devices"
ls "$dir/sys/bus/pci/devices"
echo
./target/debug/hostdev-agent discover --config examples/kubevirt.yaml --node-name node01 \
  --sysfs-root "$dir/sys" --dev-root "$dir/dev"
