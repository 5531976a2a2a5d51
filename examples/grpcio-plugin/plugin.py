#!/usr/bin/env python3
"""A kubelet device plugin written with Python grpcio: serves the USB devices of one vendor:product.

It does what a real plugin must:
- serves DevicePlugin on a unix socket in the plugin directory, then registers with kubelet.sock
  (the kubelet dials back, asks GetDevicePluginOptions, then opens ListAndWatch);
- finds its devices in sysfs (<sysfs-root>/bus/usb/devices/*/idVendor, idProduct, busnum, devnum)
  and re-scans on a timer, sending the whole device set again whenever it changes (an unplugged
  device disappears, a device whose /dev node is missing is reported Unhealthy);
- answers Allocate with an env var and one device spec per /dev/bus/usb/BBB/DDD node;
- notices a kubelet restart (kubelet.sock re-created, or its own socket deleted), closes its old
  streams, serves a new socket and registers again;
- exits cleanly (exit status 0, socket removed) on SIGTERM or SIGINT.

Stubs come from the kubelet's deviceplugin.proto (v1beta1); see README.md.
"""

import argparse
import logging
import os
import re
import signal
import sys
import threading
from concurrent import futures

import grpc

log = logging.getLogger("grpcio-plugin")

HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"
API_VERSION = "v1beta1"


def parse_args(argv):
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plugin-dir", default=env("PLUGIN_DIR", "/var/lib/kubelet/device-plugins"),
                   help="directory holding kubelet.sock and the plugin socket (env PLUGIN_DIR)")
    p.add_argument("--resource", default=env("RESOURCE_NAME", "example.com/widget"),
                   help="extended resource name to register (env RESOURCE_NAME)")
    p.add_argument("--usb", default=env("USB_ID", "1234:5678"),
                   help="vendor:product of the USB devices to serve, hex (env USB_ID)")
    p.add_argument("--sysfs-root", default=env("SYSFS_ROOT", "/sys"),
                   help="where sysfs is mounted (env SYSFS_ROOT)")
    p.add_argument("--dev-root", default=env("DEV_ROOT", "/dev"),
                   help="where the device nodes are (env DEV_ROOT)")
    p.add_argument("--socket-name", default=env("SOCKET_NAME", "grpcio-widget.sock"),
                   help="file name of the plugin socket in the plugin dir (env SOCKET_NAME)")
    p.add_argument("--rescan-interval", type=float, default=float(env("RESCAN_INTERVAL", "1.0")),
                   help="seconds between sysfs scans and kubelet checks (env RESCAN_INTERVAL)")
    p.add_argument("--stubs", default=env("STUBS_DIR", os.path.dirname(os.path.abspath(__file__))),
                   help="directory with deviceplugin_pb2*.py (env STUBS_DIR)")
    args = p.parse_args(argv)
    m = re.fullmatch(r"([0-9a-fA-F]{4}):([0-9a-fA-F]{4})", args.usb)
    if not m:
        p.error(f"--usb {args.usb!r}: expected vendor:product as 4 hex digits each, e.g. 1234:5678")
    args.vendor, args.product = m.group(1).lower(), m.group(2).lower()
    return args


class UsbDevice:
    """One USB device from sysfs: its id (the sysfs name, i.e. the port path) and its node."""

    def __init__(self, name, bus, devnum, dev_root):
        self.id = name
        self.bus, self.devnum = bus, devnum
        self.node = f"bus/usb/{bus:03d}/{devnum:03d}"
        self.host_path = os.path.join(dev_root, self.node)

    def health(self):
        return HEALTHY if os.path.exists(self.host_path) else UNHEALTHY

    def key(self):
        return (self.id, self.bus, self.devnum, self.health())


def read_attr(path):
    with open(path) as f:
        return f.read().strip()


def scan(args):
    """The matching devices, sorted by id. Unreadable entries are skipped with a log line."""
    root = os.path.join(args.sysfs_root, "bus/usb/devices")
    try:
        names = sorted(os.listdir(root))
    except OSError as e:
        log.warning("cannot list %s: %s", root, e)
        return []
    found = []
    for name in names:
        if ":" in name:  # an interface (1-2:1.0), not a device
            continue
        d = os.path.join(root, name)
        try:
            if read_attr(os.path.join(d, "idVendor")).lower() != args.vendor:
                continue
            if read_attr(os.path.join(d, "idProduct")).lower() != args.product:
                continue
            bus = int(read_attr(os.path.join(d, "busnum")))
            devnum = int(read_attr(os.path.join(d, "devnum")))
        except (OSError, ValueError) as e:
            log.warning("skipping USB device %s: %s", d, e)
            continue
        found.append(UsbDevice(name, bus, devnum, args.dev_root))
    return found


class Devices:
    """The current device set; ListAndWatch streams wait on it for changes."""

    def __init__(self):
        self.cond = threading.Condition()
        self.version = 0
        self.devices = []

    def update(self, devices):
        with self.cond:
            if [d.key() for d in devices] == [d.key() for d in self.devices]:
                return False
            self.devices = devices
            self.version += 1
            self.cond.notify_all()
            return True

    def snapshot(self):
        with self.cond:
            return self.version, list(self.devices)

    def wait_change(self, seen_version, timeout):
        with self.cond:
            self.cond.wait_for(lambda: self.version != seen_version, timeout)


