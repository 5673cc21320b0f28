//! Shared log entries: several proposals of one driver round carried by one Raft entry.
//!
//! Every entry costs each member a log key, a protobuf encoding in the append message and a
//! decoding on the follower, and raft-rs bookkeeping; under many concurrent clients most of
//! that is per entry, not per byte. The driver therefore collects the proposals that arrive in
//! one round and may share an entry ([`crate::RaftHandle::propose_shared`]) and proposes them
//! as one entry. Such an entry is marked by its `context` ([`SHARED_ENTRY_CONTEXT_V1`]); its
//! data is `u32 count` then, per command, `u32 length` and the bytes (big-endian). Entries
//! with an empty context carry one command as before. Format: `docs/formats.md`.

use crate::error::{RaftStoreError, Result};

/// `context` of an entry whose data is a list of commands (magic + version).
pub const SHARED_ENTRY_CONTEXT_V1: &[u8] = b"BMSE\x01";
/// Most commands one shared entry carries.
pub const MAX_COMMANDS_PER_ENTRY: usize = 1024;
/// A shared entry is closed once its commands reach this many bytes (a single larger command
/// still travels, alone).
pub const MAX_SHARED_ENTRY_BYTES: usize = 512 << 10;

/// Commands of one shared entry being collected.
#[derive(Debug, Default)]
pub(crate) struct SharedEntry {
    data: Vec<u8>,
    count: u32,
}

impl SharedEntry {
    /// Whether no command has been added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the entry should be proposed before another command is added.
    pub fn is_full(&self) -> bool {
        self.count as usize >= MAX_COMMANDS_PER_ENTRY || self.data.len() >= MAX_SHARED_ENTRY_BYTES
    }

    /// Adds one command.
    pub fn push(&mut self, command: &[u8]) {
        assert!(
            !self.is_full(),
            "a full shared entry must be proposed first"
        );
        if self.data.is_empty() {
            self.data.extend_from_slice(&0u32.to_be_bytes());
        }
        // Commands come from this member's services and are bounded by the RPC size limit,
        // far below 4 GiB.
        assert!(
            u32::try_from(command.len()).is_ok(),
            "command of 4 GiB or more"
        );
        self.data
            .extend_from_slice(&(command.len() as u32).to_be_bytes());
        self.data.extend_from_slice(command);
        self.count += 1;
        self.data[..4].copy_from_slice(&self.count.to_be_bytes());
    }

    /// The entry's data, leaving this empty.
    pub fn take(&mut self) -> Vec<u8> {
        self.count = 0;
        std::mem::take(&mut self.data)
    }
}

/// The commands of a shared entry's data, in proposal order.
pub(crate) fn decode(index: u64, data: &[u8]) -> Result<Vec<&[u8]>> {
    let corrupt = |why: &str| RaftStoreError::Corrupt {
        what: format!("shared log entry {index}: {why}"),
    };
    let (count, mut rest) = split_u32(data).ok_or_else(|| corrupt("no command count"))?;
    if count as usize > MAX_COMMANDS_PER_ENTRY {
        return Err(corrupt(&format!(
            "{count} commands, more than the {MAX_COMMANDS_PER_ENTRY} allowed"
        )));
    }
    let mut commands = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (len, tail) =
            split_u32(rest).ok_or_else(|| corrupt(&format!("command {i}: no length")))?;
        if tail.len() < len as usize {
            return Err(corrupt(&format!(
                "command {i}: {len} bytes announced, {} left",
                tail.len()
            )));
        }
        let (command, tail) = tail.split_at(len as usize);
        commands.push(command);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(corrupt(&format!(
            "{} bytes after the last command",
            rest.len()
        )));
    }
    Ok(commands)
}

fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn commands_come_back_in_order() {
        let mut e = SharedEntry::default();
        assert!(e.is_empty());
        e.push(b"alpha");
        e.push(b"");
        e.push(&[7u8; 300]);
        let data = e.take();
        assert!(e.is_empty());
        let got = decode(9, &data).unwrap();
        assert_eq!(got, vec![&b"alpha"[..], &b""[..], &[7u8; 300][..]]);
    }

    #[test]
    fn entry_is_full_by_count_or_bytes() {
        let mut e = SharedEntry::default();
        for _ in 0..MAX_COMMANDS_PER_ENTRY {
            assert!(!e.is_full());
            e.push(b"x");
        }
        assert!(e.is_full());
        let mut e = SharedEntry::default();
        e.push(&vec![0u8; MAX_SHARED_ENTRY_BYTES]);
        assert!(e.is_full());
    }

    #[test]
    fn damaged_entries_are_refused() {
        let mut e = SharedEntry::default();
        e.push(b"alpha");
        e.push(b"beta");
        let data = e.take();
        for cut in 0..data.len() {
            let err = decode(3, &data[..cut]).unwrap_err().to_string();
            assert!(err.contains("shared log entry 3"), "{err}");
        }
        let mut long = data.clone();
        long.push(0);
        assert!(decode(3, &long)
            .unwrap_err()
            .to_string()
            .contains("after the last command"));
        let mut many = data;
        many[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(3, &many)
            .unwrap_err()
            .to_string()
            .contains("more than"));
    }
}
