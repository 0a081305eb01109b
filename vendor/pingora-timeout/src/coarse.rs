// anygate patch (see PATCHES.md): a coarse monotonic clock for deadlines and tallies that do
// not need better than a few milliseconds, and may be a little early.
//
// `Instant::now()` is `clock_gettime(CLOCK_MONOTONIC)`: about 21 ns here (the vDSO reads the
// TSC, slow in a virtual machine), paid for every idle connection stashed or taken and every
// read that had to wait. `CLOCK_MONOTONIC_COARSE` is the same clock as of the kernel's last
// tick, a stored value the vDSO returns in about 3 ns. It is usually a tick (1 to 10 ms)
// behind, and more when a tick is late (seen: 5 ms with 4 ms ticks on a loaded virtual
// machine): not for a timeout that must not fire early.
// Times are `Duration`s on the monotonic clock's own timeline (since boot), so that no
// `Instant` has to be built from one.

use std::time::Duration;

fn read(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: `ts` is a valid timespec to write to; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The monotonic clock as of the last tick: usually a tick behind `Instant::now()`, never
/// ahead.
#[inline]
pub fn now() -> Duration {
    read(libc::CLOCK_MONOTONIC_COARSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The monotonic clock now, as `Instant::now()` reads it, on [`now`]'s timeline.
    fn precise() -> Duration {
        read(libc::CLOCK_MONOTONIC)
    }

    #[test]
    fn coarse_is_never_ahead_of_the_precise_clock_and_close_behind() {
        let first = now();
        for _ in 0..10_000 {
            let before = precise();
            let c = now();
            let after = precise();
            assert!(c <= after, "{c:?} after {after:?}");
            // Usually a tick behind; more when the tick is late (a busy machine). A second
            // would be another clock.
            assert!(c + Duration::from_secs(1) >= before, "{c:?} {before:?}");
            assert!(c >= first);
        }
    }
    #[test]
    fn the_precise_clock_is_the_one_instants_read() {
        // `Instant`'s Debug shows its timespec on Linux: the deadline slots mix the two.
        let i = std::time::Instant::now();
        let p = precise();
        let text = format!("{i:?}");
        let field = |name: &str| -> u64 {
            let rest = &text[text.find(name).expect(&text) + name.len()..];
            let digits: String = rest
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().expect(&text)
        };
        let at = Duration::new(field("tv_sec"), field("tv_nsec") as u32);
        assert!(
            at <= p && p - at < Duration::from_millis(50),
            "{text} vs {p:?}"
        );
    }
}
