//! Compiles the protocol's `.proto` files with a pure-Rust compiler, so that
//! building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/backend.proto",
        "proto/logical.proto",
        "proto/goplugin.proto",
        "proto/health.proto",
        "proto/multiplexing.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
