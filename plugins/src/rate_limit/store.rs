//! `rate_limit`'s shared store (SPEC §13): the limit is kept in Redis, so it holds across
//! replicas. Each decision is one atomic Lua script: GCRA on Redis's own clock (`TIME` inside
//! the script), so the replicas' clocks do not matter. One multiplexed connection per store,
//! reconnected by redis-rs's `ConnectionManager`; the script is sent by its SHA-1 and, when
//! Redis does not know it (a restarted server), once in full.
//!
//! Redis errors and timeouts are decided by `on_error` and counted. After one, Redis is left
//! alone for [`PAUSE`]: a dead or hanging Redis then costs requests nothing, and limits resume
//! on their own once it answers again.

use super::Key;
use crate::units::Dur;
use crate::{BuildCtx, PluginError};
use log::warn;
use prometheus::IntCounter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, RedisError, RedisWrite, ServerErrorKind, Value};
use serde::Deserialize;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

/// How long Redis is left alone after an error or a timeout.
pub const PAUSE: Duration = Duration::from_millis(250);
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// At most one log line about store errors per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// GCRA: `KEYS[1]` holds the caller's theoretical arrival time (µs, Redis clock). `ARGV[1]` is
/// the emission interval in µs, `ARGV[2]` the burst. Returns `{1, 0}` to admit, `{0, wait_µs}`
/// to refuse; a refusal writes nothing. The key expires once the bucket is full again.
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
local allow_at = next_tat - interval * burst
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return {1, 0}
";

static SHA: LazyLock<String> = LazyLock::new(|| redis::Script::new(SCRIPT).get_hash().to_string());

/// `store:` as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub redis: RedisConfig,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The environment variable holding the URL (`redis://[:password@]host:port[/db]`).
    pub url_env: String,
    /// How long a decision may wait for Redis (default 50ms).
    pub timeout: Option<Dur>,
    /// What Redis errors and timeouts decide (default `allow`).
    #[serde(default)]
    pub on_error: OnError,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail open: the request goes through.
    #[default]
    Allow,
    /// Fail closed: the request is refused as over the limit.
    Deny,
}

/// One decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admit,
    /// Over the limit: admitted again after this long.
    Refuse(Duration),
}

/// The shared limiter of one `rate_limit` plugin.
pub struct Shared {
    client: redis::Client,
    /// Made on the first decision, inside the runtime that serves requests (the process may
    /// have forked into a daemon since the config was compiled).
    conn: OnceLock<Option<ConnectionManager>>,
    interval_us: u64,
    burst: u32,
    timeout: Duration,
    on_error: OnError,
    /// `anygate:rl:<env>:`
    prefix: Box<str>,
    errors: IntCounter,
    started: Instant,
    /// Milliseconds since `started` until which Redis is left alone.
    paused_until_ms: AtomicU64,
    last_log_ms: AtomicU64,
}

impl StoreConfig {
    pub fn build(&self, cx: &BuildCtx, per_second: u32, burst: u32) -> Result<Shared, PluginError> {
        let r = &self.redis;
        let var = &r.url_env;
        let at = "store.redis.url_env";
        let url = (cx.env_var)(var)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                PluginError::at(at, format!("environment variable `{var}` is not set"))
            })?;
        // `check` hands a stand-in for an unset variable (reported as a warning): any URL
        // stands in for it.
        let url = if url == crate::STAND_IN_SECRET {
            "redis://127.0.0.1:6379".to_string()
        } else {
            url
        };
        // The message never repeats the URL: it may carry a password.
        let client = redis::Client::open(url.trim()).map_err(|_| {
            PluginError::at(
                at,
                format!("environment variable `{var}` does not hold a Redis URL such as redis://127.0.0.1:6379/0"),
            )
        })?;
        let timeout = r.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            return Err(PluginError::at(
                "store.redis.timeout",
                "`timeout` must be more than 0",
            ));
        }
        Ok(Shared {
            client,
            conn: OnceLock::new(),
            interval_us: (1_000_000 / u64::from(per_second)).max(1),
            burst,
            timeout,
            on_error: r.on_error,
            prefix: format!("anygate:rl:{}:", cx.env).into(),
            errors: cx.telemetry.rate_limit_store_errors.clone(),
            started: Instant::now(),
            paused_until_ms: AtomicU64::new(0),
            last_log_ms: AtomicU64::new(0),
        })
    }
}

/// The caller's Redis key, written straight into the command's buffer.
struct RedisKey<'a> {
    prefix: &'a str,
    key: &'a Key,
}

impl redis::ToRedisArgs for RedisKey<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let mut w = out.writer_for_next_arg();
        let _ = w.write_all(self.prefix.as_bytes());
        let _ = match &self.key.who {
            super::Who::Openid(o) => w.write_all(b"o:").and_then(|_| w.write_all(o.as_bytes())),
            super::Who::Ip(IpAddr::V4(ip)) => write!(w, "i:{ip}"),
            super::Who::Ip(IpAddr::V6(ip)) => write!(w, "i:{ip}"),
        };
        if let Some(route) = &self.key.route {
            let _ = w
                .write_all(b"|r:")
                .and_then(|_| w.write_all(route.as_bytes()));
        }
    }
}

