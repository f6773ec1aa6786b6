use super::*;

const NOW: u64 = 1000;
/// The revision the token of [`snapshot`] was created at.
const TOKEN_REVISION: i64 = 10;

fn cert(serial: &str, not_after: u64) -> IssuedCert {
    IssuedCert {
        serial: serial.into(),
        not_after,
        issued_at: 0,
    }
}

fn token() -> JoinTokenRecord {
    JoinTokenRecord {
        format: Format::V1,
        id: "a1b2c3d4e5f6".into(),
        created_at: 900,
        created_by: "user token 0123456789ab".into(),
        expires_at: None,
        uses_left: None,
        used: 0,
        revoked_at: None,
        bootstrap: false,
        description: String::new(),
    }
}

fn record(name: &str, key: &str) -> NodeRecord {
    NodeRecord {
        info: NodeInfo {
            format: Format::V1,
            name: name.into(),
            role: configs::Role::Private,
            addresses: vec!["10.9.0.11".into()],
            cpus: 2,
            memory_bytes: 1,
            disk_bytes: 1,
            attributes: Default::default(),
            image: None,
        },
        key_sha256: key.into(),
        joined_at: 500,
        registered_at: 600,
        certs: vec![cert("01", 800), cert("02", 5000)],
    }
}

fn attempt() -> JoinAttempt {
    JoinAttempt {
        name: "agent-1".into(),
        role: configs::Role::Private,
        key_sha256: "k1".into(),
        address: "10.9.0.11".into(),
        cert: cert("03", 9000),
    }
}

/// A snapshot with `token` at [`TOKEN_REVISION`] and nothing else.
fn snapshot(token: JoinTokenRecord) -> JoinSnapshot {
    JoinSnapshot {
        token: Some(At {
            value: token,
            revision: TOKEN_REVISION,
        }),
        ..JoinSnapshot::default()
    }
}

fn removed(name: &str, revision: i64) -> At<RemovedNode> {
    At {
        value: RemovedNode {
            format: Format::V1,
            name: name.into(),
            key_sha256: "k1".into(),
            removed_at: 700,
        },
        revision,
    }
}

fn claim(name: &str, removed_at: Option<u64>, revision: i64) -> At<KeyClaim> {
    At {
        value: KeyClaim {
            format: Format::V1,
            name: name.into(),
            claimed_at: 500,
            removed_at,
        },
        revision,
    }
}

fn outcome(r: Result<JoinPlan, JoinRefusal>) -> String {
    match r {
        Ok(p) => format!(
            "admitted={} token={} certs={} claimed_at={} clear_removal={}",
            p.admitted,
            p.token.map_or("unwritten".to_string(), |t| format!(
                "used:{},left:{}",
                t.used,
                t.uses_left.map_or("-".to_string(), |l| l.to_string())
            )),
            p.node
                .certs
                .iter()
                .map(|c| c.serial.as_str())
                .collect::<Vec<_>>()
                .join(","),
            p.claim.claimed_at,
            p.clear_removal
        ),
        Err(e) => format!("refused {}", e.code()),
    }
}

