//! Nothing outside the sysfs root is followed, and no device node outside the dev root is
//! handed out, whatever sysfs says.

mod support;

use std::fs;
use std::os::unix::fs::symlink;

use hostdev_agent::discovery::discover;
use hostdev_agent::inventory::{Inventory, Skipped};
use support::{FakeHost, Pci, config};

const T4: &str = "permittedHostDevices:
  pciHostDevices:
  - pciVendorSelector: 10DE:1EB8
    resourceName: nvidia.com/T4
";
const STORAGE: &str = "permittedHostDevices:\n  usb:\n  - resourceName: kubevirt.io/storage\n    selectors: [{vendor: '46f4', product: '0001'}]\n";

fn skipped<'a>(inv: &'a Inventory, device: &str) -> &'a Skipped {
    inv.skipped
        .iter()
        .find(|s| s.device == device)
        .unwrap_or_else(|| panic!("{device} not skipped; skipped: {:#?}", inv.skipped))
}

/// A fake device outside the sysfs root that a hostile link could lead to.
fn outside_device(host: &FakeHost) -> std::path::PathBuf {
    let out = host.dir.path().join("outside/0000:99:00.0");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("uevent"), "PCI_ID=10DE:1EB8\n").unwrap();
    fs::write(out.join("numa_node"), "0\n").unwrap();
    out
}

#[test]
fn devname_escaping_the_dev_root_is_rejected_and_reported() {
    for (bad, why) in [
        ("../../etc/shadow", "\"..\" component"),
        ("/etc/shadow", "is absolute"),
        ("bus/usb/../../../etc/shadow", "\"..\" component"),
        ("bus//usb/001/002", "\"\" component"),
        ("mem", "is not the node of bus 1 device 2 (bus/usb/001/002)"),
        ("bus/usb/001/003", "is not the node of bus 1 device 2"),
    ] {
        let host = FakeHost::new();
        host.add_usb("1-1", 0x46f4, 0x0001, 2, Some(bad));
        let inv = discover(&host.paths, &config(STORAGE));
        assert!(
            inv.resources["kubevirt.io/storage"].devices.is_empty(),
            "{bad}"
        );
        let reason = &skipped(&inv, "usb 1-1").reason;
        assert!(
            reason.contains("unsafe device node") && reason.contains(why),
            "{bad}: {reason}"
        );
    }
}

#[test]
fn bus_link_leaving_the_root_is_not_followed() {
    let host = FakeHost::new();
    outside_device(&host);
    symlink(
        "../../../../outside/0000:99:00.0",
        host.sys().join("bus/pci/devices/0000:99:00.0"),
    )
    .unwrap();
    symlink("/etc", host.sys().join("bus/pci/devices/0000:98:00.0")).unwrap();
    let inv = discover(&host.paths, &config(T4));
    assert!(
        skipped(&inv, "pci 0000:99:00.0")
            .reason
            .contains("leaves the root")
    );
    assert!(
        skipped(&inv, "pci 0000:98:00.0")
            .reason
            .contains("leaves the root")
    );
}

#[test]
fn intermediate_directory_link_out_of_the_root_is_refused_by_the_kernel() {
    let host = FakeHost::new();
    outside_device(&host);
    // The bus link itself looks fine lexically; a directory on the way is a link outside.
    symlink("../../outside", host.sys().join("devices/escape")).unwrap();
    symlink(
        "../../../devices/escape/0000:99:00.0",
        host.sys().join("bus/pci/devices/0000:99:00.0"),
    )
    .unwrap();
    let inv = discover(&host.paths, &config(T4));
    let reason = &skipped(&inv, "pci 0000:99:00.0").reason;
    assert!(reason.contains("EXDEV"), "{reason}");
}

