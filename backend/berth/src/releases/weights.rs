//! How a route's requests are split between the application's own tasks and a release's copies:
//! HAProxy balances by server weight (0–256 per server), so a release's percentage becomes one
//! weight for every server of each side, scaled so that the two sides' sums stand in the asked ratio
//! whatever the number of tasks on each side.

/// The largest weight Berth gives a server (HAProxy accepts up to 256).
pub const MAX: u8 = 255;

/// Weights for each of `own` servers and each of `copies` servers so that the copies together get
/// `percent` of the requests. A side with a share gets at least weight 1; a side with none gets 0
/// (its servers stay checked, and take requests again as soon as the weight changes). When one side
/// has no server able to take requests, the other takes them all, whatever the percentage: a
/// release never turns requests away that a task could answer (a promotion sends everything to the
/// copies; if none runs, the application's own tasks keep serving).
pub fn split(percent: u8, own: usize, copies: usize) -> (u8, u8) {
    match (own, copies) {
        (0, 0) => return (0, 0),
        (0, _) => return (0, MAX),
        (_, 0) => return (MAX, 0),
        _ => {}
    }
    let percent = f64::from(percent.min(100));
    let per_own = if own == 0 { 0.0 } else { (100.0 - percent) / own as f64 };
    let per_copy = if copies == 0 { 0.0 } else { percent / copies as f64 };
    let top = per_own.max(per_copy);
    if top == 0.0 {
        return (0, 0);
    }
    let scale = |share: f64| -> u8 { if share == 0.0 { 0 } else { ((share / top * f64::from(MAX)).round() as u8).max(1) } };
    (scale(per_own), scale(per_copy))
}

#[cfg(test)]
mod tests {
    use super::split;

    /// The copies' share of requests under these weights.
    fn share(percent: u8, own: usize, copies: usize) -> f64 {
        let (o, c) = split(percent, own, copies);
        let (o, c) = (f64::from(o) * own as f64, f64::from(c) * copies as f64);
        100.0 * c / (o + c)
    }

    #[test]
    fn the_copies_get_their_percentage_whatever_the_task_counts() {
        for (own, copies) in [(1, 1), (2, 1), (2, 2), (4, 1), (1, 4), (10, 3), (40, 40)] {
            for percent in [1u8, 5, 10, 25, 50, 75, 90, 99] {
                let got = share(percent, own, copies);
                // Weights are whole numbers up to 255: a 1% share over several tasks rounds to a little more.
                assert!((got - f64::from(percent)).abs() < 1.0, "{percent}% with {own} own and {copies} copies: {got}");
            }
        }
    }

    #[test]
    fn all_or_nothing() {
        assert_eq!(split(0, 2, 2), (255, 0));
        assert_eq!(split(100, 2, 2), (0, 255));
        // No copy runs yet: the application's tasks take everything; and the other way round, even
        // against the percentage (nothing is turned away that a task could answer).
        assert_eq!(split(10, 3, 0), (255, 0));
        assert_eq!(split(100, 3, 0), (255, 0));
        assert_eq!(split(10, 0, 2), (0, 255));
        assert_eq!(split(0, 0, 2), (0, 255));
        assert_eq!(split(0, 0, 0), (0, 0));
    }
}
