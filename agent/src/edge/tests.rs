use super::runtime::parse_servers;

/// `show servers state` as HAProxy 2.6 answered it: a server ready, one
/// disabled in the configuration and made ready at run time, one in
/// forced maintenance, one draining.
#[test]
fn servers_state_reads_what_takes_connections() {
    let answer = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
6 shop.web.p0.tcp 1 s0 127.0.0.1 2 0 1 1 3 1 0 2 0 0 0 0 - 9999 - 0 0 - - 0\n\
6 shop.web.p0.tcp 2 s1 127.0.0.1 2 4 1 1 0 1 0 0 8 0 0 0 - 9998 - 0 0 - - 0\n\
6 shop.web.p0.tcp 3 s2 0.0.0.0 0 5 1 1 3 1 0 0 8 0 0 0 - 0 - 0 0 - - 0\n\
6 shop.web.p0.tcp 4 s3 10.0.0.1 2 8 1 1 3 1 0 0 8 0 0 0 - 80 - 0 0 - - 0\n\n";
    let got = parse_servers(answer).expect("parses");
    let shown: Vec<String> = got
        .iter()
        .map(|((b, s), addr)| format!("{b}/{s} {addr:?}"))
        .collect();
    expect_test::expect![[r#"
        [
            "shop.web.p0.tcp/s0 Some(127.0.0.1:9999)",
            "shop.web.p0.tcp/s1 Some(127.0.0.1:9998)",
            "shop.web.p0.tcp/s2 None",
            "shop.web.p0.tcp/s3 None",
        ]
    "#]]
    .assert_debug_eq(&shown);
    assert!(parse_servers("No such backend.\n").is_none());
}
