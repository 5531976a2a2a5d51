//! The FUSE front over a real mount, with an in-memory backend: reads, links, listings, modes,
//! EACCES, shell writes and their errnos, no stale cache after changes, faults, unmounting.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::{BDF, DEV, Mounted, options, read_str, sh, small_host};
use mocksys::errno::Errno;
use mocksys::fuse;
use rstest::rstest;

#[rstest]
fn reads_links_listings_modes_and_sizes(#[values(false, true)] strict: bool) {
    require_fuse!();
    let m = Mounted::new(small_host(), options(strict));
    assert_eq!(
        read_str(&m.path(&format!("{DEV}/vendor"))).unwrap(),
        "0x8086\n"
    );
    let config = fs::read(m.path(&format!("{DEV}/config"))).unwrap();
    assert_eq!(config.len(), 64);
    assert_eq!(&config[..4], &[0x86, 0x80, 0x45, 0x58]);

    let link = m.path(&format!("bus/pci/devices/{BDF}"));
    assert_eq!(
        fs::read_link(&link).unwrap().to_str().unwrap(),
        format!("../../../{DEV}")
    );
    assert_eq!(fs::canonicalize(&link).unwrap(), m.path(DEV));
    let driver = fs::canonicalize(m.path(&format!("{DEV}/driver"))).unwrap();
    assert_eq!(driver, m.path("bus/pci/drivers/nvme"));
    assert_eq!(
        read_str(&link.join("vendor")).unwrap(),
        "0x8086\n",
        "reads through the bus symlink"
    );

    let mut names: Vec<String> = fs::read_dir(m.path(DEV))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config",
            "device",
            "driver",
            "driver_override",
            "remove",
            "vendor"
        ]
    );

    let meta = |rel: &str| fs::symlink_metadata(m.path(rel)).unwrap();
    assert_eq!(
        meta(&format!("{DEV}/vendor")).permissions().mode() & 0o7777,
        0o444
    );
    assert_eq!(
        meta(&format!("{DEV}/driver_override")).permissions().mode() & 0o7777,
        0o644
    );
    assert_eq!(
        meta(&format!("{DEV}/remove")).permissions().mode() & 0o7777,
        0o200
    );
    // Strict: sysfs's 4096. Fast: the content length, which the page cache needs.
    let text_size = |len: u64| if strict { 4096 } else { len };
    assert_eq!(meta(&format!("{DEV}/remove")).size(), 4096, "write-only");
    assert_eq!(meta(&format!("{DEV}/vendor")).size(), text_size(7));
    assert_eq!(meta(&format!("{DEV}/config")).size(), 64);
    assert!(meta(DEV).is_dir());
    assert!(
        meta(&format!("bus/pci/devices/{BDF}"))
            .file_type()
            .is_symlink()
    );
    assert_eq!(meta(&format!("{DEV}/vendor")).uid(), 0);
    // Still so after the reads above.
    assert_eq!(meta(&format!("{DEV}/vendor")).size(), text_size(7));
    assert_eq!(
        fs::metadata(m.path("nothing/here")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
}

#[rstest]
fn wrong_direction_access_is_eacces(#[values(false, true)] strict: bool) {
    require_fuse!();
    let m = Mounted::new(small_host(), options(strict));
    let remove = m.path(&format!("{DEV}/remove"));
    let vendor = m.path(&format!("{DEV}/vendor"));
    let eacces = Some(libc::EACCES);

    // Reading a write-only attribute: at open (strict) or at the first read (fast).
    let err = fs::File::open(&remove)
        .and_then(|mut f| f.read_to_end(&mut Vec::new()))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), eacces, "read of write-only remove");

    // Writing a read-only attribute, without O_TRUNC: at open or at the write.
    let err = fs::OpenOptions::new()
        .write(true)
        .open(&vendor)
        .and_then(|mut f| f.write_all(b"0x1234\n"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), eacces, "write of read-only vendor");

    // The shell's `>` (O_TRUNC) fails at open in both modes.
    let out = sh(&format!("echo 0x1234 > {}", vendor.display()));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    assert_eq!(read_str(&vendor).unwrap(), "0x8086\n");
}

#[rstest]
fn shell_writes_follow_the_model_and_its_errnos(#[values(false, true)] strict: bool) {
    require_fuse!();
    let m = Mounted::new(small_host(), options(strict));
    let drv = m.path("bus/pci/drivers/nvme");
    let driver_link = m.path(&format!("{DEV}/driver"));
    assert!(driver_link.exists());

    let out = sh(&format!("echo {BDF} > {}/unbind", drv.display()));
    assert!(out.status.success(), "{out:?}");
    assert!(
        !driver_link.exists(),
        "driver link gone before the write returned"
    );
    assert!(!drv.join(BDF).exists());

    let out = sh(&format!("echo {BDF} > {}/unbind", drv.display()));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such device"),
        "{out:?}"
    );

    let out = sh(&format!("echo {BDF} > {}/bind", drv.display()));
    assert!(out.status.success(), "{out:?}");
    assert!(
        driver_link.exists(),
        "negative dentry of driver invalidated"
    );
    assert_eq!(fs::canonicalize(&driver_link).unwrap(), drv);

    let out = sh(&format!("echo {BDF} > {}/bind", drv.display()));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Device or resource busy"),
        "{out:?}"
    );
}

