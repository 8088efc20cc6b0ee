//! outpost collector module: turns what lies in the granted instrument folders
//! into typed device records, without patient data, and queues them.
//!
//! | file | parser (collector-core) | records |
//! | --- | --- | --- |
//! | `*.log`, `*.txt` (UTF-8) | `logs`, line by line | instrument events |
//! | ASTM E1381/E1394 transcripts (`*.astm`, or content starting with STX/ENQ/`H|`) | `astm`, message by message | QC results (O.12 = `Q`, or the QC markers H.12, O.16, `QC-<lot>^L<n>` ids in O.3/O.4 and QC comments) |
//! | HL7 v2 (`*.hl7`, or content starting with `MSH`) | `hl7`, message by message | QC results (OBR-4 QC codes, SPM-11 `Q`/`C`) |
//! | `*.csv` QC exports | `csvjson` (column allowlist), row by row under the header line | QC results |
//! | `*.json` QC exports | `csvjson` (column allowlist), whole file | QC results |
//! | UTF-16 logs | `logs` on the whole file | instrument events |
//!
//! Logs, ASTM, HL7 and CSV are read incrementally, unit by unit, at most
//! [`MAX_READ_BYTES_PER_FILE`] per file and [`MAX_PARSE_BYTES_PER_CALL`] per
//! call, so a 2 GB transcript costs bounded memory and time, a backlog drains
//! over several calls, and a growing file is read as it grows. A call starts
//! no file after [`CALL_TIME_BUDGET`], so a folder of thousands of files is
//! checked in a round over several calls ([`RESUME_KEY`]). A call that
//! stops at a budget says so (`uplink.backlog-waiting`) and the host calls
//! again at once, so a backlog drains at full speed, not one call per
//! collection interval.
//!
//! Patient records are dropped whole by the parsers and free text is redacted
//! there; this module only schedules, converts and queues.
//!
//! Cursors (module `state`): logs, ASTM, HL7 and CSV files keep `cursor:<path>` =
//! byte offset of the next unread line or message plus a fingerprint of the
//! file's first bytes, so a growing transcript is read message by message, a
//! rotated file (new content under the old name) or a truncated one starts
//! again at 0, and a restart neither re-sends nor skips (see [`Incremental`]).
//! JSON exports and UTF-16 logs keep `seen:<path>` = a fingerprint of the
//! whole file and are parsed again only when it changes.

mod convert;
#[cfg(any(target_arch = "wasm32", test))]
mod small_blocks;

/// Freed small blocks are reused without a call into `malloc` (see
/// [`small_blocks`]); `wasm32` only, where the module has one thread.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: small_blocks::SmallBlocks = small_blocks::SmallBlocks::new();

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use outpost_collector_core as core;
use outpost_sdk::uplink::{self, Heartbeat, Record};
use outpost_sdk::{CollectReport, Collector, Timestamp, Trigger};
use outpost_sdk::{fs, host, log, state};

