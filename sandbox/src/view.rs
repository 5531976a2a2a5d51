//! What a node's process sees, and the mount plan that builds it.
//!
//! The plan is computed in the parent, where allocating and reading directories is safe; the child
//! (a clone of a multi-threaded process) only replays it with raw system calls.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::spawn::SandboxError;

/// Where the kubelet keeps device-plugin sockets on a node.
pub const PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";

/// The character devices every container gets, bound in from the machine (they reach no hardware).
const BASIC_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// A node's view: which directories of the caller's become `/sys`, `/dev` and the plugin dir.
#[derive(Clone, Debug)]
pub struct NodeView {
    /// Served as `/sys` (for a mocksys host, its FUSE mount point).
    pub sys: PathBuf,
    /// Served as `/dev` (a mocksys host's /dev tree). Mount points for the basic devices and
    /// `shm` are created in it if missing (empty files and a directory).
    pub dev: PathBuf,
    /// Served as `/var/lib/kubelet/device-plugins`; `None` leaves that path as the machine has it.
    pub plugin_dir: Option<PathBuf>,
    /// A directory of the caller's for the plan's own mount points (needed when the machine has
    /// no `/var/lib/kubelet`, which must then be made without touching the machine's `/var/lib`).
    pub scratch: PathBuf,
    /// `(dir, target)`: the files of `dir` appear in `target` over the machine's (a read-only
    /// overlay), as a container image would put a program where an agent hard-codes it.
    pub layers: Vec<(PathBuf, PathBuf)>,
    /// `statfs`/`fstatfs` under `/sys` report sysfs's magic (see [`crate::seccomp`]), so
    /// libudev, udevadm and libusb accept the synthetic sysfs. Needs `sys` to be a mount.
    pub sysfs_magic: bool,
}

impl NodeView {
    pub fn new(
        sys: impl Into<PathBuf>,
        dev: impl Into<PathBuf>,
        scratch: impl Into<PathBuf>,
    ) -> Self {
        NodeView {
            sys: sys.into(),
            dev: dev.into(),
            plugin_dir: None,
            scratch: scratch.into(),
            layers: Vec::new(),
            sysfs_magic: false,
        }
    }

    /// Lays the files of `dir` over `target` (e.g. a helper binary an agent runs from /usr/bin).
    pub fn with_layer(mut self, dir: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        self.layers.push((dir.into(), target.into()));
        self
    }

    /// Whether `statfs` on the synthetic `/sys` says sysfs (off by default).
    pub fn with_sysfs_magic(mut self, on: bool) -> Self {
        self.sysfs_magic = on;
        self
    }

    pub fn with_plugin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugin_dir = Some(dir.into());
        self
    }
}

/// One step the child replays, in order.
#[derive(Debug)]
pub(crate) enum Op {
    /// `mount --make-rprivate /`: nothing mounted from here on propagates anywhere.
    MakePrivate,
    Bind {
        src: CString,
        dst: CString,
        recursive: bool,
    },
    Tmpfs {
        dst: CString,
        data: CString,
    },
    /// An overlay of `lowerdir=...` (the first layer wins) on `dst`: read-only, or writable
    /// when `data` names an upper directory.
    Overlay {
        dst: CString,
        data: CString,
        writable: bool,
    },
    Proc {
        dst: CString,
    },
    Mkdir {
        path: CString,
    },
    Touch {
        path: CString,
    },
    Symlink {
        target: CString,
        path: CString,
    },
}

impl Op {
    /// For error messages: what this step was doing.
    pub(crate) fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Op::MakePrivate => "making / private".into(),
            Op::Bind { src, dst, .. } => format!("binding {} at {}", s(src), s(dst)),
            Op::Tmpfs { dst, .. } => format!("mounting a tmpfs at {}", s(dst)),
            Op::Overlay { dst, data, .. } => {
                format!("mounting an overlay ({}) at {}", s(data), s(dst))
            }
            Op::Proc { dst } => format!("mounting the namespace's proc at {}", s(dst)),
            Op::Mkdir { path } => format!("creating directory {}", s(path)),
            Op::Touch { path } => format!("creating mount point {}", s(path)),
            Op::Symlink { target, path } => format!("linking {} to {}", s(path), s(target)),
        }
    }
}

