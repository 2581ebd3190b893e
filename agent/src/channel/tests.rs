//! The channel over a real socket against a fake controller on a loopback port and a local
//! blob store: framing, each request, confinement, concurrent connections, the slot given back
//! during `wait`, following the attempt's own run and answering its callbacks, and the
//! socket's removal.

use super::*;
use crate::slots::{SlotGuard, Slots};
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use drover_api::{AddStep, ApiError, ErrorCode, StepAdded};
use drover_protocol::{AttemptNo, OutputName, RunId, StepName};
use drover_storage::LocalBlobs;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::Ordering::SeqCst;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

/// What the fake controller saw and how it answers.
struct Fake {
    added: Mutex<Vec<AddStep>>,
    /// Whether step `a` is terminal yet.
    done: watch::Sender<bool>,
    polls: std::sync::atomic::AtomicUsize,
    /// Add-step requests still to be answered 503, as by a controller that cannot publish.
    unavailable: std::sync::atomic::AtomicUsize,
    /// The runs whose view was read.
    runs_read: Mutex<Vec<String>>,
    /// The callbacks answered: (run, step, proceed).
    answered: Mutex<Vec<(String, String, bool)>>,
}

/// Every run has one step, `held`, waiting for its callback.
async fn run_view(State(fake): State<Arc<Fake>>, UrlPath(run): UrlPath<String>) -> Json<Value> {
    fake.runs_read.lock().unwrap().push(run.clone());
    let held = json!({"name": "held", "status": "pending", "queue": "default", "kind": "function",
                      "pending_reason": {"reason": "waiting_for_callback"}});
    Json(json!({"run_id": run, "name": "p", "status": "running", "steps": [held]}))
}

