//! Compiles the vendored flagd protocol definitions (`proto/`, see its README) into
//! tonic services and prost messages, with protox: no system `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/flagd/sync/v1/sync.proto",
        "proto/flagd/evaluation/v1/evaluation.proto",
        "proto/flagd/evaluation/v2/evaluation.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // Clients too: the tests drive flagd through them.
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
