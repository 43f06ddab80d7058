//! Unit tests of `throttle`.

use super::*;

fn policy() -> Lockout {
    Lockout {
        enabled: true,
        max_failures: 3,
        window: Duration::from_secs(60),
        lockout: Duration::from_secs(10),
        max_lockout: Duration::from_secs(35),
        max_entries: 100,
    }
}

fn ip(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}

#[test]
fn ipv6_clients_share_a_budget_per_64_and_mapped_ipv4_is_ipv4() {
    let store = MemoryStore::new();
    let p = policy();
    let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
    for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] {
        Throttle::new(&store, &p, v6(host)).failure(None);
    }
    let same_64 = Throttle::new(&store, &p, v6("2001:db8:1:2:abcd::1"));
    assert!(same_64.check(None).is_some(), "a /64 is one client");
    let other_64 = Throttle::new(&store, &p, v6("2001:db8:1:3::1"));
    assert!(other_64.check(None).is_none());

    for _ in 0..3 {
        Throttle::new(&store, &p, v6("::ffff:10.0.0.7")).failure(None);
    }
    assert!(Throttle::new(&store, &p, ip(7)).check(None).is_some());
    assert!(Throttle::new(&store, &p, ip(8)).check(None).is_none());
}

#[test]
fn reservations_bound_concurrent_guesses() {
    let store = MemoryStore::new();
    let p = policy();
    let t = Throttle::new(&store, &p, ip(1));
    let name = Key::Name("staff".into(), "alice".into());
    let a = t.reserve(Some(&name)).unwrap();
    let b = t.reserve(Some(&name)).unwrap();
    let c = t.reserve(Some(&name)).unwrap();
    assert!(
        t.reserve(Some(&name)).is_err(),
        "fourth concurrent guess must wait"
    );
    drop(a);
    let d = t.reserve(Some(&name)).unwrap();
    t.failure(Some(&name));
    drop((b, c, d));
    // One failure recorded: two more verifications may run.
    let e = t.reserve(Some(&name)).unwrap();
    let f = t.reserve(Some(&name)).unwrap();
    assert!(t.reserve(Some(&name)).is_err());
    drop((e, f));
}

/// What an authenticator does with one guess: check, reserve, hash (counted), fail.
fn guess(t: &Throttle<'_>, name: &Key, hashes: &AtomicU64) {
    if t.check(Some(name)).is_some() {
        return;
    }
    let Ok(_reservation) = t.reserve(Some(name)) else {
        return;
    };
    hashes.fetch_add(1, Ordering::SeqCst);
    t.failure(Some(name));
}

#[test]
fn a_guess_checked_before_a_lockout_cannot_reserve_after_it() {
    let store = MemoryStore::new();
    let p = policy();
    let t = Throttle::new(&store, &p, ip(1));
    let name = name("alice");
    let hashes = AtomicU64::new(0);
    // Three guesses hold every reservation; a fourth passes the lockout check ...
    let held: Vec<_> = (0..3).map(|_| t.reserve(Some(&name)).unwrap()).collect();
    assert_eq!(t.check(Some(&name)), None);
    // ... the three fail, which locks the IP and the name and resets their counts ...
    for r in held {
        t.failure(Some(&name));
        drop(r);
    }
    // ... and the fourth, reserving only now, must meet the lockout, not a count of 0.
    match t.reserve(Some(&name)) {
        Ok(_) => panic!("a fourth verification was reserved after the lockout"),
        Err(retry) => assert!(retry > Duration::from_secs(9), "{retry:?}"),
    }
    guess(&t, &name, &hashes);
    assert_eq!(hashes.load(Ordering::SeqCst), 0);
}

#[test]
fn concurrent_guesses_never_hash_more_than_max_failures() {
    let p = policy();
    for round in 0..200 {
        let store = MemoryStore::new();
        let hashes = AtomicU64::new(0);
        let start = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let t = Throttle::new(&store, &p, ip(1));
                    let name = name("alice");
                    start.wait();
                    for _ in 0..50 {
                        guess(&t, &name, &hashes);
                    }
                });
            }
        });
        let n = hashes.load(Ordering::SeqCst);
        assert!(n <= 3, "round {round}: {n} hashes with max_failures = 3");
    }
}

