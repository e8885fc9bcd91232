//! The store conformance suite: one set of cases, run against every [`EventStore`].
//!
//! Each case gets a fresh, empty store. To add a backend, add one `suite!` line.

use std::{sync::Arc, time::Duration};

use starling::{
    nostr::{Event, Filter, VerifiedEvent},
    store::{
        Cancel, EventStore, PgSettings, PgStore, SqliteStore, WriteOutcome,
        policy::{AuditRecord, PolicyEdit, PolicyEntry, PolicyList, Removal},
    },
};

use crate::support::{
    TempDir, keys,
    postgres::{TestDatabase, database as postgres_database},
    tags,
};

type Store = Arc<dyn EventStore>;

const T: u64 = 1_700_000_000;
const FAR_PAST: u64 = 1_600_000_000;

fn open_postgres() -> (Store, TestDatabase) {
    let database = postgres_database();
    let settings = PgSettings {
        url: database.url.clone(),
        pool_size: 4,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
        json_cache_bytes: 1 << 20,
        cached_statements: 256,
    };
    (
        Arc::new(PgStore::new(&settings).expect("PostgreSQL store")),
        database,
    )
}

fn open_sqlite() -> (Store, TempDir) {
    let dir = TempDir::new("sqlite-conformance");
    let store = SqliteStore::open(dir.path()).expect("open SQLite store");
    (Arc::new(store), dir)
}

macro_rules! suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let (store, _dir) = $open();
                        super::$name(store).await;
                    }
                };
            }
            case!(stores_and_returns_canonical_json);
            case!(reports_duplicates);
            case!(replaceable_keeps_the_newest_version);
            case!(replaceable_tie_keeps_the_lowest_id);
            case!(addressable_versions_are_kept_per_d_tag);
            case!(batches_apply_rules_in_order);
            case!(deletion_by_id_only_by_the_author);
            case!(deletion_before_the_event_blocks_it);
            case!(deletion_by_address_up_to_its_time);
            case!(deletion_requests_cannot_be_deleted);
            case!(queries_order_newest_first_then_lowest_id);
            case!(queries_apply_each_filter_limit_and_merge);
            case!(queries_match_every_field);
            case!(queries_agree_with_the_filter_definition);
            case!(a_batch_repeating_an_id_stores_it_once);
            case!(expired_events_are_hidden_and_purged);
            case!(counts_the_union_of_filters);
            case!(search_matches_every_word_of_the_content);
            case!(lists_events_in_insertion_order);
            case!(tag_values_an_index_cannot_hold_are_stored_and_found);
            case!(a_large_limit_is_read_in_pages_in_order);
            case!(several_tag_values_are_read_in_pages_in_order);
            case!(a_cancelled_read_stops);
            case!(a_request_to_vanish_removes_its_author_and_their_gift_wraps);
            case!(a_request_to_vanish_in_a_batch_refuses_what_follows_it);
            case!(rule_changes_are_versioned_with_their_audit_record);
            case!(moderators_remove_an_author_or_an_event);
            case!(hll_registers_follow_the_definition);
            case!(an_event_holding_a_value_twice_is_answered_once);
        }
    };
}

suite!(sqlite, crate::store_conformance::open_sqlite);
suite!(postgres, crate::store_conformance::open_postgres);

fn verified(event: Event) -> Arc<VerifiedEvent> {
    Arc::new(VerifiedEvent::verify(event).expect("test events are valid"))
}

async fn write(store: &Store, events: &[&Event]) -> Vec<WriteOutcome> {
    let batch = events.iter().map(|e| verified((*e).clone())).collect();
    store.write(batch).await.expect("write")
}

async fn write_one(store: &Store, event: &Event) -> WriteOutcome {
    write(store, &[event]).await[0]
}

fn filters(json: &[&str]) -> Arc<[Filter]> {
    json.iter()
        .map(|f| {
            let mut filter = Filter::parse(f).expect("test filter");
            filter.limit.get_or_insert(1000);
            filter
        })
        .collect()
}

async fn ids(store: &Store, json: &[&str]) -> Vec<String> {
    let rows = store.query(filters(json), T).await.expect("query");
    rows.iter()
        .map(|r| Event::parse(r).expect("stored JSON parses").id_hex())
        .collect()
}

fn note(author: u8, created_at: u64, content: &str) -> Event {
    keys(author).sign(created_at, 1, vec![], content)
}

async fn stores_and_returns_canonical_json(store: Store) {
    let event = keys(1).sign(T, 1, tags(&[&["t", "x"]]), "quote \" and 🚀");
    assert_eq!(write_one(&store, &event).await, WriteOutcome::Stored);
    let rows = store.query(filters(&["{}"]), T).await.unwrap();
    assert_eq!(rows, vec![event.to_json()]);
}

async fn reports_duplicates(store: Store) {
    let event = note(1, T, "x");
    assert_eq!(write_one(&store, &event).await, WriteOutcome::Stored);
    assert_eq!(write_one(&store, &event).await, WriteOutcome::Duplicate);
    assert_eq!(
        store
            .count(&filters(&["{}"]), T, &Cancel::default())
            .await
            .unwrap(),
        1
    );
}

