//! Non-dominated points of (accuracy up, FLOPs down).

/// Whether `(accuracy, FLOPs)` point `a` dominates `b`: at least as accurate and at
/// most as many FLOPs, strictly better in one.
pub fn dominates(a: (f64, u64), b: (f64, u64)) -> bool {
    a.0 >= b.0 && a.1 <= b.1 && (a.0 > b.0 || a.1 < b.1)
}

/// Indices of the points no other point dominates, sorted by FLOPs.
pub fn pareto_front(points: &[(f64, u64)]) -> Vec<usize> {
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| !points.iter().any(|&q| dominates(q, points[i])))
        .collect();
    front.sort_by_key(|&i| points[i].1);
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_front() {
        // (acc, flops): 1 dominates 0; 2 and 3 trade off; 4 equals 3 (both kept).
        let pts = [
            (0.5, 100),
            (0.6, 90),
            (0.7, 200),
            (0.4, 10),
            (0.4, 10),
            (0.3, 50),
        ];
        assert_eq!(pareto_front(&pts), vec![3, 4, 1, 2]);
        assert!(pareto_front(&[]).is_empty());
    }
}
