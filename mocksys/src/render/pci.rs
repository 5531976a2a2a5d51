//! PCI functions, their drivers, IOMMU groups, SR-IOV links and mediated devices.

use super::{Renderer, pci_config_space};
use crate::kernel::{Attr, Kernel, PciFunction};
use crate::spec::PciAddress;

fn uevent_text(env: &[(String, String)]) -> String {
    let mut s = String::with_capacity(160);
    for (k, v) in env {
        s.push_str(k);
        s.push('=');
        s.push_str(v);
        s.push('\n');
    }
    s
}

pub(super) fn render_pci(r: &mut Renderer, k: &Kernel) {
    for f in k.pci.values() {
        function(r, k, f);
    }
}

fn function(r: &mut Renderer, k: &Kernel, f: &PciFunction) {
    let a = f.address();
    let bdf = a.to_string();
    let dir = k.pci_path(a);
    let s = &f.spec;

    r.ro(format!("{dir}/vendor"), format!("0x{:04x}\n", s.vendor));
    r.ro(format!("{dir}/device"), format!("0x{:04x}\n", s.device));
    r.ro(
        format!("{dir}/subsystem_vendor"),
        format!("0x{:04x}\n", s.subsystem_vendor),
    );
    r.ro(
        format!("{dir}/subsystem_device"),
        format!("0x{:04x}\n", s.subsystem_device),
    );
    r.ro(format!("{dir}/class"), format!("0x{:06x}\n", s.class));
    r.ro(format!("{dir}/revision"), format!("0x{:02x}\n", s.revision));
    r.ro(format!("{dir}/numa_node"), format!("{}\n", s.numa_node));
    r.ro(format!("{dir}/irq"), format!("{}\n", f.irq));
    r.ro(format!("{dir}/local_cpulist"), local_cpulist(s.numa_node));
    r.ro(format!("{dir}/modalias"), format!("{}\n", f.modalias()));
    r.ro(format!("{dir}/enable"), "1\n");
    r.ro(format!("{dir}/resource"), resource_lines());
    r.rw(
        format!("{dir}/uevent"),
        uevent_text(&f.uevent_env()),
        Attr::PciUevent(a),
    );
    let ov = f.driver_override.as_deref().unwrap_or("(null)");
    r.rw(
        format!("{dir}/driver_override"),
        format!("{ov}\n"),
        Attr::DriverOverride(a),
    );
    r.wo(format!("{dir}/remove"), Attr::DeviceRemove(a));
    r.wo(format!("{dir}/rescan"), Attr::Rescan);
    let secondary = secondary_bus(k, a);
    r.b.binary(
        &format!("{dir}/config"),
        0o644,
        pci_config_space(f, secondary).to_vec(),
    );
    r.attrs.insert(format!("{dir}/config"), Attr::Ignored);
    r.link(format!("{dir}/subsystem"), "bus/pci");
    r.link(format!("bus/pci/devices/{bdf}"), &dir);

    if let Some(d) = &f.driver {
        let ddir = format!("bus/pci/drivers/{d}");
        r.link(format!("{dir}/driver"), &ddir);
        r.link(format!("{ddir}/{bdf}"), &dir);
    }
    if let Some(n) = f.vfio_cdev {
        let cdir = format!("{dir}/vfio-dev/vfio{n}");
        r.ro(
            format!("{cdir}/dev"),
            format!("{}:{n}\n", crate::kernel::VFIO_CDEV_MAJOR),
        );
        r.ro(
            format!("{cdir}/uevent"),
            format!(
                "MAJOR={}\nMINOR={n}\nDEVNAME=vfio/devices/vfio{n}\n",
                crate::kernel::VFIO_CDEV_MAJOR
            ),
        );
        r.link(format!("{cdir}/device"), &dir);
        r.link(format!("{cdir}/subsystem"), "class/vfio-dev");
        r.link(format!("class/vfio-dev/vfio{n}"), &cdir);
    }
    if let Some(g) = f.iommu_group {
        let gdir = format!("kernel/iommu_groups/{g}");
        r.link(format!("{dir}/iommu_group"), &gdir);
        r.link(format!("{gdir}/devices/{bdf}"), &dir);
    }
    if f.is_pf() {
        r.ro(
            format!("{dir}/sriov_totalvfs"),
            format!("{}\n", s.total_vfs),
        );
        r.rw(
            format!("{dir}/sriov_numvfs"),
            format!("{}\n", f.num_vfs),
            Attr::SriovNumvfs(a),
        );
        r.ro(format!("{dir}/sriov_offset"), "8\n");
        r.ro(format!("{dir}/sriov_stride"), "1\n");
        r.ro(
            format!("{dir}/sriov_vf_device"),
            format!("{:x}\n", s.vf_device.unwrap_or(s.device)),
        );
        r.rw(
            format!("{dir}/sriov_drivers_autoprobe"),
            "1\n",
            Attr::Ignored,
        );
        for (i, vf) in k.vfs_of(a).into_iter().enumerate() {
            if k.pci.contains_key(&vf) {
                r.link(format!("{dir}/virtfn{i}"), &k.pci_path(vf));
            }
        }
    }
    if let Some(pf) = f.physfn
        && k.pci.contains_key(&pf)
    {
        r.link(format!("{dir}/physfn"), &k.pci_path(pf));
    }
    mdev_parent(r, k, a, &dir);
}

