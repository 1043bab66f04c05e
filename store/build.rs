fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/etcdserverpb.proto", "proto/mvccpb.proto", "proto/peer.proto"], &["proto"])?;
    Ok(())
}
