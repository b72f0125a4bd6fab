//! Compiles every `.proto` file under `proto/` into Rust (tonic + prost) with the vendored protoc,
//! so adding a service means adding a file there and nothing else.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut protos: Vec<PathBuf> = std::fs::read_dir("proto")?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    // Sorted so the generated code does not depend on directory order.
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let includes = [PathBuf::from("proto"), protoc_bin_vendored::include_path()?];
    // Link payloads and forwarded POST bodies are handed on without a copy (`Bytes` slices).
    config.bytes([
        ".nonstick.link.Frame.data",
        ".nonstick.forward.EngineRequest.body",
    ]);
    // One generated file includes every package as nested modules (`nonstick.raft` ->
    // `nonstick::raft`), so `rpc::pb` picks up a new package without a code change.
    tonic_prost_build::configure()
        .include_file("protos.rs")
        .compile_with_config(config, &protos, &includes)?;
    Ok(())
}