async fn replaceable_keeps_the_newest_version(store: Store) {
    let old = keys(1).sign(T, 0, vec![], "old");
    let new = keys(1).sign(T + 1, 0, vec![], "new");
    let older = keys(1).sign(T - 1, 0, vec![], "older");
    assert_eq!(write_one(&store, &old).await, WriteOutcome::Stored);
    assert_eq!(write_one(&store, &new).await, WriteOutcome::Stored);
    assert_eq!(write_one(&store, &older).await, WriteOutcome::Superseded);
    assert_eq!(ids(&store, &[r#"{"kinds":[0]}"#]).await, vec![new.id_hex()]);
    let other_author = keys(2).sign(T - 5, 0, vec![], "someone else");
    assert_eq!(write_one(&store, &other_author).await, WriteOutcome::Stored);
}

async fn replaceable_tie_keeps_the_lowest_id(store: Store) {
    let a = keys(1).sign(T, 10_002, vec![], "a");
    let b = keys(1).sign(T, 10_002, vec![], "b");
    let (low, high) = if a.id < b.id { (a, b) } else { (b, a) };
    assert_eq!(write_one(&store, &high).await, WriteOutcome::Stored);
    assert_eq!(write_one(&store, &low).await, WriteOutcome::Stored);
    assert_eq!(write_one(&store, &high).await, WriteOutcome::Superseded);
    assert_eq!(ids(&store, &["{}"]).await, vec![low.id_hex()]);
}

async fn addressable_versions_are_kept_per_d_tag(store: Store) {
    let a1 = keys(1).sign(T, 30_000, tags(&[&["d", "a"]]), "");
    let a2 = keys(1).sign(T + 1, 30_000, tags(&[&["d", "a"]]), "");
    let b1 = keys(1).sign(T, 30_000, tags(&[&["d", "b"]]), "");
    let other_kind = keys(1).sign(T, 30_001, tags(&[&["d", "a"]]), "");
    for e in [&a1, &a2, &b1, &other_kind] {
        assert_eq!(write_one(&store, e).await, WriteOutcome::Stored);
    }
    let mut found = ids(&store, &["{}"]).await;
    found.sort();
    let mut expected = vec![a2.id_hex(), b1.id_hex(), other_kind.id_hex()];
    expected.sort();
    assert_eq!(found, expected);
}

async fn batches_apply_rules_in_order(store: Store) {
    let old = keys(1).sign(T, 3, vec![], "old");
    let new = keys(1).sign(T + 1, 3, vec![], "new");
    let regular = note(2, T, "r");
    let outcomes = write(&store, &[&old, &regular, &new, &regular, &old]).await;
    use WriteOutcome::*;
    assert_eq!(
        outcomes,
        vec![Stored, Stored, Stored, Duplicate, Superseded]
    );
    assert_eq!(
        store
            .count(&filters(&["{}"]), T, &Cancel::default())
            .await
            .unwrap(),
        2
    );
}

async fn deletion_by_id_only_by_the_author(store: Store) {
    let mine = note(1, T, "mine");
    let theirs = note(2, T, "theirs");
    write(&store, &[&mine, &theirs]).await;
    let request = keys(1).sign(
        T + 1,
        5,
        tags(&[&["e", &mine.id_hex()], &["e", &theirs.id_hex()]]),
        "",
    );
    assert_eq!(write_one(&store, &request).await, WriteOutcome::Stored);
    let mut found = ids(&store, &["{}"]).await;
    found.sort();
    let mut expected = vec![theirs.id_hex(), request.id_hex()];
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(write_one(&store, &mine).await, WriteOutcome::Deleted);
    assert_eq!(write_one(&store, &theirs).await, WriteOutcome::Duplicate);
}

async fn deletion_before_the_event_blocks_it(store: Store) {
    let later = note(1, T, "later");
    write_one(
        &store,
        &keys(1).sign(T + 1, 5, tags(&[&["e", &later.id_hex()]]), ""),
    )
    .await;
    assert_eq!(write_one(&store, &later).await, WriteOutcome::Deleted);
    let by_someone_else = note(2, T, "x");
    write_one(
        &store,
        &keys(1).sign(T + 1, 5, tags(&[&["e", &by_someone_else.id_hex()]]), ""),
    )
    .await;
    assert_eq!(
        write_one(&store, &by_someone_else).await,
        WriteOutcome::Stored
    );
}

async fn deletion_by_address_up_to_its_time(store: Store) {
    let author = starling::nostr::hex::encode(&keys(1).pubkey());
    let v1 = keys(1).sign(T, 30_023, tags(&[&["d", "x"]]), "v1");
    write_one(&store, &v1).await;
    let request = keys(1).sign(
        T + 10,
        5,
        tags(&[
            &["a", &format!("30023:{author}:x")],
            &["a", &format!("0:{author}:")],
        ]),
        "",
    );
    write_one(&store, &request).await;
    assert_eq!(
        ids(&store, &[r#"{"kinds":[30023]}"#]).await,
        Vec::<String>::new()
    );
    let v2 = keys(1).sign(T + 5, 30_023, tags(&[&["d", "x"]]), "v2");
    assert_eq!(write_one(&store, &v2).await, WriteOutcome::Deleted);
    let profile = keys(1).sign(T + 9, 0, vec![], "profile");
    assert_eq!(write_one(&store, &profile).await, WriteOutcome::Deleted);
    let v3 = keys(1).sign(T + 11, 30_023, tags(&[&["d", "x"]]), "v3");
    assert_eq!(write_one(&store, &v3).await, WriteOutcome::Stored);
    let forged = keys(2).sign(T + 20, 5, tags(&[&["a", &format!("30023:{author}:x")]]), "");
    write_one(&store, &forged).await;
    assert_eq!(
        ids(&store, &[r#"{"kinds":[30023]}"#]).await,
        vec![v3.id_hex()]
    );
}

async fn deletion_requests_cannot_be_deleted(store: Store) {
    let target = note(1, T, "t");
    let first = keys(1).sign(T + 1, 5, tags(&[&["e", &target.id_hex()]]), "");
    let second = keys(1).sign(T + 2, 5, tags(&[&["e", &first.id_hex()]]), "");
    write(&store, &[&target, &first, &second]).await;
    assert_eq!(
        ids(&store, &[r#"{"kinds":[5]}"#]).await,
        vec![second.id_hex(), first.id_hex()]
    );
}

async fn queries_order_newest_first_then_lowest_id(store: Store) {
    let mut events: Vec<Event> = (0..6)
        .map(|n| note(n % 3 + 1, T - (n as u64 % 2), &format!("{n}")))
        .collect();
    write(&store, &events.iter().collect::<Vec<_>>()).await;
    events.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let expected: Vec<String> = events.iter().map(Event::id_hex).collect();
    assert_eq!(ids(&store, &["{}"]).await, expected);
    assert_eq!(ids(&store, &[r#"{"limit":2}"#]).await, expected[..2]);
}

async fn queries_apply_each_filter_limit_and_merge(store: Store) {
    let ones: Vec<Event> = (0..3).map(|n| note(1, T - n, "one")).collect();
    let sevens: Vec<Event> = (0..3)
        .map(|n| keys(1).sign(T - 10 - n, 7, vec![], "+"))
        .collect();
    write(&store, &ones.iter().chain(&sevens).collect::<Vec<_>>()).await;
    let found = ids(
        &store,
        &[
            r#"{"kinds":[1],"limit":1}"#,
            r#"{"kinds":[7],"limit":2}"#,
            r#"{"limit":1}"#,
        ],
    )
    .await;
    assert_eq!(
        found,
        vec![ones[0].id_hex(), sevens[0].id_hex(), sevens[1].id_hex()]
    );
}

async fn queries_match_every_field(store: Store) {
    let e = keys(1).sign(
        T,
        1,
        tags(&[&["t", "rust"], &["p", &"ab".repeat(32)], &["t", "second"]]),
        "",
    );
    let other = keys(2).sign(T - 100, 7, tags(&[&["t", "go"]]), "");
    write(&store, &[&e, &other]).await;
    let author = starling::nostr::hex::encode(&keys(1).pubkey());
    let only_e = vec![e.id_hex()];
    for f in [
        format!(r#"{{"ids":["{}"]}}"#, e.id_hex()),
        format!(r#"{{"authors":["{author}"]}}"#),
        r#"{"kinds":[1]}"#.to_string(),
        r##"{"#t":["rust"]}"##.to_string(),
        r##"{"#t":["second"]}"##.to_string(),
        format!(r##"{{"#p":["{}"],"#t":["rust","go"]}}"##, "ab".repeat(32)),
        format!(r#"{{"since":{}}}"#, T - 50),
    ] {
        assert_eq!(ids(&store, &[&f]).await, only_e, "{f}");
    }
    assert_eq!(
        ids(&store, &[&format!(r#"{{"until":{}}}"#, T - 50)]).await,
        vec![other.id_hex()]
    );
    assert!(
        ids(&store, &[r##"{"#t":["rust"],"kinds":[7]}"##])
            .await
            .is_empty()
    );
    assert!(ids(&store, &[r#"{"authors":[]}"#]).await.is_empty());
    assert!(ids(&store, &[r##"{"#T":["rust"]}"##]).await.is_empty());
}

/// Every filter shape a store may plan differently (index probes per author and kind, per
/// kind, per tag value and kind; the general plan), checked against [`Filter::matches`]
/// over the same events: newest first, ties by lowest id, each at most once, the limit kept.
async fn queries_agree_with_the_filter_definition(store: Store) {
    let values = ["a", "b", "c"];
    let events: Vec<Event> = (0..48u64)
        .map(|n| {
            let mut tags: Vec<Vec<String>> = (0..n % 4)
                .map(|k| vec!["t".into(), values[((n + k) % 3) as usize].into()])
                .collect();
            if n % 5 == 0 {
                // The same tag twice: still one match.
                tags.push(vec!["t".into(), "a".into()]);
                tags.push(vec!["t".into(), "a".into()]);
            }
            let kind = [1, 7, 1111][(n % 3) as usize];
            keys((n % 4 + 1) as u8).sign(T - (n * 7) % 13, kind, tags, &format!("{n}"))
        })
        .collect();
    write(&store, &events.iter().collect::<Vec<_>>()).await;
    let author = |n: u8| starling::nostr::hex::encode(&keys(n).pubkey());
    let shapes = [
        format!(r#"{{"authors":["{}"],"kinds":[1],"limit":3}}"#, author(1)),
        format!(
            r#"{{"authors":["{}","{}"],"kinds":[1,7,1111],"limit":7}}"#,
            author(2),
            author(3)
        ),
        format!(
            r##"{{"authors":["{}"],"kinds":[7],"#t":["a"],"limit":50}}"##,
            author(2)
        ),
        r#"{"kinds":[7],"limit":4}"#.to_string(),
        r#"{"kinds":[1,1111],"limit":9,"until":1699999995}"#.to_string(),
        r##"{"#t":["a"],"limit":5}"##.to_string(),
        r##"{"#t":["a","b"],"limit":11}"##.to_string(),
        r##"{"#t":["a","c"],"kinds":[1,7],"limit":6}"##.to_string(),
        r##"{"#t":["b"],"since":1699999992,"until":1699999997,"limit":50}"##.to_string(),
        format!(
            r##"{{"#t":["a"],"#p":["{}"],"limit":50}}"##,
            "ab".repeat(32)
        ),
        r#"{"limit":10}"#.to_string(),
    ];
    for shape in shapes {
        let filter = Filter::parse(&shape).expect("test filter");
        let mut expected: Vec<&Event> = events.iter().filter(|e| filter.matches(e)).collect();
        expected.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        let expected: Vec<String> = expected
            .iter()
            .take(filter.limit.unwrap_or(1000) as usize)
            .map(|e| e.id_hex())
            .collect();
        assert_eq!(ids(&store, &[&shape]).await, expected, "{shape}");
    }
}

async fn a_batch_repeating_an_id_stores_it_once(store: Store) {
    let first = note(1, T, "first");
    let second = note(1, T, "second");
    assert_eq!(
        write(&store, &[&first, &second, &first]).await,
        vec![
            WriteOutcome::Stored,
            WriteOutcome::Stored,
            WriteOutcome::Duplicate
        ]
    );
    assert_eq!(
        store
            .count(&filters(&["{}"]), T, &Cancel::default())
            .await
            .unwrap(),
        2
    );
}

async fn expired_events_are_hidden_and_purged(store: Store) {
    let expiring = keys(1).sign(
        FAR_PAST,
        1,
        tags(&[&["expiration", &(T + 10).to_string()]]),
        "",
    );
    let lasting = note(1, FAR_PAST, "lasting");
    write(&store, &[&expiring, &lasting]).await;
    assert_eq!(store.query(filters(&["{}"]), T).await.unwrap().len(), 2);
    assert_eq!(
        store.query(filters(&["{}"]), T + 10).await.unwrap().len(),
        1
    );
    assert_eq!(
        store
            .count(&filters(&["{}"]), T + 10, &Cancel::default())
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.purge_expired(T).await.unwrap(), 0);
    assert_eq!(store.purge_expired(T + 10).await.unwrap(), 1);
    assert_eq!(
        store
            .count(&filters(&["{}"]), 0, &Cancel::default())
            .await
            .unwrap(),
        1
    );
}

async fn counts_the_union_of_filters(store: Store) {
    let a = note(1, T, "a");
    let b = keys(2).sign(T, 7, vec![], "b");
    write(&store, &[&a, &b]).await;
    let count = |json: &'static [&'static str]| {
        let store = Arc::clone(&store);
        async move {
            store
                .count(&filters(json), T, &Cancel::default())
                .await
                .unwrap()
        }
    };
    assert_eq!(count(&["{}"]).await, 2);
    assert_eq!(count(&[r#"{"kinds":[1]}"#, r#"{"kinds":[1,7]}"#]).await, 2);
    assert_eq!(count(&[r#"{"kinds":[9]}"#]).await, 0);
    assert_eq!(count(&[r#"{"ids":[]}"#]).await, 0);
}

async fn search_matches_every_word_of_the_content(store: Store) {
    let fox = note(1, T, "The quick brown fox");
    let dog = note(2, T - 1, "a lazy dog sleeps");
    let both = keys(3).sign(T - 2, 30_023, tags(&[&["d", "x"]]), "Quick dog!");
    write(&store, &[&fox, &dog, &both]).await;
    let mut quick = ids(&store, &[r#"{"search":"quick"}"#]).await;
    quick.sort();
    let mut expected = vec![fox.id_hex(), both.id_hex()];
    expected.sort();
    assert_eq!(quick, expected);
    assert_eq!(
        ids(&store, &[r#"{"search":"QUICK dog"}"#]).await,
        vec![both.id_hex()]
    );
    assert_eq!(
        ids(&store, &[r#"{"search":"quick","kinds":[1]}"#]).await,
        vec![fox.id_hex()]
    );
    assert!(ids(&store, &[r#"{"search":"cat"}"#]).await.is_empty());
    assert_eq!(
        ids(&store, &[r#"{"search":"dog language:en","limit":1}"#])
            .await
            .len(),
        1
    );
    let count = store
        .count(
            &filters(&[r#"{"search":"dog"}"#, r#"{"kinds":[1]}"#]),
            T,
            &Cancel::default(),
        )
        .await
        .unwrap();
    assert_eq!(count, 3);
}

async fn lists_events_in_insertion_order(store: Store) {
    let events: Vec<Event> = [T, T - 100, T + 100]
        .iter()
        .map(|t| note(1, *t, &t.to_string()))
        .collect();
    for e in &events {
        write_one(&store, e).await;
    }
    let listed = store.events_after(0, 10).await.unwrap();
    let listed_ids: Vec<String> = listed
        .iter()
        .map(|(_, json)| Event::parse(json).unwrap().id_hex())
        .collect();
    assert_eq!(
        listed_ids,
        events.iter().map(Event::id_hex).collect::<Vec<_>>()
    );
    assert!(listed.windows(2).all(|w| w[0].0 < w[1].0));
    let rest = store.events_after(listed[0].0, 1).await.unwrap();
    assert_eq!(rest, vec![listed[1].clone()]);
    assert!(
        store
            .events_after(listed[2].0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Several handles on one database race to write versions of the same replaceable and
/// addressable events, and copies of one event: they must converge to what NIP-01 says.
async fn racing_writers_converge(stores: Vec<Store>) {
    let author = keys(7);
    let versions: Vec<Event> = (0..64u64)
        .flat_map(|n| {
            let created_at = T + n % 13;
            [
                author.sign(created_at, 0, vec![], &format!("profile {n}")),
                author.sign(
                    created_at,
                    30_000,
                    tags(&[&["d", "race"]]),
                    &format!("list {n}"),
                ),
            ]
        })
        .collect();
    let copy = note(8, T, "written by every node at once");
    let mut tasks = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        let mine: Vec<Event> = versions
            .iter()
            .skip(n)
            .step_by(stores.len())
            .cloned()
            .collect();
        let store = Arc::clone(store);
        let copy = copy.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = vec![write_one(&store, &copy).await];
            for event in &mine {
                outcomes.push(write_one(&store, event).await);
            }
            outcomes
        }));
    }
    let mut copies_stored = 0;
    for task in tasks {
        let outcomes = task.await.expect("writer task");
        copies_stored += usize::from(outcomes[0] == WriteOutcome::Stored);
        assert!(outcomes[0] != WriteOutcome::Superseded && outcomes[0] != WriteOutcome::Deleted);
    }
    assert_eq!(
        copies_stored, 1,
        "one copy is stored, the others are duplicates"
    );
    for kind in [0u16, 30_000] {
        let newest = versions
            .iter()
            .filter(|e| e.kind == kind)
            .min_by(|a, b| {
                b.created_at
                    .cmp(&a.created_at)
                    .then_with(|| a.id.cmp(&b.id))
            })
            .expect("versions");
        for store in &stores {
            let found = ids(store, &[&format!(r#"{{"kinds":[{kind}]}}"#)]).await;
            assert_eq!(found, vec![newest.id_hex()], "kind {kind}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_converge_on_sqlite() {
    let dir = TempDir::new("sqlite-race");
    let stores = (0..4)
        .map(|_| Arc::new(SqliteStore::open(dir.path()).expect("open")) as Store)
        .collect();
    racing_writers_converge(stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_converge_on_postgres() {
    let database = postgres_database();
    let stores = (0..8)
        .map(|_| {
            let settings = PgSettings {
                url: database.url.clone(),
                pool_size: 2,
                connect_timeout: Duration::from_secs(5),
                statement_timeout: Duration::from_secs(10),
                json_cache_bytes: 1 << 20,
                cached_statements: 256,
            };
            Arc::new(PgStore::new(&settings).expect("PostgreSQL store")) as Store
        })
        .collect();
    racing_writers_converge(stores).await;
}

/// PostgreSQL keeps tag rows in a table of their own: whatever removes an event (a deletion
/// request, a newer version, expiry) removes its tag rows too.
#[tokio::test]
async fn removed_events_leave_no_tag_rows_on_postgres() {
    let (store, database) = open_postgres();
    let orphans = || {
        database.query_count(
            "SELECT count(*) FROM event_tags t
             WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = t.event_seq)
               AND octet_length($1::BYTEA) = 0",
            Vec::new(),
        )
    };
    let tagged = |kind: u16, at: u64, extra: &[&str]| {
        let mut list = vec![vec!["t".to_string(), "x".to_string()]];
        if !extra.is_empty() {
            list.push(extra.iter().map(|s| s.to_string()).collect());
        }
        keys(1).sign(at, kind, list, "")
    };
    let note = tagged(1, T, &[]);
    let profile = tagged(0, T, &[]);
    let expiring = tagged(1, T, &["expiration", &(T + 10).to_string()]);
    write(&store, &[&note, &profile, &expiring]).await;
    let deletion = keys(1).sign(T + 1, 5, tags(&[&["e", &note.id_hex()]]), "");
    let newer_profile = tagged(0, T + 1, &[]);
    write(&store, &[&deletion, &newer_profile]).await;
    store.purge_expired(T + 20).await.expect("purge");
    assert_eq!(orphans(), 0, "tag rows of removed events remain");
    assert_eq!(
        database.query_count(
            "SELECT count(*) FROM event_tags WHERE octet_length($1::BYTEA) = 0",
            Vec::new()
        ),
        2,
        "the deletion request's e tag and the newer profile's t tag"
    );
}

/// Tag values PostgreSQL cannot index as they are (longer than an index row holds, or with a
/// NUL character) are stored and found like any other, on every store; a short value made to
/// look like the index key of a long one does not match it.
async fn tag_values_an_index_cannot_hold_are_stored_and_found(store: Store) {
    let long = "v".repeat(4000);
    let with_nul = "a\u{0}b".to_string();
    let tagged = |n: u8, value: &str| keys(n).sign(T, 1, tags(&[&["x", value], &["d", value]]), "");
    let (a, b) = (tagged(1, &long), tagged(2, &with_nul));
    let addressable = keys(3).sign(T, 30_023, tags(&[&["d", &long]]), "article");
    assert_eq!(
        write(&store, &[&a, &b, &addressable]).await,
        [WriteOutcome::Stored; 3]
    );
    let lookalike = tagged(4, &starling::store::postgres::sql::tag_key(&long));
    write_one(&store, &lookalike).await;
    let by = |value: &str| serde_json::json!({ "#x": [value] }).to_string();
    assert_eq!(ids(&store, &[&by(&long)]).await, [a.id_hex()]);
    assert_eq!(ids(&store, &[&by(&with_nul)]).await, [b.id_hex()]);
    let newer = keys(3).sign(T + 1, 30_023, tags(&[&["d", &long]]), "article, again");
    assert_eq!(write_one(&store, &newer).await, WriteOutcome::Stored);
    let articles = serde_json::json!({"kinds": [30_023]}).to_string();
    assert_eq!(ids(&store, &[&articles]).await, [newer.id_hex()]);
}

/// A limit larger than a page is read page after page, in the NIP-01 order, ties included.
async fn a_large_limit_is_read_in_pages_in_order(store: Store) {
    let total = starling::store::stream::PAGE_ROWS * 2 + 10;
    let events: Vec<Event> = (0..total)
        .map(|n| note(1, T - (n as u64 / 7), &format!("note {n}")))
        .collect();
    write(&store, &events.iter().collect::<Vec<_>>()).await;
    let mut expected: Vec<&Event> = events.iter().collect();
    expected.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let want: Vec<String> = expected
        .iter()
        .take(total - 3)
        .map(|e| e.id_hex())
        .collect();
    let limit = format!(r#"{{"kinds":[1],"limit":{}}}"#, total - 3);
    assert_eq!(ids(&store, &[&limit]).await, want);
    let all = format!(r#"{{"limit":{total}}}"#);
    let mut two = ids(&store, &[&all, &limit]).await;
    assert_eq!(
        two.len(),
        total,
        "the same events through two filters, each once"
    );
    two.dedup();
    assert_eq!(two.len(), total);
}

/// A filter naming several values of a tag is read newest first across its values, page
/// after page, ties included, each event once (some hold two of the values).
async fn several_tag_values_are_read_in_pages_in_order(store: Store) {
    let total = starling::store::stream::PAGE_ROWS * 2 + 10;
    let events: Vec<Event> = (0..total)
        .map(|n| {
            let values: &[&[&str]] = match n % 4 {
                0 => &[&["t", "a"]],
                1 => &[&["t", "b"]],
                2 => &[&["t", "a"], &["t", "b"]],
                _ => &[&["t", "c"]],
            };
            keys(1).sign(T - (n as u64 / 7), 1, tags(values), &format!("note {n}"))
        })
        .collect();
    write(&store, &events.iter().collect::<Vec<_>>()).await;
    let mut expected: Vec<&Event> = events
        .iter()
        .filter(|e| e.tags.iter().any(|t| t[1] == "a" || t[1] == "b"))
        .collect();
    expected.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let limit = expected.len() - 3;
    let want: Vec<String> = expected.iter().take(limit).map(|e| e.id_hex()).collect();
    let filter = format!(r##"{{"#t":["a","b"],"limit":{limit}}}"##);
    assert_eq!(ids(&store, &[&filter]).await, want);
    let with_kind = format!(r##"{{"#t":["b","a","x"],"kinds":[1],"limit":{limit}}}"##);
    assert_eq!(ids(&store, &[&with_kind]).await, want);
}

/// A read whose requester has cancelled does not run.
async fn a_cancelled_read_stops(store: Store) {
    write_one(&store, &note(1, T, "x")).await;
    let cancel = Cancel::default();
    cancel.cancel();
    let filter = &filters(&["{}"])[0];
    let read = store.page(filter, None, 10, T, &cancel).await;
    assert!(
        matches!(read, Err(starling::store::StoreError::Cancelled)),
        "{read:?}"
    );
    let count = store.count(&filters(&["{}"]), T, &cancel).await;
    assert!(
        matches!(count, Err(starling::store::StoreError::Cancelled)),
        "{count:?}"
    );
}

/// Filters of many shapes do not grow a pooled connection's statement cache past its
/// setting (`--database-statement-cache`).
#[tokio::test]
async fn the_statement_cache_is_bounded_on_postgres() {
    const CACHED: usize = 40;
    let database = postgres_database();
    let settings = PgSettings {
        url: database.url.clone(),
        pool_size: 1,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
        json_cache_bytes: 0,
        cached_statements: CACHED,
    };
    let store = PgStore::new(&settings).expect("PostgreSQL store");
    let letters: Vec<char> = ('a'..='z')
        .chain('A'..='Z')
        .filter(|c| !matches!(c, 'e' | 'p'))
        .collect();
    // Values are bound parameters: what makes two statements differ is which conditions a
    // filter has, here how many tags and whether it has `since` and `until`.
    let (mut shapes, mut most) = (0, 0);
    for count in 1..=25 {
        for bounds in [
            "",
            r#","since":1"#,
            r#","until":2000000000"#,
            r#","since":1,"until":2000000000"#,
        ] {
            let tags: Vec<String> = letters[..count]
                .iter()
                .map(|letter| format!(r##""#{letter}":["x"]"##))
                .collect();
            let filter = format!("{{{}{bounds}}}", tags.join(","));
            store.query(filters(&[&filter]), T).await.expect("query");
            shapes += 1;
            let cached = store
                .cached_statements()
                .await
                .expect("a pooled connection");
            most = most.max(cached);
        }
    }
    assert!(shapes > 2 * CACHED);
    assert!(most <= CACHED, "{most} statements cached at once");
    assert!(
        most >= CACHED / 2,
        "only {most} statements cached: no cache?"
    );
}

/// A gift wrap (kind 1059) from author `from` that p-tags `to`.
fn gift_wrap(from: u8, to: u8, created_at: u64) -> Event {
    let p = starling::nostr::hex::encode(&keys(to).pubkey());
    keys(from).sign(created_at, 1059, tags(&[&["p", &p]]), "sealed")
}

/// NIP-62: a request to vanish removes every event of its author up to its time, and the
/// gift wraps to them; keeps the request; refuses those events if they come back; and
/// leaves what is newer and what belongs to others.
async fn a_request_to_vanish_removes_its_author_and_their_gift_wraps(store: Store) {
    let (leaving, other) = (1, 2);
    let old_note = note(leaving, T - 10, "old");
    let profile = keys(leaving).sign(T - 5, 0, vec![], "{}");
    let wrap_to_them = gift_wrap(other, leaving, T - 3);
    let wrap_to_other = gift_wrap(leaving + 10, other, T - 3);
    let others_note = note(other, T - 10, "stays");
    write(
        &store,
        &[
            &old_note,
            &profile,
            &wrap_to_them,
            &wrap_to_other,
            &others_note,
        ],
    )
    .await;
    let request = keys(leaving).sign(T, 62, tags(&[&["relay", "ALL_RELAYS"]]), "bye");
    assert_eq!(write_one(&store, &request).await, WriteOutcome::Stored);
    let mut left = ids(&store, &["{}"]).await;
    left.sort();
    let mut expected = vec![
        request.id_hex(),
        wrap_to_other.id_hex(),
        others_note.id_hex(),
    ];
    expected.sort();
    assert_eq!(left, expected);
    for gone in [&old_note, &profile, &wrap_to_them] {
        assert_eq!(write_one(&store, gone).await, WriteOutcome::Vanished);
    }
    let older = note(leaving, T - 1, "written before the request, sent after");
    assert_eq!(write_one(&store, &older).await, WriteOutcome::Vanished);
    assert_eq!(
        write_one(&store, &gift_wrap(other, leaving, T)).await,
        WriteOutcome::Vanished
    );
    let newer = note(leaving, T + 1, "back");
    assert_eq!(write_one(&store, &newer).await, WriteOutcome::Stored);
    assert_eq!(
        write_one(&store, &gift_wrap(other, leaving, T + 1)).await,
        WriteOutcome::Stored
    );
}

/// Within one batch, the events after a request to vanish see it.
async fn a_request_to_vanish_in_a_batch_refuses_what_follows_it(store: Store) {
    let request = keys(1).sign(T, 62, tags(&[&["relay", "ALL_RELAYS"]]), "");
    let before = note(1, T - 1, "made before");
    let wrap = gift_wrap(2, 1, T - 1);
    let unrelated = note(2, T - 1, "someone else");
    let outcomes = write(&store, &[&request, &before, &wrap, &unrelated]).await;
    assert_eq!(
        outcomes,
        vec![
            WriteOutcome::Stored,
            WriteOutcome::Vanished,
            WriteOutcome::Vanished,
            WriteOutcome::Stored
        ]
    );
}

fn audit(method: &str) -> AuditRecord {
    AuditRecord {
        seq: 0,
        at: T,
        actor: "admin".into(),
        method: method.into(),
        params: "[]".into(),
    }
}

fn entry(list: PolicyList, value: &str, note: &str) -> PolicyEdit {
    PolicyEdit::Put(PolicyEntry {
        list,
        value: value.into(),
        note: note.into(),
    })
}

async fn rule_changes_are_versioned_with_their_audit_record(store: Store) {
    assert_eq!(store.policy_version().await.unwrap(), 0);
    assert!(store.load_policy().await.unwrap().entries.is_empty());
    let first = store
        .change_policy(
            vec![
                entry(PolicyList::BannedPubkey, "aa", "spam"),
                entry(PolicyList::BannedKind, "7", ""),
                PolicyEdit::Set("name".into(), "Renamed".into()),
            ],
            audit("banpubkey"),
        )
        .await
        .unwrap();
    let second = store
        .change_policy(
            vec![
                entry(PolicyList::BannedPubkey, "aa", "spam, again"),
                PolicyEdit::Remove(PolicyList::BannedKind, "7".into()),
                PolicyEdit::Remove(PolicyList::BlockedIp, "not there".into()),
            ],
            audit("unbanpubkey"),
        )
        .await
        .unwrap();
    assert!(
        second > first && first > 0,
        "versions grow: {first}, {second}"
    );
    assert_eq!(store.policy_version().await.unwrap(), second);
    let stored = store.load_policy().await.unwrap();
    assert_eq!(stored.version, second);
    assert_eq!(
        stored.entries,
        vec![PolicyEntry {
            list: PolicyList::BannedPubkey,
            value: "aa".into(),
            note: "spam, again".into(),
        }]
    );
    assert_eq!(stored.settings, vec![("name".into(), "Renamed".into())]);
    let log = store.audit_log(10).await.unwrap();
    let methods: Vec<_> = log.iter().map(|r| (r.seq, r.method.as_str())).collect();
    assert_eq!(methods, [(second, "unbanpubkey"), (first, "banpubkey")]);
    assert_eq!((log[1].at, log[1].actor.as_str()), (T, "admin"));
    assert_eq!(store.audit_log(1).await.unwrap().len(), 1);
}

async fn moderators_remove_an_author_or_an_event(store: Store) {
    let (a1, a2, b) = (
        keys(1).sign(T, 1, vec![], "a1"),
        keys(1).sign(T + 1, 1, tags(&[&["t", "x"]]), "a2"),
        keys(2).sign(T, 1, vec![], "b"),
    );
    write(&store, &[&a1, &a2, &b]).await;
    let removed = store
        .remove_events(Removal::Author(keys(1).pubkey()))
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(ids(&store, &["{}"]).await, vec![b.id_hex()]);
    assert!(ids(&store, &[r##"{"#t":["x"]}"##]).await.is_empty());
    assert_eq!(store.remove_events(Removal::Event(b.id)).await.unwrap(), 1);
    assert_eq!(store.remove_events(Removal::Event(b.id)).await.unwrap(), 0);
    assert!(ids(&store, &["{}"]).await.is_empty());
}

async fn hll_registers_follow_the_definition(store: Store) {
    use starling::nostr::hll::{Hll, offset};
    let target = note(1, T, "target");
    let mut events = vec![target.clone()];
    let mut expected = Hll::default();
    let filter = Filter::parse(&format!(
        r##"{{"#e":["{}"],"kinds":[7]}}"##,
        target.id_hex()
    ))
    .unwrap();
    let at = offset(&filter).expect("an offset");
    for n in 0..200u8 {
        let reactor = keys(n);
        events.push(reactor.sign(T, 7, tags(&[&["e", &target.id_hex()]]), "+"));
        expected.add(&reactor.pubkey(), at);
    }
    events.push(keys(7).sign(T, 1, tags(&[&["e", &target.id_hex()]]), "not a reaction"));
    let refs: Vec<&Event> = events.iter().collect();
    write(&store, &refs).await;
    let hll = store.hll(&filter, at, T, &Cancel::default()).await.unwrap();
    assert_eq!(hll, expected);
    assert!(
        hll.0.iter().filter(|r| **r > 0).count() > 100,
        "most registers are set"
    );
}

async fn an_event_holding_a_value_twice_is_answered_once(store: Store) {
    let key = starling::nostr::hex::encode(&keys(9).pubkey());
    let other = starling::nostr::hex::encode(&keys(8).pubkey());
    let twice = keys(1).sign(
        T,
        1,
        tags(&[&["p", &key], &["p", &key], &["p", &other]]),
        "twice",
    );
    let older = keys(2).sign(T - 1, 1, tags(&[&["p", &key]]), "older");
    write(&store, &[&twice, &older]).await;
    let one = format!(r##"{{"#p":["{key}"]}}"##);
    assert_eq!(ids(&store, &[&one]).await, [twice.id_hex(), older.id_hex()]);
    let both = format!(r##"{{"#p":["{key}","{other}"]}}"##);
    assert_eq!(
        ids(&store, &[&both]).await,
        [twice.id_hex(), older.id_hex()]
    );
    // Page by page, one event at a time.
    let mut plan = starling::store::StoredEvents::new(filters(&[&format!(
        r##"{{"#p":["{key}"],"limit":2}}"##
    )]));
    let mut found = Vec::new();
    let cancel = Cancel::default();
    loop {
        while let Some(row) = plan.next_row() {
            found.push(row.id);
        }
        let Some(request) = plan.wanted() else { break };
        let filter = Filter::parse(&format!(r##"{{"#p":["{key}"]}}"##)).unwrap();
        // One row per page: the copy of an event holding the value twice ends a page.
        let request = starling::store::PageRequest {
            count: 1,
            ..request
        };
        let rows = store
            .page(&filter, request.after, request.count, T, &cancel)
            .await
            .unwrap();
        plan.fill(request, rows);
    }
    assert_eq!(found, [twice.id, older.id]);
}