fn mdev_parent(r: &mut Renderer, k: &Kernel, a: PciAddress, dir: &str) {
    let types = k.registered_types(a);
    if types.is_empty() {
        return;
    }
    r.link(format!("class/mdev_bus/{a}"), dir);
    for t in types {
        let tdir = format!("{dir}/mdev_supported_types/{}", t.id);
        r.ro(format!("{tdir}/name"), format!("{}\n", t.name));
        r.ro(format!("{tdir}/device_api"), format!("{}\n", t.device_api));
        r.ro(
            format!("{tdir}/available_instances"),
            format!("{}\n", k.available_instances(a, &t.id)),
        );
        if let Some(d) = &t.description {
            r.ro(format!("{tdir}/description"), format!("{d}\n"));
        }
        r.wo(format!("{tdir}/create"), Attr::MdevCreate(a, t.id.clone()));
        r.dir(&format!("{tdir}/devices"));
    }
    for m in k.mdevs_of(a) {
        let mdir = format!("{dir}/{}", m.uuid);
        let tdir = format!("{dir}/mdev_supported_types/{}", m.type_id);
        r.link(format!("{mdir}/mdev_type"), &tdir);
        r.link(format!("{tdir}/devices/{}", m.uuid), &mdir);
        r.wo(format!("{mdir}/remove"), Attr::MdevRemove(m.uuid.clone()));
        r.ro(
            format!("{mdir}/uevent"),
            format!("MDEV_TYPE={}\n", m.type_id),
        );
        r.link(format!("{mdir}/subsystem"), "bus/mdev");
        let gdir = format!("kernel/iommu_groups/{}", m.iommu_group);
        r.link(format!("{mdir}/iommu_group"), &gdir);
        r.link(format!("{gdir}/devices/{}", m.uuid), &mdir);
        r.link(format!("bus/mdev/devices/{}", m.uuid), &mdir);
    }
}

/// The bus behind a bridge: the lowest bus of its children, else the next bus number.
fn secondary_bus(k: &Kernel, a: PciAddress) -> u8 {
    k.pci
        .values()
        .filter(|f| f.spec.parent == Some(a))
        .map(|f| f.address().bus)
        .min()
        .unwrap_or(a.bus.wrapping_add(1))
}

fn local_cpulist(numa: i32) -> &'static str {
    // Two sockets of 16 CPUs each; a device without NUMA affinity is local to all of them.
    match numa {
        0 => "0-15\n",
        1 => "16-31\n",
        _ => "0-31\n",
    }
}

fn resource_lines() -> &'static str {
    concat!(
        "0x00000000fd000000 0x00000000fdffffff 0x0000000000040200\n",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000\n",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000\n",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000\n",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000\n",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000\n",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000\n",
    )
}
