//! Bulk data both ways (intact, with the gateway's memory bounded by back-pressure) and
//! half-close.

use super::upstream::{pattern, Instance, Mode};
use super::*;
use std::hash::Hasher;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const MB: usize = 1024 * 1024;
const TOTAL_MB: usize = 100;

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One megabyte of the transfer: pseudo-random, with its index in front so no two are alike.
fn block(i: usize, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    b
}

#[test]
fn a_hundred_megabytes_each_way_arrive_intact_in_bounded_memory() {
    let inst = Instance::start(Mode::Echo { greeting: None }, false);
    let listen = port_on("127.0.0.1");
    let streams = format!(
        "  - {{ name: bulk, listen: \"{listen}\", instance: up-a, port: {}, allow: [127.0.0.0/8] }}\n",
        inst.port()
    );
    let gw = start(&config(inst.addr, inst.addr, &streams, "1s"), &[listen]);
    let pid = gw.pid();
    let baseline = rss_kb(pid);

    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let seed: Vec<u8> = (0..MB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();

    let c = connect_from("127.0.0.1", listen);
    let mut reader = c.try_clone().expect("clone");
    let mut writer = c;
    let written = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let (w, f) = (written.clone(), finished.clone());
    let send = thread::spawn(move || {
        let mut h = std::hash::DefaultHasher::new();
        for i in 0..TOTAL_MB {
            let b = block(i, &seed);
            h.write(&b);
            writer.write_all(&b).expect("send");
            w.fetch_add(b.len() as u64, Ordering::SeqCst);
        }
        writer.shutdown(Shutdown::Write).expect("shutdown");
        f.store(true, Ordering::SeqCst);
        h.finish()
    });

    // Read nothing until the sender is stuck (its data fills the socket buffers on both sides
    // of the gateway): a gateway that buffered without bound would take it all instead.
    let mut peak = baseline;
    let mut last = (0, Instant::now());
    loop {
        thread::sleep(Duration::from_millis(50));
        peak = peak.max(rss_kb(pid));
        let now = written.load(Ordering::SeqCst);
        if finished.load(Ordering::SeqCst) || now >= (TOTAL_MB * MB) as u64 {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(500) {
            break;
        }
    }
    let stalled_at = written.load(Ordering::SeqCst);
    eprintln!(
        "sender stalled after {:.1} MB with nothing read",
        stalled_at as f64 / MB as f64
    );
    assert!(
        stalled_at < (TOTAL_MB * MB / 2) as u64,
        "back-pressure: the sender got {stalled_at} bytes out while nobody read"
    );

    let sampling = Arc::new(AtomicBool::new(true));
    let s = sampling.clone();
    let sampler = thread::spawn(move || {
        let mut peak = 0;
        while s.load(Ordering::SeqCst) {
            peak = peak.max(rss_kb(pid));
            thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let mut h = std::hash::DefaultHasher::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).expect("receive");
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
        got += n;
    }
    sampling.store(false, Ordering::SeqCst);
    let peak = peak.max(sampler.join().unwrap());
    let sent_hash = send.join().unwrap();
    assert_eq!(got, TOTAL_MB * MB, "every byte came back");
    assert_eq!(h.finish(), sent_hash, "and unchanged");
    eprintln!(
        "gateway RSS: {} kB before, {} kB at most during {TOTAL_MB} MB each way",
        baseline, peak
    );
    assert!(
        peak < baseline + 32 * 1024,
        "RSS grew from {baseline} kB to {peak} kB"
    );
    let log = wait_log(&gw, "stream=bulk client=", 1);
    assert!(log.contains("end=closed duration="), "{log}");
    let total = TOTAL_MB * MB;
    assert!(
        log.contains(&format!("bytes_in={total} bytes_out={total}")),
        "{log}"
    );
}

#[test]
fn a_client_that_shuts_its_write_side_still_gets_the_whole_answer() {
    const ANSWER: usize = 3 * MB + 17;
    let inst = Instance::start(Mode::AnswerAfterEof { size: ANSWER }, false);
    let listen = port_on("127.0.0.1");
    let streams = format!(
        "  - {{ name: half, listen: \"{listen}\", instance: up-a, port: {}, allow: [127.0.0.1] }}\n",
        inst.port()
    );
    let gw = start(&config(inst.addr, inst.addr, &streams, "1s"), &[listen]);
    let mut c = connect_from("127.0.0.1", listen);
    c.write_all(b"the whole request").unwrap();
    // The instance answers only once it sees the end of the request.
    c.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).expect("read the answer");
    assert_eq!(answer.len(), ANSWER);
    assert!(answer.iter().enumerate().all(|(i, b)| *b == pattern(i)));
    let log = wait_log(&gw, "stream=half client=", 1);
    assert!(
        log.contains("end=closed duration=")
            && log.contains(&format!("bytes_in=17 bytes_out={ANSWER}")),
        "{log}"
    );
}