/// Uplink stream for heartbeats.
pub const HEARTBEAT_STREAM: &str = "heartbeat";
/// Uplink stream for instrument events.
pub const EVENTS_STREAM: &str = "events";
/// Uplink stream for QC results.
pub const QC_STREAM: &str = "qc";
/// Uplink stream for maintenance events.
pub const MAINTENANCE_STREAM: &str = "maintenance";
/// Uplink stream for software status.
pub const SOFTWARE_STREAM: &str = "software";
/// Most records queued by one call: about [`MAX_PARSE_BYTES_PER_CALL`] of log
/// lines, so both bounds end a call at about the same point. Each call starts a
/// fresh instance that compiles the scrubber's patterns again (about 10 ms), so
/// fewer, fuller calls drain a backlog faster.
pub const MAX_RECORDS_PER_CALL: usize = 20_000;
/// Most records the host accepts in one batch.
pub const MAX_BATCH_RECORDS: usize = 1000;
/// Records per `uplink.enqueue` batch (a batch may run over by one unit).
pub const RECORDS_PER_BATCH: usize = 500;
/// Most bytes parsed by one call, over all files (bounds a call's CPU time:
/// about half a second at the module's measured scrubbing speed). A backlog
/// drains over several calls.
pub const MAX_PARSE_BYTES_PER_CALL: u64 = 2 * 1024 * 1024;
/// Most new bytes read from one line file in one call.
pub const MAX_READ_BYTES_PER_FILE: u64 = 4 * 1024 * 1024;
/// Largest whole-file input (CSV, JSON, UTF-16 log) parsed; larger ones are
/// counted malformed and skipped (a call must stay within its CPU limit).
pub const MAX_WHOLE_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Longest CSV header line read.
pub const MAX_CSV_HEADER_BYTES: u64 = 64 * 1024;
/// Log lines are parsed in runs of about this many bytes, so the per-call
/// budget is checked between runs.
pub const LINE_UNIT_BYTES: usize = 64 * 1024;
/// Bytes of a line file's start that identify it across rotation.
pub const FINGERPRINT_BYTES: usize = 256;
/// Deepest directory level walked below a granted directory.
pub const MAX_DIR_DEPTH: usize = 8;
/// State key prefix of the per-file byte cursors of line files.
pub const CURSOR_PREFIX: &str = "cursor:";
/// A transcript's last message without an end marker is read once the file
/// has not been modified for this long (or was unchanged since the last scan).
pub const SETTLE_SECS: u64 = 30;
/// State key prefix of the fingerprints of whole files already parsed.
pub const SEEN_PREFIX: &str = "seen:";
/// Wall time after which a call starts no further file: it says a backlog
/// is waiting, and the next call begins at the file this one did not reach
/// ([`RESUME_KEY`]), so every file gets its turn however many there are. A
/// round over every file ends the backlog when nothing stopped it early.
/// Checking each file costs a few host calls (open, metadata, a read, its
/// cursor): thousands of files, where file calls are slow (Windows; more so
/// under Wine), would otherwise run a call past its CPU limit
/// (`cpu-ms-per-call` in the manifest, 2000 ms; the deadline counts time
/// spent in host calls too), fail it, and in the end quarantine the module.
pub const CALL_TIME_BUDGET: Duration = Duration::from_millis(500);
/// State key of the round in progress, after a call stopped early: how many
/// files the round has left and the one the next call begins at (removed
/// once a call ends the round).
pub const RESUME_KEY: &str = "resume-at";

/// How a file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 log lines, read incrementally.
    Lines,
    /// ASTM transcript.
    Astm,
    /// HL7 v2 messages.
    Hl7,
    /// CSV QC export.
    Csv,
    /// JSON QC export.
    Json,
    /// UTF-16 log (parsed whole).
    Utf16Log,
    /// Not an input this module understands.
    Other,
}

/// Classify a file by name and first bytes.
pub fn classify(path: &Path, head: &[u8]) -> Kind {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if head.starts_with(&[0xff, 0xfe]) || head.starts_with(&[0xfe, 0xff]) {
        return Kind::Utf16Log;
    }
    let trimmed: &[u8] = {
        let start = head
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(head.len());
        &head[start..]
    };
    if trimmed.starts_with(b"MSH") || ext == "hl7" {
        return Kind::Hl7;
    }
    if ext == "astm"
        || trimmed.first().is_some_and(|b| *b == 0x02 || *b == 0x05)
        || trimmed.starts_with(b"H|")
        || trimmed.starts_with(b"1H|")
    {
        return Kind::Astm;
    }
    match ext.as_str() {
        "csv" => Kind::Csv,
        "json" => Kind::Json,
        "log" | "txt" => Kind::Lines,
        _ => Kind::Other,
    }
}

/// The collector module.
pub struct InstrumentCollector;