pub(crate) fn cstring(path: &Path) -> Result<CString, SandboxError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SandboxError::Path {
        path: path.to_owned(),
        reason: "contains a NUL byte",
    })
}

fn dir_exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// The mount plan for `view`. Creates the mount points it needs inside `view.dev` and
/// `view.scratch` (both the caller's), never anything of the machine's.
pub(crate) fn plan(view: &NodeView) -> Result<Vec<Op>, SandboxError> {
    for (what, p) in [
        ("sys", &view.sys),
        ("dev", &view.dev),
        ("scratch", &view.scratch),
    ] {
        if !dir_exists(p) {
            return Err(SandboxError::Path {
                path: p.clone(),
                reason: match what {
                    "sys" => "the node's sysfs is not a directory",
                    "dev" => "the node's /dev is not a directory",
                    _ => "the scratch directory is not a directory",
                },
            });
        }
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SandboxError::Prepare { path, source }
    };
    let mut ops = vec![Op::MakePrivate];

    // The basic devices go onto mount points inside the node's /dev (only in the child's mount
    // namespace), before that /dev is bound over the machine's and hides them.
    for name in BASIC_DEVICES {
        let machine = Path::new("/dev").join(name);
        if std::fs::metadata(&machine).is_err() {
            continue;
        }
        let point = view.dev.join(name);
        if std::fs::symlink_metadata(&point).is_err() {
            std::fs::File::create(&point).map_err(io(&point))?;
        }
        ops.push(Op::Bind {
            src: cstring(&machine)?,
            dst: cstring(&point)?,
            recursive: false,
        });
    }
    let shm = view.dev.join("shm");
    if !dir_exists(&shm) {
        std::fs::create_dir(&shm).map_err(io(&shm))?;
    }
    ops.push(Op::Tmpfs {
        dst: cstring(&shm)?,
        data: c"mode=1777,size=64m".into(),
    });
    ops.push(Op::Bind {
        src: cstring(&view.sys)?,
        dst: c"/sys".into(),
        recursive: true,
    });
    ops.push(Op::Bind {
        src: cstring(&view.dev)?,
        dst: c"/dev".into(),
        recursive: true,
    });
    if let Some(plugins) = &view.plugin_dir {
        plugin_dir_ops(&mut ops, plugins, &view.scratch)?;
    }
    for (dir, target) in &view.layers {
        if !dir_exists(dir) || !dir_exists(target) {
            return Err(SandboxError::Path {
                path: if dir_exists(dir) {
                    target.clone()
                } else {
                    dir.clone()
                },
                reason: "a layer and its target must both be directories",
            });
        }
        let mut data = b"lowerdir=".to_vec();
        data.extend_from_slice(dir.as_os_str().as_bytes());
        data.push(b':');
        data.extend_from_slice(target.as_os_str().as_bytes());
        ops.push(Op::Overlay {
            dst: cstring(target)?,
            data: CString::new(data).map_err(|_| SandboxError::Path {
                path: dir.clone(),
                reason: "contains a NUL byte",
            })?,
            writable: false,
        });
    }
    run_udev_ops(&mut ops, view)?;
    ops.push(Op::Proc {
        dst: c"/proc".into(),
    });
    // /proc/bus/pci and /proc/bus/input list the machine's devices, whatever /sys says.
    ops.push(Op::Tmpfs {
        dst: c"/proc/bus".into(),
        data: c"mode=555".into(),
    });
    Ok(ops)
}

