use super::*;
use crate::kernel::KernelError;
use crate::spec::{UsbSpec, UsbSpeed};

fn stick(port: &str) -> UsbSpec {
    UsbSpec {
        bus: 1,
        port: port.into(),
        vendor: 0x46f4,
        product_id: 0x0001,
        bcd_device: 0,
        manufacturer: Some("QEMU".into()),
        product: None,
        serial: None,
        speed: UsbSpeed::High,
        class: 0,
        interface_class: 8,
        devnum: None,
    }
}

#[test]
fn a_replugged_device_gets_a_new_devnum() {
    let mut k = kernel("");
    k.plug_usb(stick("1")).unwrap();
    let first = k.usb["1-1"].devnum;
    assert_eq!(first, 2);
    k.unplug_usb("1-1").unwrap();
    k.plug_usb(stick("1")).unwrap();
    assert_eq!(k.usb["1-1"].devnum, 3);
}

#[test]
fn usb_plug_brings_the_xhci_controller_root_hub_and_uevents() {
    let mut k = kernel("");
    k.plug_usb(stick("1")).unwrap();
    assert!(k.pci.contains_key(&addr("0000:00:14.0")));
    let ev = k.take_events();
    let dev = ev
        .iter()
        .find(|e| e.devpath.ends_with("/usb1/1-1") && e.action == "add")
        .unwrap();
    assert_eq!(dev.devpath, "/devices/pci0000:00/0000:00:14.0/usb1/1-1");
    let want = [
        ("MAJOR", "189"),
        ("MINOR", "1"),
        ("DEVNAME", "bus/usb/001/002"),
        ("DEVTYPE", "usb_device"),
        ("DRIVER", "usb"),
        ("PRODUCT", "46f4/1/0"),
        ("TYPE", "0/0/0"),
        ("BUSNUM", "001"),
        ("DEVNUM", "002"),
    ];
    for (key, v) in want {
        assert_eq!(dev.get(key), Some(v), "{key}");
    }
    let nodes: Vec<_> = k
        .dev_nodes()
        .into_iter()
        .map(|n| (n.path, n.major, n.minor))
        .collect();
    assert!(nodes.contains(&("bus/usb/001/001".into(), 189, 0)));
    assert!(nodes.contains(&("bus/usb/001/002".into(), 189, 1)));
}

#[test]
fn unplugging_a_hub_unplugs_what_is_behind_it() {
    let mut k = kernel("");
    let mut hub = stick("1");
    hub.class = 9;
    k.plug_usb(hub).unwrap();
    k.plug_usb(stick("1.4")).unwrap();
    assert_eq!(
        k.usb_path("1-1.4"),
        "devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.4"
    );
    k.unplug_usb("1-1").unwrap();
    assert!(k.usb.is_empty());
    assert!(k.dev_nodes().iter().all(|n| !n.path.starts_with("bus/usb")));
}

#[test]
fn usb_plug_and_unplug_errors_name_the_device() {
    let mut k = kernel("");
    k.plug_usb(stick("1")).unwrap();
    assert_eq!(
        k.plug_usb(stick("1")),
        Err(KernelError::UsbExists("1-1".into()))
    );
    assert_eq!(
        k.unplug_usb("1-9"),
        Err(KernelError::NoSuchUsb("1-9".into()))
    );
    assert_eq!(
        k.plug_usb(stick("3.1")),
        Err(KernelError::NoHub {
            port: "1-3.1".into(),
            hub: "1-3".into()
        })
    );
}
