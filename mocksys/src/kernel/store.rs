//! Writable attributes and what a `write(2)` to each does.

use super::Kernel;
use crate::errno::Errno;
use crate::spec::PciAddress;

/// What a writable attribute is, as the renderer records it beside the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    DriverBind(String),
    DriverUnbind(String),
    DriverNewId(String),
    DriverRemoveId(String),
    DriversProbe,
    Rescan,
    DeviceRemove(PciAddress),
    DriverOverride(PciAddress),
    SriovNumvfs(PciAddress),
    MdevCreate(PciAddress, String),
    MdevRemove(String),
    /// A `uevent` file: writing an action name re-announces the device.
    PciUevent(PciAddress),
    /// Accepted and ignored (`config`, `sriov_drivers_autoprobe`, ...).
    Ignored,
}

/// Bus attributes read a name: one trailing newline is accepted.
fn name_arg(data: &[u8]) -> Result<&str, Errno> {
    let s = std::str::from_utf8(data).map_err(|_| Errno::ENODEV)?;
    Ok(s.strip_suffix('\n').unwrap_or(s))
}

fn text_arg(data: &[u8]) -> Result<&str, Errno> {
    std::str::from_utf8(data).map_err(|_| Errno::EINVAL)
}

impl Kernel {
    /// One store to a writable attribute.
    pub fn store(&mut self, attr: &Attr, data: &[u8]) -> Result<(), Errno> {
        match attr {
            Attr::DriverBind(d) => self.bind(d, name_arg(data)?),
            Attr::DriverUnbind(d) => self.unbind(d, name_arg(data)?),
            Attr::DriverNewId(d) => self.new_id(d, text_arg(data)?),
            Attr::DriverRemoveId(d) => self.remove_id(d, text_arg(data)?),
            Attr::DriversProbe => self.drivers_probe(name_arg(data)?),
            Attr::Rescan => self.rescan(data),
            Attr::DeviceRemove(a) => self.device_remove_write(*a, data),
            Attr::DriverOverride(a) => self.set_driver_override(*a, data),
            Attr::SriovNumvfs(a) => self.set_numvfs(*a, data),
            Attr::MdevCreate(parent, t) => self.mdev_create(*parent, t, data),
            Attr::MdevRemove(uuid) => self.mdev_remove_write(uuid, data),
            Attr::PciUevent(a) => self.uevent_write(*a, data),
            Attr::Ignored => Ok(()),
        }
    }

    /// `<dev>/uevent`: `add`, `remove`, `change`, ... raise that uevent (a synthetic one) and
    /// change nothing else.
    fn uevent_write(&mut self, address: PciAddress, data: &[u8]) -> Result<(), Errno> {
        let text = text_arg(data)?;
        let action = text.split_whitespace().next().unwrap_or("");
        const ACTIONS: &[&str] = &[
            "add", "remove", "change", "move", "online", "offline", "bind", "unbind",
        ];
        if !ACTIONS.contains(&action) {
            return Err(Errno::EINVAL);
        }
        self.emit_pci(action, address);
        Ok(())
    }
}