impl redis::ToSingleRedisArg for RedisKey<'_> {}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn command(&self, name: &str, body: &str, key: &Key) -> Cmd {
        let mut cmd = Cmd::with_capacity(6, 96 + key_len(key));
        cmd.arg(name)
            .arg(body)
            .arg(1)
            .arg(RedisKey {
                prefix: &self.prefix,
                key,
            })
            .arg(self.interval_us)
            .arg(self.burst);
        cmd
    }

    async fn ask(&self, conn: &mut ConnectionManager, key: &Key) -> Result<Decision, RedisError> {
        // A server error comes back as a value: `extract_error` makes it an error.
        let sent = conn
            .send_packed_command(&self.command("EVALSHA", &SHA, key))
            .await
            .and_then(Value::extract_error);
        let reply = match sent {
            // A Redis that does not know the script (restarted, or flushed): send it whole;
            // EVAL caches it for the next EVALSHA.
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => conn
                .send_packed_command(&self.command("EVAL", SCRIPT, key))
                .await
                .and_then(Value::extract_error)?,
            other => other?,
        };
        decision(&reply).ok_or_else(|| {
            RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "the rate-limit script answered something else than {admit, wait}",
                format!("{reply:?}"),
            ))
        })
    }

    /// Decides one request.
    pub async fn check(&self, key: &Key) -> Decision {
        if self.now_ms() < self.paused_until_ms.load(Ordering::Relaxed) {
            return self.fallback(None);
        }
        let conn = self.conn.get_or_init(|| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                // One attempt per reconnection: the pause spaces the next ones.
                .set_number_of_retries(0);
            ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                .map_err(|e| warn!("rate_limit: cannot set up the Redis connection: {e}"))
                .ok()
        });
        let Some(conn) = conn else {
            return self.fallback(Some("no connection"));
        };
        let mut conn = conn.clone();
        let decide = async {
            match self.ask(&mut conn, key).await {
                // The connection the manager held had failed (Redis was down, or restarted):
                // the manager is reconnecting now, and one more try waits for that.
                Err(e) if e.is_io_error() || e.is_unrecoverable_error() => {
                    self.ask(&mut conn, key).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, decide).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => self.failed(&e.to_string()),
            Err(_) => self.failed(&format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    fn failed(&self, why: &str) -> Decision {
        let now = self.now_ms();
        self.paused_until_ms
            .store(now + PAUSE.as_millis() as u64, Ordering::Relaxed);
        self.fallback(Some(why))
    }

    /// `on_error`'s decision, counted.
    fn fallback(&self, why: Option<&str>) -> Decision {
        self.errors.inc();
        if let Some(why) = why {
            let now = self.now_ms();
            let last = self.last_log_ms.load(Ordering::Relaxed);
            if (last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64)
                && self
                    .last_log_ms
                    .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                warn!(
                    "rate_limit: Redis store failed ({why}): deciding by on_error = {:?} (counted in anygate_rate_limit_store_errors_total)",
                    self.on_error
                );
            }
        }
        match self.on_error {
            OnError::Allow => Decision::Admit,
            OnError::Deny => Decision::Refuse(Duration::from_secs(1)),
        }
    }
}

fn key_len(key: &Key) -> usize {
    let who = match &key.who {
        super::Who::Openid(o) => o.len(),
        super::Who::Ip(_) => 39,
    };
    who + key.route.as_ref().map_or(0, |r| r.len() + 3)
}

/// `{1, 0}` or `{0, wait_µs}`.
fn decision(v: &Value) -> Option<Decision> {
    let Value::Array(items) = v else { return None };
    match items.as_slice() {
        [Value::Int(1), _] => Some(Decision::Admit),
        [Value::Int(0), Value::Int(wait)] => Some(Decision::Refuse(Duration::from_micros(
            u64::try_from(*wait).unwrap_or(0),
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_answers() {
        let ok = Value::Array(vec![Value::Int(1), Value::Int(0)]);
        assert_eq!(decision(&ok), Some(Decision::Admit));
        let no = Value::Array(vec![Value::Int(0), Value::Int(250_000)]);
        assert_eq!(
            decision(&no),
            Some(Decision::Refuse(Duration::from_millis(250)))
        );
        assert_eq!(decision(&Value::Nil), None);
        assert_eq!(decision(&Value::Array(vec![Value::Int(2)])), None);
    }

    #[test]
    fn keys_are_written_into_the_command() {
        let key = Key {
            who: super::super::Who::Ip("2001:db8::1".parse().unwrap()),
            route: Some("api.example.com/v1".into()),
        };
        let mut cmd = Cmd::new();
        cmd.arg(RedisKey {
            prefix: "anygate:rl:env-1:",
            key: &key,
        });
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(
            args,
            vec![b"anygate:rl:env-1:i:2001:db8::1|r:api.example.com/v1".to_vec()]
        );
        assert!(key_len(&key) >= "i:2001:db8::1|r:api.example.com/v1".len() - 2);
    }
}
