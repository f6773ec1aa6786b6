//! The slot states, install plans and upgrade results for disks described
//! in one line each, compared with the expected text.

use expect_test::{Expect, expect};

use super::*;

const HASH: &str = "4f3e2d1c0b0a09080706050403020100ffeeddccbbaa99887766554433221100";

/// A disk: `booted=a running=0.1.0 a=strata-a.efi b=strata-b+0-3.efi
/// b.record=written:0.2.0`, UKI lists comma-separated.
fn host(text: &str) -> HostFacts {
    let mut h = HostFacts {
        role: Role::Private,
        running: "0.1.0".into(),
        booted: Slot::A,
        a: SlotFacts::default(),
        b: SlotFacts::default(),
    };
    for word in text.split_whitespace() {
        let (key, value) = word.split_once('=').expect("key=value");
        match key {
            "booted" => h.booted = if value == "a" { Slot::A } else { Slot::B },
            "running" => h.running = value.into(),
            "role" => h.role = value.parse().expect("a role"),
            "a" | "b" => h.add_ukis(value.split(',')),
            "a.record" | "b.record" => {
                let (phase, version) = value.split_once(':').expect("phase:version");
                let record = SlotRecord {
                    version: version.into(),
                    root_hash: HASH.into(),
                    phase: match phase {
                        "writing" => WritePhase::Writing,
                        _ => WritePhase::Written,
                    },
                    at: 0,
                };
                if key == "a.record" {
                    h.a.record = Some(record);
                } else {
                    h.b.record = Some(record);
                }
            }
            other => panic!("unknown key {other}"),
        }
    }
    h
}

fn bundle(role: Role, version: &str) -> Manifest {
    Manifest {
        format: crate::manifest::FORMAT,
        version: version.into(),
        role,
        kernel: String::new(),
        source_date_epoch: 0,
        root_hash: HASH.into(),
        verity_salt: String::new(),
        cmdline: String::new(),
        packages: Default::default(),
        partitions: Vec::new(),
        parts: Vec::new(),
        artifacts: Vec::new(),
    }
}

/// The slots' states, what installing `0.2.0` for private nodes (without
/// `--allow-downgrade`) would do, and the result of an upgrade of the
/// other slot to `0.2.0`.
fn check(disk: &str, expected: Expect) {
    let h = host(disk);
    let install = match plan_install(&h, &bundle(Role::Private, "0.2.0"), false) {
        Ok(p) => format!(
            "write slot {} ({}, root {}, verity {}), remove {:?}, put {}, `{}`",
            p.slot,
            p.version,
            p.root_partuuid,
            p.verity_partuuid,
            p.remove,
            p.uki,
            p.loader_default
        ),
        Err(e) => format!("refused: {e}"),
    };
    let rollback = match plan_rollback(&h) {
        Ok(slot) => format!("boot slot {slot}"),
        Err(e) => format!("refused: {e}"),
    };
    let target = h.booted.other();
    let result = [target, h.booted]
        .map(|s| format!("{s}: {:?}", upgrade_result(&h, s, "0.2.0")))
        .join("; ");
    expected.assert_eq(&format!(
        "a: {}, b: {}\ninstall: {install}\nrollback: {rollback}\nresult if it wrote {result}",
        state(&h.a),
        state(&h.b)
    ));
}