async fn callback(
    State(fake): State<Arc<Fake>>,
    UrlPath((run, step)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, (StatusCode, Json<ApiError>)> {
    if step != "held" {
        let e = ApiError::new(ErrorCode::NotFound, format!("run {run} has no step {step}"));
        return Err((StatusCode::NOT_FOUND, Json(e)));
    }
    let proceed = body["proceed"].as_bool().unwrap();
    fake.answered
        .lock()
        .unwrap()
        .push((run.clone(), step.clone(), proceed));
    let status = if proceed { "queued" } else { "skipped" };
    Ok(Json(json!({"run_id": run, "step": step, "status": status})))
}

async fn add(
    State(fake): State<Arc<Fake>>,
    UrlPath(run): UrlPath<String>,
    Json(body): Json<AddStep>,
) -> Result<Json<StepAdded>, (StatusCode, Json<ApiError>)> {
    let busy = fake
        .unavailable
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
    if busy.is_ok() {
        let e = ApiError::new(ErrorCode::Unavailable, "the broker is not connected");
        return Err((StatusCode::SERVICE_UNAVAILABLE, Json(e)));
    }
    if body.step.name.as_str() == "refused" {
        let e = ApiError::new(
            ErrorCode::BadRequest,
            "step refused: queue services is reserved",
        );
        return Err((StatusCode::BAD_REQUEST, Json(e)));
    }
    let added = StepAdded {
        run_id: RunId::new(run).unwrap(),
        step: StepName::new(format!("{}_1", body.step.name)).unwrap(),
        existing: body.call.seq == 7,
    };
    fake.added.lock().unwrap().push(body);
    Ok(Json(added))
}

async fn step(
    State(fake): State<Arc<Fake>>,
    UrlPath((_run, step)): UrlPath<(String, String)>,
) -> Result<Json<Value>, (StatusCode, Json<ApiError>)> {
    if step != "a" {
        let e = ApiError::new(ErrorCode::NotFound, format!("no step {step:?}"));
        return Err((StatusCode::NOT_FOUND, Json(e)));
    }
    fake.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut done = fake.done.subscribe();
    let finished = tokio::time::timeout(Duration::from_secs(30), done.wait_for(|d| *d))
        .await
        .is_ok();
    let status = if finished { "succeeded" } else { "running" };
    Ok(Json(
        json!({"name": "a", "status": status, "queue": "default", "kind": "command"}),
    ))
}

/// A channel on a fresh workdir, with its fake controller, its blob store and its slot.
struct Setup {
    channel: Channel,
    fake: Arc<Fake>,
    workdir: PathBuf,
    slots: Slots,
    guard: SlotGuard,
    attempt: AttemptRef,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let fake = Arc::new(Fake {
        added: Mutex::new(Vec::new()),
        done: watch::channel(false).0,
        polls: Default::default(),
        unavailable: Default::default(),
        runs_read: Default::default(),
        answered: Default::default(),
    });
    let app = axum::Router::new()
        .route("/api/v1/runs/{run}", get(run_view))
        .route("/api/v1/runs/{run}/steps/{step}/callback", post(callback))
        .route("/api/v1/runs/{run}/steps", post(add))
        .route("/api/v1/runs/{run}/steps/{step}", get(step))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let workdir = root.join("job");
    std::fs::create_dir(&workdir).unwrap();
    let store = LocalBlobs::open(&root.join("blobs")).unwrap();
    let slots = Slots::new(&crate::slots::tests::config(1, false, &[]));
    let guard = slots.take(0, slots.agent_slot().await.unwrap()).unwrap();
    let attempt = AttemptRef {
        run_id: RunId::generate(),
        step: StepName::new("driver").unwrap(),
        attempt: AttemptNo(2),
    };
    let context = Context {
        attempt: attempt.clone(),
        base,
        http: reqwest::Client::new(),
        route: Route::Store(Arc::new(store)),
        workdir: workdir.clone(),
        slot: guard.attempt_slot(),
        csrf: Default::default(),
        owner: Default::default(),
        declared: [OutputName::new("result").unwrap()].into(),
        artifacts: Default::default(),
    };
    let channel = Channel::open(context, &root).unwrap();
    Setup {
        channel,
        fake,
        workdir,
        slots,
        guard,
        attempt,
        _dir: dir,
    }
}

struct Conn {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Conn {
    async fn open(setup: &Setup) -> Conn {
        let stream = UnixStream::connect(setup.channel.path()).await.unwrap();
        let (read, write) = stream.into_split();
        Conn {
            read: BufReader::new(read),
            write,
        }
    }

    async fn send(&mut self, line: &str) {
        self.write.write_all(line.as_bytes()).await.unwrap();
        self.write.write_all(b"\n").await.unwrap();
    }

    async fn answer(&mut self) -> Value {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(20), self.read.read_line(&mut line));
        read.await.expect("no answer").unwrap();
        assert!(line.ends_with('\n'), "{line:?}");
        serde_json::from_str(&line).unwrap()
    }

    async fn ask(&mut self, request: Value) -> Value {
        self.send(&request.to_string()).await;
        self.answer().await
    }
}

fn code(answer: &Value) -> &str {
    assert_eq!(answer["ok"], false, "{answer}");
    answer["error"]["code"].as_str().unwrap()
}

#[tokio::test]
async fn requests_on_one_connection_are_answered_in_order() {
    let s = setup().await;
    let mut conn = Conn::open(&s).await;
    // Three requests written at once, one of them not JSON: three answers, in order.
    conn.send("{\"op\": \"info\"}\nnot json\n{\"op\": \"launch\"}")
        .await;
    let info = conn.answer().await;
    assert_eq!(info["ok"], true);
    assert_eq!(info["run_id"], s.attempt.run_id.to_string());
    assert_eq!(
        (info["step"].as_str(), info["attempt"].as_u64()),
        (Some("driver"), Some(2))
    );
    assert!(
        info["controller_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    let bad = conn.answer().await;
    assert_eq!(code(&bad), "bad_request");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("one JSON object per line")
    );
    assert_eq!(code(&conn.answer().await), "bad_request");
    // The connection is still usable.
    assert_eq!(conn.ask(json!({"op": "info"})).await["ok"], true);
}

#[tokio::test]
async fn an_overlong_line_is_refused_and_skipped() {
    let s = setup().await;
    let Conn { read, mut write } = Conn::open(&s).await;
    // Longer than the limit: refused without being buffered whole, and the next request works.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..=MAX_LINE / chunk.len() as u64 {
            write.write_all(&chunk).await.unwrap();
        }
        write.write_all(b"\n{\"op\": \"info\"}\n").await.unwrap();
        write
    });
    let mut conn = Conn {
        read,
        write: tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .expect("the agent stopped reading")
            .unwrap(),
    };
    let refused = conn.answer().await;
    assert_eq!(code(&refused), "bad_request");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than"),
        "{refused}"
    );
    assert_eq!(conn.answer().await["ok"], true);
}