#[test]
fn a_success_does_not_forget_verifications_in_flight() {
    let store = MemoryStore::new();
    let p = policy();
    let attacker = Throttle::new(&store, &p, ip(66));
    let owner = Throttle::new(&store, &p, ip(1));
    let name = name("alice");
    let a = attacker.reserve(Some(&name)).unwrap();
    let b = attacker.reserve(Some(&name)).unwrap();
    // The owner logs in from elsewhere while two guesses hash.
    owner.success(Some(&name));
    let c = Throttle::new(&store, &p, ip(67))
        .reserve(Some(&name))
        .unwrap();
    assert!(
        Throttle::new(&store, &p, ip(68))
            .reserve(Some(&name))
            .is_err(),
        "the name's budget still counts the two guesses in flight"
    );
    drop((a, b, c));
}

#[test]
fn an_expired_entry_keeps_its_verifications_in_flight() {
    let s = MemoryStore::new();
    let p = policy();
    let k = name("alice");
    let t0 = Instant::now();
    assert!(s.reserve(&k, ip(1), t0, &p));
    assert!(s.reserve(&k, ip(1), t0, &p));
    // A failure long after (the window over, nothing locked) starts a fresh count
    // and must keep the two reservations still running.
    let later = t0 + Duration::from_secs(61);
    assert_eq!(s.record_failure(&k, ip(1), later, &p), None);
    assert!(!s.reserve(&k, ip(1), later, &p), "1 failure + 2 in flight");
}

#[test]
fn a_full_table_does_not_evict_keys_with_verifications_in_flight() {
    let s = MemoryStore::new();
    let mut p = policy();
    p.max_entries = 10;
    let t = Instant::now();
    let victim = name("victim");
    for _ in 0..3 {
        assert!(s.reserve(&victim, ip(1), t, &p));
    }
    for i in 0..1000u32 {
        let k = name(&format!("random{i}"));
        s.record_failure(&k, ip(2), t + Duration::from_millis(u64::from(i)), &p);
    }
    assert!(
        !s.reserve(&victim, ip(1), t, &p),
        "three verifications still run for the victim"
    );
}

fn name(s: &str) -> Key {
    Key::Name(Arc::from("staff"), s.into())
}

#[test]
fn locks_after_max_failures_within_window() {
    let s = MemoryStore::new();
    let p = policy();
    let t0 = Instant::now();
    let k = Key::Ip(ip(1));
    assert_eq!(s.record_failure(&k, ip(1), t0, &p), None);
    assert_eq!(s.record_failure(&k, ip(1), t0, &p), None);
    assert_eq!(s.locked(&k, t0), None);
    assert_eq!(
        s.record_failure(&k, ip(1), t0, &p),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        s.locked(&k, t0 + Duration::from_secs(4)),
        Some(Duration::from_secs(6))
    );
    assert_eq!(s.locked(&k, t0 + Duration::from_secs(10)), None);
}

#[test]
fn failures_outside_window_do_not_accumulate() {
    let s = MemoryStore::new();
    let p = policy();
    let t0 = Instant::now();
    let k = Key::Ip(ip(1));
    s.record_failure(&k, ip(1), t0, &p);
    s.record_failure(&k, ip(1), t0, &p);
    let later = t0 + Duration::from_secs(61);
    assert_eq!(s.record_failure(&k, ip(1), later, &p), None);
    assert_eq!(s.locked(&k, later), None);
}