/// The machine's udev database describes the machine's devices: `/run/udev` is covered. With
/// sysfs's magic on, the mocksys host plays udevd (it sends the udev-group events), so
/// `/run/udev/control` exists as it does where udevd runs: libudev subscribes to udev-group
/// events only then. A machine without `/run/udev` gets it through a writable overlay of `/run`
/// whose upper layer is a tmpfs of the child's (nothing is created in the machine's `/run`).
fn run_udev_ops(ops: &mut Vec<Op>, view: &NodeView) -> Result<(), SandboxError> {
    let control = c"/run/udev/control";
    if dir_exists(Path::new("/run/udev")) {
        ops.push(Op::Tmpfs {
            dst: c"/run/udev".into(),
            data: c"mode=755".into(),
        });
        if view.sysfs_magic {
            ops.push(Op::Touch {
                path: control.into(),
            });
        }
        return Ok(());
    }
    if !view.sysfs_magic || !dir_exists(Path::new("/run")) {
        return Ok(());
    }
    let layer = view.scratch.join("run-layer");
    if !dir_exists(&layer) {
        std::fs::create_dir(&layer).map_err(|source| SandboxError::Prepare {
            path: layer.clone(),
            source,
        })?;
    }
    ops.push(Op::Tmpfs {
        dst: cstring(&layer)?,
        data: c"mode=755".into(),
    });
    for d in ["upper", "work", "upper/udev"] {
        ops.push(Op::Mkdir {
            path: cstring(&layer.join(d))?,
        });
    }
    ops.push(Op::Touch {
        path: cstring(&layer.join("upper/udev/control"))?,
    });
    let mut data = b"lowerdir=/run,upperdir=".to_vec();
    data.extend_from_slice(layer.join("upper").as_os_str().as_bytes());
    data.extend_from_slice(b",workdir=");
    data.extend_from_slice(layer.join("work").as_os_str().as_bytes());
    ops.push(Op::Overlay {
        dst: c"/run".into(),
        data: CString::new(data).map_err(|_| SandboxError::Path {
            path: layer.clone(),
            reason: "contains a NUL byte",
        })?,
        writable: true,
    });
    Ok(())
}

/// `plugins` at [`PLUGIN_DIR`], making the missing levels on tmpfs layers of the child's own.
fn plugin_dir_ops(ops: &mut Vec<Op>, plugins: &Path, scratch: &Path) -> Result<(), SandboxError> {
    if !dir_exists(plugins) {
        return Err(SandboxError::Path {
            path: plugins.to_owned(),
            reason: "the node's plugin directory is not a directory",
        });
    }
    let target = Path::new(PLUGIN_DIR);
    let kubelet = target.parent().expect("PLUGIN_DIR has a parent");
    let var_lib = kubelet.parent().expect("PLUGIN_DIR has a grandparent");
    if dir_exists(target) {
        // Already there: just cover it.
    } else if dir_exists(kubelet) {
        ops.push(Op::Tmpfs {
            dst: cstring(kubelet)?,
            data: c"mode=755".into(),
        });
        ops.push(Op::Mkdir {
            path: cstring(target)?,
        });
    } else if dir_exists(var_lib) {
        // No /var/lib/kubelet on this machine: a tmpfs over /var/lib that re-offers every entry
        // of the machine's (through a bind of it kept in the scratch directory), plus kubelet/.
        let saved = scratch.join("var-lib");
        std::fs::create_dir_all(&saved).map_err(|source| SandboxError::Prepare {
            path: saved.clone(),
            source,
        })?;
        ops.push(Op::Bind {
            src: cstring(var_lib)?,
            dst: cstring(&saved)?,
            recursive: true,
        });
        ops.push(Op::Tmpfs {
            dst: cstring(var_lib)?,
            data: c"mode=755".into(),
        });
        let entries = std::fs::read_dir(var_lib).map_err(|source| SandboxError::Prepare {
            path: var_lib.to_owned(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let at = var_lib.join(&name);
            let from = saved.join(&name);
            match entry.file_type() {
                Ok(t) if t.is_symlink() => {
                    if let Ok(link) = std::fs::read_link(&at) {
                        ops.push(Op::Symlink {
                            target: cstring(&link)?,
                            path: cstring(&at)?,
                        });
                    }
                }
                Ok(t) => {
                    ops.push(if t.is_dir() {
                        Op::Mkdir {
                            path: cstring(&at)?,
                        }
                    } else {
                        Op::Touch {
                            path: cstring(&at)?,
                        }
                    });
                    ops.push(Op::Bind {
                        src: cstring(&from)?,
                        dst: cstring(&at)?,
                        recursive: true,
                    });
                }
                Err(_) => {}
            }
        }
        ops.push(Op::Mkdir {
            path: cstring(kubelet)?,
        });
        ops.push(Op::Mkdir {
            path: cstring(target)?,
        });
    } else {
        return Err(SandboxError::Path {
            path: var_lib.to_owned(),
            reason: "this machine has no /var/lib to hold the kubelet's plugin directory",
        });
    }
    ops.push(Op::Bind {
        src: cstring(plugins)?,
        dst: cstring(target)?,
        recursive: false,
    });
    Ok(())
}
