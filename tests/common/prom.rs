//! Scraping the admin listener and reading the Prometheus text format back.

use super::http::{send, Req};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

/// Parses the text format (label values without escaped quotes or commas, which is all
/// anygate writes).
pub fn parse(text: &str) -> Scrape {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                let labels = inner
                    .split(',')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label in {line:?}"));
                        (k.to_string(), v.trim_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (series.to_string(), Vec::new()),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    Scrape {
        text: text.to_string(),
        samples,
    }
}

impl Scrape {
    /// Samples of `name` whose labels include all of `want`.
    pub fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && want
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .collect()
    }

    /// The one sample of `name` with exactly these labels (any order), if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
    }

    /// Like [`Scrape::get`], panicking with the scrape when the sample is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{}", self.text))
    }

    /// The sum of every sample of `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.find(name, &[]).iter().map(|s| s.value).sum()
    }
}

/// GET `/metrics` on the admin address.
pub fn scrape(admin: SocketAddr) -> Scrape {
    let resp = send(admin, &Req::get("/metrics").host("localhost"))
        .unwrap_or_else(|e| panic!("scrape {admin}: {e}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    parse(&resp.text())
}

/// Scrapes until `done` holds (every 20 ms, at most `timeout`); returns the last scrape.
pub fn scrape_until(
    admin: SocketAddr,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + timeout;
    loop {
        let s = scrape(admin);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {timeout:?}; last scrape:\n{}",
            s.text
        );
        thread::sleep(Duration::from_millis(20));
    }
}
