//! Randomness where nothing secret depends on it: spreading retries, picking faults.

/// A well-spread pseudo-random number in [0, 1).
pub fn unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 1.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
