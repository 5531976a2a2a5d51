//! USB Allocate gives the host device node to qemu (KubeVirt: `safepath.ChownAtNoFollow` to
//! 107:107), never through a symlink.

mod support;

use std::os::unix::fs::MetadataExt;

use hostdev_agent::discovery::discover;
use hostdev_agent::plugin::allocate::{AllocateError, allocate_container};
use hostdev_agent::plugin::{DevRoot, DeviceOwner};
use support::{FakeHost, config};

const USB: &str = "permittedHostDevices:
  usb:
  - resourceName: kubevirt.io/storage
    selectors:
    - {vendor: \"46f4\", product: \"0001\"}
";

fn host_with_stick() -> FakeHost {
    let host = FakeHost::new();
    host.add_usb("1-1", 0x46f4, 0x0001, 2, None);
    host
}

fn allocate(host: &FakeHost, owner: DeviceOwner) -> Result<(), AllocateError> {
    let inv = discover(&host.paths, &config(USB));
    let resource = &inv.resources["kubevirt.io/storage"];
    assert_eq!(resource.devices.len(), 1, "{inv:?}");
    let ids = vec![resource.devices[0].id.clone()];
    let root = DevRoot::new(host.dev()).with_usb_owner(Some(owner));
    allocate_container(resource, &ids, &root).map(|_| ())
}

fn require_root() {
    // chown to another user needs CAP_CHOWN; without it this test cannot say anything.
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "this test chowns files and must run as root"
    );
}

#[test]
fn usb_allocate_chowns_the_node_to_qemu() {
    require_root();
    let host = host_with_stick();
    let node = host.dev().join("bus/usb/001/002");
    allocate(&host, DeviceOwner::default()).unwrap();
    let meta = std::fs::symlink_metadata(&node).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (107, 107));
    // The flag's value is used, not a constant.
    allocate(
        &host,
        DeviceOwner {
            uid: 4242,
            gid: 4343,
        },
    )
    .unwrap();
    let meta = std::fs::symlink_metadata(&node).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
}

#[test]
fn usb_allocate_never_follows_a_symlink() {
    require_root();
    let host = host_with_stick();
    let victim = host.dev().join("victim");
    std::fs::write(&victim, "").unwrap();
    let node = host.dev().join("bus/usb/001/002");
    std::fs::remove_file(&node).unwrap();
    std::os::unix::fs::symlink(&victim, &node).unwrap();
    let err = allocate(&host, DeviceOwner::default());
    let victim_meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(victim_meta.uid(), 0, "the link's target was chowned");
    // fchownat(AT_SYMLINK_NOFOLLOW) changes the link itself, never its target.
    if let Ok(()) = err {
        let link = std::fs::symlink_metadata(&node).unwrap();
        assert_eq!(link.uid(), 107);
    }

    // A directory on the path replaced by a link is refused outright.
    let host = host_with_stick();
    let elsewhere = host.dev().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("002"), "").unwrap();
    let bus = host.dev().join("bus/usb/001");
    std::fs::remove_dir_all(&bus).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &bus).unwrap();
    let err = allocate(&host, DeviceOwner::default()).unwrap_err();
    assert!(
        matches!(&err, AllocateError::Chown { path, .. } if path.ends_with("bus/usb/001/002"))
            || matches!(&err, AllocateError::Unhealthy { .. }),
        "{err}"
    );
    assert_eq!(std::fs::metadata(elsewhere.join("002")).unwrap().uid(), 0);
}