#[tokio::test]
async fn add_step_is_relayed_as_the_attempt_and_errors_keep_their_code() {
    let s = setup().await;
    let mut conn = Conn::open(&s).await;
    let step = json!({"name": "train", "command": ["true"]});
    let call = json!({"seq": 3, "component": "train", "digest": "d1"});
    let added = conn
        .ask(json!({"op": "add_step", "call": call, "step": step}))
        .await;
    assert_eq!(
        (added["ok"].as_bool(), added["step"].as_str()),
        (Some(true), Some("train_1"))
    );
    assert_eq!(added["existing"], false);
    {
        let seen = s.fake.added.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let sent = &seen[0];
        assert_eq!(
            (sent.caller.as_str(), sent.attempt),
            ("driver", AttemptNo(2))
        );
        assert_eq!((sent.call.seq, sent.call.digest.as_str()), (3, "d1"));
    }
    // A step cannot name another caller: unknown fields are refused.
    let forged = json!({"op": "add_step", "caller": "other", "call": call, "step": step});
    assert_eq!(code(&conn.ask(forged).await), "bad_request");
    let refused =
        json!({"op": "add_step", "call": call, "step": {"name": "refused", "command": ["true"]}});
    let answer = conn.ask(refused).await;
    assert_eq!(code(&answer), "bad_request");
    assert_eq!(
        answer["error"]["message"],
        "step refused: queue services is reserved"
    );
    let unknown = conn.ask(json!({"op": "wait", "step": "nope"})).await;
    assert_eq!(code(&unknown), "not_found");
}

