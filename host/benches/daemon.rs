//! The sync job as a daemon against a general log shipper (#19; plain
//! binary, prints a table). Run with `cargo bench -p outpost-host --bench
//! daemon` (Linux; `BENCH_LINES=N` for a smaller log, default 1,000,000;
//! `BENCH_DEBUG=1` prints the host's events and the envelopes waiting).
//!
//! One instrument log from `../shared/tools/gen-instrument-log.py` (about
//! 85 MiB, 5 % of lines with patient-looking text), processed alternately,
//! twice each, by:
//!
//! - the real `outpost run` (this build's binary, release profile) with the
//!   signed modules, enrolled with the reference cloud on loopback: from the
//!   collector loaded until it has read the whole file into the durable
//!   spool (its first call that ends caught up; the start, with the modules
//!   compiled on a fresh state directory, is shown apart); its peak RSS
//!   (VmHWM) at that point. Uploads then finish (bandwidth cap lifted), the
//!   process is stopped with SIGTERM, and its CPU time (user + system, the
//!   uploads included) is taken; the records the cloud received are searched
//!   for every patient value the generator wrote (`--phi-json`);
//! - syslog-ng (Debian `syslog-ng-core`) through `../shared/tools/peer-syslog-ng.sh`
//!   (file source, six regex rewrites, file destination): its own MiB/s and
//!   peak RSS; its CPU time from the children's rusage.
//!
//! Besides each whole process's CPU time, the CPU time of the measured span
//! alone (outpost: from the collector ready to caught up, read from
//! `/proc/PID/stat`) gives MiB per CPU second, and the last line says what
//! the throughput target asks of that figure at the drain's CPU share.
//!
//! These machines are noisy: compare the ratios of one run, not runs.

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("the daemon benchmark runs on Linux only (it reads /proc and drives syslog-ng)");
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main()
}

#[cfg(target_os = "linux")]
mod linux {
    use outpost_cloud::{Enrollment, EnrollmentToken, Server, ServerConfig, TestPki};
    use std::io::BufRead;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const TOKEN: &str = "daemon-bench-token-0123456789abcdef";

