//! User-data, cluster.toml and role files (TOML from a cloud's metadata,
//! a config disk or an operator): parsing never panics, and user-data that
//! parses renders a `.network` file with exactly its two sections (a value
//! that adds lines or sections to it is refused at parse time).
#![no_main]

use configs::Kind;
use configs::user_data::UserData;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [Kind::UserData, Kind::Cluster, Kind::Role] {
        let _ = configs::check("fuzz.toml", text, Some(kind));
    }
    if let Ok(ud) = UserData::parse("fuzz.toml", text) {
        let plan = bootstrap::apply_network(&ud.network);
        let sections: Vec<&str> = plan
            .contents
            .lines()
            .filter(|l| l.starts_with('['))
            .collect();
        assert_eq!(sections, ["[Match]", "[Network]"], "{}", plan.contents);
        let names = plan.contents.lines().filter(|l| l.starts_with("Name=")).count();
        assert_eq!(names, 1, "{}", plan.contents);
    }
});
