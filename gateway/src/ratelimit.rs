//! Per-client rate limiting (governor token buckets), with quotas set per
//! department. Limiter state is per process: with several instances behind
//! a balancer, each enforces its share.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota as GQuota, RateLimiter};

use crate::config::{Quota, RateLimitConfig};
use crate::identity::Caller;

type Keyed<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// What the edge asks of a rate limiter (a trait so tests can drive a
/// limiter with a fake clock through the real server).
pub trait CheckRate: Send + Sync {
    /// `Ok` if the caller may proceed, else the seconds to wait (≥ 1).
    fn check(&self, caller: &Caller) -> Result<(), u64>;
    /// Drops state of clients idle long enough to be back at full burst.
    fn shrink(&self);
}

/// A fake clock for deterministic rate-limit tests.
pub use governor::clock::FakeRelativeClock as FakeClock;

/// Rate limits for every client, keyed by client id; one limiter per
/// distinct department quota.
pub struct RateLimits<C: Clock = DefaultClock> {
    enabled: bool,
    clock: C,
    default: Arc<Keyed<C>>,
    departments: HashMap<String, Arc<Keyed<C>>>,
}

fn gquota(q: Quota) -> GQuota {
    let per_second = NonZeroU32::new(q.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(q.burst).unwrap_or(NonZeroU32::MIN);
    GQuota::per_second(per_second).allow_burst(burst)
}

impl RateLimits<DefaultClock> {
    /// Builds the limiters from configuration with the real clock.
    pub fn new(cfg: &RateLimitConfig) -> Self {
        Self::with_clock(cfg, DefaultClock::default())
    }
}

impl<C: Clock + Clone + Send + Sync> CheckRate for RateLimits<C>
where
    C::Instant: Send + Sync,
{
    fn check(&self, caller: &Caller) -> Result<(), u64> {
        RateLimits::check(self, caller)
    }
    fn shrink(&self) {
        RateLimits::shrink(self)
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    /// Builds the limiters with a given clock (tests use a fake one).
    pub fn with_clock(cfg: &RateLimitConfig, clock: C) -> Self {
        let make = |q: Quota| Arc::new(RateLimiter::dashmap_with_clock(gquota(q), clock.clone()));
        RateLimits {
            enabled: cfg.enabled,
            default: make(cfg.default),
            departments: cfg
                .departments
                .iter()
                .map(|(d, q)| (d.clone(), make(*q)))
                .collect(),
            clock,
        }
    }

    /// `Ok` if the caller may proceed, else the seconds to wait (≥ 1).
    pub fn check(&self, caller: &Caller) -> Result<(), u64> {
        if !self.enabled {
            return Ok(());
        }
        let limiter = self
            .departments
            .get(caller.department.as_str())
            .unwrap_or(&self.default);
        limiter.check_key(&caller.client_id).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Drops state of clients idle long enough to be back at full burst.
    pub fn shrink(&self) {
        self.default.retain_recent();
        for l in self.departments.values() {
            l.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{DepartmentId, PeerCertificate, Role};
    use governor::clock::FakeRelativeClock;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn caller(dept: &str, id: &str) -> Caller {
        Caller {
            client_id: id.into(),
            department: DepartmentId::parse(dept).unwrap(),
            role: Role::System,
            region: adapters::domain::RegionCode::parse("441700").unwrap(),
            certificate: PeerCertificate {
                fingerprint: String::new(),
                serial: String::new(),
                common_name: id.into(),
            },
        }
    }

    #[test]
    fn department_quota_applies_per_client_with_retry_after() {
        let clock = FakeRelativeClock::default();
        let cfg = RateLimitConfig {
            enabled: true,
            default: Quota {
                per_second: 100,
                burst: 100,
            },
            departments: BTreeMap::from([(
                "education".to_owned(),
                Quota {
                    per_second: 1,
                    burst: 2,
                },
            )]),
        };
        let rl = RateLimits::with_clock(&cfg, clock.clone());
        let edu = caller("education", "edu-1");
        assert!(rl.check(&edu).is_ok());
        assert!(rl.check(&edu).is_ok());
        assert_eq!(rl.check(&edu), Err(1));
        // Another client of the same department has its own bucket.
        assert!(rl.check(&caller("education", "edu-2")).is_ok());
        // Other departments use the default quota.
        for _ in 0..50 {
            assert!(rl.check(&caller("housing", "h")).is_ok());
        }
        clock.advance(Duration::from_millis(1000));
        assert!(rl.check(&edu).is_ok());
        assert_eq!(rl.check(&edu), Err(1));
    }
}
