//! Rebuild the kernel programs when bpf-linker changes; declare the
//! architecture cfg aya-build sets.
use which::which;

fn main() {
    // aya-build passes `--cfg bpf_target_arch="..."` (the host's arch).
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"powerpc64\", \"s390x\", \"mips\", \"loongarch64\"))"
    );
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