#[test]
fn driver_and_group_links_leaving_the_root_are_refused() {
    let host = FakeHost::new();
    let dir = host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 1));
    fs::remove_file(dir.join("driver")).unwrap();
    symlink("../../../../../../outside/vfio-pci", dir.join("driver")).unwrap();
    let dir2 = host.add_pci(Pci::vfio("0000:66:00.0", 0x10de, 0x1eb8, 2));
    fs::remove_file(dir2.join("iommu_group")).unwrap();
    symlink("../../../outside/iommu_groups/2", dir2.join("iommu_group")).unwrap();
    let dir3 = host.add_pci(Pci::vfio("0000:67:00.0", 0x10de, 0x1eb8, 3));
    fs::remove_file(dir3.join("iommu_group")).unwrap();
    symlink("/sys/kernel/iommu_groups/3", dir3.join("iommu_group")).unwrap();
    let inv = discover(&host.paths, &config(T4));
    assert!(inv.resources["nvidia.com/T4"].devices.is_empty());
    assert!(
        skipped(&inv, "pci 0000:65:00.0")
            .reason
            .contains("leaves the root")
    );
    assert!(
        skipped(&inv, "pci 0000:66:00.0")
            .reason
            .contains("not kernel/iommu_groups")
    );
    assert!(
        skipped(&inv, "pci 0000:67:00.0")
            .reason
            .contains("leaves the root")
    );
}

#[test]
fn mdev_type_link_leaving_the_root_is_refused() {
    let host = FakeHost::new();
    host.add_mdev_parent("0000:65:00.0", 0, &[("nvidia-230", "GRID T4-1Q", 16)]);
    let uuid = "6f0c0a55-0c4e-4d4b-9a7c-1b1a2f3e4d5c";
    host.add_mdev("0000:65:00.0", uuid, "nvidia-230", 40);
    let mdev = host
        .sys()
        .join(format!("devices/pci0000:00/0000:65:00.0/{uuid}"));
    fs::remove_file(mdev.join("mdev_type")).unwrap();
    symlink("/etc", mdev.join("mdev_type")).unwrap();
    let cfg = config(
        "permittedHostDevices:\n  mediatedDevices:\n  - {mdevNameSelector: GRID T4-1Q, resourceName: nvidia.com/q}\n",
    );
    let inv = discover(&host.paths, &cfg);
    assert!(inv.resources["nvidia.com/q"].devices.is_empty());
    assert!(
        skipped(&inv, &format!("mdev {uuid}"))
            .reason
            .contains("leaves the root")
    );
}

/// The same containment with openat2 (kernel) and without it (user-space walk).
#[test]
fn sysdir_containment_holds_with_and_without_openat2() {
    use hostdev_agent::sysfs::{RelPath, SysDir};
    use nix::errno::Errno;
    let host = FakeHost::new();
    host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 1));
    outside_device(&host);
    symlink("../../outside", host.sys().join("devices/escape")).unwrap();
    symlink("/etc", host.sys().join("devices/absolute")).unwrap();
    let kernel = host.paths.open_sysfs().unwrap();
    let user = SysDir::open_root_without_openat2(host.sys()).unwrap();
    for (mode, root) in [("openat2", kernel), ("user space", user)] {
        let bus = root
            .open_from_root(&RelPath::new("bus/pci/devices").unwrap())
            .unwrap();
        let dev = bus
            .follow("0000:65:00.0")
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(
            dev.rel().as_str(),
            "devices/pci0000:00/0000:65:00.0",
            "{mode}"
        );
        assert!(
            dev.read("uevent").unwrap().contains("PCI_ID=10DE:1EB8"),
            "{mode}"
        );
        assert_eq!(
            dev.resolve_link("driver").unwrap().as_str(),
            "bus/pci/drivers/vfio-pci",
            "{mode}"
        );
        // An open through a link that leaves the root fails with EXDEV, as RESOLVE_BENEATH does.
        let err = root
            .open_from_root(&RelPath::new("devices/escape/0000:99:00.0").unwrap())
            .unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EXDEV), "{mode}: {err}");
        let err = root
            .open_from_root(&RelPath::new("devices/absolute").unwrap())
            .unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EXDEV), "{mode}: {err}");
        // subdir() refuses links altogether.
        let devices = root
            .open_from_root(&RelPath::new("devices").unwrap())
            .unwrap();
        assert_eq!(
            devices.subdir("escape").unwrap_err().errno(),
            Some(Errno::ELOOP),
            "{mode}"
        );
        // exists() does not follow a final link, so a dangling or escaping link still "exists".
        assert!(devices.exists("escape"), "{mode}");
        assert!(!devices.exists("nothing-here"), "{mode}");
        // `..` cannot climb above the root.
        assert_eq!(
            root.read("../etc/passwd").unwrap_err().errno(),
            Some(Errno::EXDEV),
            "{mode}"
        );
        let names = root.list(Some("bus/pci/devices")).unwrap();
        assert_eq!(names, ["0000:65:00.0"], "{mode}");
    }
}