#[test]
fn a_fresh_image_has_slot_b_empty() {
    check(
        "booted=a a=strata-a.efi",
        expect![[r#"
        a: good, b: empty
        install: write slot b (0.2.0, root 4f3e2d1c-0b0a-0908-0706-050403020100, verity ffeeddcc-bbaa-9988-7766-554433221100), remove [], put strata-b+3.efi, `default strata-b[.+][e1-9]*`
        rollback: refused: slot b is empty: only a slot that booted healthy before can be rolled back to
        result if it wrote b: Interrupted { slot: B, version: "0.2.0" }; a: Succeeded { slot: A, version: "0.2.0" }"#]],
    );
}

#[test]
fn a_first_boot_not_blessed_yet_refuses_an_install() {
    check(
        "booted=a a=strata-a+2-1.efi",
        expect![[r#"
        a: trying, b: empty
        install: refused: the booted slot a is not blessed yet: wait until the node is healthy, or roll it back
        rollback: refused: slot b is empty: only a slot that booted healthy before can be rolled back to
        result if it wrote b: Interrupted { slot: B, version: "0.2.0" }; a: Trying { slot: A, version: "0.2.0" }"#]],
    );
}

#[test]
fn a_write_cut_short_is_an_empty_slot_and_is_written_again() {
    check(
        "booted=a a=strata-a.efi b=strata-b+3.efi b.record=writing:0.2.0",
        expect![[r#"
            a: good, b: empty
            install: write slot b (0.2.0, root 4f3e2d1c-0b0a-0908-0706-050403020100, verity ffeeddcc-bbaa-9988-7766-554433221100), remove ["strata-b+3.efi"], put strata-b+3.efi, `default strata-b[.+][e1-9]*`
            rollback: refused: slot b is empty: only a slot that booted healthy before can be rolled back to
            result if it wrote b: Interrupted { slot: B, version: "0.2.0" }; a: Succeeded { slot: A, version: "0.2.0" }"#]],
    );
}

#[test]
fn a_written_slot_without_its_uki() {
    check(
        "booted=a a=strata-a.efi b.record=written:0.2.0",
        expect![[r#"
            a: good, b: written
            install: write slot b (0.2.0, root 4f3e2d1c-0b0a-0908-0706-050403020100, verity ffeeddcc-bbaa-9988-7766-554433221100), remove [], put strata-b+3.efi, `default strata-b[.+][e1-9]*`
            rollback: refused: slot b is written: only a slot that booted healthy before can be rolled back to
            result if it wrote b: Pending { slot: B, version: "0.2.0" }; a: Succeeded { slot: A, version: "0.2.0" }"#]],
    );
}

#[test]
fn an_installed_slot_waits_for_the_reboot() {
    check(
        "booted=a a=strata-a.efi b=strata-b+3.efi b.record=written:0.2.0",
        expect![[r#"
            a: good, b: trying
            install: write slot b (0.2.0, root 4f3e2d1c-0b0a-0908-0706-050403020100, verity ffeeddcc-bbaa-9988-7766-554433221100), remove ["strata-b+3.efi"], put strata-b+3.efi, `default strata-b[.+][e1-9]*`
            rollback: refused: slot b is trying: only a slot that booted healthy before can be rolled back to
            result if it wrote b: Pending { slot: B, version: "0.2.0" }; a: Succeeded { slot: A, version: "0.2.0" }"#]],
    );
}

#[test]
fn the_new_slot_booted_and_not_blessed_yet() {
    check(
        "booted=b running=0.2.0 a=strata-a.efi b=strata-b+2-1.efi b.record=written:0.2.0",
        expect![[r#"
            a: good, b: trying
            install: refused: the booted slot b is not blessed yet: wait until the node is healthy, or roll it back
            rollback: boot slot a
            result if it wrote a: Succeeded { slot: A, version: "0.2.0" }; b: Trying { slot: B, version: "0.2.0" }"#]],
    );
}

#[test]
fn the_new_slot_blessed() {
    check(
        "booted=b running=0.2.0 a=strata-a.efi b=strata-b.efi b.record=written:0.2.0",
        expect![[r#"
            a: good, b: good
            install: write slot a (0.2.0, root 4f3e2d1c-0b0a-0908-0706-050403020100, verity ffeeddcc-bbaa-9988-7766-554433221100), remove ["strata-a.efi"], put strata-a+3.efi, `default strata-a[.+][e1-9]*`
            rollback: boot slot a
            result if it wrote a: Succeeded { slot: A, version: "0.2.0" }; b: Succeeded { slot: B, version: "0.2.0" }"#]],
    );
}

#[test]
fn a_slot_that_used_its_tries_is_failed_and_the_node_is_back_on_the_old_one() {
    check(
        "booted=a a=strata-a.efi b=strata-b+0-3.efi b.record=written:0.2.0",
        expect![[r#"
            a: good, b: failed
            install: write slot b (0.2.0, root 4f3e2d1c-0b0a-0908-0706-050403020100, verity ffeeddcc-bbaa-9988-7766-554433221100), remove ["strata-b+0-3.efi"], put strata-b+3.efi, `default strata-b[.+][e1-9]*`
            rollback: refused: slot b is failed: only a slot that booted healthy before can be rolled back to
            result if it wrote b: RolledBack { slot: B, version: "0.2.0", reason: "slot b did not get healthy in 3 boots, so the node booted slot a again" }; a: Succeeded { slot: A, version: "0.2.0" }"#]],
    );
}

#[test]
fn refusals_name_what_is_wrong() {
    let h = host("booted=a running=0.3.0 a=strata-a.efi");
    let refusal = |role: Role, version: &str, allow: bool| match plan_install(
        &h,
        &bundle(role, version),
        allow,
    ) {
        Ok(p) => format!("writes slot {} with {}", p.slot, p.version),
        Err(e) => e.to_string(),
    };
    expect![[r#"
        the bundle is for master nodes and this node is a private node: build or pick the bundle of its role
        the bundle holds 0.2.0, older than the 0.3.0 this node runs: pass --allow-downgrade to go back on purpose
        writes slot b with 0.2.0
        writes slot b with 0.3.0+gabc
        the bundle's `latest` is not an image version: unexpected character 'l' while parsing major version number (expected MAJOR.MINOR.PATCH, e.g. 0.2.0 or 1.0.0-rc.1, with an optional +BUILD)"#]].assert_eq(
        &[
            refusal(Role::Master, "0.4.0", false),
            refusal(Role::Private, "0.2.0", false),
            refusal(Role::Private, "0.2.0", true),
            refusal(Role::Private, "0.3.0+gabc", false),
            refusal(Role::Private, "latest", false),
        ]
        .join("\n"),
    );
    let mut odd = bundle(Role::Private, "0.4.0");
    odd.root_hash = "00ff".into();
    expect!["the bundle's root hash `00ff` is not at least 64 hexadecimal digits"].assert_eq(
        &plan_install(&h, &odd, false)
            .map(|p| p.uki)
            .unwrap_or_else(|e| e.to_string()),
    );
}

#[test]
fn uki_names_read_and_write_as_systemd_boot_counts() {
    let names = [
        "strata-a.efi",
        "strata-b+3.efi",
        "strata-b+2-1.efi",
        "strata-b+0-3.efi",
        "strata-a+x.efi",
        "strata-c+3.efi",
        "strata-b+3-.efi",
        "other.efi",
        "strata-a.conf",
    ];
    let actual: Vec<String> = names
        .iter()
        .map(|n| match Uki::parse(n) {
            Some(u) => format!("{n}: {:?} -> {}", u, u.file_name()),
            None => format!("{n}: not a slot's UKI"),
        })
        .collect();
    expect![[r#"
        strata-a.efi: Uki { slot: A, count: Blessed } -> strata-a.efi
        strata-b+3.efi: Uki { slot: B, count: Counting { left: 3, done: 0 } } -> strata-b+3.efi
        strata-b+2-1.efi: Uki { slot: B, count: Counting { left: 2, done: 1 } } -> strata-b+2-1.efi
        strata-b+0-3.efi: Uki { slot: B, count: Counting { left: 0, done: 3 } } -> strata-b+0-3.efi
        strata-a+x.efi: not a slot's UKI
        strata-c+3.efi: not a slot's UKI
        strata-b+3-.efi: not a slot's UKI
        other.efi: not a slot's UKI
        strata-a.conf: not a slot's UKI"#]]
    .assert_eq(&actual.join("\n"));
}

#[test]
fn stored_types_read_what_a_newer_agent_wrote() {
    let record: SlotRecord = serde_json::from_str(
        r#"{"version": "0.3.0", "root_hash": "00", "phase": "verifying", "at": 1, "new": true}"#,
    )
    .expect("a newer record reads");
    assert_eq!(record.phase, WritePhase::Unknown);
    let state: SlotState = serde_json::from_str(r#""quarantined""#).expect("reads");
    assert_eq!(state, SlotState::Unknown);
    let result: UpgradeResult =
        serde_json::from_str(r#"{"result": "paused", "slot": "b"}"#).expect("reads");
    assert_eq!(result, UpgradeResult::Unknown);
}

/// A glob as systemd-boot matches `default` (`*`, `?`, `[...]`), enough
/// to check the patterns this module writes.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], name) || (!name.is_empty() && glob(pattern, &name[1..]))
        }
        (Some(b'['), Some(c)) => {
            let end = pattern
                .iter()
                .position(|&b| b == b']')
                .expect("a closed class");
            let class = &pattern[1..end];
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= (class[i]..=class[i + 2]).contains(c);
                    i += 3;
                } else {
                    hit |= class[i] == *c;
                    i += 1;
                }
            }
            hit && glob(&pattern[end + 1..], &name[1..])
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &name[1..]),
        (Some(p), Some(c)) => p == c && glob(&pattern[1..], &name[1..]),
        _ => false,
    }
}

#[test]
fn the_loader_default_matches_a_slot_unless_its_tries_are_used_up() {
    let line = loader_default(Slot::B);
    let pattern = line.strip_prefix("default ").expect("a default line");
    let names = [
        "strata-b.efi",
        "strata-b+3.efi",
        "strata-b+1-2.efi",
        "strata-b+0-3.efi",
        "strata-a.efi",
        "strata-a+3.efi",
    ];
    let actual: Vec<String> = names
        .iter()
        .map(|n| format!("{n}: {}", glob(pattern.as_bytes(), n.as_bytes())))
        .collect();
    expect![[r#"
        strata-b.efi: true
        strata-b+3.efi: true
        strata-b+1-2.efi: true
        strata-b+0-3.efi: false
        strata-a.efi: false
        strata-a+3.efi: false"#]]
    .assert_eq(&actual.join("\n"));
}