    fn tools() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools")
    }

    /// User + system CPU seconds of this process's waited-for children.
    fn children_cpu() -> f64 {
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes into the struct we own.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    }

    fn proc_status(pid: u32, key: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// User + system CPU seconds of process `pid` itself (not its children).
    fn proc_cpu(pid: u32) -> f64 {
        // SAFETY: sysconf reads a constant.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                // Fields after the command name (which may hold spaces):
                // state is field 3, utime 14, stime 15.
                let rest = &s[s.rfind(')')? + 1..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
            })
            .map_or(0.0, |t| t / tick)
    }

    struct Run {
        who: &'static str,
        secs: f64,
        cpu: f64,
        /// CPU seconds of the measured span alone (outpost: from the
        /// collector ready to caught up; syslog-ng: its whole run).
        span_cpu: f64,
        peak_mib: f64,
        note: String,
    }

    pub fn main() {
        let lines: u64 = std::env::var("BENCH_LINES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let logs = d.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join("instrument.log");
        let gen_ok = Command::new("python3")
            .arg(tools().join("gen-instrument-log.py"))
            .arg(&log)
            .args(["--lines", &lines.to_string(), "--phi-json"])
            .arg(d.join("phi.json"))
            .status()
            .is_ok_and(|s| s.success());
        if !gen_ok {
            println!(
                "skipped: {} did not run (python3 and ../shared/tools are needed)",
                tools().join("gen-instrument-log.py").display()
            );
            return;
        }
        let bytes = std::fs::metadata(&log).unwrap().len();
        let mib = bytes as f64 / (1024.0 * 1024.0);
        let phi: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("phi.json")).unwrap()).unwrap();

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
        pki.write(&d.join("pki")).unwrap();
        let mut cfg = ServerConfig::new(
            d.join("cloud"),
            "127.0.0.1:0".parse().unwrap(),
            pki.server_cert_pem.clone(),
            pki.server_key_pem.clone(),
            Enrollment::Token(EnrollmentToken::new(TOKEN).unwrap()),
        );
        // The bench measures throughput, not the cloud's rate limits.
        cfg.defence = outpost_cloud::DefenceConfig::without_rate_limits();
        let server = rt.block_on(Server::start(cfg)).unwrap();
        let url = format!("https://127.0.0.1:{}", server.addr().port());
        let syslog_ng = Command::new("syslog-ng")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());

        println!(
            "outpost daemon vs syslog-ng (machine: {} cpus, shared and noisy); log: {lines} lines, {mib:.1} MiB\n",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        );
        let mut runs = Vec::new();
        for round in 0..2 {
            runs.push(outpost(d, round, &log, &url, &phi));
            if syslog_ng {
                runs.push(peer(&log));
            }
        }
        if !syslog_ng {
            println!(
                "syslog-ng not found (apt-get install syslog-ng-core): only outpost measured\n"
            );
        }
        println!(
            "| {:<10} | {:>8} | {:>8} | {:>7} | {:>7} | {:>13} | {:>9} | note",
            "run", "secs", "MiB/s", "CPU s", "span s", "MiB per span", "peak MiB"
        );
        println!(
            "|------------|----------|----------|---------|---------|---------------|-----------|------"
        );
        for r in &runs {
            println!(
                "| {:<10} | {:>8.2} | {:>8.1} | {:>7.2} | {:>7.2} | {:>13.1} | {:>9.1} | {}",
                r.who,
                r.secs,
                mib / r.secs,
                r.cpu,
                r.span_cpu,
                mib / r.span_cpu.max(1e-9),
                r.peak_mib,
                r.note
            );
        }
        println!(
            "\nCPU s: the whole process (outpost: start, compile child, drain, uploads); span s: CPU seconds of the measured span alone (outpost: collector ready to caught up, uploads alongside included; syslog-ng: its whole run); MiB per span: MiB per span CPU second"
        );
        let best = |who: &str, f: &dyn Fn(&Run) -> f64| {
            runs.iter()
                .filter(|r| r.who == who)
                .map(f)
                .fold(f64::NAN, f64::max)
        };
        if syslog_ng {
            let ours = best("outpost", &|r| mib / r.secs);
            let theirs = best("syslog-ng", &|r| mib / r.secs);
            let ours_rss = -best("outpost", &|r| -r.peak_mib);
            let theirs_rss = -best("syslog-ng", &|r| -r.peak_mib);
            println!(
                "\nbest of each: throughput outpost ÷ syslog-ng = {:.2} (target ≥ 2), peak RSS outpost ÷ syslog-ng = {:.2} (target ≤ 0.5)",
                ours / theirs,
                ours_rss / theirs_rss
            );
            // The drain's calls run one after another and are paced to the
            // policy's share of one CPU (a call of t seconds is followed by
            // a pause of t × (100 − share) / share): a file goes no faster
            // than the share times what one call does per second.
            let share = outpost_host::config::DEFAULT_DRAIN_CPU_PERCENT as f64 / 100.0;
            let ours_eff = best("outpost", &|r| mib / r.span_cpu.max(1e-9));
            let theirs_eff = best("syslog-ng", &|r| mib / r.span_cpu.max(1e-9));
            println!(
                "CPU efficiency: outpost's drain {ours_eff:.1} MiB per CPU second (uploads alongside included), syslog-ng {theirs_eff:.1} ({:.2}×); 2× syslog-ng ({:.1} MiB/s) at the drain's CPU share ({:.0} % of one CPU) needs calls doing ≥ {:.1} MiB per second, {:.1}× syslog-ng's MiB per CPU second",
                ours_eff / theirs_eff,
                2.0 * theirs,
                share * 100.0,
                2.0 * theirs / share,
                2.0 * theirs / share / theirs_eff
            );
        }
        rt.block_on(server.shutdown());
    }

    fn config(state: &Path, logs: &Path, url: &str, ca: &Path) -> String {
        let mut text = String::new();
        for line in outpost_artifacts::example_config(state, 3600).lines() {
            let key = line.split_once('=').map(|(k, _)| k.trim());
            let line = match key {
                Some("instrument-logs") => format!("instrument-logs = {logs:?}"),
                Some("region") => format!("endpoint = {url:?}"),
                Some("extra-ca-files") => {
                    format!("extra-ca-files = [{ca:?}]\nonly-extra-cas = true")
                }
                // Uploads are not what is measured: no 6 Mbit/s cap.
                Some("bandwidth-mbit") => "bandwidth-mbit = 10000.0".into(),
                Some("listen") => "listen = \"127.0.0.1:0\"".into(),
                _ => line.to_owned(),
            };
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    fn outpost(d: &Path, round: usize, log: &Path, url: &str, phi: &serde_json::Value) -> Run {
        let run_dir = d.join(format!("outpost-{round}"));
        let state = run_dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let cfg = run_dir.join("outpost.toml");
        std::fs::write(
            &cfg,
            config(&state, log.parent().unwrap(), url, &d.join("pki/ca.pem")),
        )
        .unwrap();
        let bin = env!("CARGO_BIN_EXE_outpost");
        let enrolled = Command::new(bin)
            .args(["enroll", "--config"])
            .arg(&cfg)
            .args([
                "--email",
                "bench@lab.example",
                "--name",
                "Bench",
                "--instrument-model",
                "XN-550",
                "--instrument-id",
                "bench",
                "--serial",
                "SN-BENCH",
            ])
            .env("OUTPOST_ENROLLMENT_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(
            enrolled.status.success(),
            "enroll: {}",
            String::from_utf8_lossy(&enrolled.stderr)
        );
        let device: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state.join("device.json")).unwrap()).unwrap();
        let device_id = device["device-id"].as_str().unwrap_or_default().to_owned();

        let cpu0 = children_cpu();
        let start = Instant::now();
        let mut child = Command::new(bin)
            .args(["run", "--json", "--config"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Its output is read to the end on a thread of its own: a full pipe
        // would stall the process measured.
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut records = 0u64;
        let mut caught_up = None;
        let mut ready = None;
        let mut peak_at_ready = 0;
        let mut cpu_at_ready = 0.0;
        let mut span_cpu = 0.0;
        for line in rx.iter() {
            if std::env::var_os("BENCH_DEBUG").is_some() {
                eprintln!("{line}");
            }
            let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if ev["event"] == "module-ready" && ev["module"] == "collector" {
                ready = Some(start.elapsed());
                peak_at_ready = proc_status(pid, "VmHWM:");
                cpu_at_ready = proc_cpu(pid);
            }
            if ev["event"] == "call-succeeded" && ev["module"] == "collector" {
                let summary = ev["summary"].as_str().unwrap_or_default();
                records += summary
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("records="))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                if !summary.contains("backlog") && records > 0 {
                    caught_up = Some(start.elapsed());
                    span_cpu = proc_cpu(pid) - cpu_at_ready;
                    break;
                }
            }
            if ev["event"] == "module-quarantined" {
                panic!("the collector was quarantined: {line}");
            }
        }
        // From the collector loaded (its compiled code cached, as in a
        // service restarted) to the whole file in the spool; the start
        // (config, trust, compiling the modules on a fresh state directory)
        // is shown apart.
        let ready = ready.expect("the collector was never ready");
        let secs = (caught_up.expect("the collector never caught up") - ready).as_secs_f64();
        let peak_kib = proc_status(pid, "VmHWM:");
        // Let the uploads finish, then stop it as a service manager would.
        let db = state.join("outpost.db");
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            let waiting: i64 = rusqlite::Connection::open(&db)
                .and_then(|c| c.query_row("SELECT COUNT(*) FROM uplink_outbox", [], |r| r.get(0)))
                .unwrap_or(1);
            if std::env::var_os("BENCH_DEBUG").is_some() {
                eprintln!("waiting envelopes: {waiting}");
            }
            if waiting == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // SAFETY: a plain signal to the child this function started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let _ = child.wait();
        let cpu = children_cpu() - cpu0;
        // What the cloud received from this device, searched for patient values.
        let store = outpost_cloud::Store::open(&d.join("cloud")).unwrap();
        let id = outpost_protocol::DeviceId::parse(&device_id).ok();
        let batches = store.batches(id.as_ref(), None).unwrap();
        let text = serde_json::to_string(&batches.iter().map(|b| &b.body).collect::<Vec<_>>())
            .unwrap()
            .to_uppercase();
        // The envelopes' own times are not record content (an MRN's digits
        // turn up in nanoseconds): blanked before the search.
        let text = blank_numbers_after(
            &text,
            &["\"SECONDS\":", "\"NANOSECONDS\":", "\"CREATED-AT\":"],
        );
        // Every value in one pass over the text (a name leaks if its surname
        // appears: the generator writes "SURNAME, FIRST").
        let mut needles: Vec<(String, &str)> = Vec::new();
        for kind in ["names", "mrns", "dobs", "phones", "ssns"] {
            for v in phi[kind].as_array().into_iter().flatten() {
                let v = v.as_str().unwrap_or_default().to_uppercase();
                let needle = if kind == "names" {
                    v.split(',').next().unwrap_or_default().trim().to_owned()
                } else {
                    v
                };
                if !needle.is_empty() {
                    needles.push((needle, kind));
                }
            }
        }
        needles.sort();
        needles.dedup_by(|a, b| a.0 == b.0);
        let total = needles.len();
        let ac = aho_corasick::AhoCorasick::new(needles.iter().map(|n| &n.0)).unwrap();
        // A match inside a longer word or number (an MRN's digits within a
        // timestamp's nanoseconds) is not the value: counted apart.
        let mut found = vec![false; total];
        let mut inside = vec![false; total];
        let mut examples = Vec::new();
        for m in ac.find_overlapping_iter(&text) {
            let i = m.pattern().as_usize();
            let before = text[..m.start()].chars().next_back();
            let after = text[m.end()..].chars().next();
            let whole = !before.is_some_and(char::is_alphanumeric)
                && !after.is_some_and(char::is_alphanumeric);
            if !whole {
                inside[i] = true;
                continue;
            }
            if !found[i] && examples.len() < 8 {
                let from = text.floor_char_boundary(m.start().saturating_sub(40));
                let to = text.ceil_char_boundary((m.end() + 40).min(text.len()));
                examples.push(format!(
                    "{} {:?}: …{}…",
                    needles[i].1,
                    needles[i].0,
                    &text[from..to]
                ));
            }
            found[i] = true;
        }
        let leaked = found.iter().filter(|f| **f).count();
        let partial = (0..total).filter(|&i| inside[i] && !found[i]).count();
        if std::env::var_os("BENCH_DEBUG").is_some() || round == 0 {
            for e in &examples {
                println!("  found in the cloud: {e}");
            }
        }
        Run {
            who: "outpost",
            secs,
            cpu,
            span_cpu,
            peak_mib: peak_kib as f64 / 1024.0,
            note: format!(
                "start {:.1} s (peak {:.0} MiB by then), then {records} records to the spool; {} batches in the cloud; distinct patient values found there as a whole token: {leaked} of {total} (inside a longer token only: {partial})",
                ready.as_secs_f64(),
                peak_at_ready as f64 / 1024.0,
                batches.len()
            ),
        }
    }

    /// `text` with the number after each of `keys` replaced by `#`s.
    fn blank_numbers_after(text: &str, keys: &[&str]) -> String {
        let mut out = text.to_owned();
        for key in keys {
            let mut from = 0;
            while let Some(at) = out[from..].find(key) {
                let start = from + at + key.len();
                let end = out[start..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(out.len(), |n| start + n);
                out.replace_range(start..end, &"#".repeat(end - start));
                from = end;
            }
        }
        out
    }

    fn peer(log: &Path) -> Run {
        let cpu0 = children_cpu();
        let out = Command::new("bash")
            .arg(tools().join("peer-syslog-ng.sh"))
            .arg(log)
            .output()
            .unwrap();
        let cpu = children_cpu() - cpu0;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "peer-syslog-ng.sh: {text}");
        // "syslog-ng: N lines, X MiB in T s = R MiB/s, peak RSS P MiB"
        let num_before = |s: &str, unit: &str| -> f64 {
            let i = s.find(unit).unwrap_or(0);
            s[..i]
                .split_whitespace()
                .last()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let first = text.lines().next().unwrap_or_default();
        let secs = first
            .split(" in ")
            .nth(1)
            .map(|s| num_before(s, " s "))
            .unwrap_or(f64::NAN);
        let peak = first
            .split("peak RSS ")
            .nth(1)
            .map(|s| num_before(s, " MiB"))
            .unwrap_or(f64::NAN);
        let redactions = text
            .lines()
            .find(|l| l.starts_with("redactions"))
            .unwrap_or_default()
            .to_owned();
        Run {
            who: "syslog-ng",
            secs,
            cpu,
            span_cpu: cpu,
            peak_mib: peak,
            note: redactions,
        }
    }
}