#[tokio::test]
async fn add_step_is_tried_again_while_the_controller_is_unavailable() {
    let s = setup().await;
    s.fake.unavailable.store(2, SeqCst);
    let mut conn = Conn::open(&s).await;
    let step = json!({"name": "train", "command": ["true"]});
    let call = json!({"seq": 0, "component": "train", "digest": "d0"});
    let added = conn
        .ask(json!({"op": "add_step", "call": call, "step": step}))
        .await;
    assert_eq!(added["ok"], true, "{added}");
    assert_eq!(s.fake.unavailable.load(SeqCst), 0);
    assert_eq!(s.fake.added.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn put_and_get_move_files_through_the_store() {
    let s = setup().await;
    let mut conn = Conn::open(&s).await;
    std::fs::write(s.workdir.join("model.pkl"), b"weights").unwrap();
    let put = conn.ask(json!({"op": "put", "path": "model.pkl"})).await;
    assert_eq!(put["ok"], true, "{put}");
    let artifact = put["artifact"].clone();
    let expected = drover_protocol::Digest::of_bytes(b"weights");
    assert_eq!(artifact["digest"], expected.to_string());
    assert_eq!(
        (artifact["size"].as_u64(), artifact["file_name"].as_str()),
        (Some(7), Some("model.pkl"))
    );

    let absolute = s.workdir.join("out/deep/copy.pkl");
    let get = json!({"op": "get", "artifact": artifact, "dest": absolute.display().to_string()});
    assert_eq!(conn.ask(get).await["ok"], true);
    assert_eq!(std::fs::read(&absolute).unwrap(), b"weights");

    let missing = json!({"digest": drover_protocol::Digest::of_bytes(b"other").to_string(), "size": 5, "file_name": "x"});
    let answer = conn
        .ask(json!({"op": "get", "artifact": missing, "dest": "x"}))
        .await;
    assert_eq!(code(&answer), "not_found");
    assert!(!s.workdir.join("x").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&s.workdir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn artifacts_are_kept_for_the_report_and_may_not_take_a_return_name() {
    let s = setup().await;
    let mut conn = Conn::open(&s).await;
    std::fs::write(s.workdir.join("a.pkl"), b"first").unwrap();
    std::fs::write(s.workdir.join("b.csv"), b"second").unwrap();
    let stored = conn
        .ask(json!({"op": "artifact", "name": "data", "path": "a.pkl"}))
        .await;
    assert_eq!(stored["ok"], true, "{stored}");
    // Storing a name again replaces it, as ClearML's upload_artifact does.
    let again = conn
        .ask(json!({"op": "artifact", "name": "data", "path": "b.csv"}))
        .await;
    assert_eq!(again["artifact"]["file_name"], "b.csv", "{again}");
    let clash = conn
        .ask(json!({"op": "artifact", "name": "result", "path": "a.pkl"}))
        .await;
    assert_eq!(code(&clash), "bad_request");
    assert!(
        clash["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"result\" has the name of one of the step's return values"),
        "{clash}"
    );
    let bad_name = conn
        .ask(json!({"op": "artifact", "name": "a/b", "path": "a.pkl"}))
        .await;
    assert_eq!(code(&bad_name), "bad_request");
    let outside = conn
        .ask(json!({"op": "artifact", "name": "x", "path": "/etc/hostname"}))
        .await;
    assert_eq!(code(&outside), "forbidden");
    let kept = s.channel.artifacts();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let data = &kept[&OutputName::new("data").unwrap()];
    assert_eq!(
        (data.file_name.as_str(), data.digest.clone()),
        ("b.csv", drover_protocol::Digest::of_bytes(b"second"))
    );
}

#[tokio::test]
async fn paths_outside_the_workdir_are_forbidden() {
    let s = setup().await;
    let mut conn = Conn::open(&s).await;
    let outside = s.workdir.parent().unwrap().join("secret");
    std::fs::write(&outside, b"s").unwrap();
    std::os::unix::fs::symlink(&outside, s.workdir.join("link")).unwrap();
    std::os::unix::fs::symlink(s.workdir.parent().unwrap(), s.workdir.join("up")).unwrap();
    for path in [
        "../secret".to_string(),
        outside.display().to_string(),
        "link".to_string(),
        "a/../../secret".to_string(),
    ] {
        let answer = conn.ask(json!({"op": "put", "path": path})).await;
        assert_eq!(code(&answer), "forbidden", "put {path}: {answer}");
    }
    std::fs::write(s.workdir.join("mine"), b"m").unwrap();
    let artifact = conn.ask(json!({"op": "put", "path": "mine"})).await["artifact"].clone();
    for dest in ["../stolen", "/tmp/stolen", "up/stolen", "up/new/stolen"] {
        let answer = conn
            .ask(json!({"op": "get", "artifact": artifact, "dest": dest}))
            .await;
        assert_eq!(code(&answer), "forbidden", "get {dest}: {answer}");
    }
    let parent = s.workdir.parent().unwrap();
    assert!(!parent.join("stolen").exists() && !parent.join("new").exists());
}

#[tokio::test]
async fn a_pending_wait_gives_the_slot_back_and_other_connections_are_served() {
    let s = setup().await;
    assert!(s.slots.agent_full());
    let mut waiting = Conn::open(&s).await;
    waiting.send(r#"{"op": "wait", "step": "a"}"#).await;
    let polled = drover_test_support::Deadline::new(
        "the wait reaching the controller",
        Duration::from_secs(10),
    );
    drover_test_support::eventually_async(polled, || {
        let n = s.fake.polls.load(std::sync::atomic::Ordering::SeqCst);
        std::future::ready(if n > 0 { Ok(n) } else { Err(n) })
    })
    .await
    .unwrap();
    // The only slot is free while the wait is pending: another job could run.
    assert!(!s.slots.agent_full() && !s.guard.attempt_slot().holds());
    let mut other = Conn::open(&s).await;
    assert_eq!(other.ask(json!({"op": "info"})).await["ok"], true);

    s.fake.done.send_replace(true);
    let answer = waiting.answer().await;
    assert_eq!(
        (answer["ok"].as_bool(), answer["view"]["status"].as_str()),
        (Some(true), Some("succeeded"))
    );
    // Taken back before the answer was sent.
    assert!(s.slots.agent_full() && s.guard.attempt_slot().holds());
}

#[tokio::test]
async fn the_socket_goes_with_the_channel() {
    let s = setup().await;
    let path = s.channel.path().to_path_buf();
    assert_eq!(path, s.workdir.join(".drover.sock"));
    let mut conn = Conn::open(&s).await;
    drop(s.channel);
    assert!(!path.exists());
    // The open connection is closed too.
    conn.send(r#"{"op": "info"}"#).await;
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read.read_line(&mut line));
    assert!(matches!(read.await, Ok(Ok(0)) | Ok(Err(_))), "{line}");
}

#[test]
fn a_long_workdir_gets_a_short_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let workdir = root.join("w".repeat(120));
    let path = confine::socket_path(&workdir, &root).unwrap();
    assert!(
        path.as_os_str().len() <= confine::MAX_SOCKET_PATH,
        "{}",
        path.display()
    );
    assert!(
        path.starts_with(root.join("ch")) || path.starts_with("/tmp"),
        "{}",
        path.display()
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    // Another attempt gets another socket.
    assert_ne!(
        path,
        confine::socket_path(&root.join("x".repeat(120)), &root).unwrap()
    );
}

#[tokio::test]
async fn once_the_step_runs_only_its_process_group_is_answered() {
    let s = setup().await;
    let ours = nix::unistd::getpgrp().as_raw();
    // Another group owns the channel: this process is refused, told why, and cut off.
    s.channel.owner().set(ours + 1).unwrap();
    let mut other = Conn::open(&s).await;
    let refused = other.answer().await;
    assert_eq!(code(&refused), "forbidden", "{refused}");
    let why = refused["error"]["message"].as_str().unwrap();
    assert!(why.contains("not in the step's process group"), "{why}");
}

#[tokio::test]
async fn the_steps_own_process_group_is_answered() {
    let s = setup().await;
    s.channel
        .owner()
        .set(nix::unistd::getpgrp().as_raw())
        .unwrap();
    let mut own = Conn::open(&s).await;
    let info = own.ask(json!({"op": "info"})).await;
    assert_eq!(info["ok"], true, "{info}");
}

#[tokio::test]
async fn run_reads_the_view_of_the_attempts_own_run_only() {
    let s = setup().await;
    let mut conn = Conn::open(&s).await;
    let own = s.attempt.run_id.to_string();
    let followed = conn.ask(json!({"op": "run"})).await;
    assert_eq!(followed["ok"], true, "{followed}");
    assert_eq!(followed["view"]["run_id"], own.as_str());
    assert_eq!(
        followed["view"]["steps"][0]["pending_reason"]["reason"],
        "waiting_for_callback"
    );
    // A step cannot ask for another run's view: the request names none, and naming one is refused.
    let other = RunId::generate().to_string();
    let forged = conn.ask(json!({"op": "run", "run_id": other})).await;
    assert_eq!(code(&forged), "bad_request");
    assert_eq!(*s.fake.runs_read.lock().unwrap(), vec![own]);
}

#[tokio::test]
async fn callback_answers_a_step_of_the_attempts_own_run_only() {
    let s = setup().await;
    let mut conn = Conn::open(&s).await;
    let own = s.attempt.run_id.to_string();
    let skipped = conn
        .ask(json!({"op": "callback", "step": "held", "proceed": false}))
        .await;
    assert_eq!(skipped["ok"], true, "{skipped}");
    assert_eq!(skipped["status"], "skipped");
    // A callback for a step of another run is refused before it reaches the controller, and
    // a step the controller does not know in this run keeps the controller's code.
    let other = RunId::generate().to_string();
    let forged = json!({"op": "callback", "run_id": other, "step": "held", "proceed": true});
    assert_eq!(code(&conn.ask(forged).await), "bad_request");
    let unknown = json!({"op": "callback", "step": "elsewhere", "proceed": true});
    let answer = conn.ask(unknown).await;
    assert_eq!(code(&answer), "not_found");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no step elsewhere"),
        "{answer}"
    );
    assert_eq!(
        *s.fake.answered.lock().unwrap(),
        vec![(own, "held".to_string(), false)]
    );
}