impl Collector for InstrumentCollector {
    fn collect(_trigger: Trigger) -> Result<CollectReport, String> {
        let started = Instant::now();
        let mut report = CollectReport::empty();
        let instruments = host::instruments();
        let now = Timestamp::now();

        let heartbeats: Vec<Record> = instruments
            .iter()
            .map(|instrument| {
                Record::Heartbeat(Heartbeat {
                    instrument: instrument.clone(),
                    time: now,
                })
            })
            .collect();
        if !heartbeats.is_empty() {
            match queue(HEARTBEAT_STREAM, heartbeats, None, &mut report) {
                Ok(()) => {}
                Err(Stop::Wait(why)) => return Ok(waiting(report, &why)),
                Err(Stop::Fail(e)) => return Err(e),
            }
        }

        let fallback = instruments
            .first()
            .map(|i| core::Instrument {
                model: i.model.clone(),
                serial: i.serial.clone(),
            })
            .unwrap_or_default();
        let mut files = Vec::new();
        for dir in fs::directories() {
            walk(Path::new(&dir), 0, &mut files, &mut report);
        }

        let mut sink = Sink {
            report,
            pending: Vec::new(),
            total: 0,
            stop: None,
        };
        // A round checks every file once, over as many calls as it takes:
        // a call that stops early leaves where the next one begins and how
        // many files the round has left ([`RESUME_KEY`]).
        let resume = state::get_string(RESUME_KEY).and_then(|v| parse_resume(&v));
        let mut left = files.len();
        if let Some((n, at)) = &resume {
            let first = files.iter().position(|p| p.as_path() >= Path::new(at));
            files.rotate_left(first.unwrap_or(0));
            left = (*n).min(files.len());
        }
        let mut budget = MAX_PARSE_BYTES_PER_CALL;
        // The file the next call begins at, when this one stops early.
        let mut next = None;
        for (i, path) in files.iter().take(left).enumerate() {
            if sink.total >= MAX_RECORDS_PER_CALL || budget == 0 || sink.stop.is_some() {
                // The file last read may hold more: the next call begins there.
                next = Some(i.saturating_sub(1));
                break;
            }
            if started.elapsed() >= CALL_TIME_BUDGET {
                next = Some(i);
                break;
            }
            match read_file(path, &fallback, &mut sink, &mut budget) {
                Ok(Some((key, value))) => sink.flush(&key, &value),
                Ok(None) => sink.pending.clear(),
                Err(e) => {
                    // Records not yet queued are dropped with the error; the
                    // cursor stays where the last queued batch left it.
                    sink.pending.clear();
                    sink.report.malformed += 1;
                    log::warn(&format!(
                        "cannot read a file in /{} ({}); file names are not logged",
                        granted_dir(path),
                        e.kind()
                    ));
                }
            }
        }
        if next.is_none() && left > 0 && (sink.total >= MAX_RECORDS_PER_CALL || budget == 0) {
            next = Some(left - 1);
        }
        if sink.stop.is_none() {
            // A hint only: if it is lost, the next call begins a round at
            // the first file.
            let _ = match next {
                Some(i) => state::set_string(
                    RESUME_KEY,
                    &format!("{} {}", left - i, files[i].to_string_lossy()),
                ),
                None if resume.is_some() => state::delete(RESUME_KEY),
                None => Ok(()),
            };
        }
        match sink.stop {
            Some(Stop::Fail(e)) => Err(e),
            Some(Stop::Wait(why)) => Ok(waiting(sink.report, &why)),
            None => {
                // A budget ran out: more may be waiting, so the host calls
                // again at once instead of after the interval (a budget
                // spent exactly at the end of the input costs one empty call).
                if next.is_some() {
                    uplink::backlog_waiting();
                }
                Ok(sink.report)
            }
        }
    }
}

/// The [`RESUME_KEY`] value `<files left in the round> <path to begin at>`.
fn parse_resume(value: &str) -> Option<(usize, String)> {
    let (left, path) = value.split_once(' ')?;
    Some((left.parse().ok()?, path.to_owned()))
}

/// Why queueing stopped.
enum Stop {
    /// The host cannot take data now (not enrolled, spool full of what is
    /// never dropped, disk full): stop this call without failing it — the
    /// cursors stay, the next call tries again, and the module is not counted
    /// as failing (nor quarantined) for the host's condition.
    Wait(String),
    /// Anything else ends the call with an error.
    Fail(String),
}

