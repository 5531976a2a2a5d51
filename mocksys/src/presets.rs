//! Common devices by name, so a host file can say `preset: tesla-t4`.
//!
//! A preset fills identity, class, the vendor driver and mediated types; any field the host file
//! gives explicitly overrides the preset's.

use crate::spec::{MdevTypeSpec, UsbSpeed};

/// A PCI device model.
#[derive(Debug, Clone, Copy)]
pub struct PciPreset {
    pub name: &'static str,
    pub vendor: u16,
    pub device: u16,
    pub class: u32,
    pub subsystem: (u16, u16),
    pub revision: u8,
    /// The vendor driver a real host binds it to.
    pub driver: Option<&'static str>,
    /// (type id, name, instances on an idle parent).
    pub mdev_types: &'static [(&'static str, &'static str, u32)],
    pub total_vfs: u16,
    pub vf_device: Option<u16>,
}

impl PciPreset {
    pub fn mdev_type_specs(&self) -> Vec<MdevTypeSpec> {
        self.mdev_types
            .iter()
            .map(|(id, name, max)| MdevTypeSpec {
                id: (*id).to_owned(),
                name: (*name).to_owned(),
                max_instances: *max,
                description: Some(describe(name, *max)),
                device_api: "vfio-pci".to_owned(),
            })
            .collect()
    }
}

fn describe(name: &str, max: u32) -> String {
    // GRID descriptions carry the frame buffer; a 16 GB board split `max` ways.
    let fb = 16384 / max.max(1);
    format!(
        "num_heads=4, frl_config=60, framebuffer={fb}M, max_resolution=5120x2880, max_instance={max} ({name})"
    )
}

/// A USB device model.
#[derive(Debug, Clone, Copy)]
pub struct UsbPreset {
    pub name: &'static str,
    pub vendor: u16,
    pub product_id: u16,
    pub bcd_device: u16,
    pub manufacturer: Option<&'static str>,
    pub product: Option<&'static str>,
    pub serial: Option<&'static str>,
    pub speed: UsbSpeed,
    pub class: u8,
    pub interface_class: u8,
}

/// The Tesla T4 GRID types (third-party table; fine for simulation).
const T4_TYPES: &[(&str, &str, u32)] = &[
    ("nvidia-222", "GRID T4-1B", 16),
    ("nvidia-223", "GRID T4-2B", 8),
    ("nvidia-224", "GRID T4-2B4", 8),
    ("nvidia-225", "GRID T4-1A", 16),
    ("nvidia-226", "GRID T4-2A", 8),
    ("nvidia-227", "GRID T4-4A", 4),
    ("nvidia-228", "GRID T4-8A", 2),
    ("nvidia-229", "GRID T4-16A", 1),
    ("nvidia-230", "GRID T4-1Q", 16),
    ("nvidia-231", "GRID T4-2Q", 8),
    ("nvidia-232", "GRID T4-4Q", 4),
    ("nvidia-233", "GRID T4-8Q", 2),
    ("nvidia-234", "GRID T4-16Q", 1),
    ("nvidia-252", "GRID T4-1B4", 16),
    ("nvidia-319", "GRID T4-4C", 4),
    ("nvidia-320", "GRID T4-8C", 2),
    ("nvidia-321", "GRID T4-16C", 1),
];

/// Intel GVT-g types: instance counts share the GPU's resources (core-counted).
const GVT_TYPES: &[(&str, &str, u32)] = &[
    ("i915-GVTg_V5_1", "GVTg_V5_1", 1),
    ("i915-GVTg_V5_2", "GVTg_V5_2", 2),
    ("i915-GVTg_V5_4", "GVTg_V5_4", 4),
    ("i915-GVTg_V5_8", "GVTg_V5_8", 8),
];

const NONE: &[(&str, &str, u32)] = &[];