#[rstest]
fn written_attribute_reads_back_what_the_model_keeps(#[values(false, true)] strict: bool) {
    require_fuse!();
    let m = Mounted::new(small_host(), options(strict));
    let ovr = m.path(&format!("{DEV}/driver_override"));
    assert_eq!(read_str(&ovr).unwrap(), "(null)\n");
    let out = sh(&format!("echo vfio-pci > {}", ovr.display()));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read_str(&ovr).unwrap(), "vfio-pci\n");
    // The model keeps only the first line; the page the writer filled must not survive.
    fs::OpenOptions::new()
        .write(true)
        .open(&ovr)
        .and_then(|mut f| f.write_all(b"ab\ncdefghijkl"))
        .unwrap();
    assert_eq!(read_str(&ovr).unwrap(), "ab\n");
    let out = sh(&format!("echo > {}", ovr.display()));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read_str(&ovr).unwrap(), "(null)\n");
}

#[rstest]
fn library_changes_are_never_served_stale(#[values(false, true)] strict: bool) {
    require_fuse!();
    let m = Mounted::new(small_host(), options(strict));
    let vendor = m.path(&format!("{DEV}/vendor"));
    let fresh = m.path(&format!("{DEV}/numa_node"));
    assert_eq!(read_str(&vendor).unwrap(), "0x8086\n");
    assert!(!fresh.exists(), "negative entry now cached");
    let listing = |m: &Mounted| fs::read_dir(m.path(DEV)).unwrap().count();
    assert_eq!(listing(&m), 6);

    m.backend.set_attr(&format!("{DEV}/vendor"), "0x10de\n");
    assert_eq!(read_str(&vendor).unwrap(), "0x10de\n");
    m.backend
        .set_attr(&format!("{DEV}/vendor"), "0x1af4-longer-content\n");
    assert_eq!(read_str(&vendor).unwrap(), "0x1af4-longer-content\n");
    m.backend.set_attr(&format!("{DEV}/vendor"), "1\n");
    assert_eq!(read_str(&vendor).unwrap(), "1\n");

    m.backend.set_attr(&format!("{DEV}/numa_node"), "-1\n");
    assert_eq!(read_str(&fresh).unwrap(), "-1\n");
    assert_eq!(listing(&m), 7);

    m.backend.remove([DEV.to_owned()]);
    assert!(!vendor.exists());
    assert!(!m.path(DEV).exists());
    // Nothing else lived under devices/, so the whole branch is gone, listings included.
    assert!(!m.path("devices").exists());
    let top: Vec<_> = fs::read_dir(m.mount.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["bus"]);
}

#[rstest]
fn armed_read_fault_fires_once_even_on_cached_content(#[values(false, true)] strict: bool) {
    require_fuse!();
    let m = Mounted::new(small_host(), options(strict));
    let vendor = m.path(&format!("{DEV}/vendor"));
    assert_eq!(read_str(&vendor).unwrap(), "0x8086\n");
    m.backend
        .fail_next_read(&format!("{DEV}/vendor"), Errno::EIO);
    assert_eq!(
        read_str(&vendor).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(read_str(&vendor).unwrap(), "0x8086\n");
}

#[test]
fn a_panicking_serving_thread_still_unmounts() {
    require_fuse!();
    let backend = small_host();
    backend.on_read(|path| {
        if path.ends_with("vendor") {
            panic!("injected panic in the backend");
        }
    });
    let m = Mounted::new(backend, options(false));
    let vendor = m.path(&format!("{DEV}/vendor"));
    let err = read_str(&vendor).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EIO),
        "unanswered request ends in EIO"
    );
    let path = m.mount.path().to_owned();
    let Mounted { mount, dir, .. } = m;
    let report = common::within(Duration::from_secs(30), "unmount", move || mount.unmount());
    assert!(!fuse::is_mounted(&path), "{report:?}");
    drop(dir);
}

#[test]
fn a_stuck_handler_does_not_block_unmount() {
    require_fuse!();
    let backend = small_host();
    let (entered_tx, entered_rx) = crossbeam_channel::bounded::<()>(1);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    backend.on_read(move |path| {
        if path.ends_with("device") {
            let _ = entered_tx.send(());
            let _ = release_rx.recv_timeout(Duration::from_secs(60));
        }
    });
    let m = Mounted::new(backend, options(false));
    let mut reader = std::process::Command::new("cat")
        .arg(m.path(&format!("{DEV}/device")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the read reached the backend");
    let path = m.mount.path().to_owned();
    let Mounted { mount, dir, .. } = m;
    let report = common::within(Duration::from_secs(30), "unmount", move || mount.unmount());
    assert!(!fuse::is_mounted(&path), "{report:?}");
    assert!(report.detached, "a busy mount is detached: {report:?}");
    drop(release_tx);
    let status = reader.wait().unwrap();
    assert!(
        !status.success(),
        "the stuck read fails once aborted or released"
    );
    drop(dir);
}
