//! Generates a GoBGP API client (package `apipb`, service `GobgpApi`) from the protos
//! Debian ships in `golang-github-osrg-gobgp-dev`, client only. The directory can be
//! overridden with `GOBGP_PROTO_DIR` (a checkout's `api/` directory).

use std::path::PathBuf;

const DEFAULT_DIR: &str = "/usr/share/gocode/src/github.com/osrg/gobgp/api";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=GOBGP_PROTO_DIR");
    let dir = PathBuf::from(std::env::var("GOBGP_PROTO_DIR").unwrap_or_else(|_| DEFAULT_DIR.to_string()));
    let files = [dir.join("gobgp.proto"), dir.join("attribute.proto")];
    for f in &files {
        if !f.is_file() {
            return Err(format!(
                "GoBGP's API protos are missing ({} not found): install them with \
                 `sudo apt-get install -y golang-github-osrg-gobgp-dev` (or `bash scripts/setup.sh`), \
                 or set GOBGP_PROTO_DIR to a directory holding gobgp.proto and attribute.proto",
                f.display()
            )
            .into());
        }
        println!("cargo:rerun-if-changed={}", f.display());
    }
    // attribute.proto imports "gobgp.proto" from its own directory; the well-known
    // types come from protoc's own include directory or libprotobuf-dev's.
    let includes = [dir.clone(), PathBuf::from("/usr/include")];
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&files, &includes)?;
    Ok(())
}