pub const PCI_PRESETS: &[PciPreset] = &[
    PciPreset {
        name: "tesla-t4",
        vendor: 0x10de,
        device: 0x1eb8,
        class: 0x030200,
        subsystem: (0x10de, 0x12a2),
        revision: 0xa1,
        driver: Some("nvidia"),
        mdev_types: T4_TYPES,
        total_vfs: 0,
        vf_device: None,
    },
    PciPreset {
        name: "intel-qat",
        vendor: 0x8086,
        device: 0x6f54,
        class: 0x0b4000,
        subsystem: (0x8086, 0x0000),
        revision: 0x03,
        driver: Some("qat_c62x"),
        mdev_types: NONE,
        total_vfs: 16,
        vf_device: Some(0x6f55),
    },
    PciPreset {
        name: "qemu-nvme",
        vendor: 0x8086,
        device: 0x5845,
        class: 0x010802,
        subsystem: (0x1af4, 0x1100),
        revision: 0x02,
        driver: Some("nvme"),
        mdev_types: NONE,
        total_vfs: 0,
        vf_device: None,
    },
    PciPreset {
        name: "intel-gvt",
        vendor: 0x8086,
        device: 0x3e92,
        class: 0x030000,
        subsystem: (0x8086, 0x2212),
        revision: 0x00,
        driver: Some("i915"),
        mdev_types: GVT_TYPES,
        total_vfs: 0,
        vf_device: None,
    },
    PciPreset {
        name: "virtio-net",
        vendor: 0x1af4,
        device: 0x1041,
        class: 0x020000,
        subsystem: (0x1af4, 0x1100),
        revision: 0x01,
        driver: Some("virtio-pci"),
        mdev_types: NONE,
        total_vfs: 0,
        vf_device: None,
    },
    PciPreset {
        name: "intel-x710",
        vendor: 0x8086,
        device: 0x1572,
        class: 0x020000,
        subsystem: (0x8086, 0x0000),
        revision: 0x02,
        driver: Some("i40e"),
        mdev_types: NONE,
        total_vfs: 64,
        vf_device: Some(0x154c),
    },
];

pub const USB_PRESETS: &[UsbPreset] = &[
    UsbPreset {
        name: "qemu-usb-storage",
        vendor: 0x46f4,
        product_id: 0x0001,
        bcd_device: 0x0000,
        manufacturer: Some("QEMU"),
        product: Some("QEMU USB HARDDRIVE"),
        serial: Some("1-0000:00:14.0-1"),
        speed: UsbSpeed::High,
        class: 0x00,
        interface_class: 0x08,
    },
    UsbPreset {
        name: "qemu-usb-tablet",
        vendor: 0x0627,
        product_id: 0x0001,
        bcd_device: 0x0000,
        manufacturer: Some("QEMU"),
        product: Some("QEMU USB Tablet"),
        serial: Some("28754-0000:00:14.0-1"),
        speed: UsbSpeed::Full,
        class: 0x00,
        interface_class: 0x03,
    },
];

pub fn pci_preset(name: &str) -> Option<&'static PciPreset> {
    PCI_PRESETS.iter().find(|p| p.name == name)
}

pub fn usb_preset(name: &str) -> Option<&'static UsbPreset> {
    USB_PRESETS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tesla_t4_offers_the_full_grid_table() {
        let t4 = pci_preset("tesla-t4").unwrap();
        assert_eq!((t4.vendor, t4.device, t4.class), (0x10de, 0x1eb8, 0x030200));
        let types = t4.mdev_type_specs();
        assert_eq!(types.len(), 17);
        let q1 = types.iter().find(|t| t.id == "nvidia-230").unwrap();
        assert_eq!((q1.name.as_str(), q1.max_instances), ("GRID T4-1Q", 16));
        assert!(types.iter().all(|t| t.driver() == "nvidia"));
    }

    #[test]
    fn preset_names_are_unique() {
        let mut names: Vec<_> = PCI_PRESETS.iter().map(|p| p.name).collect();
        names.extend(USB_PRESETS.iter().map(|p| p.name));
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
