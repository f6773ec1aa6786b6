use expect_test::{Expect, expect};

use super::*;

fn bundle(sha: &str, version: &str, role: Role, pushed_at: u64) -> BundleRecord {
    BundleRecord {
        format: Format::V1,
        sha256: sha.into(),
        version: version.into(),
        role,
        size: 100,
        pushed_at,
        by: "admin".into(),
        holders: vec!["m1".into()],
    }
}

fn check(version: Option<&str>, sha256: Option<&str>, role: Role, expected: Expect) {
    let bundles = [
        bundle("aa", "0.2.0", Role::Private, 10),
        bundle("bb", "0.2.0", Role::Private, 20),
        bundle("cc", "0.2.0", Role::Master, 10),
        bundle("dd", "0.4.0+g1a2b3c", Role::Private, 10),
    ];
    let req = UpgradeRequest {
        version: version.map(str::to_string),
        sha256: sha256.map(str::to_string),
        allow_downgrade: false,
    };
    let actual = match pick_bundle(&req, "p1", role, &bundles) {
        Ok(b) => format!("{} {} {}", b.sha256, b.role, b.version),
        Err(e) => format!("error: {e}"),
    };
    expected.assert_eq(&actual);
}

#[test]
fn an_order_names_one_bundle_of_the_nodes_role() {
    // The last pushed of a version.
    check(
        Some("0.2.0"),
        None,
        Role::Private,
        expect!["bb private 0.2.0"],
    );
    check(
        Some("0.2.0"),
        None,
        Role::Master,
        expect!["cc master 0.2.0"],
    );
    check(None, Some("aa"), Role::Private, expect!["aa private 0.2.0"]);
    check(
        Some("0.4.0"),
        None,
        Role::Private,
        expect!["dd private 0.4.0+g1a2b3c"],
    );
    check(
        Some("0.4.0+g1a2b3c"),
        None,
        Role::Private,
        expect!["dd private 0.4.0+g1a2b3c"],
    );
    check(
        Some("0.3.0"),
        None,
        Role::Private,
        expect![
            "error: no bundle of version 0.3.0 for private nodes is on the masters: push it with `strata bundle push FILE`"
        ],
    );
    check(
        Some("0.2.0"),
        None,
        Role::Public,
        expect![
            "error: no bundle of version 0.2.0 for public nodes is on the masters: push it with `strata bundle push FILE`"
        ],
    );
    check(
        None,
        Some("cc"),
        Role::Private,
        expect![
            "error: bundle cc is for master nodes and node `p1` is a private node: push the bundle of its role"
        ],
    );
    check(
        None,
        Some("ee"),
        Role::Private,
        expect![
            "error: no bundle with digest ee is on the masters: `strata bundle list` shows them"
        ],
    );
    check(
        Some("0.2.0"),
        Some("aa"),
        Role::Private,
        expect!["error: name the bundle by --version or by its digest, not both"],
    );
    check(
        None,
        None,
        Role::Private,
        expect!["error: name the bundle by --version or by its digest"],
    );
}

#[test]
fn an_order_in_flight_is_busy_until_it_ends_or_goes_stale() {
    let mut order = UpgradeOrder {
        format: Format::V1,
        id: "1".into(),
        node: "p1".into(),
        action: Action::Rollback,
        at: 100,
        by: "admin".into(),
        progress: Progress::Ordered,
        updated_at: 100,
    };
    assert!(!busy(&order, 110, 600), "not picked up yet");
    order.progress = Progress::Writing;
    assert!(busy(&order, 110, 600));
    assert!(!busy(&order, 800, 600), "stale");
    order.progress = Progress::Failed { reason: "x".into() };
    assert!(!busy(&order, 110, 600));
}

/// What a newer release writes still reads.
#[test]
fn newer_records_read() {
    let order: UpgradeOrder = serde_json::from_str(
        r#"{"format":2,"id":"7","node":"p1","action":"rebase","at":1,"by":"a",
            "progress":{"phase":"staging","step":3},"updated_at":2,"extra":true}"#,
    )
    .unwrap();
    assert_eq!(order.action, Action::Unknown);
    assert_eq!(order.progress, Progress::Unknown);
    let order: UpgradeOrder = serde_json::from_str(
        r#"{"id":"8","node":"p1","action":"install","sha256":"aa","version":"0.2.0",
            "size":9,"at":1,"by":"a","progress":{"phase":"ordered"}}"#,
    )
    .unwrap();
    expect![[r#"
        Install {
            sha256: "aa",
            version: "0.2.0",
            size: 9,
            allow_downgrade: false,
        }
    "#]]
    .assert_debug_eq(&order.action);
    let status: ImageStatus = serde_json::from_str(
        r#"{"version":"0.3.0","booted":"b","other":{"slot":"a","state":"pinned"},
            "last_upgrade":{"result":"staged","slot":"b"},"kernel":"6.12"}"#,
    )
    .unwrap();
    assert_eq!(status.other.state, SlotState::Unknown);
    assert_eq!(status.last_upgrade, Some(UpgradeResult::Unknown));
}
