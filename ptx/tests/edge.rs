//! Hand-written PTX for edge semantics: barriers with divergent warps, every shuffle mode and
//! the other warp-synchronous instructions, atomics contended across blocks on several host
//! threads, and the errors a user sees for bad memory accesses and bad modules.

mod common;
use common::*;

/// A shuffle mode, its `c` operand and the reference source lane (and validity) per lane.
type ShflCase = (&'static str, u32, Box<dyn Fn(u32) -> (u32, bool)>);
use gpufn_ptx::{CudaCode, DeviceMemory, LaunchError, LoadError, Module};

const HEADER: &str = ".version 8.0\n.target sm_90\n.address_size 64\n";

fn load(body: &str, mem: &DeviceMemory) -> Module {
    Module::from_ptx(&format!("{HEADER}{body}"), mem).unwrap_or_else(|e| panic!("load: {e}"))
}

/// Each thread writes its id to shared memory on one of two divergent paths, each with its
/// own `bar.sync`; warps 2 and 3 exit before any barrier. After the barrier every thread of
/// warps 0-1 must see the value written by a thread of the other warp.
#[test]
fn barrier_with_divergent_warps_and_exited_threads() {
    let mem = memory();
    let m = load(
        r#"
.visible .entry k(.param .u64 out)
{
    .reg .pred %p<4>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<6>;
    .shared .align 4 .b32 buf[64];
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    setp.ge.u32 %p3, %r1, 64;
    @%p3 exit;
    shl.b32 %r2, %r1, 2;
    mov.u32 %r3, buf;
    add.u32 %r4, %r3, %r2;
    and.b32 %r5, %r1, 1;
    setp.eq.u32 %p1, %r5, 0;
    @%p1 bra EVEN;
    mul.lo.u32 %r6, %r1, 10;
    st.shared.u32 [%r4], %r6;
    bar.sync 0;
    bra.uni JOIN;
EVEN:
    mul.lo.u32 %r6, %r1, 10;
    st.shared.u32 [%r4], %r6;
    barrier.sync 0;
JOIN:
    xor.b32 %r7, %r1, 32;
    shl.b32 %r8, %r7, 2;
    add.u32 %r9, %r3, %r8;
    ld.shared.u32 %r10, [%r9];
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd2, %rd3;
    st.global.u32 [%rd4], %r10;
    ret;
}
"#,
        &mem,
    );
    let out = upload(&mem, &[0u32; 64]);
    run(
        &m,
        &mem,
        "k",
        cfg([3, 1, 1], [128, 1, 1], 0),
        &[Arg::Ptr(out)],
    );
    let want: Vec<u32> = (0..64u32).map(|t| (t ^ 32) * 10).collect();
    assert_eq!(download_u32(&mem, out, 64), want);
}

/// Producer/consumer with a named barrier: warp 0 writes and `bar.arrive`s, warp 1 waits in
/// `bar.sync 1, 64` and reads. Warp 1 runs first on the host, so it must really wait.
#[test]
fn named_barrier_producer_consumer() {
    let mem = memory();
    let m = load(
        r#"
.visible .entry k(.param .u64 out)
{
    .reg .pred %p<2>;
    .reg .b32 %r<10>;
    .reg .b64 %rd<4>;
    .shared .align 4 .b32 buf[32];
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    and.b32 %r2, %r1, 31;
    shl.b32 %r3, %r2, 2;
    mov.u32 %r4, buf;
    add.u32 %r5, %r4, %r3;
    setp.ge.u32 %p1, %r1, 32;
    @%p1 bra CONSUMER;
    mul.lo.u32 %r6, %r1, %r1;
    st.shared.u32 [%r5], %r6;
    bar.arrive 1, 64;
    ret;
CONSUMER:
    bar.sync 1, 64;
    ld.shared.u32 %r7, [%r5];
    mul.wide.u32 %rd2, %r2, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r7;
    ret;
}
"#,
        &mem,
    );
    let out = upload(&mem, &[0u32; 32]);
    run(
        &m,
        &mem,
        "k",
        cfg([2, 1, 1], [64, 1, 1], 0),
        &[Arg::Ptr(out)],
    );
    let want: Vec<u32> = (0..32u32).map(|t| t * t).collect();
    assert_eq!(download_u32(&mem, out, 32), want);
}

/// A barrier inside a called function, a guarded call, and `exit` inside a callee.
#[test]
fn barriers_guards_and_exit_inside_calls() {
    let mem = memory();
    let m = load(
        r#"
.func (.param .b32 r) publish(.param .b32 x)
{
    .reg .b32 %r<8>;
    .shared .align 4 .b32 slots[64];
    ld.param.b32 %r1, [x];
    mov.u32 %r2, %tid.x;
    shl.b32 %r3, %r2, 2;
    mov.u32 %r4, slots;
    add.u32 %r5, %r4, %r3;
    st.shared.u32 [%r5], %r1;
    bar.sync 0;
    xor.b32 %r6, %r3, 4;
    add.u32 %r6, %r4, %r6;
    ld.shared.u32 %r7, [%r6];
    st.param.b32 [r], %r7;
    ret;
}
.func quit_if_odd(.param .b32 x)
{
    .reg .pred %p;
    .reg .b32 %r<2>;
    ld.param.b32 %r1, [x];
    and.b32 %r1, %r1, 1;
    setp.eq.u32 %p, %r1, 1;
    @%p exit;
    ret;
}
.visible .entry k(.param .u64 out)
{
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    add.u32 %r2, %r1, 100;
    { .param .b32 a; .param .b32 b;
      st.param.b32 [a], %r2;
      call.uni (b), publish, (a);
      ld.param.b32 %r3, [b]; }
    setp.lt.u32 %p1, %r1, 8;
    mov.u32 %r4, 0;
    { .param .b32 a; .param .b32 b;
      st.param.b32 [a], %r1;
      @%p1 call.uni (b), publish, (a);
      ld.param.b32 %r4, [b]; }
    { .param .b32 a;
      st.param.b32 [a], %r1;
      call.uni quit_if_odd, (a); }
    add.u32 %r5, %r3, %r4;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r5;
    ret;
}
"#,
        &mem,
    );
    let out = upload(&mem, &[7u32; 64]);
    // `publish` synchronises the whole block, so the guarded call (tid < 8) is run with a
    // block of 8 threads; odd threads then exit inside `quit_if_odd` and store nothing.
    run(
        &m,
        &mem,
        "k",
        cfg([1, 1, 1], [8, 1, 1], 0),
        &[Arg::Ptr(out)],
    );
    let got = download_u32(&mem, out, 8);
    for t in 0..8u32 {
        let want = if t % 2 == 1 {
            7
        } else {
            (t ^ 1) + 100 + (t ^ 1)
        };
        assert_eq!(got[t as usize], want, "thread {t}");
    }
}

/// Lanes 0-15 of warp 1 wait at `bar.sync 1, 48` with warp 0 while lanes 16-31 spin on a
/// shared flag that warp 0 sets only after the barrier: the barrier must be released while
/// part of warp 1 is still running (sm_70+ per-thread barrier semantics).
#[test]
fn barrier_release_while_other_lanes_of_the_warp_spin() {
    let mem = memory();
    let m = load(
        r#"
.visible .entry k(.param .u64 out)
{
    .reg .pred %p<4>;
    .reg .b32 %r<10>;
    .reg .b64 %rd<4>;
    .shared .align 4 .b32 flag;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    setp.lt.u32 %p1, %r1, 32;
    @%p1 bra WARP0;
    setp.lt.u32 %p2, %r1, 48;
    @%p2 bra WAITERS;
SPIN:
    ld.volatile.shared.u32 %r2, [flag];
    setp.eq.u32 %p3, %r2, 0;
    @%p3 bra SPIN;
    bra.uni DONE;
WAITERS:
    bar.sync 1, 48;
    mov.u32 %r2, 2;
    bra.uni DONE;
WARP0:
    bar.sync 1, 48;
    mov.u32 %r2, 1;
    st.volatile.shared.u32 [flag], %r2;
DONE:
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r2;
    ret;
}
"#,
        &mem,
    );
    let out = upload(&mem, &[0u32; 64]);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let params = pack(&m, "k", &[Arg::Ptr(out)]);
    let result = std::thread::scope(|s| {
        let watchdog = s.spawn(|| {
            // A regression would spin forever: cancel after a generous bound instead.
            for _ in 0..2000 {
                if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let r = m.launch_cancellable(
            "k",
            cfg([1, 1, 1], [64, 1, 1], 0),
            &params,
            &mem,
            1,
            &cancel,
        );
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        watchdog.join().unwrap();
        r
    });
    result.unwrap();
    let got = download_u32(&mem, out, 64);
    let want: Vec<u32> = (0..64)
        .map(|t| {
            if t < 32 {
                1
            } else if t < 48 {
                2
            } else {
                1
            }
        })
        .collect();
    assert_eq!(got, want);
}

/// `bar.red.popc` (`__syncthreads_count`) counts the predicate over the whole block.
#[test]
fn barrier_reduction_counts_across_warps() {
    let mem = memory();
    let m = load(
        r#"
.visible .entry k(.param .u64 out)
{
    .reg .pred %p<3>;
    .reg .b32 %r<6>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    rem.u32 %r2, %r1, 3;
    setp.eq.u32 %p1, %r2, 0;
    bar.red.popc.u32 %r3, 0, %p1;
    bar.red.and.pred %p2, 1, %p1;
    selp.u32 %r4, 1, 0, %p2;
    add.u32 %r3, %r3, %r4;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r3;
    ret;
}
"#,
        &mem,
    );
    let out = upload(&mem, &[0u32; 100]);
    run(
        &m,
        &mem,
        "k",
        cfg([1, 1, 1], [100, 1, 1], 0),
        &[Arg::Ptr(out)],
    );
    assert_eq!(download_u32(&mem, out, 100), vec![34; 100]);
}

/// All four shuffle modes with full and 8-lane segments, checked against CUDA's
/// `__shfl*_sync(mask, v, lane/delta, width)` definitions; plus vote, match, redux and
/// activemask under divergence.
#[test]
fn shuffle_modes_and_warp_votes() {
    let mem = memory();
    let shfl = |mode: &str, c: u32| {
        format!(
            r#"
.visible .entry k(.param .u64 out, .param .u32 b)
{{
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r5, [b];
    mov.u32 %r1, %laneid;
    mul.lo.u32 %r2, %r1, 7;
    add.u32 %r2, %r2, 100;
    shfl.sync.{mode}.b32 %r3|%p1, %r2, %r5, {c}, -1;
    selp.u32 %r4, 1000, 0, %p1;
    add.u32 %r3, %r3, %r4;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r3;
    ret;
}}
"#
        )
    };
    let val = |l: u32| l * 7 + 100;
    for width in [32u32, 8] {
        let seg_c = ((32 - width) << 8) | 0x1f; // what nvcc passes for `width`
        let up_c = (32 - width) << 8;
        for delta in [0u32, 1, 3, 5] {
            let cases: [ShflCase; 4] = [
                (
                    "up",
                    up_c,
                    Box::new(move |l| {
                        let start = l & !(width - 1);
                        if l >= start + delta {
                            (l - delta, true)
                        } else {
                            (l, false)
                        }
                    }),
                ),
                (
                    "down",
                    seg_c,
                    Box::new(move |l| {
                        let end = (l & !(width - 1)) + width;
                        if l + delta < end {
                            (l + delta, true)
                        } else {
                            (l, false)
                        }
                    }),
                ),
                (
                    "bfly",
                    seg_c,
                    Box::new(move |l| {
                        let s = l ^ delta;
                        if s < (l & !(width - 1)) + width {
                            (s, true)
                        } else {
                            (l, false)
                        }
                    }),
                ),
                (
                    "idx",
                    seg_c,
                    Box::new(move |l| ((l & !(width - 1)) + (delta & (width - 1)), true)),
                ),
            ];
            for (mode, c, reference) in cases {
                let m = load(&shfl(mode, c), &mem);
                let out = upload(&mem, &[0u32; 32]);
                run(
                    &m,
                    &mem,
                    "k",
                    cfg([1, 1, 1], [32, 1, 1], 0),
                    &[Arg::Ptr(out), Arg::U32(delta)],
                );
                let want: Vec<u32> = (0..32)
                    .map(|l| {
                        let (src, ok) = reference(l);
                        val(src) + if ok { 1000 } else { 0 }
                    })
                    .collect();
                assert_eq!(
                    download_u32(&mem, out, 32),
                    want,
                    "shfl.{mode} delta {delta} width {width}"
                );
            }
        }
    }

    // Votes under divergence: only odd lanes take part.
    let m = load(
        r#"
.visible .entry k(.param .u64 out)
{
    .reg .pred %p<6>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %laneid;
    and.b32 %r2, %r1, 1;
    setp.eq.u32 %p1, %r2, 0;
    @%p1 bra DONE;
    setp.gt.u32 %p2, %r1, 20;
    vote.sync.ballot.b32 %r3, %p2, 0xaaaaaaaa;
    vote.sync.any.pred %p3, %p2, 0xaaaaaaaa;
    vote.sync.all.pred %p4, %p2, 0xaaaaaaaa;
    selp.u32 %r4, 1, 0, %p3;
    selp.u32 %r5, 1, 0, %p4;
    shr.u32 %r6, %r1, 3;
    match.any.sync.b32 %r7, %r6, 0xaaaaaaaa;
    redux.sync.add.u32 %r8, %r1, 0xaaaaaaaa;
    activemask.b32 %r9;
    mul.wide.u32 %rd2, %r1, 24;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v2.u32 [%rd3], {%r3, %r4};
    st.global.u32 [%rd3+8], %r5;
    st.global.u32 [%rd3+12], %r7;
    st.global.u32 [%rd3+16], %r8;
    st.global.u32 [%rd3+20], %r9;
DONE:
    ret;
}
"#,
        &mem,
    );
    let out = upload(&mem, &[0u32; 32 * 6]);
    run(
        &m,
        &mem,
        "k",
        cfg([1, 1, 1], [32, 1, 1], 0),
        &[Arg::Ptr(out)],
    );
    let got = download_u32(&mem, out, 32 * 6);
    let ballot: u32 = (0..32)
        .filter(|l| l % 2 == 1 && *l > 20)
        .fold(0, |a, l| a | 1 << l);
    let sum: u32 = (0..32).filter(|l| l % 2 == 1).sum();
    for l in (1..32).step_by(2) {
        let r = &got[l * 6..l * 6 + 6];
        let group: u32 = (0..32)
            .filter(|o| o % 2 == 1 && o >> 3 == l >> 3)
            .fold(0, |a, o| a | 1 << o);
        assert_eq!(r, &[ballot, 1, 0, group, sum, 0xaaaa_aaaa], "lane {l}");
    }
}

/// Every thread of 24 blocks hammers the same words with different atomics while blocks run
/// on two host threads; the results must be exact.
#[test]
fn atomics_contended_across_blocks() {
    let mem = memory();
    let m = load(
        r#"
.visible .entry k(.param .u64 ctr)
{
    .reg .pred %p<3>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<8>;
    .reg .f64 %fd<3>;
    ld.param.u64 %rd1, [ctr];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mad.lo.u32 %r4, %r2, %r3, %r1;
    atom.global.add.u32 %r5, [%rd1], 1;
    atom.global.max.s32 %r6, [%rd1+4], %r4;
    atom.global.min.u32 %r6, [%rd1+8], %r4;
    atom.global.inc.u32 %r6, [%rd1+12], 9;
    red.global.xor.b32 [%rd1+16], %r4;
    cvt.rn.f64.u32 %fd1, %r4;
    red.global.add.f64 [%rd1+24], %fd1;
    atom.global.add.u64 %rd2, [%rd1+32], 3;
    // a CAS spin-lock protecting a non-atomic read-modify-write of [ctr+40]
LOCK:
    atom.global.cas.b32 %r7, [%rd1+44], 0, 1;
    setp.ne.u32 %p1, %r7, 0;
    @%p1 bra LOCK;
    ld.volatile.global.u32 %r8, [%rd1+40];
    add.u32 %r8, %r8, 2;
    st.volatile.global.u32 [%rd1+40], %r8;
    atom.global.exch.b32 %r9, [%rd1+44], 0;
    ret;
}
"#,
        &mem,
    );
    let mut init = vec![0u8; 48];
    init[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let ctr = upload(&mem, &init);
    let (blocks, threads) = (24u32, 96u32);
    run(
        &m,
        &mem,
        "k",
        cfg([blocks, 1, 1], [threads, 1, 1], 0),
        &[Arg::Ptr(ctr)],
    );
    let mut b = vec![0u8; 48];
    mem.read(ctr, &mut b).unwrap();
    let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let n = blocks * threads;
    assert_eq!(word(0), n, "atom.add");
    assert_eq!(word(4), n - 1, "atom.max");
    assert_eq!(word(8), 0, "atom.min");
    assert_eq!(word(12), n % 10, "atom.inc wraps at 9");
    assert_eq!(word(16), (0..n).fold(0, |a, x| a ^ x), "red.xor");
    let sum = f64::from_le_bytes(b[24..32].try_into().unwrap());
    assert_eq!(
        sum,
        (0..n).map(|x| x as f64).sum::<f64>(),
        "red.add.f64 (exact: small integers)"
    );
    assert_eq!(
        u64::from_le_bytes(b[32..40].try_into().unwrap()),
        3 * n as u64
    );
    assert_eq!(word(40), 2 * n, "CAS lock");
}

const OOB: &str = r#"
.visible .entry oob(.param .u64 p, .param .u64 off)
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<6>;
    .reg .pred %p<2>;
    ld.param.u64 %rd1, [p];
    ld.param.u64 %rd2, [off];
    mov.u32 %r1, %tid.x;
    setp.ne.u32 %p1, %r1, 5;
    @%p1 bra END;
    add.s64 %rd3, %rd1, %rd2;
    ld.global.u32 %r2, [%rd3];
    st.global.u32 [%rd1], %r2;
END:
    ret;
}
"#;

#[test]
fn out_of_bounds_access_stops_the_launch_with_the_site() {
    let mem = memory();
    let m = load(OOB, &mem);
    let buf = upload(&mem, &[7u32; 16]);
    for (off, what) in [
        (64u64, "one past the end"),
        (1 << 20, "far away"),
        (0u64.wrapping_sub(buf), "null"),
    ] {
        let params = [buf.to_le_bytes(), off.to_le_bytes()].concat();
        let err = m
            .launch("oob", cfg([2, 1, 1], [32, 1, 1], 0), &params, &mem, 2)
            .unwrap_err();
        assert_eq!(err.cuda_code(), CudaCode::IllegalAddress, "{what}");
        match &err {
            LaunchError::IllegalAddress { site, address, .. } => {
                assert_eq!(site.kernel, "oob");
                assert_eq!(site.thread, [5, 0, 0]);
                assert_eq!(site.block, [0, 0, 0]);
                assert_eq!(*address, buf.wrapping_add(off));
            }
            other => panic!("{what}: {other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("oob")
                && text.contains("thread (5,0,0)")
                && text.contains("block (0,0,0)"),
            "{text}"
        );
    }
    // In bounds still works afterwards, and nothing was written by the failed launches.
    assert_eq!(download_u32(&mem, buf, 16), vec![7; 16]);
    let params = [buf.to_le_bytes(), 8u64.to_le_bytes()].concat();
    m.launch("oob", cfg([1, 1, 1], [32, 1, 1], 0), &params, &mem, 1)
        .unwrap();
}

#[test]
fn memory_of_another_session_is_unreachable() {
    let (mine, theirs) = (memory(), memory());
    let m = load(OOB, &mine);
    let their_buf = upload(&theirs, &[1u32; 16]);
    let my_buf = upload(&mine, &[0u32; 16]);
    let off = their_buf.wrapping_sub(my_buf);
    let params = [my_buf.to_le_bytes(), off.to_le_bytes()].concat();
    // Both sessions hand out the same addresses; reading "their" address reads my memory or
    // faults, never theirs.
    match m.launch("oob", cfg([1, 1, 1], [32, 1, 1], 0), &params, &mine, 1) {
        Ok(_) => assert_ne!(download_u32(&mine, my_buf, 1)[0], 1),
        Err(e) => assert_eq!(e.cuda_code(), CudaCode::IllegalAddress),
    }
    mine.free(my_buf).unwrap();
    let params = [my_buf.to_le_bytes(), 0u64.to_le_bytes()].concat();
    let err = m
        .launch("oob", cfg([1, 1, 1], [32, 1, 1], 0), &params, &mine, 1)
        .unwrap_err();
    assert_eq!(err.cuda_code(), CudaCode::IllegalAddress, "freed memory");
}

#[test]
fn shared_misaligned_trap_and_stack_errors() {
    let mem = memory();
    let m = load(
        r#"
.visible .entry shared_oob()
{
    .reg .b32 %r<4>;
    .shared .align 4 .b8 s[64];
    mov.u32 %r1, s;
    ld.shared.u32 %r2, [%r1+64];
    ret;
}
.visible .entry misaligned(.param .u64 p)
{
    .reg .b32 %r<2>;
    .reg .b64 %rd<2>;
    ld.param.u64 %rd1, [p];
    ld.global.u32 %r1, [%rd1+2];
    ret;
}
.visible .entry trapping()
{
    trap;
}
.func (.param .b32 r) forever(.param .b32 x)
{
    .reg .b32 %r<3>;
    ld.param.b32 %r1, [x];
    { .param .b32 a; .param .b32 b;
      st.param.b32 [a], %r1;
      call.uni (b), forever, (a);
      ld.param.b32 %r2, [b]; }
    st.param.b32 [r], %r2;
    ret;
}
.visible .entry recursion()
{
    .reg .b32 %r<2>;
    { .param .b32 a; .param .b32 b;
      st.param.b32 [a], 1;
      call.uni (b), forever, (a); }
    ret;
}
"#,
        &mem,
    );
    let err = m
        .launch("shared_oob", cfg([1, 1, 1], [1, 1, 1], 0), &[], &mem, 1)
        .unwrap_err();
    assert!(
        matches!(
            err,
            LaunchError::IllegalAddress {
                space: "shared",
                ..
            }
        ),
        "{err}"
    );
    let buf = upload(&mem, &[0u32; 4]);
    let err = m
        .launch(
            "misaligned",
            cfg([1, 1, 1], [1, 1, 1], 0),
            &buf.to_le_bytes(),
            &mem,
            1,
        )
        .unwrap_err();
    assert_eq!(err.cuda_code(), CudaCode::MisalignedAddress);
    let err = m
        .launch("trapping", cfg([1, 1, 1], [1, 1, 1], 0), &[], &mem, 1)
        .unwrap_err();
    assert!(matches!(err, LaunchError::Trap { .. }), "{err}");
    let err = m
        .launch("recursion", cfg([1, 1, 1], [4, 1, 1], 0), &[], &mem, 1)
        .unwrap_err();
    assert!(err.to_string().contains("stack overflow"), "{err}");
}

#[test]
fn unknown_instruction_fails_the_load_naming_it() {
    let mem = memory();
    let err = Module::from_ptx(
        &format!("{HEADER}.visible .entry k()\n{{\n .reg .b32 %r<2>;\n frobnicate.b32 %r1, %r0;\n ret;\n}}\n"),
        &mem,
    )
    .unwrap_err();
    assert_eq!(err.cuda_code(), CudaCode::NotSupported);
    assert!(
        err.to_string().contains("frobnicate") && err.to_string().contains("line 7"),
        "{err}"
    );
    // Known but unimplemented forms fail only the launch that reaches them.
    let m = load(
        ".visible .entry k(.param .u32 x)\n{\n .reg .b32 %r<3>;\n .reg .pred %p;\n ld.param.u32 %r1, [x];\n setp.eq.u32 %p, %r1, 0;\n @%p bra END;\n brx.idx %r1, TARGETS;\nEND:\n ret;\n}\n",
        &mem,
    );
    m.launch(
        "k",
        cfg([1, 1, 1], [32, 1, 1], 0),
        &0u32.to_le_bytes(),
        &mem,
        1,
    )
    .unwrap();
    let err = m
        .launch(
            "k",
            cfg([1, 1, 1], [32, 1, 1], 0),
            &1u32.to_le_bytes(),
            &mem,
            1,
        )
        .unwrap_err();
    assert_eq!(err.cuda_code(), CudaCode::NotSupported);
    assert!(err.to_string().contains("brx"), "{err}");
}

#[test]
fn malformed_ptx_gives_invalid_ptx_with_a_line() {
    let mem = memory();
    for (text, what) in [
        (
            ".visible .entry k(\n{\n ret;\n}\n",
            "unclosed parameter list",
        ),
        (
            ".visible .entry k()\n{\n .reg .b32 %r;\n add.s32 %r, %r;\n}\n",
            "too few operands",
        ),
        (
            ".visible .entry k()\n{\n bra NOWHERE;\n}\n",
            "undefined label",
        ),
        (
            ".visible .entry k()\n{\n .reg .b32 %r;\n mov.b32 %r, %q;\n}\n",
            "undeclared register",
        ),
        (".visible .entry k()\n{\n ret;\n", "missing brace"),
    ] {
        let err = Module::from_ptx(&format!("{HEADER}{text}"), &mem).unwrap_err();
        assert!(
            matches!(err, LoadError::InvalidPtx { line, .. } if line > 3),
            "{what}: {err}"
        );
        assert_eq!(err.cuda_code(), CudaCode::InvalidPtx);
    }
    assert_eq!(
        mem.used(),
        0,
        "failed loads leave no module variables behind"
    );
}

#[test]
fn bad_launch_configurations_are_rejected() {
    let mem = memory();
    let m = load(OOB, &mem);
    let p = [0u8; 16];
    for c in [
        cfg([0, 1, 1], [32, 1, 1], 0),
        cfg([1, 1, 1], [1025, 1, 1], 0),
        cfg([1, 1, 1], [32, 1, 1], 1 << 20),
    ] {
        assert_eq!(
            m.launch("oob", c, &p, &mem, 1).unwrap_err().cuda_code(),
            CudaCode::InvalidValue
        );
    }
    assert_eq!(
        m.launch("oob", cfg([1, 1, 1], [1, 1, 1], 0), &p[..8], &mem, 1)
            .unwrap_err()
            .cuda_code(),
        CudaCode::InvalidValue
    );
    assert_eq!(
        m.launch("nope", cfg([1, 1, 1], [1, 1, 1], 0), &p, &mem, 1)
            .unwrap_err()
            .cuda_code(),
        CudaCode::NotFound
    );
}

/// Each kernel's own shared variables start at the same offset (only one kernel runs in a
/// block), so a module whose kernels together declare more than a block may hold still
/// loads, like CUB's many-kernel modules. Module-level and dynamic shared memory overlap
/// neither kernel's.
#[test]
fn kernels_of_one_module_reuse_the_same_shared_offsets() {
    let mem = memory();
    let kernel = |name: &str, big: &str, value: u32| {
        format!(
            r#"
.visible .entry {name}(.param .u64 out)
{{
    .reg .b32 %r<12>;
    .reg .b64 %rd<4>;
    .shared .align 4 .b32 {big}[30000];
    ld.param.u64 %rd1, [out];
    cvta.to.global.u64 %rd2, %rd1;
    mov.u32 %r1, common;
    mov.u32 %r2, {big};
    mov.u32 %r3, dyn;
    st.shared.u32 [%r1], 7;
    st.shared.u32 [%r2+119996], {value};
    st.shared.u32 [%r3], 9;
    ld.shared.u32 %r4, [%r1];
    ld.shared.u32 %r5, [%r2+119996];
    ld.shared.u32 %r6, [%r3];
    st.global.u32 [%rd2], %r4;
    st.global.u32 [%rd2+4], %r5;
    st.global.u32 [%rd2+8], %r6;
    st.global.u32 [%rd2+12], %r1;
    st.global.u32 [%rd2+16], %r2;
    st.global.u32 [%rd2+20], %r3;
    ret;
}}
"#
        )
    };
    let source = format!(
        ".shared .align 4 .b32 common[4];\n.extern .shared .align 4 .b32 dyn[];\n{}{}",
        kernel("a", "big_a", 11),
        kernel("b", "big_b", 22)
    );
    let m = load(&source, &mem);
    for (name, value) in [("a", 11), ("b", 22)] {
        let out = upload(&mem, &[0u32; 6]);
        run(
            &m,
            &mem,
            name,
            cfg([1, 1, 1], [1, 1, 1], 64),
            &[Arg::Ptr(out)],
        );
        let got = download_u32(&mem, out, 6);
        assert_eq!(&got[..3], &[7, value, 9], "kernel {name}");
        let (common, big, dynamic) = (got[3], got[4], got[5]);
        assert!(common + 16 <= big, "kernel {name}: {got:?}");
        assert!(big + 120_000 <= dynamic, "kernel {name}: {got:?}");
    }
}
