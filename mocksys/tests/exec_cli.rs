//! `mocksys exec HOST -- CMD`: real tools see the synthetic host as their /sys and /dev, the exit
//! code is the command's, and nothing stays mounted on the machine afterwards. Needs root and
//! lspci (pciutils): without them these tests fail, they do not skip.

use std::process::{Command, Stdio};

const HOST: &str = "\
pci:
  - {address: \"0000:65:00.0\", preset: tesla-t4, driver: vfio-pci, iommuGroup: 14}
  - {address: \"0000:05:00.0\", preset: qemu-nvme, driver: nvme}
usb:
  - {bus: 1, port: \"1\", preset: qemu-usb-storage}
";

fn host_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("host.yaml");
    std::fs::write(&p, HOST).expect("write host file");
    p
}

fn exec(host: &std::path::Path, cmd: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mocksys"))
        .arg("exec")
        .arg(host)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run mocksys exec")
}

fn mounts() -> Vec<String> {
    let mut m: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .map(|l| l.split_whitespace().nth(4).unwrap_or_default().to_owned())
        .collect();
    m.sort();
    m
}

#[test]
fn lspci_reads_the_synthetic_host_unmodified() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_file(&dir);
    let out = exec(&host, &["lspci", "-nnk"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("65:00.0") && stdout.contains("[10de:1eb8]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Kernel driver in use: vfio-pci"),
        "{stdout}"
    );
    assert!(
        stdout.contains("05:00.0") && stdout.contains("[8086:5845]"),
        "{stdout}"
    );
    // Only the synthetic host (its two functions and the xHCI that carries its USB bus): none
    // of the machine's own PCI functions.
    let functions: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .map(|l| l.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(functions, ["00:14.0", "05:00.0", "65:00.0"], "{stdout}");
}

#[test]
fn a_shell_sees_the_nodes_view_and_its_exit_code_comes_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_file(&dir);
    let before = mounts();
    let out = exec(
        &host,
        &[
            "sh",
            "-c",
            "ls /sys/bus/pci/devices; ls /dev/vfio/14 /dev/vfio/vfio; ls /proc/1/root/dev/vfio/14; \
             test -d /var/lib/kubelet/device-plugins && echo plugins; echo $$; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "0000:00:14.0",
            "0000:05:00.0",
            "0000:65:00.0",
            "/dev/vfio/14",
            "/dev/vfio/vfio",
            "/proc/1/root/dev/vfio/14",
            "plugins",
            "1"
        ],
        "{stdout}"
    );
    assert_eq!(mounts(), before, "nothing left mounted");
}

#[test]
fn writes_follow_the_kernel_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_file(&dir);
    // The seed document's three writes, by a shell in the namespace.
    let out = exec(
        &host,
        &[
            "sh",
            "-c",
            "echo 0000:05:00.0 > /sys/bus/pci/devices/0000:05:00.0/driver/unbind && \
             echo vfio-pci > /sys/bus/pci/devices/0000:05:00.0/driver_override && \
             echo 0000:05:00.0 > /sys/bus/pci/drivers/vfio-pci/bind && \
             basename $(readlink /sys/bus/pci/devices/0000:05:00.0/driver) && ls /dev/vfio",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("vfio-pci\n"), "{stdout}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.chars().all(|c| c.is_ascii_digit()))
            .count(),
        2,
        "{stdout}"
    );
}

#[test]
fn errors_name_the_problem_and_exit_125() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_file(&dir);
    let out = exec(&host, &["no-such-tool-anywhere"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-tool-anywhere") && stderr.contains("not found"),
        "{stderr}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "pci:\n  - {address: \"65:00.0\"}\n").expect("write");
    let out = exec(&bad, &["true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.yaml:2"),
        "{out:?}"
    );
}

#[test]
fn a_signal_to_mocksys_reaches_the_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_file(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mocksys"))
        .arg("exec")
        .arg(&host)
        .args([
            "--",
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo up; while :; do sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut up = [0u8; 3];
    use std::io::Read;
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut up)
        .expect("the command started");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    assert_eq!(child.wait().expect("wait").code(), Some(42));
}
