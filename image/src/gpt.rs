//! Reading a GUID partition table and changing the unique GUIDs
//! (PARTUUIDs) of its partitions, over any `Read + Write + Seek` the caller
//! hands in: a disk image in tests, the node's disk in the agent.
//!
//! An upgrade sets the PARTUUIDs of the slot it writes from the slot's
//! verity root hash ([`crate::plan::slot_uuids`]), which is how the initrd
//! finds the root of the UKI it boots. Both copies of the table change: the
//! backup (at the end of the disk) first, then the primary, each entry
//! array before its header, so that a cut anywhere leaves at least one copy
//! whose checksums hold, either all old or all new.
//!
//! Layout (UEFI 2.10, 5.3): LBA 1 holds the primary header; its fields name
//! the LBA of the entry array, the number and size of entries and the LBA
//! of the other header. An entry is a type GUID, a unique GUID, the first
//! and last LBA, attributes and a UTF-16LE name of 36 units. GUIDs are
//! stored with their first three fields little-endian.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// The first bytes of a GPT header.
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The smallest header (revision 1.0's 92 bytes).
const HEADER_SIZE: usize = 92;
/// More entries than any table this reads holds (the usual table has 128).
const MAX_ENTRIES: u32 = 1024;

/// Why a table cannot be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("no GPT {0} header: the disk does not start with a GUID partition table")]
    NoHeader(&'static str),
    #[error("the GPT {0} header's checksum does not match its bytes")]
    HeaderChecksum(&'static str),
    #[error("the GPT {0} partition entries' checksum does not match their bytes")]
    EntriesChecksum(&'static str),
    #[error("the GPT {which} header is malformed: {what}")]
    Malformed { which: &'static str, what: String },
    #[error("the disk has no partition labelled `{0}`")]
    NoPartition(String),
    #[error("`{0}` is not a UUID (8-4-4-4-12 hexadecimal digits)")]
    BadUuid(String),
    #[error("cannot read or write the partition table: {0}")]
    Io(#[from] io::Error),
}

/// One partition of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its number, from 1 (its place in the entry array).
    pub number: u32,
    pub label: String,
    /// Lowercase UUIDs.
    pub type_guid: String,
    pub uuid: String,
    /// Bytes from the start of the disk.
    pub offset: u64,
    pub size: u64,
}

/// The partitions of a disk, in entry order (unused entries left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub sector: u64,
    pub partitions: Vec<Partition>,
}

impl Table {
    /// The partition labelled `label`.
    pub fn by_label(&self, label: &str) -> Result<&Partition, GptError> {
        self.partitions
            .iter()
            .find(|p| p.label == label)
            .ok_or_else(|| GptError::NoPartition(label.to_string()))
    }
}

/// A header's fields this module uses.
#[derive(Debug, Clone)]
struct Header {
    bytes: Vec<u8>,
    other_lba: u64,
    entries_lba: u64,
    count: u32,
    entry_size: u32,
}

impl Header {
    fn entries_len(&self) -> usize {
        self.count as usize * self.entry_size as usize
    }
}

/// Reads the primary table of a disk with `sector`-byte logical blocks.
pub fn read<D: Read + Seek>(disk: &mut D, sector: u64) -> Result<Table, GptError> {
    let (_, entries) = read_copy(disk, sector, 1, "primary")?;
    let mut partitions = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let first = u64_at(e, 32);
        let last = u64_at(e, 40);
        partitions.push(Partition {
            number: u32::try_from(i + 1).expect("at most MAX_ENTRIES entries"),
            label: label_of(e),
            type_guid: guid_text(&e[..16]),
            uuid: guid_text(&e[16..32]),
            offset: first * sector,
            size: (last + 1).saturating_sub(first) * sector,
        });
    }
    Ok(Table { sector, partitions })
}

/// Sets the unique GUID of each partition labelled as in `changes`, in
/// both copies of the table (backup first). Nothing is written unless both
/// copies read back with good checksums and every label is found.
pub fn set_uuids<D: Read + Write + Seek>(
    disk: &mut D,
    sector: u64,
    changes: &[(&str, &str)],
) -> Result<(), GptError> {
    let (primary, mut entries) = read_copy(disk, sector, 1, "primary")?;
    let (backup, _) = read_copy(disk, sector, primary.other_lba, "backup")?;
    let mut guids = Vec::new();
    for (label, uuid) in changes {
        guids.push((*label, guid_bytes(uuid)?));
    }
    for (label, guid) in &guids {
        let entry = entries
            .iter_mut()
            .find(|e| !e[..16].iter().all(|&b| b == 0) && label_of(e) == *label)
            .ok_or_else(|| GptError::NoPartition(label.to_string()))?;
        entry[16..32].copy_from_slice(guid);
    }
    let flat: Vec<u8> = entries.concat();
    let crc = crc32fast::hash(&flat);
    for (header, lba) in [(backup, primary.other_lba), (primary, 1)] {
        if header.entries_len() != flat.len() {
            return Err(GptError::Malformed {
                which: if lba == 1 { "primary" } else { "backup" },
                what: "its entry array differs in size from the other copy's".into(),
            });
        }
        disk.seek(SeekFrom::Start(header.entries_lba * sector))?;
        disk.write_all(&flat)?;
        let mut bytes = header.bytes.clone();
        bytes[88..92].copy_from_slice(&crc.to_le_bytes());
        bytes[16..20].fill(0);
        let header_crc = crc32fast::hash(&bytes);
        bytes[16..20].copy_from_slice(&header_crc.to_le_bytes());
        disk.seek(SeekFrom::Start(lba * sector))?;
        disk.write_all(&bytes)?;
    }
    disk.flush()?;
    Ok(())
}

/// Reads and checks the header at `lba` and its entry array.
fn read_copy<D: Read + Seek>(
    disk: &mut D,
    sector: u64,
    lba: u64,
    which: &'static str,
) -> Result<(Header, Vec<Vec<u8>>), GptError> {
    let malformed = |what: &str| GptError::Malformed {
        which,
        what: what.to_string(),
    };
    let mut block = vec![0u8; usize::try_from(sector).map_err(|_| malformed("sector size"))?];
    disk.seek(SeekFrom::Start(lba * sector))?;
    disk.read_exact(&mut block)
        .map_err(|_| GptError::NoHeader(which))?;
    if &block[..8] != SIGNATURE {
        return Err(GptError::NoHeader(which));
    }
    let size = u32_at(&block, 12) as usize;
    if size < HEADER_SIZE || size > block.len() {
        return Err(malformed(&format!("header size {size}")));
    }
    let mut bytes = block[..size].to_vec();
    let stored = u32_at(&bytes, 16);
    bytes[16..20].fill(0);
    if crc32fast::hash(&bytes) != stored {
        return Err(GptError::HeaderChecksum(which));
    }
    bytes[16..20].copy_from_slice(&stored.to_le_bytes());
    let header = Header {
        other_lba: u64_at(&bytes, 32),
        entries_lba: u64_at(&bytes, 72),
        count: u32_at(&bytes, 80),
        entry_size: u32_at(&bytes, 84),
        bytes,
    };
    if header.count > MAX_ENTRIES || header.entry_size < 128 || header.entry_size % 8 != 0 {
        return Err(malformed(&format!(
            "{} entries of {} bytes",
            header.count, header.entry_size
        )));
    }
    let mut flat = vec![0u8; header.entries_len()];
    disk.seek(SeekFrom::Start(header.entries_lba * sector))?;
    disk.read_exact(&mut flat)?;
    if crc32fast::hash(&flat) != u32_at(&header.bytes, 88) {
        return Err(GptError::EntriesChecksum(which));
    }
    let entries = flat
        .chunks_exact(header.entry_size as usize)
        .map(<[u8]>::to_vec)
        .collect();
    Ok((header, entries))
}

fn label_of(entry: &[u8]) -> String {
    let units: Vec<u16> = entry[56..128]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"))
}

/// The text of a GUID as stored (first three fields little-endian).
fn guid_text(g: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&g[..16]);
    b[..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    crate::format_uuid(&b)
}

/// A UUID's text as GPT stores it.
fn guid_bytes(text: &str) -> Result<[u8; 16], GptError> {
    let bad = || GptError::BadUuid(text.to_string());
    let groups: Vec<&str> = text.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return Err(bad());
    }
    let raw = hex::decode(groups.concat()).map_err(|_| bad())?;
    let mut b = [0u8; 16];
    b.copy_from_slice(&raw);
    b[..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Ok(b)
}

#[cfg(test)]
mod tests;
