//! With `with_sysfs_magic(true)`, `statfs`/`fstatfs` on the view's `/sys` say sysfs for every
//! program (dynamic, static, its threads and children), and nothing else changes: other
//! filesystems keep their type, errors stay the kernel's. The node's sysfs here is a tmpfs of
//! its own (a mount, as a FUSE mount is). Needs root and gcc (a static program is built): without
//! them these tests fail, they do not skip.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command as HostCommand;

use hostdev_sandbox::{Command, NodeView, SandboxError, Stdio};

/// A temp dir whose `sys` is a tmpfs mount, unmounted on drop.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        for d in ["sys", "dev", "scratch"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let sys = dir.path().join("sys");
        let status = HostCommand::new("mount")
            .args(["-t", "tmpfs", "synthetic-sys"])
            .arg(&sys)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs at {} (needs root)",
            sys.display()
        );
        std::fs::create_dir_all(sys.join("bus/usb/devices")).expect("mkdir");
        std::fs::write(sys.join("marker"), "synthetic\n").expect("write");
        std::os::unix::fs::symlink("bus/usb", sys.join("usb-link")).expect("symlink");
        Node { dir }
    }

    fn view(&self, magic: bool) -> NodeView {
        let p = self.dir.path();
        NodeView::new(p.join("sys"), p.join("dev"), p.join("scratch")).with_sysfs_magic(magic)
    }

    fn run(&self, magic: bool, argv: &[&str]) -> (Option<i32>, String, String) {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::Null)
            .stdout(Stdio::Pipe)
            .stderr(Stdio::Pipe);
        let child = cmd
            .spawn(&self.view(magic))
            .expect("spawn in the node's view");
        let (mut out, mut err) = (String::new(), String::new());
        let mut child = child;
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read");
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("read");
        (child.wait().code(), out, err)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = HostCommand::new("umount")
            .arg(self.dir.path().join("sys"))
            .status();
    }
}

/// A static program: `statfs PATH` per argument, `fstatfs` on an fd opened on it, and a statfs
/// into an unmapped buffer; prints `f_type` in hex for each (or the errno).
fn static_probe(dir: &Path) -> PathBuf {
    let src = dir.join("probe.c");
    std::fs::write(
        &src,
        r#"
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/vfs.h>
#include <sys/mman.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        struct statfs s;
        if (statfs(argv[i], &s) == 0) printf("statfs %s %lx\n", argv[i], (long)s.f_type);
        else printf("statfs %s errno %d\n", argv[i], errno);
        int fd = open(argv[i], O_RDONLY);
        if (fstatfs(fd, &s) == 0) printf("fstatfs %s %lx\n", argv[i], (long)s.f_type);
        else printf("fstatfs %s errno %d\n", argv[i], errno);
    }
    void *bad = mmap(0, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("unmapped %d\n", statfs("/sys", bad) == 0 ? 0 : errno);
    return 0;
}
"#,
    )
    .expect("write probe.c");
    let bin = dir.join("probe");
    let out = HostCommand::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run gcc (needed to build the static probe)");
    assert!(out.status.success(), "gcc -static: {out:?}");
    bin
}

#[test]
fn stat_f_says_sysfs_on_sys_only_when_asked() {
    let node = Node::new();
    let script = "stat -f -c %T /sys; stat -f -c %t /sys/bus/usb/devices; \
                  cd /sys/bus && stat -f -c %T . usb ../usb-link; stat -f -c %T /dev /proc";
    let (code, out, err) = node.run(true, &["sh", "-c", script]);
    assert_eq!(code, Some(0), "{err}");
    // The node's /dev is a directory of the machine's here: whatever that filesystem is.
    let dev = HostCommand::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(node.dir.path().join("dev"))
        .output()
        .expect("stat on the machine");
    let dev = String::from_utf8_lossy(&dev.stdout).trim().to_owned();
    assert_ne!(dev, "sysfs");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["sysfs", "62656572", "sysfs", "sysfs", "sysfs", &dev, "proc"],
        "{err}"
    );

    let (code, out, err) = node.run(false, &["stat", "-f", "-c", "%T", "/sys"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "tmpfs");
}

#[test]
fn static_programs_threads_and_errors() {
    let node = Node::new();
    let bin = static_probe(node.dir.path());
    // The probe is outside the view's mounts: the machine's /tmp is still visible there.
    let bin = bin.to_str().expect("utf-8 path");
    let (code, out, err) = node.run(
        true,
        &[
            bin,
            "/sys",
            "/sys/marker",
            "/sys/usb-link",
            "/proc",
            "/sys/missing",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "statfs /sys 62656572",
            "fstatfs /sys 62656572",
            "statfs /sys/marker 62656572",
            "fstatfs /sys/marker 62656572",
            "statfs /sys/usb-link 62656572",
            "fstatfs /sys/usb-link 62656572",
            "statfs /proc 9fa0",
            "fstatfs /proc 9fa0",
            // The kernel's own errors: ENOENT for the path, EBADF for open's -1.
            "statfs /sys/missing errno 2",
            "fstatfs /sys/missing errno 9",
            // EFAULT for a buffer the program cannot write.
            "unmapped 14",
        ],
        "{err}"
    );
}

#[test]
fn grandchildren_are_covered() {
    let node = Node::new();
    // A child of a child, in the background while its parent's other child also asks.
    let (code, out, err) = node.run(
        true,
        &[
            "sh",
            "-c",
            "sh -c 'stat -f -c %T /sys' & stat -f -c %T /sys; wait",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["sysfs", "sysfs"],
        "{out}{err}"
    );
}

#[test]
fn magic_needs_sysfs_to_be_a_mount() {
    let dir = tempfile::tempdir().expect("temp dir");
    for d in ["sys", "dev", "scratch"] {
        std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
    }
    let p = dir.path();
    let view =
        NodeView::new(p.join("sys"), p.join("dev"), p.join("scratch")).with_sysfs_magic(true);
    let err = Command::new("true").spawn(&view).err().expect("refused");
    assert!(matches!(err, SandboxError::Path { .. }), "{err}");
    assert!(err.to_string().contains("mount of its own"), "{err}");
}
