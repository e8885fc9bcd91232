//! A `REQ`'s stored events, read a page at a time in bounded memory.
//!
//! [`StoredEvents`] is the plan of the reading, with no I/O of its own: it says which page
//! to read next ([`StoredEvents::wanted`]), takes the rows a store returned
//! ([`StoredEvents::fill`]) and hands out the rows that can be sent now, in order
//! ([`StoredEvents::next_row`]). Whoever drives it decides when each page runs, so a broad
//! filter is served in slices that yield to other requests between them.
//!
//! The order is NIP-01's: newest first, ties by lowest id, each filter's answer within its
//! `limit`, every event once: a merge of the filters' answers, each read newest first from
//! where its last page ended. With a NIP-50 search, answers keep their order of relevance
//! and follow one another in filter order; a search's answer is one page.
//!
//! For a heavy asker ([`StoredEvents::slice_pages`]) pages are *time slices*: a filter's
//! first page is small, and each next one is sized from the last one's speed to take about
//! [`SLICE`] in the store, so that no statement of its holds a core for long.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use super::Row;
use crate::{
    hashing::{FastMap, FastSet},
    nostr::Filter,
};

/// Rows one `REQ` reads per round of pages, shared by its filters.
pub const PAGE_ROWS: usize = 256;

/// The fewest rows a filter's page asks for.
const MIN_PAGE_ROWS: usize = 16;

/// About how long a heavy asker's page takes in the store.
pub const SLICE: Duration = Duration::from_millis(2);

/// A heavy asker's first page of a filter, before its speed is known.
const FIRST_SLICE_ROWS: usize = 32;

/// Where a filter's reading goes on from: the last row read, in the newest-first order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last row read.
    pub created_at: i64,
    /// Its id.
    pub id: [u8; 32],
}

impl Cursor {
    fn of(row: &Row) -> Self {
        Self {
            created_at: row.created_at,
            id: row.id,
        }
    }
}

/// The next page to read: up to `count` rows of filter number `filter`, after `after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// The filter's position in the `REQ`.
    pub filter: usize,
    /// Where the page starts (from the newest when `None`).
    pub after: Option<Cursor>,
    /// Most rows to read.
    pub count: usize,
}

/// One filter's reading.
struct Reading {
    /// Rows its `limit` still allows to be read.
    left: u64,
    /// Rows read and not handed out yet, newest first.
    buffer: VecDeque<Row>,
    after: Option<Cursor>,
    /// Nothing more to read.
    done: bool,
    /// Rows of a sliced page, from the speed of the last page.
    slice_rows: Option<usize>,
}

/// The plan of a `REQ`'s stored events.
pub struct StoredEvents {
    filters: Arc<[Filter]>,
    readings: Vec<Reading>,
    /// With a search: filters are read one after the other, this one now.
    ranked: Option<usize>,
    page: usize,
    /// Pages are time slices (see the module documentation).
    sliced: bool,
    /// Ids handed out, with their `created_at`.
    sent: FastMap<[u8; 32], i64>,
}

impl StoredEvents {
    /// The plan for `filters`, whose limits are set.
    pub fn new(filters: Arc<[Filter]>) -> Self {
        let readings: Vec<Reading> = filters
            .iter()
            .map(|f| {
                let left = if f.can_match() {
                    f.limit.unwrap_or(0)
                } else {
                    0
                };
                Reading {
                    left,
                    buffer: VecDeque::new(),
                    after: None,
                    done: left == 0,
                    slice_rows: None,
                }
            })
            .collect();
        let active = readings.iter().filter(|r| !r.done).count().max(1);
        let ranked = filters.iter().any(|f| f.search.is_some()).then_some(0);
        Self {
            filters,
            readings,
            ranked,
            page: (PAGE_ROWS / active).max(MIN_PAGE_ROWS),
            sliced: false,
            sent: FastMap::default(),
        }
    }

    /// The filters being read.
    pub fn filters(&self) -> &Arc<[Filter]> {
        &self.filters
    }

    /// Makes the next pages time slices (`heavy`: the asker is heavy) or full pages.
    pub fn slice_pages(&mut self, heavy: bool) {
        self.sliced = heavy;
    }

    /// Notes that the page read for `request` took `took` in the store, which sizes the
    /// filter's next sliced page.
    pub fn timed(&mut self, request: PageRequest, took: Duration) {
        let per_slice = request.count as f64 * SLICE.as_secs_f64() / took.as_secs_f64();
        let rows = if per_slice.is_finite() {
            per_slice as usize
        } else {
            self.page
        };
        self.readings[request.filter].slice_rows = Some(rows.clamp(MIN_PAGE_ROWS, self.page));
    }

