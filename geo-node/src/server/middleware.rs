//! The one metrics and tracing middleware: every answer of a known route is counted
//! (`geo_http_requests_total{endpoint,code}`) and timed
//! (`geo_http_request_duration_seconds{route,method,code}`) by its matched route, never by the
//! raw path, so `/api/geo/retrieve/widget/7` is `/api/geo/retrieve/{replicable}/{id}`.
//!
//! It also carries the per-access-key limit ([`KeyLimits`]): it gives each request an empty
//! [`KeySlot`], the authorization extractor puts the caller's [`KeyPermit`] in it once the key
//! is known, and the permit then lives as long as the response body, so a blob still streaming
//! counts as in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::conn::Held;
use super::{NodeState, route};
use crate::auth::AccessKey;

/// Counts, times and logs one request; holds its caller's per-key permit until the body ends.
pub(super) async fn track(
    State(state): State<Arc<NodeState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let known = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| route::known(p.as_str()));
    let method = request.method().clone();
    let slot = KeySlot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    if let Some((route, endpoint)) = known {
        let took = started.elapsed();
        let code = response.status().as_u16();
        state.metrics().request(endpoint, code);
        state
            .metrics()
            .request_duration(route, method.as_str(), code, took);
        tracing::debug!(
            route,
            method = %method,
            code,
            elapsed_ms = took.as_millis() as u64,
            "answered"
        );
    }
    match slot.take() {
        None => response,
        Some(permit) => response.map(|body| Body::new(Held::new(body, permit))),
    }
}

/// Where the authorization extractor leaves the caller's [`KeyPermit`] for the middleware.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeySlot(Arc<Mutex<Option<KeyPermit>>>);

impl KeySlot {
    fn lock(&self) -> MutexGuard<'_, Option<KeyPermit>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the request holds a permit already.
    pub(crate) fn is_held(&self) -> bool {
        self.lock().is_some()
    }

    /// Keeps `permit` for the request.
    pub(crate) fn put(&self, permit: KeyPermit) {
        *self.lock() = Some(permit);
    }

    fn take(&self) -> Option<KeyPermit> {
        self.lock().take()
    }
}

/// Requests in flight per access key, at most `max` each.
#[derive(Debug)]
pub(crate) struct KeyLimits {
    max: usize,
    in_flight: Mutex<HashMap<AccessKey, usize>>,
}

impl KeyLimits {
    /// At most `max` (at least one) requests in flight per key.
    pub(crate) fn new(max: usize) -> Self {
        KeyLimits {
            max: max.max(1),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AccessKey, usize>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for one more request of `key`, unless it has `max` in flight.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: &AccessKey) -> Option<KeyPermit> {
        let mut map = self.lock();
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(KeyPermit {
            limits: Arc::clone(self),
            key: key.clone(),
        })
    }

    /// Requests of `key` in flight now.
    #[cfg(test)]
    fn in_flight(&self, key: &AccessKey) -> usize {
        self.lock().get(key).copied().unwrap_or(0)
    }
}

/// One request of a key in flight; released on drop.
#[derive(Debug)]
pub(crate) struct KeyPermit {
    limits: Arc<KeyLimits>,
    key: AccessKey,
}

impl Drop for KeyPermit {
    fn drop(&mut self) {
        let mut map = self.limits.lock();
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_limit() {
        let limits = Arc::new(KeyLimits::new(2));
        let a = AccessKey::new("aaaaaaaaaaaaaaaaaaaa").unwrap();
        let b = AccessKey::new("bbbbbbbbbbbbbbbbbbbb").unwrap();
        let a1 = limits.try_acquire(&a).unwrap();
        let _a2 = limits.try_acquire(&a).unwrap();
        assert!(limits.try_acquire(&a).is_none(), "a is at its limit");
        let _b1 = limits.try_acquire(&b).expect("b is not limited by a");
        drop(a1);
        assert_eq!(limits.in_flight(&a), 1);
        assert!(limits.try_acquire(&a).is_some(), "a place came free");
        assert_eq!(limits.in_flight(&a), 1, "the permit was dropped at once");
    }
}
