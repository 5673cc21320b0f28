//! What the auth layer cannot decide, decided per request by the archive API: a bundle's
//! labels against the caller's scope (the archive handlers apply `Principal::may_access` and
//! `Principal::upload_labels` themselves, noting refusals for the audit trail). The layer has already checked the caller's role for the
//! method and put its [`Principal`] into the request; these functions apply its scope to the
//! bundle the request names, to an upload's labels, to a listing and to status counts. The
//! decisions are `bitmountain_auth`'s (pure); this file only fetches what they need. With
//! `--insecure` there is no principal and nothing is limited.

use bitmountain_auth::Principal;
use bitmountain_meta_client::types::BundleCounts;
use bitmountain_meta_client::{BundleState, MetaClient};
use tonic::Request;

use crate::error::Result;

/// Most bundles a scoped token's status counts look at (pages of the listing); a scope
/// holding more shows counts of the first ones.
pub const MAX_SCOPED_COUNT_BUNDLES: u64 = 1_000_000;
/// Bundles per listing page while counting.
const COUNT_PAGE: u32 = 1_000;

/// Who made the request (`None` with `--insecure`).
pub fn principal<T>(request: &Request<T>) -> Option<Principal> {
    request.extensions().get::<Principal>().cloned()
}

/// Whether the caller's token is limited to labels (then bundles' labels must be fetched).
pub fn is_scoped(principal: Option<&Principal>) -> bool {
    matches!(principal, Some(Principal::Token(t)) if !t.scope.is_unscoped())
}

/// How to list bundles for a caller who asked for `requested`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListPlan {
    /// Nothing the caller may see can match (the label asked for contradicts its scope).
    Nothing,
    /// List by this label (or all), then keep what the caller sees.
    By(Option<(String, String)>),
}

/// The listing for `requested`: a scoped caller's listing goes through its scope's label index
/// (never the whole table) unless it asked for a label itself.
pub fn list_plan(principal: Option<&Principal>, requested: Option<(String, String)>) -> ListPlan {
    let scope = match principal {
        Some(Principal::Token(t)) if !t.scope.is_unscoped() => &t.scope,
        _ => return ListPlan::By(requested),
    };
    match requested {
        Some((k, v)) => match scope.labels().get(&k) {
            Some(mine) if *mine != v => ListPlan::Nothing,
            _ => ListPlan::By(Some((k, v))),
        },
        None => ListPlan::By(
            scope
                .labels()
                .iter()
                .next()
                .map(|(k, v)| (k.clone(), v.clone())),
        ),
    }
}

/// The bundle counts a scoped caller may see (`None`: the caller sees everything, use the
/// group's counts). Counted through the listing of its scope's first label.
pub async fn scoped_counts(
    meta: &MetaClient,
    principal: Option<&Principal>,
) -> Result<Option<BundleCounts>> {
    let Some(p) = principal else {
        return Ok(None);
    };
    let ListPlan::By(Some((k, v))) = list_plan(Some(p), None) else {
        return Ok(None);
    };
    let mut counts = BundleCounts::default();
    let mut token = Vec::new();
    let mut seen = 0u64;
    loop {
        let (page, next) = meta
            .list_bundles(Some((&k, &v)), None, &token, COUNT_PAGE)
            .await?;
        for b in page.iter().filter(|b| p.sees(&b.record.labels)) {
            match b.record.state {
                BundleState::Pending => counts.pending += 1,
                BundleState::Sealed => counts.sealed += 1,
                BundleState::Deleting => counts.deleting += 1,
            }
        }
        seen += page.len() as u64;
        if next.is_empty() || seen >= MAX_SCOPED_COUNT_BUNDLES {
            return Ok(Some(counts));
        }
        token = next;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bitmountain_auth::{Role, Scope, Token, TokenPrincipal, TokenRecord};

    use super::*;

    fn token(scope: &[&str]) -> Principal {
        let t = Token::generate().unwrap();
        let scope = Scope::parse(scope.iter().copied()).unwrap();
        let record = TokenRecord::new(&t, "t", Role::Writer, scope, 1, 0);
        Principal::Token(TokenPrincipal::from(&record))
    }

    fn kv(k: &str, v: &str) -> Option<(String, String)> {
        Some((k.into(), v.into()))
    }

    #[test]
    fn a_scoped_listing_goes_through_its_label_and_never_past_it() {
        let scoped = token(&["collection=maps"]);
        assert_eq!(
            list_plan(Some(&scoped), None),
            ListPlan::By(kv("collection", "maps"))
        );
        assert_eq!(
            list_plan(Some(&scoped), kv("collection", "maps")),
            ListPlan::By(kv("collection", "maps"))
        );
        assert_eq!(
            list_plan(Some(&scoped), kv("collection", "books")),
            ListPlan::Nothing
        );
        assert_eq!(
            list_plan(Some(&scoped), kv("year", "1900")),
            ListPlan::By(kv("year", "1900"))
        );
        let open = token(&[]);
        assert_eq!(list_plan(Some(&open), None), ListPlan::By(None));
        assert_eq!(list_plan(None, kv("a", "b")), ListPlan::By(kv("a", "b")));
    }
}
