// virt-chroot is the lab's stand-in for KubeVirt's virt-chroot helper, for the two subcommands the device manager
// execs (pkg/virt-handler/virt-chroot: CreateMDEVType, RemoveMDEVType):
//
//	virt-chroot --mount /proc/1/ns/mnt create-mdev --type TYPE --parent PARENT --uuid UUID
//	virt-chroot --mount /proc/1/ns/mnt remove-mdev --uuid UUID
//
// It joins the mount namespace given by --mount, waits up to 5 s for the sysfs file to appear (as KubeVirt's does),
// and writes the UUID to /sys/class/mdev_bus/PARENT/mdev_supported_types/TYPE/create, or 1 to
// /sys/bus/mdev/devices/UUID/remove. Other subcommands (mount, umount, exec, selinux, cgroups, tap devices) are
// not provided: nothing the device plugins run uses them. KubeVirt runs it as /usr/bin/virt-chroot (absolute).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

const (
	mdevBusPath   = "/sys/class/mdev_bus"
	mdevDevices   = "/sys/bus/mdev/devices"
	appearTimeout = 5 * time.Second
	appearPoll    = time.Second
)

func init() {
	// The namespace switch below applies to one OS thread; every later syscall must run on that thread.
	runtime.LockOSThread()
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "virt-chroot: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	global := flag.NewFlagSet("virt-chroot", flag.ContinueOnError)
	mountNS := global.String("mount", "", "mount namespace file to join (e.g. /proc/1/ns/mnt)")
	if err := global.Parse(args); err != nil {
		return err
	}
	rest := global.Args()
	if len(rest) == 0 {
		return errors.New("no subcommand (create-mdev, remove-mdev)")
	}
	if *mountNS != "" {
		if err := joinMountNamespace(*mountNS); err != nil {
			return err
		}
	}
	sub := flag.NewFlagSet(rest[0], flag.ContinueOnError)
	mdevType := sub.String("type", "", "mdev type id (e.g. nvidia-222)")
	parent := sub.String("parent", "", "parent device (e.g. 0000:65:00.0)")
	uuid := sub.String("uuid", "", "mdev UUID")
	if err := sub.Parse(rest[1:]); err != nil {
		return err
	}
	switch rest[0] {
	case "create-mdev":
		if *mdevType == "" || *parent == "" || *uuid == "" {
			return errors.New("create-mdev needs --type, --parent and --uuid")
		}
		path := filepath.Join(mdevBusPath, *parent, "mdev_supported_types", *mdevType, "create")
		if err := writeWhenPresent(path, *uuid); err != nil {
			return fmt.Errorf("failed to create mdev type %s: %w", *mdevType, err)
		}
		fmt.Fprintf(out, "Successfully created mdev %s - %s\n", *mdevType, *uuid)
	case "remove-mdev":
		if *uuid == "" {
			return errors.New("remove-mdev needs --uuid")
		}
		path := filepath.Join(mdevDevices, *uuid, "remove")
		if err := writeWhenPresent(path, "1"); err != nil {
			return fmt.Errorf("failed to remove mdev %s: %w", *uuid, err)
		}
		fmt.Fprintf(out, "Successfully removed mdev %s\n", *uuid)
	default:
		return fmt.Errorf("subcommand %q is not provided by the lab's virt-chroot", rest[0])
	}
	return nil
}

func joinMountNamespace(nsPath string) error {
	f, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("failed to open mount namespace: %w", err)
	}
	defer f.Close()
	// This thread shares its filesystem context with the runtime's other threads; it has to get its own before
	// it may join another mount namespace.
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("failed to detach from parent mount namespace: %w", err)
	}
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("failed to join the mount namespace %s: %w", nsPath, err)
	}
	return nil
}

// writeWhenPresent waits for a sysfs attribute (a parent may still be probing) and writes value to it in one write(2),
// the way the kernel's store handlers expect it.
func writeWhenPresent(path, value string) error {
	deadline := time.Now().Add(appearTimeout)
	for {
		_, err := os.Stat(path)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("interface is not available %s: %w", path, err)
		}
		time.Sleep(appearPoll)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("can't open path %s: %w", path, err)
	}
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return fmt.Errorf("can't write to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", path, err)
	}
	return nil
}
