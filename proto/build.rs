//! Compiles `meridian/v1/meridian.proto` with tonic-prost-build and writes the file
//! descriptor set that the control plane serves through gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=meridian/v1/meridian.proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("meridian_v1_descriptor.bin"))
        .compile_protos(&["meridian/v1/meridian.proto"], &["."])?;
    Ok(())
}