/// The granted directory `path` lies in: its first component, a logical name
/// the manifest declared. Log lines name only this, never the file: a file
/// name may name a patient (an export saved under the patient's name).
fn granted_dir(path: &Path) -> String {
    path.components()
        .find_map(|c| match c {
            std::path::Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

fn waiting(report: CollectReport, why: &str) -> CollectReport {
    log::warn(&format!(
        "the host cannot queue data now ({why}); keeping everything for the next call"
    ));
    report
}

/// Batches one file's records and queues each batch together with the
/// file's cursor just after the batch's last unit, in one transaction
/// (`uplink.enqueue-with-state`): a crash at any point neither re-sends nor
/// skips a record.
struct Sink {
    report: CollectReport,
    /// Records of the current file not queued yet.
    pending: Vec<Record>,
    /// Records produced by this call so far.
    total: usize,
    /// Why queueing stopped, if it did.
    stop: Option<Stop>,
}

impl Sink {
    /// The records of one unit, and the file's cursor value after it.
    fn unit(&mut self, key: &str, records: Vec<core::Record>, cursor: String) {
        self.total += records.len();
        self.pending
            .extend(records.into_iter().map(convert::record));
        if self.pending.len() >= RECORDS_PER_BATCH {
            self.flush(key, &cursor);
        }
    }

    /// Queue what is pending (by stream) with `key` = `cursor`, or just move
    /// the cursor when nothing is pending.
    fn flush(&mut self, key: &str, cursor: &str) {
        if self.stop.is_some() {
            self.pending.clear();
            return;
        }
        let records = std::mem::take(&mut self.pending);
        if records.is_empty() {
            if let Err(e) = state::set_string(key, cursor) {
                self.stop = Some(Stop::Fail(format!("while saving a cursor: {e}")));
            }
            return;
        }
        // Records by stream, streams in order of first appearance; moved,
        // not copied.
        let mut by_stream: Vec<(&'static str, Vec<Record>)> = Vec::new();
        for r in records {
            let s = convert::stream(&r);
            match by_stream.iter_mut().find(|(k, _)| *k == s) {
                Some((_, of_stream)) => of_stream.push(r),
                None => by_stream.push((s, vec![r])),
            }
        }
        let streams = by_stream.len();
        for (i, (stream, mut of_stream)) in by_stream.into_iter().enumerate() {
            let chunks = of_stream.len().div_ceil(MAX_BATCH_RECORDS);
            for j in 0..chunks {
                let rest = of_stream.split_off(of_stream.len().min(MAX_BATCH_RECORDS));
                let chunk = std::mem::replace(&mut of_stream, rest);
                // Only the last batch of a flush carries the cursor (a file
                // yielding records for two streams, or over MAX_BATCH_RECORDS
                // at once, is the only case where a crash could re-send).
                let last = i + 1 == streams && j + 1 == chunks;
                let entry = last.then_some((key, cursor));
                if let Err(stop) = queue(stream, chunk, entry, &mut self.report) {
                    self.stop = Some(stop);
                    return;
                }
            }
        }
    }
}

outpost_sdk::export_collector!(InstrumentCollector);

/// Queue `batch` on `stream` (with the state entry `key` = `value` in the
/// same transaction, if given). A record the host's PHI guard refuses is
/// dropped here — the host keeps it as a dead letter and would refuse it
/// again — counted malformed, and the rest is queued again; the state entry is written even
/// when every record was refused. `unavailable` stops the call quietly
/// ([`Stop::Wait`]); any other failure ends it with an error. Either way no
/// cursor moves past what was not queued.
fn queue(
    stream: &str,
    mut batch: Vec<Record>,
    entry: Option<(&str, &str)>,
    report: &mut CollectReport,
) -> Result<(), Stop> {
    while !batch.is_empty() {
        let res = match entry {
            Some((key, value)) => uplink::enqueue_with_state(stream, &batch, key, value.as_bytes()),
            None => uplink::enqueue(stream, &batch),
        };
        match res {
            Ok(_) => {
                report.records_queued += count(batch.len());
                return Ok(());
            }
            Err(uplink::UplinkError::RefusedByGuard(r)) => {
                let at = (r.record as usize).min(batch.len() - 1);
                batch.remove(at);
                report.malformed += 1;
                log::warn(&format!(
                    "a record on `{stream}` was refused by the host's guard and dropped ({}: {})",
                    r.field, r.finding
                ));
            }
            Err(uplink::UplinkError::Unavailable(why)) => return Err(Stop::Wait(why)),
            Err(e) => return Err(Stop::Fail(format!("while queueing on {stream}: {e}"))),
        }
    }
    if let Some((key, value)) = entry {
        state::set_string(key, value)
            .map_err(|e| Stop::Fail(format!("while saving a cursor: {e}")))?;
    }
    Ok(())
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Collect regular files below `dir` (sorted, at most [`MAX_DIR_DEPTH`] deep).
fn walk(dir: &Path, depth: usize, files: &mut Vec<std::path::PathBuf>, report: &mut CollectReport) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        report.malformed += 1;
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() && depth < MAX_DIR_DEPTH {
            walk(&path, depth + 1, files, report);
        } else if kind.is_file() {
            report.files_scanned += 1;
            files.push(path);
        }
    }
}

/// 64-bit FNV-1a: a cheap fingerprint (not a security boundary: it only
/// decides whether a file changed).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Read one file's new content into `sink` (which queues full batches with
/// the cursor after them). Returns the state key and its final value, to be
/// stored with whatever is still pending.
fn read_file(
    path: &Path,
    fallback: &core::Instrument,
    sink: &mut Sink,
    budget: &mut u64,
) -> std::io::Result<Option<(String, String)>> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    let len = meta.len();
    let mut head = vec![0u8; len.min(FINGERPRINT_BYTES as u64) as usize];
    file.read_exact(&mut head)?;
    let kind = classify(path, &head);
    match kind {
        Kind::Other => return Ok(None),
        Kind::Lines | Kind::Astm | Kind::Hl7 | Kind::Csv => {
            let settled = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age.as_secs() >= SETTLE_SECS);
            // A CSV export is read by rows; every run of rows is parsed
            // under the file's header line.
            let header = if kind == Kind::Csv {
                file.seek(SeekFrom::Start(0))?;
                let mut first = Vec::new();
                (&mut file)
                    .take(MAX_CSV_HEADER_BYTES)
                    .read_to_end(&mut first)?;
                match first.iter().position(|&b| b == b'\n') {
                    Some(nl) => first[..=nl].to_vec(),
                    None => return Ok(None), // no complete header yet
                }
            } else {
                Vec::new()
            };
            let f = Incremental {
                path,
                len,
                head: &head,
                kind,
                settled,
                header: &header,
            };
            return f.read(&mut file, fallback, sink, budget);
        }
        _ => {}
    }
    let key = format!("{SEEN_PREFIX}{}", path.display());
    if key.len() > 256 || len > MAX_WHOLE_FILE_BYTES {
        sink.report.malformed += 1;
        return Ok(None);
    }
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)?;
    let fingerprint = format!("{}:{:016x}", bytes.len(), fnv1a(&bytes));
    if state::get_string(&key).as_deref() == Some(fingerprint.as_str()) {
        return Ok(None);
    }
    let out = match kind {
        Kind::Json => core::csvjson::parse_json(&bytes, fallback),
        _ => core::logs::parse(&bytes, fallback),
    };
    sink.report.malformed += count(out.stats.malformed_frames + out.stats.malformed_records);
    let room = MAX_RECORDS_PER_CALL.saturating_sub(sink.total);
    if out.records.len() > room && sink.total > 0 {
        // Not all of it fits this call: leave the file unmarked, it is parsed
        // again by a later call (the spool deduplicates nothing, so we never
        // split a file; one larger than a call's share is taken whole when it
        // comes first).
        return Ok(None);
    }
    sink.total += out.records.len();
    sink.pending
        .extend(out.records.into_iter().map(convert::record));
    *budget = budget.saturating_sub(len);
    Ok(Some((key, fingerprint)))
}