/// Every way a join is decided.
#[test]
fn joins_are_decided_by_token_name_key_and_removal() {
    let limited = JoinTokenRecord {
        uses_left: Some(3),
        ..token()
    };
    let used_up = JoinTokenRecord {
        uses_left: Some(0),
        used: 3,
        ..token()
    };
    let expired = JoinTokenRecord {
        expires_at: Some(NOW),
        ..token()
    };
    let revoked = JoinTokenRecord {
        revoked_at: Some(950),
        ..token()
    };
    let member = |t: JoinTokenRecord| JoinSnapshot {
        node: Some(record("agent-1", "k1")),
        claim: Some(claim("agent-1", None, 8)),
        ..snapshot(t)
    };
    let cases: Vec<(&str, JoinSnapshot)> = vec![
        ("unknown token", JoinSnapshot::default()),
        ("revoked token", snapshot(revoked.clone())),
        ("expired token, new node", snapshot(expired.clone())),
        ("expired token, member", member(expired)),
        ("used-up token, new node", snapshot(used_up.clone())),
        ("used-up token, member", member(used_up)),
        ("revoked token, member", member(revoked)),
        ("limited token, new node", snapshot(limited.clone())),
        ("limited token, member", member(limited)),
        ("unlimited token, new node", snapshot(token())),
        (
            "name held by another key",
            JoinSnapshot {
                node: Some(record("agent-1", "k2")),
                ..snapshot(token())
            },
        ),
        (
            "key holds another name",
            JoinSnapshot {
                claim: Some(claim("agent-9", None, 8)),
                ..snapshot(token())
            },
        ),
        (
            "name removed after the token",
            JoinSnapshot {
                removed: Some(removed("agent-1", 20)),
                claim: Some(claim("agent-1", Some(700), 20)),
                ..snapshot(token())
            },
        ),
        (
            "name removed before the token",
            JoinSnapshot {
                removed: Some(removed("agent-1", 5)),
                claim: Some(claim("agent-1", Some(700), 5)),
                ..snapshot(token())
            },
        ),
        (
            "key's node removed after the token",
            JoinSnapshot {
                claim: Some(claim("agent-9", Some(700), 20)),
                ..snapshot(token())
            },
        ),
        (
            "key's node removed before the token",
            JoinSnapshot {
                claim: Some(claim("agent-9", Some(700), 5)),
                ..snapshot(token())
            },
        ),
    ];
    let text: Vec<String> = cases
        .into_iter()
        .map(|(what, s)| format!("{what}: {}", outcome(plan_join(&s, &attempt(), NOW))))
        .collect();
    expect_test::expect![[r#"
        unknown token: refused join-token-unknown
        revoked token: refused join-token-revoked
        expired token, new node: refused join-token-expired
        expired token, member: admitted=false token=unwritten certs=02,03 claimed_at=500 clear_removal=false
        used-up token, new node: refused join-token-used-up
        used-up token, member: admitted=false token=unwritten certs=02,03 claimed_at=500 clear_removal=false
        revoked token, member: refused join-token-revoked
        limited token, new node: admitted=true token=used:1,left:2 certs=03 claimed_at=1000 clear_removal=false
        limited token, member: admitted=false token=unwritten certs=02,03 claimed_at=500 clear_removal=false
        unlimited token, new node: admitted=true token=unwritten certs=03 claimed_at=1000 clear_removal=false
        name held by another key: refused name-taken
        key holds another name: refused key-holds-name
        name removed after the token: refused node-removed
        name removed before the token: admitted=true token=unwritten certs=03 claimed_at=1000 clear_removal=true
        key's node removed after the token: refused node-removed
        key's node removed before the token: admitted=true token=unwritten certs=03 claimed_at=1000 clear_removal=false"#]]
    .assert_eq(&text.join("\n"));
}

#[test]
fn a_new_node_gets_a_record_of_its_own() {
    let plan = plan_join(&snapshot(token()), &attempt(), NOW).expect("admitted");
    assert_eq!(plan.node.info.name, "agent-1");
    assert_eq!(plan.node.info.addresses, ["10.9.0.11"]);
    assert_eq!(plan.node.key_sha256, "k1");
    assert_eq!((plan.node.joined_at, plan.node.registered_at), (NOW, NOW));
    assert_eq!(plan.token_id, "a1b2c3d4e5f6");
    assert_eq!(plan.claim.name, "agent-1");
    assert_eq!(plan.claim.removed_at, None);
    let refused = plan_join(&JoinSnapshot::default(), &attempt(), NOW).expect_err("unknown");
    assert_eq!(
        refused.to_string(),
        "the join token is wrong: its secret is not this cluster's"
    );
}

#[test]
fn removal_revokes_the_certificates_that_have_not_expired() {
    let removal = plan_removal(&record("agent-1", "k1"), NOW);
    assert_eq!(
        removal.revoked,
        [RevokedCert {
            format: Format::V1,
            serial: "02".into(),
            node: "agent-1".into(),
            not_after: 5000,
            revoked_at: NOW,
        }]
    );
    assert_eq!(removal.removed.key_sha256, "k1");
    assert_eq!(removal.claim.removed_at, Some(NOW));
    assert_eq!(removal.claim.name, "agent-1");
}

#[test]
fn user_tokens_are_checked_for_revocation_and_expiry() {
    let req = UserTokenRequest {
        format: Format::V1,
        role: Role::Viewer,
        name: "ci".into(),
        ttl_seconds: Some(60),
    };
    let rec = UserTokenRecord::new(&"ab".repeat(32), &req, "user token x", NOW);
    assert_eq!(rec.id, "abababababab");
    assert_eq!(rec.expires_at, Some(NOW + 60));
    assert_eq!(check_user_token(&rec, NOW + 59), Ok(Role::Viewer));
    assert_eq!(rec.state(NOW + 59), TokenState::Active);
    let expired = check_user_token(&rec, NOW + 60).expect_err("expired");
    assert_eq!(expired.code(), "token-expired");
    assert_eq!(rec.state(NOW + 60), TokenState::Expired);
    let mut revoked = rec.clone();
    revoked.revoke(NOW + 1);
    revoked.revoke(NOW + 2);
    assert_eq!(
        revoked.revoked_at,
        Some(NOW + 1),
        "the first revocation stays"
    );
    assert_eq!(
        check_user_token(&revoked, NOW + 5),
        Err(TokenRefusal::Revoked {
            id: "abababababab".into(),
            at: NOW + 1
        })
    );
    let admin = UserTokenRecord::bootstrap(&"cd".repeat(32), NOW);
    assert_eq!(check_user_token(&admin, u64::MAX), Ok(Role::Admin));
    assert!(admin.bootstrap);
}

#[test]
fn join_tokens_count_their_uses_and_expire() {
    let req = JoinTokenRequest {
        format: Format::V1,
        ttl_seconds: Some(3600),
        uses: Some(3),
        description: "rack 4".into(),
    };
    assert_eq!(req.check(), Ok(()));
    let rec = JoinTokenRecord::new(&"ef".repeat(32), &req, "user token x", NOW);
    assert_eq!(rec.expires_at, Some(NOW + 3600));
    assert_eq!(rec.uses_left, Some(3));
    assert_eq!(rec.state(NOW).to_string(), "active");
    assert_eq!(rec.state(NOW + 3600).to_string(), "expired");
    let used_up = JoinTokenRecord {
        uses_left: Some(0),
        ..rec.clone()
    };
    assert_eq!(used_up.state(NOW).to_string(), "used up");
    let boot = JoinTokenRecord::bootstrap(&"ef".repeat(32), NOW);
    assert_eq!((boot.uses_left, boot.expires_at), (None, None));
    assert!(boot.bootstrap);

    let bad = |ttl, uses, description: &str| {
        JoinTokenRequest {
            format: Format::V1,
            ttl_seconds: ttl,
            uses,
            description: description.into(),
        }
        .check()
        .expect_err("refused")
    };
    assert_eq!(bad(Some(0), None, ""), "ttl_seconds must be at least 1");
    assert_eq!(bad(None, Some(0), ""), "uses must be at least 1");
    assert_eq!(
        bad(None, None, "a\nb"),
        "description: no control characters"
    );
    assert_eq!(
        bad(None, None, &"x".repeat(201)),
        "description: at most 200 characters"
    );
    let unknown_role = UserTokenRequest {
        format: Format::V1,
        role: Role::Unknown,
        name: String::new(),
        ttl_seconds: None,
    };
    assert_eq!(
        unknown_role.check(),
        Err("role: expected one of admin, operator, viewer, metrics".to_string())
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1h"), Ok(3600));
    assert_eq!(parse_duration("30m"), Ok(1800));
    assert_eq!(parse_duration("7d"), Ok(604_800));
    assert_eq!(parse_duration(" 90s "), Ok(90));
    assert_eq!(parse_duration("2w"), Ok(1_209_600));
    let bad =
        "is not a duration: expected a number and a unit (s, m, h, d or w), as in 90s, 30m, 1h, 7d";
    for text in ["", "1", "h", "1y", "1.5h", "-1h", "1 h"] {
        assert_eq!(
            parse_duration(text),
            Err(format!("`{text}` {bad}")),
            "{text}"
        );
    }
    assert_eq!(
        parse_duration("0s"),
        Err("`0s`: a duration must be longer than 0".to_string())
    );
    assert!(parse_duration("99999999999999999999d").is_err());
    assert!(parse_duration("9999999999999999999w").is_err());
}

/// Records and bodies written by a newer release read: a higher format,
/// fields this release does not know, a role it does not know.
#[test]
fn records_from_a_newer_writer_read() {
    let join: JoinTokenRecord = serde_json::from_str(
        r#"{"format":2,"id":"a1","created_at":1,"created_by":"x","uses_left":2,"used":1,
            "scope":"rack-4","labels":{"a":"b"}}"#,
    )
    .expect("a newer join token reads");
    assert_eq!(join.format, Format(2));
    assert_eq!(join.state(5), TokenState::Active);

    let user: UserTokenRecord = serde_json::from_str(
        r#"{"format":2,"id":"b2","role":"auditor","created_at":1,"created_by":"x","mfa":true}"#,
    )
    .expect("a newer user token reads");
    assert_eq!(user.role, Role::Unknown);
    assert_eq!(check_user_token(&user, 5), Ok(Role::Unknown));

    let revoked: RevokedCert = serde_json::from_str(
        r#"{"format":3,"serial":"4a","node":"n1","not_after":9,"revoked_at":5,"reason":"lost"}"#,
    )
    .expect("a newer revocation reads");
    assert_eq!(revoked.serial, "4a");

    let removed: RemovedNode = serde_json::from_str(
        r#"{"name":"n1","key_sha256":"k","removed_at":5,"removed_by":"admin"}"#,
    )
    .expect("a newer removal reads");
    assert_eq!(removed.format, Format::V1);

    let claim: KeyClaim =
        serde_json::from_str(r#"{"format":2,"name":"n1","claimed_at":5,"zone":"eu"}"#)
            .expect("a newer key claim reads");
    assert_eq!(claim.removed_at, None);

    let created: JoinTokenCreated = serde_json::from_str(
        r#"{"token":"t","record":{"id":"a1","created_at":1,"created_by":"x"},"qr":"..."}"#,
    )
    .expect("a newer answer reads");
    assert_eq!(created.record.used, 0);

    let req: UserTokenRequest =
        serde_json::from_str(r#"{"role":"viewer","scopes":["nodes"]}"#).expect("reads");
    assert_eq!(req.role, Role::Viewer);
}

#[test]
fn format_1_and_defaults_are_not_written() {
    let rec = JoinTokenRecord::bootstrap(&"ab".repeat(32), 7);
    expect_test::expect![[r#"{"id":"abababababab","created_at":7,"created_by":"strata cluster init","used":0,"bootstrap":true,"description":"the join token of the user-data `strata cluster init` wrote"}"#]]
        .assert_eq(&serde_json::to_string(&rec).expect("json"));
    let user = UserTokenRecord::new(
        &"cd".repeat(32),
        &UserTokenRequest {
            format: Format::V1,
            role: Role::Metrics,
            name: String::new(),
            ttl_seconds: None,
        },
        "user token abababababab",
        8,
    );
    expect_test::expect![[r#"{"id":"cdcdcdcdcdcd","role":"metrics","created_at":8,"created_by":"user token abababababab"}"#]]
        .assert_eq(&serde_json::to_string(&user).expect("json"));
}
