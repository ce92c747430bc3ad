//! The placement contract (`shardkeeper_cluster::contract::placement`) against the
//! static placement, and what only it does.
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]

use std::sync::Arc;
use std::time::Duration;

use shardkeeper_cluster::{Placement, ShardSet, StaticPlacement};

/// Makes the placement under test assign a new set.
type Change = Box<dyn Fn(&[u32])>;

/// A placement starting with {0, 1, 2} and a way to make it change its set.
struct Subject {
    placement: Arc<dyn Placement>,
    change: Change,
}

fn static_placement() -> Subject {
    let placement = Arc::new(StaticPlacement::new([0, 1, 2]));
    let driver = Arc::clone(&placement);
    Subject {
        placement,
        change: Box::new(move |ids| driver.assign(ids.iter().copied())),
    }
}

fn set(ids: &[u32]) -> ShardSet {
    ids.iter().copied().collect()
}

async fn contract(subject: Subject) {
    let Subject { placement, change } = subject;
    let mut first = placement.watch();
    assert_eq!(
        *first.borrow_and_update(),
        set(&[0, 1, 2]),
        "the set to run now"
    );

    change(&[1, 2, 3]);
    tokio::time::timeout(Duration::from_secs(5), first.changed())
        .await
        .expect("a change is announced")
        .expect("the placement is alive");
    assert_eq!(*first.borrow_and_update(), set(&[1, 2, 3]));
    let late = placement.watch();
    assert_eq!(
        *late.borrow(),
        set(&[1, 2, 3]),
        "a late watcher sees the current set"
    );

    change(&[1, 2, 3]);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), first.changed())
            .await
            .is_err(),
        "the same set again is no change"
    );
    placement.released(0);
    placement.released(7);
    assert_eq!(
        *placement.watch().borrow(),
        set(&[1, 2, 3]),
        "releasing changes no set"
    );
}

#[tokio::test]
async fn static_placement_keeps_the_placement_contract() {
    let placement = StaticPlacement::new([0, 1, 2]);
    shardkeeper_cluster::contract::placement(&placement, || async {
        placement.assign([1, 2, 3]);
    })
    .await;
}

/// What a static placement does beyond the contract: exactly the set assigned, and
/// the same set again is no change.
#[tokio::test]
async fn static_placement_runs_exactly_what_it_is_given() {
    for (name, subject) in [("static", static_placement as fn() -> Subject)] {
        eprintln!("placement: {name}");
        contract(subject()).await;
    }
}