#[test]
fn lexical_join_and_devname_checks() {
    use hostdev_agent::sysfs::{RelPath, check_dev_relative, lexical_join};
    let dir = RelPath::new("bus/pci/devices").unwrap();
    assert_eq!(
        lexical_join(&dir, "../../../devices/pci0000:00/0000:00:01.0")
            .unwrap()
            .as_str(),
        "devices/pci0000:00/0000:00:01.0"
    );
    assert_eq!(lexical_join(&dir, "../../../../etc"), None);
    assert_eq!(lexical_join(&dir, "/etc"), None);
    assert_eq!(
        lexical_join(&dir, "./x/./y").unwrap().as_str(),
        "bus/pci/devices/x/y"
    );
    assert_eq!(
        check_dev_relative("bus/usb/001/002").unwrap(),
        "bus/usb/001/002"
    );
    assert!(check_dev_relative("").is_err());
    assert!(check_dev_relative("bus/usb/./002").is_err());
}

/// Names sysfs gives devices end up in comma-joined env vars and libvirt XML: only the
/// kernel's own forms are accepted.
#[test]
fn device_names_not_in_kernel_form_are_refused() {
    let host = FakeHost::new();
    let real = host.add_pci(Pci::vfio("0000:65:00.0", 0x10de, 0x1eb8, 1));
    symlink(
        &real,
        host.sys().join("bus/pci/devices/0000:65:00.0,0000:66:00.0"),
    )
    .unwrap();
    host.add_mdev_parent("0000:66:00.0", 0, &[("nvidia-230", "GRID T4-1Q", 16)]);
    host.add_mdev(
        "0000:66:00.0",
        "6f0c0a55-0c4e-4d4b-9a7c-1b1a2f3e4d5c",
        "nvidia-230",
        40,
    );
    symlink(
        "../../../devices/pci0000:00/0000:66:00.0/6f0c0a55-0c4e-4d4b-9a7c-1b1a2f3e4d5c",
        host.sys().join("bus/mdev/devices/x,y"),
    )
    .unwrap();
    host.add_usb("1-1", 0x46f4, 0x0001, 2, None);
    symlink(
        "../../../devices/pci0000:00/0000:00:14.0/usb1/1-1",
        host.sys().join("bus/usb/devices/1-1,2-2"),
    )
    .unwrap();
    let cfg = support::config_all(&format!(
        "{T4}  mediatedDevices:\n  - {{mdevNameSelector: GRID T4-1Q, resourceName: nvidia.com/q}}\n  usb:\n  - resourceName: kubevirt.io/storage\n    selectors: [{{vendor: '46f4', product: '0001'}}]\n"
    ));
    let inv = discover(&host.paths, &cfg);
    assert_eq!(inv.resources["nvidia.com/T4"].devices.len(), 1);
    assert_eq!(inv.resources["nvidia.com/q"].devices.len(), 1);
    assert_eq!(inv.resources["kubevirt.io/storage"].devices.len(), 1);
    assert!(
        skipped(&inv, "pci 0000:65:00.0,0000:66:00.0")
            .reason
            .contains("is not a PCI address")
    );
    assert!(
        skipped(&inv, "mdev x,y")
            .reason
            .contains("is not a lower-case hyphenated UUID")
    );
    assert!(
        skipped(&inv, "usb 1-1,2-2")
            .reason
            .contains("is not a USB port path")
    );
}
