//! Loading and attaching the kernel programs: the only user of `aya::programs`.
//!
//! [`Probes::load`] checks privileges and kernel features first, so a user
//! who cannot run the tracer reads one sentence saying why, then loads the
//! object built by `build.rs`, fills in the BTF offsets, and attaches the
//! five BTF tracepoints. Dropping [`Probes`] detaches everything.
pub mod btf;
pub mod klog;
pub mod lanes;
pub mod preflight;

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray},
    programs::BtfTracePoint,
};
use tracer_common::{COUNTER_READ_ERROR, COUNTER_RINGBUF_FULL, names};

/// The kernel object, built by build.rs from tracer-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// Default size of the event lanes, all CPUs together: 8 MiB holds ~82,000
/// events, several seconds of a very busy host, while user space drains it
/// continuously.
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

/// How often user space looks at how full the event lanes are (more often
/// while they fill fast): the longest a burst can write into them before
/// it is seen.
pub const LOOK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// The longest events wait in the lanes: user space reads them once a lane
/// is [`DRAIN_FILL`] full, or this long after the last read. Each read
/// starts from caches the workload has refilled since, and costs about the
/// same for a few events as for thousands, so reading less often costs
/// less CPU per event (15–40 ns fewer at 10,000 connections a second than
/// reading every 50 ms; BENCHMARKS.md, issue 9).
pub const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// A lane this full is read at the next look: three quarters of it stay
/// free for a burst to fill before the look after.
pub const DRAIN_FILL: f64 = 0.25;

/// Each hook: (program name in the object, `subsystem/event` for messages).
pub const HOOKS: [(&str, &str); 5] = names::HOOKS;

/// What the programs send to user space: their events, and their own
/// diagnostics (absent when the log map could not be opened).
pub struct Stream {
    /// The per-CPU lanes of events.
    pub events: lanes::Lanes,
    /// The programs' aya-log records.
    pub logs: Option<klog::KernelLogger>,
}

/// The loaded, attached programs and the maps user space reads.
pub struct Probes {
    /// Owns programs and links; dropping it detaches.
    _ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
}

/// Kernel-side loss and error counts, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Events dropped because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Events not sent because a kernel read failed.
    pub read_errors: u64,
    /// Events the kernel never ran a program for: the program was already
    /// running on that CPU (a softirq's state change interrupting a
    /// syscall's), so the nested run is skipped (`recursion_misses`).
    pub recursion_misses: u64,
}

impl KernelCounters {
    /// Every event the kernel could not deliver.
    pub fn lost(&self) -> u64 {
        self.ringbuf_full + self.read_errors + self.recursion_misses
    }

    /// Losses that come in bursts (a full ring buffer, failing reads): the
    /// next reconcile should not wait for the dump budget. Recursion misses
    /// are a trickle under any churn; the regular dumps heal them.
    pub fn bursty(&self) -> u64 {
        self.ringbuf_full + self.read_errors
    }
}