def make_servicer(pb, rpc, args, devices, generation_stop):
    env_name = "USB_RESOURCE_" + re.sub(r"[^A-Za-z0-9]", "_", args.resource).upper()

    class Plugin(rpc.DevicePluginServicer):
        def GetDevicePluginOptions(self, request, context):
            return pb.DevicePluginOptions()

        def ListAndWatch(self, request, context):
            version = None
            while context.is_active() and not generation_stop.is_set():
                current, devs = devices.snapshot()
                if current != version:
                    version = current
                    log.info("ListAndWatch: %d device(s): %s", len(devs),
                             ", ".join(f"{d.id} {d.health()}" for d in devs) or "none")
                    yield pb.ListAndWatchResponse(devices=[
                        pb.Device(ID=d.id, health=d.health()) for d in devs])
                devices.wait_change(version, timeout=0.5)

        def GetPreferredAllocation(self, request, context):
            return pb.PreferredAllocationResponse(container_responses=[
                pb.ContainerPreferredAllocationResponse(
                    deviceIDs=list(r.must_include_deviceIDs) + [
                        i for i in r.available_deviceIDs if i not in r.must_include_deviceIDs
                    ][:max(0, r.allocation_size - len(r.must_include_deviceIDs))])
                for r in request.container_requests])

        def Allocate(self, request, context):
            _, devs = devices.snapshot()
            by_id = {d.id: d for d in devs}
            responses = []
            for creq in request.container_requests:
                chosen = []
                for i in creq.devices_ids:
                    d = by_id.get(i)
                    if d is None:
                        context.abort(grpc.StatusCode.NOT_FOUND,
                                      f"resource {args.resource}: device {i} is not present")
                    if d.health() != HEALTHY:
                        context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                      f"resource {args.resource}: device {i} has no node {d.host_path}")
                    chosen.append(d)
                log.info("Allocate: %s", ", ".join(d.id for d in chosen))
                responses.append(pb.ContainerAllocateResponse(
                    envs={env_name: ",".join(f"{d.bus}:{d.devnum}" for d in chosen)},
                    devices=[pb.DeviceSpec(container_path="/dev/" + d.node, host_path=d.host_path,
                                           permissions="mrw") for d in chosen]))
            return pb.AllocateResponse(container_responses=responses)

        def PreStartContainer(self, request, context):
            return pb.PreStartContainerResponse()

    return Plugin()


def socket_id(path):
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except FileNotFoundError:
        return None


class Generation:
    """One socket's life: serve it, register; stopped when the kubelet restarts."""

    def __init__(self, pb, rpc, args, devices):
        self.socket = os.path.join(args.plugin_dir, args.socket_name)
        if os.path.lexists(self.socket):
            os.unlink(self.socket)
        self.stop_event = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        rpc.add_DevicePluginServicer_to_server(
            make_servicer(pb, rpc, args, devices, self.stop_event), self.server)
        if self.server.add_insecure_port("unix://" + os.path.abspath(self.socket)) == 0:
            raise OSError(f"cannot serve on {self.socket}")
        self.server.start()
        os.chmod(self.socket, 0o600)
        self.socket_id = socket_id(self.socket)
        self.kubelet_id = None
        log.info("serving %s on %s", args.resource, self.socket)

    def register(self, pb, rpc, args):
        kubelet = os.path.join(args.plugin_dir, "kubelet.sock")
        kubelet_id = socket_id(kubelet)
        if kubelet_id is None:
            return False
        # grpc C-core sends the percent-encoded socket path as :authority; the real kubelet
        # (grpc-go) accepts it, and so must any kubelet this plugin is tested against.
        with grpc.insecure_channel("unix://" + os.path.abspath(kubelet)) as channel:
            try:
                rpc.RegistrationStub(channel).Register(pb.RegisterRequest(
                    version=API_VERSION, endpoint=args.socket_name, resource_name=args.resource,
                    options=pb.DevicePluginOptions()), timeout=10)
            except grpc.RpcError as e:
                log.warning("Register with %s failed: %s: %s", kubelet, e.code().name, e.details())
                return False
        self.kubelet_id = kubelet_id
        log.info("registered %s with %s", args.resource, kubelet)
        return True

    def kubelet_restarted(self, args):
        """The kubelet deletes plugin sockets when it starts and creates a new kubelet.sock."""
        kubelet = socket_id(os.path.join(args.plugin_dir, "kubelet.sock"))
        return socket_id(self.socket) != self.socket_id or (
            kubelet is not None and kubelet != self.kubelet_id)

    def stop(self, remove_socket):
        # Streams end first, so the kubelet never sees two of ours at once.
        self.stop_event.set()
        self.server.stop(grace=1).wait()
        if remove_socket and socket_id(self.socket) == self.socket_id:
            os.unlink(self.socket)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    sys.path.insert(0, args.stubs)
    try:
        import deviceplugin_pb2 as pb
        import deviceplugin_pb2_grpc as rpc
    except ImportError as e:
        sys.exit(f"no stubs in {args.stubs} ({e}); generate them, see README.md")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())

    devices = Devices()
    devices.update(scan(args))
    os.makedirs(args.plugin_dir, exist_ok=True)
    generation = Generation(pb, rpc, args, devices)
    registered = generation.register(pb, rpc, args)
    while not stop.wait(args.rescan_interval):
        if devices.update(scan(args)):
            log.info("device set changed")
        if registered and generation.kubelet_restarted(args):
            log.info("kubelet restarted: serving a new socket and registering again")
            generation.stop(remove_socket=False)
            generation = Generation(pb, rpc, args, devices)
            registered = False
        if not registered:
            registered = generation.register(pb, rpc, args)
    log.info("stopping")
    generation.stop(remove_socket=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