#[test]
fn lockout_doubles_up_to_cap() {
    let p = policy();
    assert_eq!(lockout_for(1, &p), Duration::from_secs(10));
    assert_eq!(lockout_for(2, &p), Duration::from_secs(20));
    assert_eq!(lockout_for(3, &p), Duration::from_secs(35));
    assert_eq!(lockout_for(200, &p), Duration::from_secs(35));
    let s = MemoryStore::new();
    let k = Key::Ip(ip(1));
    let mut now = Instant::now();
    let mut got = Vec::new();
    for _ in 0..3 {
        for _ in 0..3 {
            if let Some(d) = s.record_failure(&k, ip(1), now, &p) {
                got.push(d);
            }
        }
        now += Duration::from_secs(40);
    }
    assert_eq!(
        got,
        [10, 20, 35].map(Duration::from_secs).to_vec(),
        "each repeat doubles, capped"
    );
}

#[test]
fn success_from_same_ip_resets_name_but_not_ip() {
    let s = MemoryStore::new();
    let p = policy();
    let t = Instant::now();
    let th_ip = Key::Ip(ip(1));
    for _ in 0..2 {
        s.record_failure(&th_ip, ip(1), t, &p);
        s.record_failure(&name("alice"), ip(1), t, &p);
    }
    s.record_success(&name("alice"), ip(1), t, &p);
    s.record_success(&th_ip, ip(1), t, &p);
    // Name forgiven: two more failures do not lock it.
    assert_eq!(s.record_failure(&name("alice"), ip(1), t, &p), None);
    assert_eq!(s.record_failure(&name("alice"), ip(1), t, &p), None);
    // IP not forgiven: its third failure locks it.
    assert!(s.record_failure(&th_ip, ip(1), t, &p).is_some());
}

#[test]
fn success_elsewhere_does_not_forgive_attacker() {
    let s = MemoryStore::new();
    let p = policy();
    let t = Instant::now();
    s.record_failure(&name("alice"), ip(66), t, &p);
    s.record_failure(&name("alice"), ip(66), t, &p);
    s.record_success(&name("alice"), ip(1), t, &p);
    assert!(s.record_failure(&name("alice"), ip(66), t, &p).is_some());
}

#[test]
fn mixed_ips_are_not_forgiven() {
    let s = MemoryStore::new();
    let p = policy();
    let t = Instant::now();
    s.record_failure(&name("bob"), ip(66), t, &p);
    s.record_failure(&name("bob"), ip(1), t, &p);
    s.record_success(&name("bob"), ip(1), t, &p);
    assert!(s.record_failure(&name("bob"), ip(1), t, &p).is_some());
}

#[test]
fn flood_of_names_is_bounded_and_keeps_lockouts() {
    let s = MemoryStore::new();
    let mut p = policy();
    p.max_entries = 50;
    let t = Instant::now();
    let victim = name("victim");
    for _ in 0..3 {
        s.record_failure(&victim, ip(1), t, &p);
    }
    assert!(s.locked(&victim, t).is_some());
    for i in 0..10_000u32 {
        let k = name(&format!("random{i}"));
        s.record_failure(&k, ip(2), t + Duration::from_millis(u64::from(i)), &p);
        assert!(s.len() <= 50);
    }
    assert!(s.locked(&victim, t).is_some(), "active lockout survived");
}

#[test]
fn disabled_policy_never_locks() {
    let s = MemoryStore::new();
    let mut p = policy();
    p.enabled = false;
    let th = Throttle::new(&s, &p, ip(1));
    for _ in 0..10 {
        th.failure(Some(&name("a")));
    }
    assert_eq!(th.check(Some(&name("a"))), None);
    assert!(s.is_empty());
}

#[test]
fn throttle_checks_ip_and_name() {
    let s = MemoryStore::new();
    let p = policy();
    let th = Throttle::new(&s, &p, ip(1));
    let other = Throttle::new(&s, &p, ip(2));
    for _ in 0..3 {
        th.failure(Some(&name("a")));
    }
    assert!(th.check(None).is_some(), "ip locked");
    assert!(other.check(Some(&name("a"))).is_some(), "name locked");
    assert!(other.check(Some(&name("b"))).is_none());
}
