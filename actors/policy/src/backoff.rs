//! Delay computation: exponential growth with a cap, down-jitter, and the crash-loop span used by the never-trips warning.

use crate::RestartPolicy;

/// How many streak positions [`min_crash_loop_span_ms`] sums one by one before it falls back
/// to a lower bound.
const SPAN_STEPS: u32 = 10_000;

/// `min(cap, initial * multiplier^streak)`, rounded down, saturating, never below `initial`
/// unless `initial` exceeds the cap.
///
/// Integral multipliers are computed exactly with integers. Other multipliers go through
/// `f64`; the result is clamped to at least `initial`, which keeps the sequence
/// non-decreasing even when `initial` is too large for `f64` to hold exactly.
pub(crate) fn exponential(initial: u64, multiplier: f64, cap: u64, streak: u32) -> u64 {
    if initial >= cap {
        return cap;
    }
    if streak == 0 || initial == 0 || multiplier.is_nan() || multiplier <= 1.0 {
        return initial;
    }
    if multiplier.fract() == 0.0 && multiplier < u64::MAX as f64 {
        // The multiplier is an integer of at least 2, so the loop reaches the cap (or
        // saturates, which is above the cap) within 64 rounds.
        let m = multiplier as u64;
        let mut delay = initial;
        for _ in 0..streak {
            delay = delay.saturating_mul(m);
            if delay >= cap {
                return cap;
            }
        }
        return delay;
    }
    let exact = initial as f64 * multiplier.powf(f64::from(streak));
    // `cap as f64` may round up, so values just below it are also clamped by `min` afterwards.
    if exact.is_nan() || exact >= cap as f64 {
        return cap;
    }
    (exact as u64).max(initial).min(cap)
}

/// `base - floor(floor(base * jitter) * sample / 2^32)`, which lies in
/// `[base - floor(base * jitter), base]`.
///
/// Everything is integer arithmetic on the exact value of the `f64` jitter, so the result is
/// non-decreasing in `base` and non-increasing in `sample`.
pub(crate) fn jittered(base: u64, jitter: f64, sample: u32) -> u64 {
    let span = scaled_down(base, jitter);
    let cut = (u128::from(span) * u128::from(sample)) >> 32;
    base.saturating_sub(u64::try_from(cut).unwrap_or(span))
}

/// `floor(value * fraction)` for a `fraction` in `0.0..=1.0`, computed exactly.
///
/// A fraction outside that range (or NaN) is treated as 0 below and 1 above; validation never
/// lets one through.
fn scaled_down(value: u64, fraction: f64) -> u64 {
    if fraction.is_nan() || fraction <= 0.0 {
        return 0;
    }
    if fraction >= 1.0 {
        return value;
    }
    // A positive finite f64 is exactly `mantissa * 2^exponent`.
    let bits = fraction.to_bits();
    let biased = (bits >> 52) & 0x7ff;
    let fraction_bits = bits & ((1 << 52) - 1);
    let (mantissa, shift) = if biased == 0 {
        (fraction_bits, 1074)
    } else {
        // `fraction < 1.0`, so `biased <= 1022` and the shift is at least 53.
        (fraction_bits | (1 << 52), 1075 - biased)
    };
    let product = u128::from(value) * u128::from(mantissa);
    let shifted = u32::try_from(shift).ok().and_then(|shift| product.checked_shr(shift)).unwrap_or(0);
    u64::try_from(shifted).unwrap_or(value).min(value)
}

/// The shortest time a crash loop can take to make `restarts` restarts and fail once more:
/// the sum of the minimum delays of streak positions `0..restarts`, saturating.
///
/// The sum stops growing once it reaches `enough`, since the caller only compares with it.
/// Delays never decrease along a streak, which allows two shortcuts: once a term equals the
/// last one, all remaining terms do; and a block of terms is at least its first term times its
/// length. The first [`SPAN_STEPS`] terms are summed one by one; after that, blocks of doubling
/// length are bounded below, so a streak that needs that long to reach its cap may get a result
/// that is too small, never too large: the never-trips warning may then be missed, but it is
/// never raised by mistake.
pub(crate) fn min_crash_loop_span_ms(policy: &RestartPolicy, restarts: u32, enough: u64) -> u64 {
    let Some(last_index) = restarts.checked_sub(1) else {
        return 0;
    };
    let last = policy.min_delay_ms(last_index);
    let mut sum: u64 = 0;
    let mut k: u32 = 0;
    while k < restarts && sum < enough {
        let term = policy.min_delay_ms(k);
        let remaining = restarts - k;
        let block = if term == last {
            remaining
        } else if k < SPAN_STEPS {
            1
        } else {
            k.min(remaining)
        };
        sum = sum.saturating_add(term.saturating_mul(u64::from(block)));
        k += block;
    }
    sum
}
