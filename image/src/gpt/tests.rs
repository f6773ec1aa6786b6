use std::io::Cursor;

use expect_test::{Expect, expect};

use super::*;

const SECTOR: u64 = 512;
/// A disk of 64 KiB: 128 sectors.
const SECTORS: u64 = 128;

/// Builds a disk with a GPT of 128 entries (primary at LBA 1-33, backup at
/// the end) holding `parts`: (label, first LBA, last LBA, unique GUID).
fn disk(parts: &[(&str, u64, u64, &str)]) -> Vec<u8> {
    let mut entries = vec![0u8; 128 * 128];
    for (i, (label, first, last, uuid)) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[..16].copy_from_slice(&guid_bytes(crate::plan::types::ROOT_X86_64).unwrap());
        e[16..32].copy_from_slice(&guid_bytes(uuid).unwrap());
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        for (j, u) in label.encode_utf16().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&entries);
    let mut d = vec![0u8; (SECTORS * SECTOR) as usize];
    let last = SECTORS - 1;
    for (lba, other, entries_lba) in [(1, last, 2), (last, 1, last - 32)] {
        let mut h = vec![0u8; HEADER_SIZE];
        h[..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        h[24..32].copy_from_slice(&lba.to_le_bytes());
        h[32..40].copy_from_slice(&other.to_le_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc.to_le_bytes());
        let hc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&hc.to_le_bytes());
        let at = (lba * SECTOR) as usize;
        d[at..at + HEADER_SIZE].copy_from_slice(&h);
        let at = (entries_lba * SECTOR) as usize;
        d[at..at + entries.len()].copy_from_slice(&entries);
    }
    d
}

fn two_slots() -> Vec<u8> {
    disk(&[
        ("root-a", 34, 49, "11111111-2222-3333-4444-555555555555"),
        ("root-b", 50, 65, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
    ])
}

/// Reads the table of `bytes`, applies `changes` and renders what both
/// copies then hold (or the error).
fn check(mut bytes: Vec<u8>, changes: &[(&str, &str)], expected: Expect) {
    let mut cursor = Cursor::new(&mut bytes);
    let actual = match set_uuids(&mut cursor, SECTOR, changes) {
        Ok(()) => {
            let primary = read(&mut cursor, SECTOR).expect("the primary reads back");
            let (_, backup) = read_copy(&mut cursor, SECTOR, SECTORS - 1, "backup")
                .expect("the backup reads back");
            let backup: Vec<String> = backup
                .iter()
                .filter(|e| !e[..16].iter().all(|&b| b == 0))
                .map(|e| format!("{} {}", label_of(e), guid_text(&e[16..32])))
                .collect();
            let mut out = String::new();
            for p in &primary.partitions {
                out.push_str(&format!(
                    "{} {} {} @{}+{}\n",
                    p.number, p.label, p.uuid, p.offset, p.size
                ));
            }
            out.push_str(&format!("backup: {}\n", backup.join(", ")));
            out
        }
        Err(e) => format!("error: {e}\n"),
    };
    expected.assert_eq(&actual);
}

#[test]
fn uuids_change_in_both_copies() {
    check(
        two_slots(),
        &[("root-b", "0123abcd-0000-4000-8000-00000000beef")],
        expect![[r#"
            1 root-a 11111111-2222-3333-4444-555555555555 @17408+8192
            2 root-b 0123abcd-0000-4000-8000-00000000beef @25600+8192
            backup: root-a 11111111-2222-3333-4444-555555555555, root-b 0123abcd-0000-4000-8000-00000000beef
        "#]],
    );
}

#[test]
fn nothing_is_written_on_a_bad_change() {
    let before = two_slots();
    for change in [
        ("root-c", "0123abcd-0000-4000-8000-00000000beef"),
        ("root-b", "not-a-uuid"),
    ] {
        let mut bytes = before.clone();
        let e = set_uuids(&mut Cursor::new(&mut bytes), SECTOR, &[change]).unwrap_err();
        assert_eq!(bytes, before, "{e}");
    }
    check(
        two_slots(),
        &[("root-c", "0123abcd-0000-4000-8000-00000000beef")],
        expect![[r#"
            error: the disk has no partition labelled `root-c`
        "#]],
    );
    check(
        two_slots(),
        &[("root-b", "0123abcd-0000-4000-8000-00000000bee")],
        expect![[r#"
            error: `0123abcd-0000-4000-8000-00000000bee` is not a UUID (8-4-4-4-12 hexadecimal digits)
        "#]],
    );
}

#[test]
fn a_damaged_table_is_refused() {
    let mut bytes = two_slots();
    bytes[(2 * SECTOR) as usize + 20] ^= 1;
    check(
        bytes,
        &[("root-b", "0123abcd-0000-4000-8000-00000000beef")],
        expect![[r#"
            error: the GPT primary partition entries' checksum does not match their bytes
        "#]],
    );
    let mut bytes = two_slots();
    bytes[((SECTORS - 1) * SECTOR) as usize + 40] ^= 1;
    check(
        bytes,
        &[("root-b", "0123abcd-0000-4000-8000-00000000beef")],
        expect![[r#"
            error: the GPT backup header's checksum does not match its bytes
        "#]],
    );
    check(
        vec![0u8; 4096],
        &[],
        expect![[r#"
            error: no GPT primary header: the disk does not start with a GUID partition table
        "#]],
    );
}

#[test]
fn guids_are_stored_mixed_endian() {
    let b = guid_bytes("00112233-4455-6677-8899-aabbccddeeff").unwrap();
    assert_eq!(hex::encode(b), "33221100554477668899aabbccddeeff");
    assert_eq!(guid_text(&b), "00112233-4455-6677-8899-aabbccddeeff");
}
