//! The append-only journal: one JSON [`Record`] per line, fsynced before the
//! caller gets an answer, replayed at start-up.
//!
//! Tests SIGKILL the simulator under load, so the last line may be torn. A
//! last line without its newline was never acknowledged (the newline is part
//! of the same write, and the answer waits for the fsync), so replay drops it
//! and truncates the file there. A bad line anywhere else is corruption and
//! stops the start-up: silently skipping it would lose a charge.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, bail};

use crate::model::Record;

/// The biggest journal we read back (a test tool's journal stays far below).
pub const MAX_JOURNAL_BYTES: u64 = 1024 * 1024 * 1024;

/// Where records go: a file, or nowhere (in-memory mode).
#[derive(Clone)]
pub struct Journal {
    inner: Option<Arc<Mutex<FileJournal>>>,
}

struct FileJournal {
    path: PathBuf,
    /// `None` once closed at shutdown, which also releases the file lock.
    file: Option<File>,
    /// The length of the file after the last complete record, to cut off a
    /// partial write after an I/O error.
    len_bytes: u64,
    /// Set when a failed write could not be cut off: appending after a torn
    /// line would corrupt the journal, so every later write fails.
    broken: bool,
}

impl Journal {
    /// A journal that keeps nothing.
    pub fn in_memory() -> Journal {
        Journal { inner: None }
    }

    /// Opens (creating if needed) and locks the journal at `path`, and reads
    /// back its records.
    pub fn open(path: &Path) -> anyhow::Result<(Journal, Vec<Record>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        // A new file's directory entry must be durable too, or a crash could
        // lose the whole journal. Best effort: not every platform can sync a
        // directory.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && let Ok(directory) = File::open(parent)
        {
            let _ = directory.sync_all();
        }
        // Two simulators appending to one file would interleave their records.
        file.try_lock().map_err(|error| {
            anyhow::anyhow!(
                "the journal {} is in use by another process ({error})",
                path.display()
            )
        })?;
        let file_len = file.metadata()?.len();
        if file_len > MAX_JOURNAL_BYTES {
            bail!(
                "the journal {} is {file_len} bytes, more than the {MAX_JOURNAL_BYTES} we read back",
                path.display()
            );
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the journal {}", path.display()))?;
        let (records, complete_len) =
            parse(&bytes).with_context(|| format!("the journal {} is corrupt", path.display()))?;
        let complete_len = u64::try_from(complete_len)?;
        if complete_len < file_len {
            tracing::warn!(
                journal.path = %path.display(),
                journal.dropped_bytes = file_len - complete_len,
                "dropping a torn last line of the journal (a write that was never acknowledged)"
            );
            file.set_len(complete_len)?;
            file.sync_all()?;
        }
        let journal = FileJournal {
            path: path.to_owned(),
            file: Some(file),
            len_bytes: complete_len,
            broken: false,
        };
        Ok((
            Journal {
                inner: Some(Arc::new(Mutex::new(journal))),
            },
            records,
        ))
    }

    /// Appends one record and waits until it is on disk.
    pub async fn append(&self, record: &Record) -> anyhow::Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let inner = Arc::clone(inner);
        tokio::task::spawn_blocking(move || {
            let mut journal = inner.lock().unwrap_or_else(PoisonError::into_inner);
            journal.append_line(&line)
        })
        .await
        .context("the journal writer task failed")?
    }

    /// Closes the file (and releases its lock) so a new simulator in the same
    /// process can open it. Later appends fail.
    pub fn close(&self) {
        if let Some(inner) = &self.inner {
            let mut journal = inner.lock().unwrap_or_else(PoisonError::into_inner);
            journal.file = None;
        }
    }
}

impl FileJournal {
    fn append_line(&mut self, line: &[u8]) -> anyhow::Result<()> {
        if self.broken {
            bail!(
                "the journal {} is unusable after an earlier write error",
                self.path.display()
            );
        }
        let Some(file) = self.file.as_mut() else {
            bail!("the journal {} is closed", self.path.display());
        };
        let written = file.write_all(line).and_then(|()| file.sync_data());
        match written {
            Ok(()) => {
                self.len_bytes = self.len_bytes.saturating_add(line.len() as u64);
                Ok(())
            }
            Err(error) => {
                let cut = file.set_len(self.len_bytes).and_then(|()| file.sync_data());
                if cut.is_err() {
                    self.broken = true;
                }
                Err(error).with_context(|| format!("cannot append to {}", self.path.display()))
            }
        }
    }
}

/// Parses complete lines; returns the records and the length of the prefix
/// that ends with the last complete line.
fn parse(bytes: &[u8]) -> anyhow::Result<(Vec<Record>, usize)> {
    let mut records = Vec::new();
    let mut offset = 0;
    let mut line_number = 0;
    while let Some(rest) = bytes.get(offset..) {
        let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
            break;
        };
        line_number += 1;
        let line = rest.get(..newline).unwrap_or_default();
        offset += newline + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record: Record = serde_json::from_slice(line)
            .with_context(|| format!("line {line_number} is not a valid record"))?;
        records.push(record);
    }
    Ok((records, offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OperationKind, Outcome, RECORD_VERSION};

    fn record(seq: u64) -> Record {
        Record {
            v: RECORD_VERSION,
            seq,
            kind: OperationKind::Void,
            outcome: Outcome::Succeeded,
            at: 1,
            idempotency_key: Some(format!("k{seq}")),
            fingerprint: None,
            amount: None,
            error: None,
            response_status: 200,
            response: serde_json::json!({}),
            authorization: None,
            refund: None,
        }
    }

    #[tokio::test]
    async fn appends_survive_reopening_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let (journal, records) = Journal::open(&path).unwrap();
            assert!(records.is_empty());
            journal.append(&record(1)).await.unwrap();
            journal.append(&record(2)).await.unwrap();
            // A second opener is refused while the first holds the lock.
            assert!(Journal::open(&path).is_err());
            journal.close();
        }
        // Simulate a kill in the middle of the third write.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(br#"{"v":1,"seq":3,"ki"#);
        std::fs::write(&path, &bytes).unwrap();

        let (journal, records) = Journal::open(&path).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        journal.append(&record(3)).await.unwrap();
        journal.close();
        let (_journal, records) = Journal::open(&path).unwrap();
        assert_eq!(records.len(), 3);
    }

    #[test]
    fn corruption_in_the_middle_stops_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let good = serde_json::to_string(&record(1)).unwrap();
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let error = Journal::open(&path).err().unwrap();
        assert!(format!("{error:#}").contains("line 2"), "{error:#}");
    }
}
