//! Hash maps and sets for the relay's hot paths: event ids, pubkeys, tag values and keys of
//! its own. std's default hasher (SipHash-1-3) took 4% of the instructions of serving a tag
//! query; foldhash is several times faster and, like std's, seeded at random for each map,
//! so a client that grinds event ids (they are hashes it can choose by changing content)
//! cannot make them collide in a table of the relay's.

use std::collections::{HashMap, HashSet};

/// How [`FastMap`] and [`FastSet`] hash: foldhash, seeded per map.
pub type FastState = foldhash::fast::RandomState;

/// A `HashMap` with [`FastState`].
pub type FastMap<K, V> = HashMap<K, V, FastState>;

/// A `HashSet` with [`FastState`].
pub type FastSet<K> = HashSet<K, FastState>;
