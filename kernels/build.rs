//! Compiles `cuda/*.cu` to PTX with nvcc when the `cuda` feature is on; does nothing
//! otherwise, so a CPU build needs no CUDA toolkit.
//!
//! Environment: `NVCC` (else `$CUDA_HOME/bin/nvcc`, else `nvcc` on `PATH`) and
//! `CUDA_COMPUTE_CAP` (default 80). The PTX targets `compute_<cap>`, which the driver
//! JIT-compiles for that architecture and every newer one.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cuda");
    for var in ["NVCC", "CUDA_HOME", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    if cap.is_empty() || !cap.chars().all(|c| c.is_ascii_digit()) {
        panic!("CUDA_COMPUTE_CAP must be digits like 80 or 90, got `{cap}`");
    }
    let nvcc = nvcc_path();
    let mut consts = String::new();
    for source in kernel_sources() {
        let stem = source.file_stem().unwrap().to_string_lossy().into_owned();
        let ptx = out.join(format!("{stem}.ptx"));
        compile(&nvcc, &source, &ptx, &cap);
        consts.push_str(&format!(
            "/// PTX of `cuda/{stem}.cu`.\npub const {}: &str = include_str!({:?});\n",
            stem.to_uppercase(),
            ptx.display().to_string()
        ));
    }
    consts.push_str(&format!(
        "/// The architecture the PTX was compiled for (`CUDA_COMPUTE_CAP`).\n\
         pub const COMPUTE_CAP: u32 = {cap};\n"
    ));
    std::fs::write(out.join("ptx.rs"), consts).expect("write ptx.rs");
}

fn kernel_sources() -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir("cuda")
        .expect("kernels/cuda exists")
        .map(|e| e.expect("readable kernels/cuda").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    sources
}

fn nvcc_path() -> PathBuf {
    if let Some(p) = std::env::var_os("NVCC") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        let p = Path::new(&home).join("bin/nvcc");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("nvcc")
}

fn compile(nvcc: &Path, source: &Path, ptx: &Path, cap: &str) {
    let status = Command::new(nvcc)
        .args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("-o")
        .arg(ptx)
        .arg(source)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): the `cuda` feature needs nvcc; set NVCC or CUDA_HOME \
                 (scripts/check-cuda.sh installs one)",
                nvcc.display()
            )
        });
    if !status.success() {
        panic!("nvcc failed on {}", source.display());
    }
}
