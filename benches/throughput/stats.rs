//! Order statistics of measured values.

/// The median of `xs`; it must not be empty.
pub fn median(xs: Vec<f64>) -> f64 {
    quartiles(xs).median
}

/// The nearest-rank percentile `p` (0 < p ≤ 1) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The first quartile, median and third quartile of some measured values.
#[derive(Clone, Copy, Debug)]
pub struct Quartiles {
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
}

/// The quartiles of `xs`, interpolated linearly between order statistics (R's type 7, what
/// spreadsheets compute); `xs` must not be empty. For an even count the median is the mean of
/// the middle two values.
pub fn quartiles(mut xs: Vec<f64>) -> Quartiles {
    assert!(!xs.is_empty(), "quartiles of nothing");
    xs.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let h = p * (xs.len() - 1) as f64;
        let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
        xs[lo] + (h - lo as f64) * (xs[hi] - xs[lo])
    };
    Quartiles {
        q1: at(0.25),
        median: at(0.5),
        q3: at(0.75),
    }
}
