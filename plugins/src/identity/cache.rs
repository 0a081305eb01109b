//! Verified tokens, remembered: a client sends the same Bearer token on every request, and
//! checking its HMAC each time is most of what the identity plugin costs. A token is looked up
//! by its exact bytes (no UTF-8 check on a hit); its expiry is checked on every hit.
//!
//! Each worker thread keeps its own map, so threads never contend for it (one shared map, even
//! sharded, had two threads locking the same shard for the same token). Bounded: a thread's
//! map for one cache is emptied when full, and all of it when caches of many config
//! generations have come and gone.

use crate::ctx::Identity;
use ahash::RandomState;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Tokens one thread remembers per cache before emptying it.
const PER_THREAD: usize = 8192;
/// Caches (plugin instances, one per config generation) one thread keeps maps for.
const CACHES_PER_THREAD: usize = 4;

type Tokens = HashMap<Box<[u8]>, (Arc<Identity>, u64), RandomState>;

thread_local! {
    /// (cache id, its tokens): at most `CACHES_PER_THREAD`, found by a look down the list (a
    /// hash map keyed by the id hashed it with SipHash on every request).
    static LOCAL: RefCell<Vec<(u64, Tokens)>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One plugin instance's cache: a new one (after a reload that rebuilt the plugin, e.g. with
/// new keys) shares nothing with the old.
pub struct TokenCache {
    id: u64,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl TokenCache {
    /// The identity of a token verified before and not expired at `now`.
    pub fn get(&self, token: &[u8], now: u64) -> Option<Arc<Identity>> {
        LOCAL.with(|local| {
            let mut local = local.try_borrow_mut().ok()?;
            let (_, tokens) = local.iter_mut().find(|(id, _)| *id == self.id)?;
            match tokens.get(token) {
                Some((id, exp)) if now < *exp => Some(id.clone()),
                Some(_) => {
                    tokens.remove(token);
                    None
                }
                None => None,
            }
        })
    }

    /// Remembers a verified token until `exp` (Unix seconds).
    pub fn put(&self, token: &[u8], id: Arc<Identity>, exp: u64) {
        LOCAL.with(|local| {
            let Ok(mut local) = local.try_borrow_mut() else {
                return;
            };
            let at = match local.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    if local.len() >= CACHES_PER_THREAD {
                        local.clear();
                    }
                    local.push((self.id, HashMap::with_hasher(RandomState::new())));
                    local.len() - 1
                }
            };
            let tokens = &mut local[at].1;
            if tokens.len() >= PER_THREAD {
                tokens.clear();
            }
            tokens.insert(token.into(), (id, exp));
        })
    }

    /// Tokens this thread remembers for this cache.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        LOCAL.with(|l| {
            l.borrow()
                .iter()
                .find(|(id, _)| *id == self.id)
                .map_or(0, |(_, tokens)| tokens.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(openid: &str) -> Arc<Identity> {
        Arc::new(Identity {
            openid: openid.into(),
            ..Identity::default()
        })
    }

    #[test]
    fn hits_until_expiry_then_forgets() {
        let c = TokenCache::default();
        c.put(b"tok", id("o1"), 100);
        assert_eq!(
            c.get(b"tok", 99).map(|i| i.openid.clone()),
            Some("o1".into())
        );
        assert!(c.get(b"tok", 100).is_none(), "expired at exp");
        assert!(c.get(b"tok", 50).is_none(), "and forgotten");
        assert!(c.get(b"other", 1).is_none());
    }

    #[test]
    fn caches_share_nothing() {
        let (a, b) = (TokenCache::default(), TokenCache::default());
        a.put(b"tok", id("o1"), u64::MAX);
        assert!(b.get(b"tok", 1).is_none());
    }

    #[test]
    fn stays_bounded_with_many_callers_and_generations() {
        let c = TokenCache::default();
        for i in 0..50_000 {
            c.put(format!("token-{i}").as_bytes(), id("o"), u64::MAX);
        }
        assert!(c.len() <= PER_THREAD, "{}", c.len());
        let old: Vec<TokenCache> = (0..10).map(|_| TokenCache::default()).collect();
        for g in &old {
            g.put(b"t", id("o"), u64::MAX);
        }
        LOCAL.with(|l| assert!(l.borrow().len() <= CACHES_PER_THREAD));
    }
}
