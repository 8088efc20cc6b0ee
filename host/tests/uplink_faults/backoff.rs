//! The sender's own loop (`Sender::run`) with nothing queued: a cloud whose
//! TLS fails is retried with exponential back-off, the operator is told
//! once, and told again when it works.

use super::*;
use outpost_host::events::{HostEvent, Setting};
use outpost_host::uplink::problem;
use std::sync::atomic::AtomicBool;
use tokio::sync::{broadcast, mpsc, oneshot};

/// A front on 127.0.0.1 for the cloud: while `bad`, it completes no TLS
/// handshake (its certificate comes from a CA the device does not trust);
/// once good, it relays each connection to the cloud. Reports the time of
/// every connection it accepts.
struct Front {
    url: String,
    good: Arc<AtomicBool>,
    attempts: mpsc::UnboundedReceiver<Instant>,
}

async fn front(cloud: SocketAddr) -> Front {
    let (cert, key) = super::enrolment::TestCa::new().leaf(&["127.0.0.1"], false);
    let acceptor = tokio_rustls::TlsAcceptor::from(outpost_cloud::tls_config(&cert, &key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let good = Arc::new(AtomicBool::new(false));
    let (tx, attempts) = mpsc::unbounded_channel();
    let is_good = good.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tx.send(Instant::now());
            if is_good.load(Ordering::SeqCst) {
                tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(cloud).await {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
                    }
                });
            } else {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        }
    });
    Front {
        url: url(addr),
        good,
        attempts,
    }
}

/// The setting problems among the events received so far.
fn problems(rx: &mut broadcast::Receiver<HostEvent>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        match ev {
            HostEvent::SettingProblem { setting, text, .. } => out.push((setting.code(), text)),
            HostEvent::SettingResolved { setting } => out.push((setting.code(), "resolved".into())),
            _ => {}
        }
    }
    out
}

/// With an empty spool only heartbeats go out. Before the fix a failing
/// heartbeat was retried every `retry-initial` forever (an empty drain
/// counted as success and reset the back-off) and nothing was raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cloud_with_nothing_queued_backs_off_raises_once_and_recovers() {
    const ATTEMPTS: usize = 7;
    let (pki, tls) = pki();
    let cloud_dir = tempfile::tempdir().unwrap();
    let cloud = start_cloud(&pki, cloud_dir.path()).await;
    let id = enrolled(&url(cloud.addr()), &tls).await;
    let dev = Device::new(id);
    let mut front = front(cloud.addr()).await;

    let mut cfg = config(vec![front.url.clone()]);
    cfg.retry_initial = Duration::from_millis(20);
    cfg.retry_max = Duration::from_secs(5);
    let initial = cfg.retry_initial;
    let mut events = dev.events.subscribe();
    let (stop, stopped) = oneshot::channel::<()>();
    let sender = dev.sender(&tls, cfg);
    let task = tokio::spawn(sender.run(async {
        let _ = stopped.await;
    }));

    // Attempts while the front refuses TLS.
    let mut at = Vec::new();
    while at.len() < ATTEMPTS {
        let t = tokio::time::timeout(Duration::from_secs(60), front.attempts.recv())
            .await
            .expect("the sender keeps trying")
            .unwrap();
        at.push(t);
    }
    // Each wait is at least half the back-off, and the back-off doubles
    // from `retry_initial`: the k-th gap is at least initial * 2^(k-1) / 2.
    // (Without back-off every gap is about `retry_initial`.)
    for k in 1..ATTEMPTS {
        let gap = at[k] - at[k - 1];
        let floor = initial * (1 << (k - 1)) / 2;
        assert!(
            gap >= floor,
            "attempt {k} came {gap:?} after the previous one; the back-off allows no less than {floor:?}; all: {:?}",
            at.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
        );
    }
    let raised = problems(&mut events);
    assert_eq!(
        raised.len(),
        1,
        "exactly one problem for {ATTEMPTS} failed attempts: {raised:?}"
    );
    let (code, text) = &raised[0];
    assert_eq!(*code, Setting::UplinkTlsRefused.code());
    assert!(
        text.contains(&format!(
            "server {} reached, TLS refused: the server's certificate is issued by an unknown certificate authority",
            front.url
        )),
        "{text}"
    );

    // The cloud becomes reachable: the next attempt recovers.
    front.good.store(true, Ordering::SeqCst);
    // ... and resolves exactly the problem it raised (a notifier clears it).
    let recovered = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.recv().await.unwrap() {
                HostEvent::SettingResolved { setting } => return Ok(setting),
                HostEvent::SettingProblem { setting, .. } => return Err(setting),
                _ => continue,
            }
        }
    })
    .await
    .expect("a recovery within the longest back-off");
    assert_eq!(recovered, Ok(Setting::UplinkTlsRefused));
    assert!(cloud_counter(cloud.store(), "heartbeat") >= 1);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the sender stops on shutdown")
        .unwrap();
    assert!(
        problems(&mut events).is_empty(),
        "nothing raised after the recovery"
    );
    cloud.shutdown().await;
}

/// Nothing listening: the problem raised is `uplink-unreachable`, naming
/// the refused connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_nobody_answers_for_raises_unreachable() {
    let (_pki, tls) = pki();
    let endpoint = closed_port_url().await;
    let dev = Device::new(fake_identity(&endpoint));
    let mut cfg = config(vec![endpoint.clone()]);
    cfg.retry_initial = Duration::from_millis(10);
    cfg.retry_max = Duration::from_millis(40);
    let mut events = dev.events.subscribe();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(dev.sender(&tls, cfg).run(async {
        let _ = stopped.await;
    }));
    let first = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let HostEvent::SettingProblem { setting, text, .. } = events.recv().await.unwrap() {
                return (setting.code(), text);
            }
        }
    })
    .await
    .expect("a problem is raised");
    assert_eq!(
        first,
        (
            Setting::UplinkUnreachable.code(),
            format!(
                "the cloud cannot be used ({} attempts in a row failed); data is kept and retried: cannot reach {endpoint}: connection refused",
                problem::FAILURES_BEFORE_PROBLEM
            )
        )
    );
    let _ = stop.send(());
    task.await.unwrap();
}
