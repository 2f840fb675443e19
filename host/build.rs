//! Generates the containerd API messages berth uses from containerd's own
//! protos (`proto/`, copied from containerd's `api/` directory), with
//! rust-protobuf's pure-Rust parser: no `protoc` is needed.
fn main() {
    const PROTOS: &[&str] = &[
        "proto/types/descriptor.proto",
        "proto/types/runtimeoptions/v1/api.proto",
        "proto/services/containers/v1/containers.proto",
        "proto/services/images/v1/images.proto",
        "proto/services/content/v1/content.proto",
    ];
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .inputs(PROTOS)
        // Messages only: berth needs no reflection over them.
        .customize(protobuf_codegen::Customize::default().lite_runtime(true))
        .cargo_out_dir("containerd")
        .run_from_script();
    println!("cargo:rerun-if-changed=proto");
}