/// A file read from a byte cursor in units that end at a boundary: a line
/// ending for logs, a message end for ASTM and HL7 (`message_ends` in
/// collector-core). The cursor (state key `cursor:<path>`) is
/// `offset:fingerprint-of-first-bytes[:flag]`, where the flag is
/// - `skip`: the cursor sits inside a unit longer than one read
///   ([`MAX_READ_BYTES_PER_FILE`]), skipped up to the next boundary (counted);
/// - `tail-LEN-HASH`: the bytes after the cursor are a transcript tail without
///   an end marker (an HL7 file's last message, an ASTM message without L), seen
///   with this length and hash; when the next scan finds them unchanged — or
///   the file has not been modified for [`SETTLE_SECS`] — they are read as the
///   last message.
struct Incremental<'a> {
    path: &'a Path,
    len: u64,
    head: &'a [u8],
    /// CSV: the header line, put in front of every run of rows after the first.
    header: &'a [u8],
    kind: Kind,
    /// The file has not been modified for [`SETTLE_SECS`].
    settled: bool,
}

/// Parsed cursor value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    offset: u64,
    print: u64,
    flag: Flag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    None,
    Skip,
    Tail(u64, u64),
}

impl Incremental<'_> {
    /// End offsets (relative to `buf`) of the complete units at its start.
    fn ends(&self, buf: &[u8], max_lines: usize) -> Vec<usize> {
        match self.kind {
            Kind::Astm => core::astm::message_ends(buf),
            Kind::Hl7 => core::hl7::message_ends(buf),
            Kind::Csv => row_unit_ends(buf, max_lines),
            _ => line_unit_ends(buf, max_lines),
        }
    }

    /// The file's first bytes up to `offset` (all of them past the
    /// fingerprint length; no `as usize` on a 64-bit offset, which would
    /// truncate on wasm32 past 4 GiB).
    fn head_up_to(&self, offset: u64) -> &[u8] {
        let n = offset.min(self.head.len() as u64) as usize;
        &self.head[..n]
    }

    /// Parse the unit that starts at file offset `at`.
    fn parse(&self, unit: &[u8], at: u64, fallback: &core::Instrument) -> core::ParseOutput {
        match self.kind {
            Kind::Csv if at == 0 => core::csvjson::parse_csv(unit, fallback),
            Kind::Csv => core::csvjson::parse_csv(&[self.header, unit].concat(), fallback),
            Kind::Astm => core::astm::parse(unit, fallback),
            Kind::Hl7 => core::hl7::parse(unit, fallback),
            _ => core::logs::parse(unit, fallback),
        }
    }

    fn value(&self, offset: u64, flag: Flag) -> String {
        let print = fnv1a(self.head_up_to(offset));
        match flag {
            Flag::None => format!("{offset}:{print:016x}"),
            Flag::Skip => format!("{offset}:{print:016x}:skip"),
            Flag::Tail(len, hash) => format!("{offset}:{print:016x}:tail-{len}-{hash:016x}"),
        }
    }

    fn read(
        &self,
        file: &mut File,
        fallback: &core::Instrument,
        sink: &mut Sink,
        budget: &mut u64,
    ) -> std::io::Result<Option<(String, String)>> {
        let key = format!("{CURSOR_PREFIX}{}", self.path.display());
        if key.len() > 256 {
            sink.report.malformed += 1;
            return Ok(None);
        }
        let stored = state::get_string(&key);
        let mut c = parse_cursor(stored.as_deref());
        let print_now = fnv1a(self.head_up_to(c.offset));
        if c.offset > self.len || (c.offset > 0 && c.print != print_now) {
            // Truncated, or rotated (other content under the same name): start again.
            c = Cursor {
                offset: 0,
                print: 0,
                flag: Flag::None,
            };
        }
        if c.offset == self.len {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(c.offset))?;
        let mut buf = Vec::new();
        file.take(MAX_READ_BYTES_PER_FILE).read_to_end(&mut buf)?;
        let full_read = buf.len() as u64 >= MAX_READ_BYTES_PER_FILE;
        let at_eof = c.offset + buf.len() as u64 >= self.len;
        let room = MAX_RECORDS_PER_CALL.saturating_sub(sink.total);
        if room == 0 {
            return Ok(None);
        }

        // Resynchronise after a skipped oversized unit: drop up to the next boundary.
        let mut start = 0;
        if c.flag == Flag::Skip {
            match self.ends(&buf, 1).first() {
                Some(&end) => start = end,
                None => {
                    let next = c.offset + buf.len() as u64;
                    return Ok(Some((key, self.value(next, Flag::Skip))));
                }
            }
        }
        let body = &buf[start..];
        let mut ends = self.ends(body, room);

        // A transcript's tail without an end marker: read it once it is settled.
        let mut pending = Flag::None;
        let tail_at = ends.last().copied().unwrap_or(0);
        if self.kind != Kind::Lines && at_eof {
            let tail = &body[tail_at..];
            let terminated = tail
                .last()
                .is_some_and(|b| matches!(b, b'\r' | b'\n' | 0x04 | 0x1c));
            if terminated {
                let id = Flag::Tail(tail.len() as u64, fnv1a(tail));
                if self.settled || (c.flag == id && start == 0 && tail_at == 0) {
                    ends.push(body.len());
                } else {
                    pending = id;
                }
            }
        }

        // Parse unit by unit while there is room and budget (one unit may
        // overshoot either).
        let mut consumed = 0;
        for end in ends {
            if (sink.total >= MAX_RECORDS_PER_CALL || *budget == 0 || sink.stop.is_some())
                && consumed > 0
            {
                break;
            }
            let at = c.offset + (start + consumed) as u64;
            let out = self.parse(&body[consumed..end], at, fallback);
            sink.report.malformed +=
                count(out.stats.malformed_frames + out.stats.malformed_records);
            *budget = budget.saturating_sub((end - consumed) as u64);
            consumed = end;
            let after = c.offset + (start + consumed) as u64;
            sink.unit(&key, out.records, self.value(after, Flag::None));
        }
        if consumed != tail_at {
            // Stopped early (no room): the tail is not next to the new cursor.
            pending = Flag::None;
        }
        if consumed == 0 && start == 0 {
            if full_read {
                // A unit longer than one read: skip it whole, counted.
                sink.report.malformed += 1;
                let next = c.offset + buf.len() as u64;
                return Ok(Some((key, self.value(next, Flag::Skip))));
            }
            if pending != c.flag {
                return Ok(Some((key, self.value(c.offset, pending))));
            }
            return Ok(None);
        }
        let next = c.offset + (start + consumed) as u64;
        Ok(Some((key, self.value(next, pending))))
    }
}

