//! Generates the gRPC code from `proto/` with protox, a pure-Rust protobuf compiler, so the build
//! never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with `env!`: cargo reuses a compiled build script across checkouts
    // at other paths (the CI clone, a worktree), and a path baked in at compile time would
    // point into a checkout that may be gone.
    let proto_root =
        std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&proto_root)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    // The directory too, so that a newly added .proto file triggers a rebuild.
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&proto_root])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("bitmountain_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    // Bulk data fields decode as `bytes::Bytes`: a received piece is sliced out of the receive
    // buffer and handed on (to the encoder, to a shard file, to a client) without a copy.
    let bulk_data_messages = [
        ".bitmountain.v1.WriteShardRequest",
        ".bitmountain.v1.ReadShardResponse",
        ".bitmountain.archive.v1.PutBundleRequest",
        ".bitmountain.archive.v1.GetFileResponse",
        ".bitmountain.archive.v1.ExportBundleResponse",
        ".bitmountain.v1.SnapshotChunk",
    ];
    let mut builder = tonic_prost_build::configure();
    for path in bulk_data_messages {
        builder = builder.bytes(path);
    }
    builder
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(descriptors)?;
    Ok(())
}
