//! Mediated devices: parents registered by their vendor driver, types, instances.

use super::Kernel;
use crate::errno::Errno;
use crate::spec::{MdevTypeSpec, PciAddress};

/// One mediated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mdev {
    /// Lower-case, hyphenated.
    pub uuid: String,
    pub parent: PciAddress,
    pub type_id: String,
    /// A group of its own, allocated at create.
    pub iommu_group: u32,
}

impl Kernel {
    /// The types a function offers now: only while bound to the driver that registers them.
    pub fn registered_types(&self, parent: PciAddress) -> &[MdevTypeSpec] {
        match self.pci.get(&parent) {
            Some(f) if f.driver.is_some() => {
                let d = f.driver.as_deref().unwrap_or_default();
                if f.spec.mdev_types.iter().any(|t| t.driver() == d) {
                    &f.spec.mdev_types
                } else {
                    &[]
                }
            }
            _ => &[],
        }
    }

    /// Mdevs of a parent, in UUID order.
    pub fn mdevs_of(&self, parent: PciAddress) -> impl Iterator<Item = &Mdev> {
        self.mdevs.values().filter(move |m| m.parent == parent)
    }

    /// `available_instances` of a type. NVIDIA: a GPU runs one type at a time, so once any
    /// other type has an instance this one shows 0. Others share the parent's capacity: an
    /// instance of a type offering `n` costs `capacity / n`, capacity being the largest `n`.
    pub fn available_instances(&self, parent: PciAddress, type_id: &str) -> u32 {
        let types = self.registered_types(parent);
        let Some(t) = types.iter().find(|t| t.id == type_id) else {
            return 0;
        };
        if t.driver() == "nvidia" {
            let mut own = 0;
            for m in self.mdevs_of(parent) {
                if m.type_id != type_id {
                    return 0;
                }
                own += 1;
            }
            return t.max_instances.saturating_sub(own);
        }
        let capacity = types.iter().map(|t| t.max_instances).max().unwrap_or(0);
        let cost = |n: u32| capacity.checked_div(n).unwrap_or(capacity.max(1));
        let used: u32 = self
            .mdevs_of(parent)
            .map(|m| {
                types
                    .iter()
                    .find(|t| t.id == m.type_id)
                    .map_or(0, |t| cost(t.max_instances))
            })
            .sum();
        let own_cost = cost(t.max_instances);
        if own_cost == 0 {
            return 0;
        }
        capacity.saturating_sub(used) / own_cost
    }

    /// `mdev_supported_types/<type>/create`.
    pub fn mdev_create(
        &mut self,
        parent: PciAddress,
        type_id: &str,
        data: &[u8],
    ) -> Result<(), Errno> {
        if data.len() != 36 && data.len() != 37 {
            return Err(Errno::EINVAL);
        }
        let text = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        if text.len() != 36 {
            return Err(Errno::EINVAL);
        }
        let uuid = uuid::Uuid::try_parse(text).map_err(|_| Errno::EINVAL)?;
        let uuid = uuid.hyphenated().to_string();
        if !self
            .registered_types(parent)
            .iter()
            .any(|t| t.id == type_id)
        {
            return Err(Errno::ENODEV);
        }
        if self.mdevs.contains_key(&uuid) {
            return Err(Errno::EEXIST);
        }
        if self.available_instances(parent, type_id) == 0 {
            return Err(Errno::EUSERS);
        }
        let group = self.alloc_group();
        self.mdevs.insert(
            uuid.clone(),
            Mdev {
                uuid: uuid.clone(),
                parent,
                type_id: type_id.to_owned(),
                iommu_group: group,
            },
        );
        let devpath = format!("/{}", self.mdev_path(&uuid));
        self.emit(
            "add",
            devpath,
            "mdev",
            vec![("MDEV_TYPE".to_owned(), type_id.to_owned())],
        );
        Ok(())
    }

    /// `<mdev>/remove`: `1` (any non-zero number) removes, `0` does nothing, else EINVAL.
    pub fn mdev_remove_write(&mut self, uuid: &str, data: &[u8]) -> Result<(), Errno> {
        let text = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
        let n = parse_ulong(text).ok_or(Errno::EINVAL)?;
        if n != 0 {
            self.remove_mdev(uuid);
        }
        Ok(())
    }

    pub(super) fn remove_mdev(&mut self, uuid: &str) {
        if !self.mdevs.contains_key(uuid) {
            return;
        }
        let devpath = format!("/{}", self.mdev_path(uuid));
        if let Some(m) = self.mdevs.remove(uuid) {
            self.emit(
                "remove",
                devpath,
                "mdev",
                vec![("MDEV_TYPE".to_owned(), m.type_id)],
            );
        }
    }

    pub(super) fn remove_mdevs_of(&mut self, parent: PciAddress) {
        let uuids: Vec<String> = self.mdevs_of(parent).map(|m| m.uuid.clone()).collect();
        for u in uuids {
            self.remove_mdev(&u);
        }
    }

    /// The mdev's directory: under its parent's.
    pub fn mdev_path(&self, uuid: &str) -> String {
        match self.mdevs.get(uuid) {
            Some(m) => format!("{}/{uuid}", self.pci_path(m.parent)),
            None => format!("devices/virtual/mdev/{uuid}"),
        }
    }
}

/// `kstrtoul(buf, 0, ..)`: decimal, `0x` hex or leading-0 octal, one trailing newline allowed.
pub fn parse_ulong(text: &str) -> Option<u64> {
    let t = text.strip_suffix('\n').unwrap_or(text);
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() {
        return None;
    }
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok();
    }
    if t.len() > 1 && t.starts_with('0') {
        return u64::from_str_radix(&t[1..], 8).ok();
    }
    t.parse().ok()
}