fn parse_cursor(s: Option<&str>) -> Cursor {
    let none = Cursor {
        offset: 0,
        print: 0,
        flag: Flag::None,
    };
    let Some(s) = s else { return none };
    let mut parts = s.split(':');
    let offset = parts.next().and_then(|o| o.parse().ok());
    let print = parts.next().and_then(|p| u64::from_str_radix(p, 16).ok());
    let flag = match parts.next() {
        Some("skip") => Flag::Skip,
        Some(t) if t.starts_with("tail-") => {
            let mut f = t["tail-".len()..].split('-');
            let len = f.next().and_then(|l| l.parse().ok());
            let hash = f.next().and_then(|h| u64::from_str_radix(h, 16).ok());
            match (len, hash) {
                (Some(l), Some(h)) => Flag::Tail(l, h),
                _ => Flag::None,
            }
        }
        _ => Flag::None,
    };
    match (offset, print) {
        (Some(offset), Some(print)) => Cursor {
            offset,
            print,
            flag,
        },
        _ => none,
    }
}

/// Like [`line_unit_ends`] for CSV: a newline inside a quoted field (RFC 4180)
/// does not end a row.
pub fn row_unit_ends(buf: &[u8], max: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let (mut rows, mut unit_start, mut row_end, mut quoted) = (0, 0, 0, false);
    for (i, &b) in buf.iter().enumerate() {
        if rows >= max {
            break;
        }
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => {
                rows += 1;
                row_end = i + 1;
                if row_end - unit_start >= LINE_UNIT_BYTES || rows % RECORDS_PER_BATCH == 0 {
                    ends.push(row_end);
                    unit_start = row_end;
                }
            }
            _ => {}
        }
    }
    if row_end > unit_start {
        ends.push(row_end);
    }
    ends
}

