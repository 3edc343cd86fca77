//! Order on an SQS FIFO queue, as the `dispatcher` function keeps it: a batch holds messages of
//! several message groups (one group per service); each group's messages are handled in batch
//! order, and once one of them fails, it and every later message of its group are reported as
//! failed (`batchItemFailures`), so that SQS hands them over again, still in order. Other
//! groups are not held back.

/// The items of a batch by group: groups in the order they first appear, each group's items
/// in batch order.
pub fn by_group<T, K: PartialEq>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<Vec<T>> {
    let mut groups: Vec<(K, Vec<T>)> = Vec::new();
    for item in items {
        let k = key(&item);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// Of a group's items in order, with whether each was handled, the ones to report as failed:
/// from the first one that was not handled to the end. An item after a failure was not even
/// tried, and counts as not handled whatever `handled` says.
pub fn reported<T>(group: &[(T, bool)]) -> &[(T, bool)] {
    let first_failure = group.iter().position(|(_, handled)| !handled).unwrap_or(group.len());
    &group[first_failure..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_batch_order() {
        let batch = vec![("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5), ("a", 6)];
        let groups = by_group(batch, |(g, _)| *g);
        assert_eq!(
            groups,
            vec![
                vec![("a", 1), ("a", 3), ("a", 6)],
                vec![("b", 2), ("b", 5)],
                vec![("c", 4)]
            ]
        );
        assert!(by_group(Vec::<(&str, u8)>::new(), |(g, _)| *g).is_empty());
    }

    #[test]
    fn the_first_failure_and_everything_after_it_is_reported() {
        let ids = |items: &[(u8, bool)]| items.iter().map(|(id, _)| *id).collect::<Vec<_>>();
        assert_eq!(ids(reported(&[(1, true), (2, true)])), Vec::<u8>::new());
        assert_eq!(ids(reported(&[(1, true), (2, false), (3, true)])), vec![2, 3]);
        assert_eq!(ids(reported(&[(1, false), (2, true)])), vec![1, 2]);
        assert_eq!(ids(reported(&[(1, true), (2, true), (3, false)])), vec![3]);
        assert_eq!(ids(reported::<u8>(&[])), Vec::<u8>::new());
    }
}
