use super::*;

fn st(n: i64) -> Arc<HealthCheckStatus> {
    Arc::new(HealthCheckStatus {
        ok: true,
        success_count: n,
        ..Default::default()
    })
}

#[tokio::test]
async fn saves_survive_reopening_and_the_last_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (CheckKey::new("ns", "a"), CheckKey::new("ns", "b"));
    {
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load(&a), None);
        store.save(&a, &st(1)).await.unwrap();
        store.save(&b, &st(7)).await.unwrap();
        store.save(&a, &st(2)).await.unwrap();
        store.forget(&b);
        store.save(&a, &st(3)).await.unwrap();
    }
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.load(&a).unwrap().success_count, 3);
    assert_eq!(store.load(&b), None, "forgotten");
    // Reopening compacted the journal to one line per live check.
    let text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
}

/// A state directory whose journal holds one state of ns/a (5 successes).
async fn saved_once() -> (tempfile::TempDir, CheckKey) {
    let dir = tempfile::tempdir().unwrap();
    let a = CheckKey::new("ns", "a");
    let store = FileStore::open(dir.path()).unwrap();
    store.save(&a, &st(5)).await.unwrap();
    (dir, a)
}

/// Appends raw bytes to the journal, as a damaged disk or a hand edit would.
fn append(dir: &tempfile::TempDir, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(JOURNAL);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(bytes).unwrap();
    path
}

#[tokio::test]
async fn a_torn_last_line_is_ignored_and_other_damage_is_kept_aside() {
    let (dir, a) = saved_once().await;
    let path = append(&dir, b"{\"key\":\"ns/a\",\"status\":{\"ok\":tr");
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.load(&a).unwrap().success_count, 5);
    drop(store);
    // A damaged line in the middle: the rest is read, and the original is kept.
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("garbage\n{good}")).unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.load(&a).unwrap().success_count, 5);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(std::fs::read_to_string(dir.path().join(&aside[0]))
        .unwrap()
        .starts_with("garbage\n"));
}

#[tokio::test]
async fn a_record_with_an_impossible_time_is_set_aside_and_the_earlier_one_stands() {
    let (dir, a) = saved_once().await;
    // The recipe of issue 9: a year-262000 start made the scheduler's date arithmetic panic.
    append(
        &dir,
        b"{\"key\":\"ns/a\",\"status\":{\"ok\":true,\"lastRunUnix\":8210266876799}}\n",
    );
    let store = FileStore::open(dir.path()).unwrap();
    let back = store.load(&a).unwrap();
    assert_eq!((back.success_count, back.last_run_unix), (5, 0));
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".corrupt-")
        })
        .count();
    assert_eq!(aside, 1, "the journal as it was is kept");
}

#[tokio::test]
async fn the_journal_is_compacted_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open_with(dir.path(), 4096).unwrap();
    let keys: Vec<_> = (0..5)
        .map(|i| CheckKey::new("ns", &format!("c{i}")))
        .collect();
    for round in 0..200 {
        for k in &keys {
            store.save(k, &st(round)).await.unwrap();
        }
    }
    let size = std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len();
    assert!(size < 4096 * COMPACT_FACTOR, "{size}");
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    for k in &keys {
        assert_eq!(store.load(k).unwrap().success_count, 199);
    }
}

#[tokio::test]
async fn flush_waits_for_writes_nobody_awaited() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    for i in 0..50 {
        drop(store.save(&CheckKey::new("ns", &format!("c{i}")), &st(i)));
    }
    store.flush().await;
    let text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
    assert_eq!(text.lines().count(), 50);
}

#[tokio::test]
async fn a_lingering_save_is_written_on_its_own_after_lingering() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let asked = std::time::Instant::now();
    store.linger(store.save(&CheckKey::new("ns", "a"), &st(1)));
    let journal = dir.path().join(JOURNAL);
    // The writer's own thread: watched in real time, not on a paused clock.
    while std::fs::read_to_string(&journal).unwrap().is_empty() {
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(10),
            "never written"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(asked.elapsed() >= LINGER, "written before lingering");
}

#[tokio::test]
async fn lingering_saves_keep_their_order_with_an_awaited_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = CheckKey::new("ns", "a");
    {
        let store = FileStore::open(dir.path()).unwrap();
        store.linger(store.save(&key, &st(1)));
        store.save(&key, &st(2)).await.unwrap();
        store.linger(store.save(&key, &st(3)));
        store.flush().await;
    }
    let text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
    let counts: Vec<i64> = text
        .lines()
        .map(|l| serde_json::from_str::<RecordIn>(l).unwrap())
        .map(|r| r.status.unwrap().success_count)
        .collect();
    // 1 usually shares 2's write (2 was awaited), and then only 2, the key's last, is in.
    assert!(counts == [2, 3] || counts == [1, 2, 3], "{counts:?}");
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.load(&key).unwrap().success_count, 3);
}

#[test]
fn a_batch_keeps_only_each_keys_last_record_in_order() {
    let save = |k: &str, n| Job::Save {
        key: CheckKey::new("ns", k),
        status: st(n),
        ack: oneshot::channel().0,
    };
    let batch = vec![
        save("a", 1),
        save("b", 1),
        Job::Forget {
            key: CheckKey::new("ns", "b"),
        },
        save("a", 2),
        save("c", 1),
        Job::Flush {
            ack: oneshot::channel().0,
        },
        save("a", 3),
    ];
    let mut buf = Vec::new();
    encode(&batch, &mut buf);
    let lines: Vec<(String, Option<i64>)> = std::str::from_utf8(&buf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<RecordIn>(l).unwrap())
        .map(|r| (r.key, r.status.map(|s| s.success_count)))
        .collect();
    let want = [("ns/b", None), ("ns/c", Some(1)), ("ns/a", Some(3))];
    let want: Vec<(String, Option<i64>)> = want.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    assert_eq!(lines, want);
}

#[test]
fn unwritable_directory_is_an_error_naming_it() {
    let err = FileStore::open("/proc/probity-cannot-exist")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/proc/probity-cannot-exist"), "{err}");
}
