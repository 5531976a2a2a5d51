#!/bin/sh
# Runs kubevirt-device-plugins on a synthetic node, in private mount and PID namespaces, with what KubeVirt's
# hard-coded paths need (see README.md, "What the namespace must provide"). Touches nothing outside the namespace.
#
#   run-in-namespace.sh SYS DEV PLUGINS SCRATCH -- kubevirt-device-plugins ARGS...
#
# SYS, DEV: the node's sysfs and /dev trees (e.g. mocksys's DIR/sys and DIR/dev); PLUGINS: the kubelet's
# device-plugin directory (kubelet.sock); SCRATCH: an empty directory for the overlays' upper layers.
# KUBEVIRT_BIN (default: this directory's ../bin) must hold kubevirt-device-plugins and virt-chroot.
# Needs root. SIGTERM or SIGINT to this script is passed to the program (pid 1 of its PID namespace), which stops
# cleanly; the script then exits with the program's status. If the script is killed outright, unshare is killed with
# it (setpriv --pdeathsig) and passes a SIGTERM on to the program (--kill-child).
set -eu
if [ "${1:-}" != --in-namespace ]; then
  [ $# -ge 5 ] && [ "$5" = -- ] || { echo "usage: $0 SYS DEV PLUGINS SCRATCH -- kubevirt-device-plugins ARGS..." >&2; exit 2; }
  here=$(cd "$(dirname "$0")" && pwd)
  bin=$(cd "${KUBEVIRT_BIN:-$here/../bin}" && pwd)
  for d in "$1" "$2" "$3" "$4"; do [ -d "$d" ] || { echo "$0: $d is not a directory" >&2; exit 2; }; done
  # unshare --fork blocks SIGTERM and SIGINT in itself and forwards nothing: the program, its child, gets them from
  # here.
  setpriv --pdeathsig KILL unshare --mount --pid --fork --mount-proc --kill-child=SIGTERM \
    "$0" --in-namespace "$bin" "$@" &
  ns=$!
  forward() { kill -TERM $(cat "/proc/$ns/task/$ns/children" 2>/dev/null) 2>/dev/null || true; }
  trap forward TERM INT
  while :; do
    rc=0
    wait "$ns" || rc=$?
    kill -0 "$ns" 2>/dev/null || exit "$rc"
  done
fi
shift
bin=$1 sys=$2 dev=$3 plugins=$4 scratch=$5
shift 6 # bin sys dev plugins scratch --
prog=$1
shift
mount --make-rprivate /
# os/exec gives virt-chroot /dev/null as stdin; a synthetic /dev may not have it.
[ -e "$dev/null" ] || touch "$dev/null"
mount --bind /dev/null "$dev/null"
mount --rbind "$sys" /sys
mount --rbind "$dev" /dev
mkdir -p "$scratch/var-lib-upper" "$scratch/var-lib-work"
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$scratch/var-lib-upper,workdir=$scratch/var-lib-work" /var/lib
mkdir -p /var/lib/kubelet/device-plugins
mount --bind "$plugins" /var/lib/kubelet/device-plugins
# KubeVirt runs /usr/bin/virt-chroot by absolute path.
mount -t overlay overlay -o "lowerdir=$bin:/usr/bin" /usr/bin
case $prog in
  */*) exec "$prog" "$@" ;;
  *) exec "$bin/$prog" "$@" ;;
esac
