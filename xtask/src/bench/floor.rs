//! The floor of the state program's own hook: an empty program that the
//! kernel runs the way it runs the tracer's.
//!
//! The tracer attaches a BTF tracepoint (`tp_btf`) to
//! `inet_sock_set_state`. The kernel runs such a program, and a raw
//! tracepoint program, straight from the tracepoint's call
//! (`bpf_trace_run3`); the verifier types their arguments differently,
//! nothing else. A classic tracepoint program, which bpftrace's
//! `tracepoint:` probes are, first has the kernel fill a perf trace record
//! with the event's fields. At peak churn an empty program of that kind
//! cost about 5% of the baseline's connections a second on this project's
//! machines, and an empty raw tracepoint program none that twelve
//! alternated rounds could tell from noise (BENCHMARKS.md, issue 9). So
//! the throughput floor of the tracer's kind of program is this one.
//!
//! `cargo xtask bench --hold-floor-program` (hidden, started by the bench
//! as the `empty-raw` variant) loads it with the `bpf(2)` syscall, attaches
//! it, prints [`READY`] and holds it until it is signalled: the kernel
//! detaches it when the process's descriptors close. Two instructions, no
//! maps, no BTF: neither aya nor a BPF toolchain is needed for it.
use std::io::Write as _;

use anyhow::Context as _;

/// The tracepoint the state program is on.
const TRACEPOINT: &std::ffi::CStr = c"inet_sock_set_state";

/// The program's name, as `bpftool prog show` and the report give it.
pub const PROGRAM_NAME: &str = "empty_raw_tp";

/// What the holder prints once the program is attached.
pub const READY: &str = "attached";

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// `r0 = 0; exit`.
const PROGRAM: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel
/// takes the rest, which this program does not use, as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `union bpf_attr` prefix of
    // `size_of::<T>()` bytes; every pointer in it outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// Load and attach the empty program; the descriptors that keep it
/// attached are left open for the life of the process.
fn attach() -> anyhow::Result<()> {
    let mut name = [0u8; 16];
    name[..PROGRAM_NAME.len()].copy_from_slice(PROGRAM_NAME.as_bytes());
    let license = c"GPL";
    let load = ProgLoad {
        prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
        insn_cnt: PROGRAM.len() as u32,
        insns: PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..ProgLoad::default()
    };
    let prog = bpf(BPF_PROG_LOAD, &load).context("loading the empty raw tracepoint program")?;
    let open = RawTracepointOpen {
        name: TRACEPOINT.as_ptr() as u64,
        prog_fd: prog as u32,
        pad: 0,
    };
    bpf(BPF_RAW_TRACEPOINT_OPEN, &open)
        .with_context(|| format!("attaching the empty program to {TRACEPOINT:?}"))?;
    Ok(())
}

/// Attach, say so, and hold the program until a signal ends the process,
/// or the bench that started it ends: a floor program left attached would
/// be measured in every later run.
pub fn hold() -> anyhow::Result<()> {
    // SAFETY: prctl(2) with an integer argument; getppid(2) has none.
    let orphan =
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 || libc::getppid() == 1 };
    anyhow::ensure!(!orphan, "the bench that started the floor program is gone");
    attach()?;
    let mut out = std::io::stdout();
    writeln!(out, "{READY}")?;
    out.flush()?;
    loop {
        // SAFETY: pause(2) only waits for a signal; SIGINT and SIGTERM
        // keep their default action and end the process.
        unsafe { libc::pause() };
    }
}
