//! Generates the tonic client and server for the device-plugin protocol.
//! `protoc` comes from `PROTOC` when set, otherwise from `protoc-bin-vendored`, so a fresh machine
//! builds with no system packages.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    println!("cargo:rerun-if-changed=proto/deviceplugin.proto");
    tonic_prost_build::configure().compile_protos(&["proto/deviceplugin.proto"], &["proto"])?;
    Ok(())
}
