//! Verified tokens, remembered: a client sends the same Bearer token on every request, and
//! checking its HMAC each time is most of what the identity plugin costs. A token is looked up
//! by its exact text; its expiry is checked on every hit. Bounded: a full shard is emptied.

use crate::ctx::Identity;
use ahash::RandomState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;
/// Tokens per shard before it is emptied (16 × 2048 ≈ 32k callers at most).
const PER_SHARD: usize = 2048;

type Shard = HashMap<Box<str>, (Arc<Identity>, u64), RandomState>;

pub struct TokenCache {
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(RandomState::new())))
                .collect(),
        }
    }
}

impl TokenCache {
    fn shard(&self, token: &str) -> &Mutex<Shard> {
        let i = self.hasher.hash_one(token) as usize % SHARDS;
        &self.shards[i]
    }

    /// The identity of a token verified before and not expired at `now`.
    pub fn get(&self, token: &str, now: u64) -> Option<Arc<Identity>> {
        let mut shard = self.shard(token).lock().unwrap_or_else(|e| e.into_inner());
        match shard.get(token) {
            Some((id, exp)) if now < *exp => Some(id.clone()),
            Some(_) => {
                shard.remove(token);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token until `exp` (Unix seconds).
    pub fn put(&self, token: &str, id: Arc<Identity>, exp: u64) {
        let mut shard = self.shard(token).lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= PER_SHARD {
            shard.clear();
        }
        shard.insert(token.into(), (id, exp));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
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
        c.put("tok", id("o1"), 100);
        assert_eq!(
            c.get("tok", 99).map(|i| i.openid.clone()),
            Some("o1".into())
        );
        assert!(c.get("tok", 100).is_none(), "expired at exp");
        assert!(c.get("tok", 50).is_none(), "and forgotten");
        assert!(c.get("other", 1).is_none());
    }

    #[test]
    fn stays_bounded_with_many_callers() {
        let c = TokenCache::default();
        for i in 0..200_000 {
            c.put(&format!("token-{i}"), id("o"), u64::MAX);
        }
        assert!(c.len() <= SHARDS * PER_SHARD, "{}", c.len());
    }
}