impl Probes {
    /// Check the machine, load the programs and attach every hook.
    /// Returns the probes and the stream their events and diagnostics
    /// arrive on. `ring_bytes` is shared out between the CPUs' lanes.
    ///
    /// The programs never wake user space: it looks at the lanes on a
    /// timer ([`LOOK_INTERVAL`]) and reads them when they fill or have
    /// waited long enough ([`DRAIN_INTERVAL`]), which costs up to that
    /// interval of latency and saves thousands of wake-ups a second on a
    /// busy host.
    pub fn load(ring_bytes: u32) -> anyhow::Result<(Probes, Stream)> {
        preflight::check()?;
        if !ring_bytes.is_power_of_two() || ring_bytes < 4096 {
            anyhow::bail!(
                "ring buffer size {ring_bytes} is not a power of two of at least 4096 bytes"
            );
        }
        // Read the kernel's BTF once: this module finds the few member
        // offsets the programs need in it, and aya parses it once for the
        // loader and every program's attach target.
        let vmlinux = btf::read(preflight::VMLINUX_BTF)?;
        let offsets = btf::Btf::parse(&vmlinux)?.sock_offsets()?;
        let kernel_btf = aya::Btf::parse(&vmlinux, aya::Endianness::default())
            .context("parsing the kernel's BTF")?;
        drop(vmlinux);
        // Two lanes per CPU the kernel may run a program on.
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| anyhow::anyhow!("counting the CPUs ({what}): {e}"))?;
        let cpus = u32::try_from(cpus).context("counting the CPUs")?;
        let layout = lanes::layout(ring_bytes, cpus, preflight::programs_never_nest());
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&kernel_btf))
            .override_global(names::SOCK_OFFSETS, &offsets, true)
            .override_global(names::LANE_LAYOUT, &layout, true)
            .map_max_entries(names::EVENTS, layout.elements(cpus))
            .load(OBJECT)
            .context("loading the kernel programs")?;
        for (prog, hook) in HOOKS {
            let p: &mut BtfTracePoint = ebpf
                .program_mut(prog)
                .with_context(|| format!("program {prog} is missing from the kernel object"))?
                .try_into()
                .with_context(|| format!("program {prog} is not a BTF tracepoint"))?;
            p.load(prog, &kernel_btf).map_err(|e| refused(hook, &e))?;
            p.attach()
                .with_context(|| format!("attaching tracepoint {hook}"))?;
        }
        let logs = match klog::KernelLogger::init_with_logger(
            &mut ebpf,
            klog::KernelLog::from_log_level(),
        ) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(
                    event = "kernel_diagnostics_unavailable",
                    "the kernel programs' diagnostics are unavailable: {e}"
                );
                None
            }
        };
        let Some(Map::Array(events)) = ebpf.take_map(names::EVENTS) else {
            anyhow::bail!("map EVENTS is missing from the kernel object, or is not an array");
        };
        let events = lanes::Lanes::open(events, cpus, layout)
            .context("mapping the event lanes (EVENTS) into memory")?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map(names::COUNTERS)
                .context("map COUNTERS is missing from the kernel object")?,
        )
        .context("opening map COUNTERS")?;
        Ok((
            Probes {
                _ebpf: ebpf,
                counters,
            },
            Stream { events, logs },
        ))
    }

    /// Read the kernel-side counters.
    pub fn counters(&self) -> KernelCounters {
        let sum = |slot: u32| -> u64 {
            self.counters
                .get(&slot, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        KernelCounters {
            ringbuf_full: sum(COUNTER_RINGBUF_FULL),
            read_errors: sum(COUNTER_READ_ERROR),
            recursion_misses: self
                ._ebpf
                .programs()
                .filter_map(|(_, p)| recursion_misses(std::os::fd::AsFd::as_fd(p.fd().ok()?)))
                .sum(),
        }
    }
}

/// `bpf_prog_info.recursion_misses` of the program `fd` (Linux 5.12+);
/// `None` when the kernel does not say. aya reads the info but does not
/// expose this field, so this asks `BPF_OBJ_GET_INFO_BY_FD` itself.
fn recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    /// The `info` member of `union bpf_attr`.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: bpf_prog_info is plain old data; all zeroes is valid.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: &raw mut info as u64,
    };
    // SAFETY: the kernel writes at most `info_len` bytes into `info`, which
    // outlives the call, and reads only `attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            size_of::<InfoAttr>() as libc::c_long,
        )
    };
    let covered = attr.info_len as usize
        >= std::mem::offset_of!(aya_obj::generated::bpf_prog_info, recursion_misses) + 8;
    (rc == 0 && covered).then_some(info.recursion_misses)
}

/// Why a program was refused. A refusal we recognise (a missing kernel
/// feature) is one sentence, with the verifier log only when `RUST_LOG`
/// asks for debug output; anything else keeps the whole log.
fn refused(hook: &str, e: &aya::programs::ProgramError) -> anyhow::Error {
    let detail = verifier_detail(e);
    // What a kernel before 5.12 says first: the compare-and-swap that
    // takes a lane slot is an instruction it does not know ("reserved
    // fields" of BPF_STX), or the cookie helper is not allowed.
    let before_5_12 = [
        "unknown func bpf_get_socket_cookie",
        "BPF_STX uses reserved fields",
    ];
    if before_5_12.iter().any(|m| detail.contains(m)) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!("the kernel refused the program for tracepoint {hook}: {detail}");
        }
        return preflight::PreflightError::Before512(preflight::kernel_release()).into();
    }
    anyhow::anyhow!("the kernel refused the program for tracepoint {hook}: {detail}")
}

/// The whole error chain of a program load, verifier log included.
fn verifier_detail(e: &aya::programs::ProgramError) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    if let aya::programs::ProgramError::LoadError { verifier_log, .. } = e {
        s.push_str("\nverifier log:\n");
        s.push_str(&verifier_log.to_string());
    }
    s
}