    /// The page to read before more rows can be handed out, if one is needed.
    pub fn wanted(&self) -> Option<PageRequest> {
        let wants = |n: usize| {
            let reading = &self.readings[n];
            let page = if self.sliced {
                reading
                    .slice_rows
                    .unwrap_or(FIRST_SLICE_ROWS)
                    .min(self.page)
            } else {
                self.page
            };
            (!reading.done && reading.buffer.is_empty()).then(|| PageRequest {
                filter: n,
                after: reading.after,
                count: if self.filters[n].search.is_some() {
                    reading.left as usize
                } else {
                    (reading.left as usize).min(page)
                },
            })
        };
        match self.ranked {
            Some(current) if current < self.readings.len() => wants(current),
            Some(_) => None,
            None => (0..self.readings.len()).find_map(wants),
        }
    }

    /// Takes the rows the store returned for `request`. A store may return an event twice
    /// in a row (it holds a filtered tag value twice): it counts, and is handed out, once.
    pub fn fill(&mut self, request: PageRequest, mut rows: Vec<Row>) {
        let search = self.filters[request.filter].search.is_some();
        let reading = &mut self.readings[request.filter];
        let read = rows.len();
        reading.after = rows.last().map(Cursor::of).or(reading.after);
        rows.dedup_by(|a, b| a.id == b.id);
        if let (Some(first), Some(last)) = (rows.first(), reading.buffer.back())
            && first.id == last.id
        {
            rows.remove(0);
        }
        reading.left = reading.left.saturating_sub(rows.len() as u64);
        reading.done = search || read < request.count || reading.left == 0;
        reading.buffer.extend(rows);
    }

    /// The next row to send, if it can be known without reading another page.
    pub fn next_row(&mut self) -> Option<Row> {
        match self.ranked {
            Some(_) => self.next_ranked(),
            None => self.next_merged(),
        }
    }

    fn next_ranked(&mut self) -> Option<Row> {
        while let Some(current) = self.ranked.filter(|c| *c < self.readings.len()) {
            let reading = &mut self.readings[current];
            match reading.buffer.pop_front() {
                Some(row) if self.sent.insert(row.id, row.created_at).is_none() => {
                    return Some(row);
                }
                Some(_) => continue,
                None if reading.done => self.ranked = Some(current + 1),
                None => return None,
            }
        }
        None
    }

    fn next_merged(&mut self) -> Option<Row> {
        if self.readings.iter().any(|r| !r.done && r.buffer.is_empty()) {
            return None;
        }
        let newest = self
            .readings
            .iter()
            .filter_map(|r| r.buffer.front())
            .max_by(|a, b| {
                a.created_at
                    .cmp(&b.created_at)
                    .then_with(|| b.id.cmp(&a.id))
            })
            .map(Cursor::of)?;
        // The same event at the head of several filters' answers is sent once.
        let mut row = None;
        for reading in &mut self.readings {
            if reading.buffer.front().is_some_and(|r| r.id == newest.id) {
                row = reading.buffer.pop_front();
            }
        }
        let row = row?;
        self.sent.insert(row.id, row.created_at);
        Some(row)
    }

    /// Whether every row has been handed out.
    pub fn is_done(&self) -> bool {
        self.wanted().is_none() && self.readings.iter().all(|r| r.buffer.is_empty())
    }

    /// Whether the event with this id was handed out.
    pub fn sent(&self, id: &[u8; 32]) -> bool {
        self.sent.contains_key(id)
    }