/// Ends of runs of complete lines of about [`LINE_UNIT_BYTES`] or
/// [`RECORDS_PER_BATCH`] lines each (so a unit's records fit one batch),
/// covering at most `max` lines in all (a line is never split).
pub fn line_unit_ends(buf: &[u8], max: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let (mut pos, mut lines, mut unit_start) = (0, 0, 0);
    while lines < max {
        let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) else {
            break;
        };
        pos += nl + 1;
        lines += 1;
        if pos - unit_start >= LINE_UNIT_BYTES || lines % RECORDS_PER_BATCH == 0 {
            ends.push(pos);
            unit_start = pos;
        }
    }
    if pos > unit_start {
        ends.push(pos);
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_name_the_granted_directory_not_the_file() {
        let p = Path::new("/instrument-logs/exports/DOE_JANE_1950-03-04.csv");
        assert_eq!(granted_dir(p), "instrument-logs");
        assert_eq!(granted_dir(Path::new("/")), "");
    }

    #[test]
    fn classifies_by_content_and_name() {
        let p = Path::new;
        assert_eq!(classify(p("/d/x.log"), b"2026-01-01 INFO ok"), Kind::Lines);
        assert_eq!(classify(p("/d/capture.txt"), b"\x021H|\\^&|||"), Kind::Astm);
        assert_eq!(classify(p("/d/capture.txt"), b"H|\\^&|||"), Kind::Astm);
        assert_eq!(classify(p("/d/m.txt"), b"MSH|^~\\&|"), Kind::Hl7);
        assert_eq!(classify(p("/d/m.hl7"), b""), Kind::Hl7);
        assert_eq!(classify(p("/d/qc.csv"), b"analyte,value"), Kind::Csv);
        assert_eq!(classify(p("/d/qc.json"), b"[{}]"), Kind::Json);
        assert_eq!(
            classify(p("/d/a.log"), b"\xff\xfe2\x000\x00"),
            Kind::Utf16Log
        );
        assert_eq!(classify(p("/d/photo.png"), b"\x89PNG"), Kind::Other);
    }

    #[test]
    fn lines_stop_at_partial_and_cap() {
        let buf = b"a\r\n\nb\nc\npartial";
        assert_eq!(line_unit_ends(buf, 10), [8]);
        assert_eq!(line_unit_ends(buf, 2), [4]);
        assert_eq!(line_unit_ends(b"no newline", 10), [0usize; 0]);
        let long = "x".repeat(40_000) + "\n";
        let buf = long.repeat(5);
        let ends = line_unit_ends(buf.as_bytes(), 100);
        assert_eq!(ends, [80_002, 160_004, 200_005]);
        let r = RECORDS_PER_BATCH;
        let many = "INFO x\n".repeat(2 * r + r / 2);
        assert_eq!(
            line_unit_ends(many.as_bytes(), 10 * r),
            [7 * r, 14 * r, 7 * (2 * r + r / 2)]
        );
        let csv = b"a,b\n1,\"x\ny\"\n2,z\n3,";
        assert_eq!(row_unit_ends(csv, 10), [16]);
        assert_eq!(row_unit_ends(csv, 2), [12]);
        assert_eq!(row_unit_ends(b"a,\"open\nquote", 10), [0usize; 0]);
    }

    #[test]
    fn cursor_values_round_trip() {
        let f = Incremental {
            path: Path::new("/d/a.log"),
            len: 6,
            head: b"abcdef",
            kind: Kind::Lines,
            settled: false,
            header: b"",
        };
        for (offset, flag) in [(3, Flag::None), (5, Flag::Skip), (4, Flag::Tail(12, 0xabc))] {
            let v = f.value(offset, flag);
            assert_eq!(
                parse_cursor(Some(&v)),
                Cursor {
                    offset,
                    print: fnv1a(&b"abcdef"[..offset as usize]),
                    flag
                }
            );
        }
        // An offset past 4 GiB fingerprints the whole head, as any offset past it.
        let far = (5u64 << 30) + 3;
        assert_eq!(f.head_up_to(far), b"abcdef");
        let none = Cursor {
            offset: 0,
            print: 0,
            flag: Flag::None,
        };
        assert_eq!(parse_cursor(Some("garbage")), none);
        assert_eq!(parse_cursor(None), none);
    }
}
