//! A realistic mix of signed events, generated deterministically from a seed.
//!
//! Thousands of authors (a few post most), kinds 1 (notes), 7 (reactions), 30023 (articles,
//! each with its own `d` tag), one profile (0) and one follow list (3) per author; 0–8 tags
//! of `e`, `p` and `t`; content of 50–2,000 bytes; `created_at` spread over the past year.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
    sync::mpsc,
    thread,
    time::Instant,
};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use starling::nostr::{Event, Keys, hex};

use crate::progress::Progress;

/// Options of `fill`.
#[derive(clap::Args, serde::Serialize)]
pub struct Args {
    /// Events to generate (at least this many remain stored after replacement rules).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Distinct authors.
    #[arg(long, default_value_t = 5_000)]
    pub authors: u64,
    /// Seed of the generator; the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// File to write.
    #[arg(long, short)]
    pub output: PathBuf,
}

/// A small, fast, deterministic generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Keys of author `n` of a generated data set.
pub fn author(n: u64) -> Keys {
    let secret: [u8; 32] = Sha256::digest(format!("starling-bench author {n}")).into();
    Keys::from_secret(secret).expect("a hash is a valid secret key with overwhelming probability")
}

const TOPICS: &[&str] = &[
    "nostr",
    "bitcoin",
    "rust",
    "music",
    "art",
    "photography",
    "news",
    "dev",
    "food",
    "travel",
    "books",
    "science",
    "linux",
    "privacy",
    "memes",
    "sports",
    "gaming",
    "zaps",
    "relay",
    "gm",
];

const WORDS: &[&str] = &[
    "the", "relay", "note", "event", "signal", "quiet", "river", "starling", "flock", "murmur",
    "network", "client", "key", "market", "morning", "light", "code", "open", "free", "speech",
];

/// The `i`-th event of the data set (authors' profiles and follow lists come first).
pub fn event(i: u64, total: u64, authors: u64, seed: u64, now: u64) -> Event {
    let mut rng = Rng::new(seed ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d));
    if i < 2 * authors {
        let keys = author(i % authors);
        let kind = if i < authors { 0 } else { 3 };
        let tags = if kind == 3 {
            (0..rng.below(50))
                .map(|_| {
                    vec![
                        "p".into(),
                        hex::encode(&author(rng.below(authors)).pubkey()),
                    ]
                })
                .collect()
        } else {
            Vec::new()
        };
        return keys.sign(
            now - 365 * 86_400,
            kind,
            tags,
            &format!("{{\"name\":\"author {}\"}}", i % authors),
        );
    }
    // Skewed authorship: squaring a uniform number makes low-numbered authors prolific.
    let a = (rng.below(authors) * rng.below(authors)) / authors;
    let keys = author(a);
    let span = 365 * 86_400;
    let created_at = now - span + i * span / total.max(1) + rng.below(60);
    let roll = rng.below(100);
    let kind = match roll {
        0..=59 => 1,
        60..=89 => 7,
        _ => 30_023,
    };
    let mut tags: Vec<Vec<String>> = Vec::new();
    if kind == 30_023 {
        tags.push(vec!["d".into(), format!("article-{i}")]);
    }
    for _ in 0..rng.below(9) {
        match rng.below(3) {
            0 => {
                let target: [u8; 32] =
                    Sha256::digest(format!("{seed}:{}", rng.below(i.max(1)))).into();
                tags.push(vec!["e".into(), hex::encode(&target)]);
            }
            1 => tags.push(vec![
                "p".into(),
                hex::encode(&author(rng.below(authors)).pubkey()),
            ]),
            _ => tags.push(vec![
                "t".into(),
                TOPICS[rng.below(TOPICS.len() as u64) as usize].into(),
            ]),
        }
    }
    let length = 50 + rng.below(1_950) as usize;
    let mut content = String::with_capacity(length + 16);
    while content.len() < length {
        content.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        content.push(' ');
    }
    keys.sign(created_at.min(now), kind, tags, content.trim_end())
}

/// Writes the data set, signing on every core.
pub fn run(args: &Args) -> anyhow::Result<Value> {
    let started = Instant::now();
    let now = starling::policy::now();
    let threads = thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let mut out = BufWriter::new(File::create(&args.output)?);
    let (sender, lines) = mpsc::sync_channel::<(u64, Vec<String>)>(64);
    let chunk = 1_000;
    let (events, authors, seed) = (args.events, args.authors, args.seed);
    for worker in 0..threads {
        let sender = sender.clone();
        thread::spawn(move || {
            let mut start = worker * chunk;
            while start < events {
                let end = (start + chunk).min(events);
                let batch = (start..end)
                    .map(|i| event(i, events, authors, seed, now).to_json())
                    .collect();
                if sender.send((start, batch)).is_err() {
                    return;
                }
                start += threads * chunk;
            }
        });
    }
    drop(sender);
    // Write chunks in order so the file is the same for the same seed.
    let mut pending = std::collections::BTreeMap::new();
    let mut next = 0;
    let progress = Progress::start("events generated", Some(events));
    for (start, batch) in lines {
        pending.insert(start, batch);
        while let Some(batch) = pending.remove(&next) {
            progress.add(batch.len() as u64);
            for line in batch {
                writeln!(out, "{line}")?;
            }
            next += chunk;
        }
    }
    out.flush()?;
    drop(progress);
    eprintln!("generated {events} events into {}", args.output.display());
    let seconds = started.elapsed().as_secs_f64();
    crate::report::of(
        "fill",
        args,
        json!({"events": events, "seconds": seconds, "events_per_s": events as f64 / seconds}),
    )
}