    /// The ids handed out of events made at or after `since` (seconds).
    pub fn sent_since(&self, since: i64) -> FastSet<[u8; 32]> {
        self.sent
            .iter()
            .filter(|(_, created_at)| **created_at >= since)
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(created_at: i64, id: u8) -> Row {
        Row {
            created_at,
            id: [id; 32],
            json: format!("{created_at}/{id}"),
        }
    }

    /// A store's answer: the rows of `all` after `after`, newest first, at most `count`.
    fn page(all: &[Row], request: PageRequest) -> Vec<Row> {
        let mut rows: Vec<&Row> = all
            .iter()
            .filter(|r| {
                request.after.is_none_or(|c| {
                    r.created_at < c.created_at || (r.created_at == c.created_at && r.id > c.id)
                })
            })
            .collect();
        rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        rows.into_iter()
            .take(request.count)
            .map(|r| row(r.created_at, r.id[0]))
            .collect()
    }

    fn read(filters: Vec<Filter>, answers: &[Vec<Row>]) -> (Vec<String>, usize) {
        let searches: Vec<bool> = filters.iter().map(|f| f.search.is_some()).collect();
        let mut plan = StoredEvents::new(filters.into());
        let (mut out, mut pages) = (Vec::new(), 0);
        loop {
            while let Some(row) = plan.next_row() {
                out.push(row.json);
            }
            let Some(request) = plan.wanted() else { break };
            pages += 1;
            let answer = &answers[request.filter];
            let rows = if searches[request.filter] {
                // A search answers in order of relevance, as the store ranks it.
                answer
                    .iter()
                    .take(request.count)
                    .map(|r| row(r.created_at, r.id[0]))
                    .collect()
            } else {
                page(answer, request)
            };
            plan.fill(request, rows);
        }
        assert!(plan.is_done());
        (out, pages)
    }

    fn limited(limit: u64) -> Filter {
        Filter {
            limit: Some(limit),
            ..Filter::default()
        }
    }

    #[test]
    fn merges_filters_newest_first_each_within_its_limit_once() {
        let a = vec![row(9, 1), row(7, 2), row(7, 3), row(5, 4), row(1, 5)];
        let b = vec![row(8, 6), row(7, 3), row(2, 7)];
        let (out, _) = read(vec![limited(4), limited(2)], &[a, b]);
        // a's top 4 and b's top 2, merged, (7, 3) once.
        assert_eq!(out, ["9/1", "8/6", "7/2", "7/3", "5/4"]);
    }

    #[test]
    fn reads_a_large_limit_in_pages_of_bounded_size() {
        let all: Vec<Row> = (0..1000).map(|n| row(n / 3, (n % 250) as u8)).collect();
        let (out, pages) = read(vec![limited(700)], std::slice::from_ref(&all));
        assert_eq!(out.len(), 700);
        assert_eq!(pages, 700usize.div_ceil(PAGE_ROWS));
        let mut expected = page(
            &all,
            PageRequest {
                filter: 0,
                after: None,
                count: 700,
            },
        );
        let expected: Vec<String> = expected.drain(..).map(|r| r.json).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn a_heavy_askers_pages_are_sized_to_take_a_slice() {
        let all: Vec<Row> = (0..2000).map(|n| row(n / 3, (n % 250) as u8)).collect();
        let mut plan = StoredEvents::new(vec![limited(1000)].into());
        plan.slice_pages(true);
        let first = plan.wanted().expect("a page to read");
        assert_eq!(first.count, FIRST_SLICE_ROWS);
        plan.fill(first, page(&all, first));
        // 32 rows took 8 ms: a slice holds 8.
        plan.timed(first, SLICE * 4);
        while plan.next_row().is_some() {}
        let slow = plan.wanted().expect("a page to read");
        assert_eq!(slow.count, MIN_PAGE_ROWS, "never fewer than the least page");
        plan.fill(slow, page(&all, slow));
        // 16 rows in a tenth of a slice: 160 rows a slice.
        plan.timed(slow, SLICE / 10);
        while plan.next_row().is_some() {}
        assert_eq!(plan.wanted().expect("a page to read").count, 160);
        // Fast pages grow to the usual page, no further.
        plan.timed(slow, SLICE / 100);
        assert_eq!(plan.wanted().expect("a page to read").count, PAGE_ROWS);
        // When the asker is light again, pages are full.
        plan.timed(slow, SLICE * 100);
        plan.slice_pages(false);
        assert_eq!(plan.wanted().expect("a page to read").count, PAGE_ROWS);
    }

    #[test]
    fn with_a_search_answers_follow_in_filter_order() {
        let search = Filter {
            search: Some("x".into()),
            limit: Some(10),
            ..Filter::default()
        };
        let ranked = vec![row(1, 1), row(5, 2)];
        let plain = vec![row(9, 3), row(5, 2)];
        let (out, _) = read(vec![search, limited(5)], &[ranked, plain]);
        assert_eq!(out, ["1/1", "5/2", "9/3"]);
    }

    #[test]
    fn filters_that_cannot_match_read_nothing() {
        let empty = Filter {
            kinds: Some(Box::default()),
            limit: Some(10),
            ..Filter::default()
        };
        let plan = StoredEvents::new(vec![empty, limited(0)].into());
        assert!(plan.wanted().is_none() && plan.is_done());
    }
}
